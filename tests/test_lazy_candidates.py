"""Candidates are resized only when a clip picks them (engine.sampling.CandidateBuffer with `resize`):
same frames as resizing every candidate on arrival, far fewer resizes, decoded frames held bounded."""
from __future__ import annotations

import numpy as np
import pytest
import videogen

import tarsier.engine.video as video
from tarsier.engine.sampling import CandidateBuffer
from tarsier.engine.video import ClipOptions, VideoReader


def test_buffer_resizes_on_demand_and_never_what_it_drops():
    calls = []

    def resize(src):
        calls.append(src)
        return np.full((2, 2, 3), src, np.uint8)

    buf = CandidateBuffer(base_interval=0.0, cap=8, resize=resize, max_pending=3)
    for i in range(3):
        buf.add(float(i), None, i)
    assert calls == [] and buf.pending == 3
    buf.add(3.0, None, 3)                  # one over the bound: the oldest is resized
    assert calls == [0] and buf.pending == 3 and buf.max_pending_seen == 3
    buf.thin_before(3.5, 0.0, 2.0)         # cells [0,2) [2,4): 1 and 3 go, never resized
    assert [c.time for c in buf.items] == [0.0, 2.0]
    assert buf.pending == 1 and calls == [0]
    popped = buf.pop_until(10.0)
    assert buf.pending == 0
    assert int(buf.image(popped[1])[0, 0, 0]) == 2 and calls == [0, 2]
    assert buf.image(popped[1]) is popped[1].image and calls == [0, 2]   # once only
    assert buf.resized == 2
    with pytest.raises(ValueError):
        CandidateBuffer(base_interval=0.0, cap=8).add(0.0, None, object())


def test_decimation_releases_what_it_drops():
    buf = CandidateBuffer(base_interval=0.0, cap=4, resize=lambda s: np.zeros((1, 1, 3), np.uint8), max_pending=10)
    for i in range(5):
        buf.add(float(i), None, i)
    assert buf.decimations == 1 and [c.time for c in buf.items] == [0.0, 2.0, 4.0]
    assert buf.pending == 3 and all(c.source is not None for c in buf.items)
    assert buf.resized == 0


def _clips(path, options):
    with VideoReader(path, options) as r:
        clips = list(r.clips())
        return clips, dict(r.stats)


@pytest.mark.parametrize("rotate", [0, 90])
def test_lazy_frames_are_those_resizing_on_arrival_gives(tmp_path, monkeypatch, rotate):
    gv = videogen.make_video(tmp_path / "v.mp4", [(6.0, 1), (5.0, 2)], fps=25, size=(96, 64), rotation=rotate or None)
    opts = dict(max_clip=4.0, frames=4, frame_size=32)
    clips, stats = _clips(gv.path, ClipOptions(**opts))
    assert stats["resized"] < stats["candidates"] / 3
    # with the fewest decoded frames held (most candidates resized on arrival): the very same frames
    monkeypatch.setattr(video, "PENDING_BYTES", 1)
    eager, eager_stats = _clips(gv.path, ClipOptions(**opts))
    assert eager_stats["max_pending"] <= 2 * opts["frames"] < stats["max_pending"]
    assert eager_stats["resized"] > stats["resized"]
    assert [(c.start, c.end, c.frame_times) for c in clips] == [(c.start, c.end, c.frame_times) for c in eager]
    for a, b in zip(clips, eager):
        assert np.array_equal(a.frames, b.frames)
    assert clips[0].frames.shape[1:] == (32, 32, 3)


def test_a_long_scene_is_thinned_before_its_candidates_must_be_resized(tmp_path, monkeypatch):
    # a 1080p frame is 3 MB, so the pending budget holds about 40 candidates: a long scene used to fill
    # it before the first thinning (at 64 candidates) and then resize the oldest on every new one, only
    # for most of them to be thinned away; thinning now comes first, so about the picked ones are resized
    import av

    gv = videogen.make_video(tmp_path / "v.mp4", [(14.0, 1)], fps=25, size=(96, 64))
    with av.open(str(gv.path)) as c:
        frame_bytes = sum(p.buffer_size for p in next(c.decode(video=0)).planes)
    monkeypatch.setattr(video, "PENDING_BYTES", 41 * frame_bytes)
    clips, stats = _clips(gv.path, ClipOptions(scenes="none", max_clip=None, min_clip=0))
    picked = sum(len(c.frame_times) for c in clips)
    assert stats["candidates"] > 100 and picked == 8
    assert stats["resized"] <= picked + 4, stats
