"""`--scenes none` decodes only what the sampler needs (engine.sparse), with the dense pass's clips."""
from __future__ import annotations

import av
import numpy as np
import pytest
import videogen

from tarsier.engine.sparse import SparseReader
from tarsier.engine.video import ClipOptions, VideoReader


@pytest.fixture(scope="module")
def minute(tmp_path_factory):
    """60 s at 25 fps with a keyframe every second (25 frames), two scenes."""
    d = tmp_path_factory.mktemp("sparse")
    return videogen.make_video(d / "minute.mp4", [(30.0, 0), (30.0, 1)], fps=25, size=(160, 96), gop=25)


def plain_frames(path, times) -> list[np.ndarray]:
    """RGB frames at `times` from a plain PyAV decode of every frame (nearest frame to each time)."""
    with av.open(str(path)) as c:
        frames = [(float(f.pts * f.time_base), f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    return [min(frames, key=lambda tf: abs(tf[0] - t))[1] for t in times]


def test_sparse_decodes_a_fifth_of_the_file_or_less(minute):
    opts = ClipOptions(scenes="none", max_clip=10, frames=2, frame_size=32)
    with SparseReader(minute.path, opts) as r:
        clips = list(r.clips())
        decoded = r.info.frames_decoded
    assert decoded / videogen.count_frames(minute.path) <= 0.2
    assert sum(c.frames_decoded for c in clips) == decoded
    # each clip: its first frame, and its last frame reached from the keyframe before it (<= one GOP + 1)
    assert all(1 <= c.frames_decoded <= 25 + 2 for c in clips)
    with VideoReader(minute.path, opts) as dense:
        dense_clips = list(dense.clips())
        assert dense.info.frames_decoded == minute.frames
    assert [x for c in clips for x in (c.start, c.end)] == pytest.approx([x for c in dense_clips for x in (c.start, c.end)])


def test_sparse_frames_are_the_frames_at_their_times(minute):
    opts = ClipOptions(scenes="none", max_clip=12, frames=5, frame_size=160)
    with SparseReader(minute.path, opts) as r:
        clips = list(r.clips())
    for clip in clips:
        assert clip.frame_times[0] == pytest.approx(clip.start, abs=1 / 25)
        assert clip.frame_times[-1] == pytest.approx(clip.end - 1 / 25, abs=1 / 25)
        assert all(clip.start <= t < clip.end for t in clip.frame_times)
        # stretched to 160x160 from 160x96: compare on the rows the stretch keeps whole, coarsely
        want = plain_frames(minute.path, clip.frame_times)
        for got, ref in zip(clip.frames, want):
            small = got[:: 160 // 32, :: 160 // 32].astype(int).mean()
            assert small == pytest.approx(ref[::3, ::5].astype(int).mean(), abs=6)


def test_scene_detection_still_decodes_everything(minute):
    with SparseReader(minute.path, ClipOptions(scenes="adaptive", max_clip=10, frames=2)) as r:
        clips = list(r.clips())
        assert r.info.frames_decoded == minute.frames
    assert not hasattr(clips[0], "frames_decoded")


def test_describe_records_frames_decoded(minute, tmp_path):
    from tarsier.common.files import read_jsonl as read_records
    from tarsier.engine.describe import describe

    s = describe([str(minute.path)], model="tiny-random", device="cpu", output_dir=tmp_path, scenes="none",
                 max_clip=10, frames=2, max_new_tokens=2, workers=0)
    assert s.exit_code == 0
    recs = list(read_records(tmp_path / "descriptions.jsonl"))
    assert len(recs) == 6 and all(1 <= r["frames_decoded"] <= 27 for r in recs)
    assert sum(r["frames_decoded"] for r in recs) <= 0.2 * minute.frames
