from __future__ import annotations

import os
from itertools import pairwise

import av
import numpy as np
import pytest
import videogen

from tarsier.common.types import VideoError
from tarsier.engine.sampling import sample_indices
from tarsier.engine.scenes import ClipPlanner
from tarsier.engine.video import ClipOptions, VideoReader, read_clips


def spans(clips):
    return [(round(c.start, 3), round(c.end, 3)) for c in clips]


def assert_tiles(info, clips):
    assert clips, "no clips"
    assert clips[0].start == 0.0
    for a, b in pairwise(clips):
        assert a.end == pytest.approx(b.start, abs=1e-9)
        assert a.end > a.start
    assert clips[-1].end == pytest.approx(info.duration, abs=1e-6)
    assert [c.index for c in clips] == list(range(len(clips)))


def starts(clips):
    return [c.start for c in clips[1:]]


# -- pure helpers ---------------------------------------------------------------------------

def test_sample_indices_tarsier_rule():
    assert sample_indices(8, 8) == list(range(8))
    assert sample_indices(15, 8) == [0, 2, 4, 6, 8, 10, 12, 14]
    assert sample_indices(5, 1) == [2]
    assert sample_indices(1, 4) == [0, 0, 0, 0]
    assert sample_indices(3, 8) == [0, 0, 1, 1, 1, 1, 2, 2]
    assert sample_indices(100, 8)[0] == 0 and sample_indices(100, 8)[-1] == 99


def test_planner_merges_short_scenes_and_splits_long():
    p = ClipPlanner(min_clip=1.0, max_clip=4.0)
    for c in (0.5, 3.0, 3.4, 9.5):
        p.add_cut(c)
    assert p.ready(now_end=3.6, safe=3.5) == []   # not final: a short tail may follow
    out = p.ready(now_end=4.1, safe=3.5)        # [0,3] is final: 0.5 merged forward
    assert out == [(0.0, 3.0)]
    out += p.finish(end=10.0)                    # [3,3.4] merged forward, last 0.5 s into previous
    assert [(round(a, 3), round(b, 3)) for a, b in out] == [(0.0, 3.0), (3.0, 6.5), (6.5, 10.0)]


def test_planner_long_open_scene_is_emitted_early():
    p = ClipPlanner(min_clip=1.0, max_clip=5.0)
    out = []
    t = 0.0
    while t < 60:
        out += p.ready(now_end=t + 0.1, safe=t - 1.0)
        t += 0.1
    out += p.finish(end=60.0)
    assert out[0] == (0.0, 5.0)
    assert all(b - a <= 5.0 + 1e-6 and b - a >= 2.5 - 1e-6 for a, b in out)
    assert out[-1][1] == 60.0


# -- generated videos -----------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["adaptive", "content"])
def test_cuts_found(videos, mode):
    gv = videos["cuts"]
    info, clips = read_clips(gv.path, ClipOptions(scenes=mode))
    assert_tiles(info, clips)
    assert len(clips) == 4
    assert starts(clips) == pytest.approx(gv.cuts, abs=2 / gv.fps + 1e-6)
    assert info.duration == pytest.approx(gv.duration, abs=1e-6)
    for c in clips:
        assert c.frames.shape == (8, 224, 224, 3) and c.frames.dtype == np.uint8
        assert len(c.frame_times) == 8
        assert all(c.start <= t < c.end for t in c.frame_times)
        assert c.frame_times == sorted(c.frame_times)
        # first and last candidates of the clip are sampled
        assert c.frame_times[0] - c.start < 0.1 + 1e-6 and c.end - c.frame_times[-1] < 0.2


def test_one_decode_pass_counts_every_frame(videos):
    for name in ("cuts", "vfr", "hd", "late"):
        gv = videos[name]
        with VideoReader(gv.path, ClipOptions()) as r:
            list(r.clips())
            assert r.info.frames_decoded == videogen.count_frames(gv.path) == gv.frames


def test_min_clip_merges_short_scene(videos):
    gv = videos["short_scene"]
    opts = ClipOptions(scenes="content", min_scene_len=0.1)
    with VideoReader(gv.path, opts) as r:
        clips = list(r.clips())
        assert r.stats["cuts"] == pytest.approx([2.0, 2.4], abs=0.09)   # the detector saw both
    assert len(clips) == 2                                                # 0.4 s scene merged forward
    assert clips[1].start == pytest.approx(2.0, abs=0.09)
    _, clips = read_clips(gv.path, ClipOptions(scenes="content", min_scene_len=0.1, min_clip=0.2))
    assert len(clips) == 3


def test_max_clip_splits(videos):
    gv = videos["long"]
    info, clips = read_clips(gv.path, ClipOptions(max_clip=6.0))
    assert_tiles(info, clips)
    assert spans(clips) == [(0.0, 5.0), (5.0, 10.0)]
    info, clips = read_clips(gv.path, ClipOptions(max_clip=4.0))
    assert_tiles(info, clips)
    assert all(2.0 <= c.end - c.start <= 4.0 + 1e-6 for c in clips)
    info, clips = read_clips(gv.path, ClipOptions(max_clip=None))
    assert spans(clips) == [(0.0, 10.0)]


def test_scenes_none(videos):
    gv = videos["cuts"]
    info, clips = read_clips(gv.path, ClipOptions(scenes="none", max_clip=None))
    assert spans(clips) == [(0.0, 8.0)]
    info, clips = read_clips(gv.path, ClipOptions(scenes="none", max_clip=3.0))
    assert_tiles(info, clips)
    assert [c.end - c.start for c in clips] == pytest.approx([8 / 3] * 3, abs=1e-6)


def test_vfr_timed_by_timestamps(videos):
    gv = videos["vfr"]
    info, clips = read_clips(gv.path, ClipOptions())
    assert_tiles(info, clips)
    assert starts(clips) == pytest.approx(gv.cuts, abs=0.1 + 1e-6)
    written = np.array(gv.frame_times)
    for c in clips:
        for t in c.frame_times:
            assert np.min(np.abs(written - t)) < 1e-3    # every frame time is a real pts
    assert info.duration == pytest.approx(gv.duration, abs=0.05)  # last frame duration from the muxer


def test_rotation_applied(videos):
    gv = videos["rotated"]
    info, clips = read_clips(gv.path, ClipOptions(frame_size=32))
    assert (info.width, info.height) == (64, 96) and info.rotation == 90
    with av.open(str(gv.path)) as c:
        f = next(c.decode(video=0))
        assert f.rotation == -90
        plain = f.reformat(width=32, height=32, format="rgb24", interpolation="AREA").to_ndarray()
    assert np.array_equal(clips[0].frames[0], np.rot90(plain, -1))


def test_hd_is_downscaled_for_detection(videos):
    gv = videos["hd"]
    with VideoReader(gv.path, ClipOptions()) as r:
        assert (r.info.width, r.info.height) == (1920, 1080)
        clips = list(r.clips())
        assert r.stats["detect_size"] == (128, 72)
        assert r.stats["detect_from_planes"] == r.info.frames_decoded == 20
    assert starts(clips) == pytest.approx([1.0], abs=0.2)


def test_detection_images_from_planes_are_swscales_colours(videos):
    """Unsampled (step 1), a detection image from the planes is cv2's I420 -> BGR of the very pixels
    swscale converts for PySceneDetect's own pipeline: the same image up to rounding (swapped chroma
    planes or the wrong range would be tens of levels off)."""
    from tarsier.engine.video import DetectionImages

    with av.open(str(videos["cuts"].path)) as c:
        images = None
        for f in c.decode(video=0):
            if images is None:
                images = DetectionImages(f.width, f.height, f.width)
                assert (images.step, images.width, images.height) == (1, f.width, f.height)
            diff = np.abs(images(f).astype(np.int16) - f.to_ndarray(format="bgr24").astype(np.int16))
            assert diff.mean() < 2 and np.percentile(diff, 99) <= 8
        assert images.sampled == videos["cuts"].frames and images.scaled == 0


def test_single_frame_video_is_one_short_clip(videos):
    gv = videos["single"]
    info, clips = read_clips(gv.path, ClipOptions())
    assert info.frames_decoded == 1
    assert spans(clips) == [(0.0, 0.04)]
    assert clips[0].frames.shape == (8, 224, 224, 3)
    assert np.array_equal(clips[0].frames[0], clips[0].frames[-1])


def test_late_stream_times_from_container_start(videos):
    gv = videos["late"]
    info, clips = read_clips(gv.path, ClipOptions())
    assert_tiles(info, clips)
    assert clips[0].frame_times[0] == 0.0
    assert starts(clips) == pytest.approx([1.0], abs=0.09)


def test_frames_option_and_no_sampling(videos):
    gv = videos["cuts"]
    _, clips = read_clips(gv.path, ClipOptions(frames=1, frame_size=16))
    assert all(c.frames.shape == (1, 16, 16, 3) for c in clips)
    _, clips = read_clips(gv.path, ClipOptions(sample_frames=False))
    assert len(clips) == 4 and all(c.frames.shape[0] == 0 for c in clips)


def _uniform(c, n=8):
    """Sampled times are distinct, cover the clip, and no step is far from the ideal spacing."""
    ts = c.frame_times
    ideal = (c.end - c.start) / (n - 1)
    steps = np.diff(ts)
    return len(set(ts)) == n and steps.min() > 0.3 * ideal and steps.max() < 1.8 * ideal


def test_memory_bounded_by_max_clip(tmp_path):
    gv = videogen.make_video(tmp_path / "long.mp4", [(60.0, 1), (60.0, 2)], fps=10, size=(64, 48))
    with VideoReader(gv.path, ClipOptions(max_clip=5.0, frame_size=8)) as r:
        clips = list(r.clips())
        assert r.stats["max_buffer"] <= r.stats["buffer_cap"]
        assert r.stats["max_buffer"] < r.stats["candidates"] / 8
        assert r.stats["decimations"] == 0
    assert all(c.end - c.start <= 5.0 + 1e-6 for c in clips)
    assert all(_uniform(c) for c in clips)
    # default max_clip=30: old candidates of the long open scene are thinned (a few dozen held)
    with VideoReader(gv.path, ClipOptions(frame_size=8)) as r:
        clips = list(r.clips())
        assert r.stats["max_buffer"] <= 130 < r.stats["buffer_cap"]
    assert len(clips) == 4 and all(_uniform(c) for c in clips)
    # no limit: thinning alone keeps the buffer small, each clip still gets N frames uniform in time
    with VideoReader(gv.path, ClipOptions(max_clip=None, frame_size=8)) as r:
        clips = list(r.clips())
        assert r.stats["max_buffer"] <= 80 and r.stats["decimations"] == 0
    assert len(clips) == 2 and all(_uniform(c) for c in clips)
    # a hard cap is kept by decimation (every other candidate, keep interval doubled)
    with VideoReader(gv.path, ClipOptions(max_clip=None, max_candidates=32, frame_size=8)) as r:
        clips = list(r.clips())
        assert r.stats["max_buffer"] <= 32 and r.stats["decimations"] > 0
    assert len(clips) == 2 and all(_uniform(c) for c in clips)


def test_pick_frames_uniform_in_time_over_uneven_candidates():
    from tarsier.engine.sampling import Candidate, pick_frames

    # sparse (thinned) old part, dense recent part: picks stay uniform in time
    times = [0.0, 1.6, 3.2, 4.8, 6.4, 8.0] + [8.0 + 0.1 * i for i in range(1, 21)]
    chosen = [c.time for c in pick_frames([Candidate(t, None) for t in times], 5)]
    assert chosen == pytest.approx([0.0, 3.2, 4.8, 8.0, 10.0])
    even = [Candidate(float(i), None) for i in range(15)]
    assert [c.time for c in pick_frames(even, 8)] == [float(i) for i in sample_indices(15, 8)]


# -- bad inputs ------------------------------------------------------------------------------

@pytest.mark.parametrize("name,stage,words", [
    ("empty", "open", "empty"),
    ("random", "open", "not a readable video"),
    ("text", "open", "not a readable video"),
    ("truncated", "open", "not a readable video"),
    ("audio_only", "probe", "no video stream"),
])
def test_bad_inputs(videos, name, stage, words):
    with pytest.raises(VideoError) as e:
        read_clips(videos[name], ClipOptions())
    assert e.value.stage == stage and words in e.value.message
    assert "\n" not in str(e.value)


def test_missing_and_folder(tmp_path):
    with pytest.raises(VideoError) as e:
        read_clips(tmp_path / "vanished.mp4", ClipOptions())
    assert e.value.stage == "open" and "not found" in e.value.message
    with pytest.raises(VideoError) as e:
        read_clips(tmp_path, ClipOptions())
    assert e.value.stage == "open"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can read anything")
def test_unreadable(videos, tmp_path):
    p = tmp_path / "locked.mp4"
    p.write_bytes(videos["cuts"].path.read_bytes())
    p.chmod(0)
    with pytest.raises(VideoError) as e:
        read_clips(p, ClipOptions())
    assert e.value.stage == "open" and "permission" in e.value.message


def test_corrupt_mid_stream_emits_what_decodes(videos):
    gv = videos["corrupt_mid"]
    with VideoReader(gv.path, ClipOptions()) as r:
        clips = list(r.clips())
        assert 0 < r.info.frames_decoded <= gv.frames
    assert_tiles(r.info, clips)


def test_clips_only_once(videos):
    with VideoReader(videos["cuts"].path, ClipOptions()) as r:
        list(r.clips())
        with pytest.raises(VideoError):
            list(r.clips())


# -- the real samples ------------------------------------------------------------------------

def test_shared_samples(shared_videos):
    expected = {   # cut times checked by eye on contact sheets of the files
        "counter.mp4": [1.0, 2.0],
        "delayed_start.mp4": [],
        "fades.mp4": [],                       # gradual fades are not cuts for the adaptive detector
        "goldeneye-vfr-drop3.mp4": [3.754, 8.759],
    }
    for name, cuts in expected.items():
        p = shared_videos / name
        if not p.exists():
            continue
        with VideoReader(p, ClipOptions()) as r:
            clips = list(r.clips())
            assert r.info.frames_decoded == videogen.count_frames(p)
        assert_tiles(r.info, clips)
        assert starts(clips) == pytest.approx(cuts, abs=0.09), name
    # the threshold detector cuts in the dark middle of each fade to black (about 3.2-3.5 s and 6.7 s)
    info, clips = read_clips(shared_videos / "fades.mp4", ClipOptions(scenes="threshold"))
    assert_tiles(info, clips)
    assert starts(clips) == pytest.approx([3.36, 6.68], abs=0.09)


@pytest.mark.parametrize("mode", ["adaptive", "content", "threshold"])
def test_cuts_agree_with_pyscenedetect_own_pipeline(shared_videos, videos, video_dir, mode):
    """Same detector rules, fed by our single pass (128-px frames sampled from the decoded planes, real
    pts; engine.scenes' lean adaptive/content detectors) vs scenedetect.detect() (full-size BGR frames
    resized to 256 px by cv2, PySceneDetect's own detectors): the sample videos, the generated ones
    with known cuts, and one stored as yuv444p (its detection frames come from swscale instead)."""
    from scenedetect import AdaptiveDetector, ContentDetector, ThresholdDetector, detect

    yuv444 = video_dir / "cuts_yuv444.mp4"
    if not yuv444.exists():
        videogen.make_video(yuv444, [(2.0, 0), (1.5, 1), (2.5, 2), (2.0, 3)], fps=25, pix_fmt="yuv444p")
    generated = [videos[k].path for k in ("cuts", "short_scene", "vfr", "hd", "late")]
    cls = {"adaptive": AdaptiveDetector, "content": ContentDetector, "threshold": ThresholdDetector}[mode]
    cuts = 0
    for p in [*sorted(shared_videos.glob("*.mp4")), *generated, yuv444]:
        ref = [s[0].seconds for s in detect(str(p), cls(min_scene_len=0.6), backend="pyav")][1:]
        with VideoReader(p, ClipOptions(scenes=mode, min_clip=0, max_clip=None, sample_frames=False)) as r:
            clips = list(r.clips())
            assert r.stats["detect_scaled" if p == yuv444 else "detect_from_planes"] == r.info.frames_decoded
        assert starts(clips) == pytest.approx(ref, abs=1e-3), p.name
        cuts += len(ref)
    assert cuts >= (2 if mode == "threshold" else 10)   # the threshold detector cuts only in fades.mp4


def test_permission_error_is_clear(videos, monkeypatch):
    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(av, "open", denied)
    with pytest.raises(VideoError) as e:
        read_clips(videos["cuts"].path, ClipOptions())
    assert e.value.stage == "open" and e.value.message == "permission denied"


def test_last_clip_ends_with_the_video_not_past_it(shared_videos):
    # goldeneye-vfr-drop3.mp4 stores 2002/24000 s as its last frame's duration (a dropped frame),
    # while the container says the video ends 1001/24000 s after that frame (9.968 s)
    for p in sorted(shared_videos.glob("*.mp4")):
        with av.open(str(p)) as c:
            origin = (c.start_time or 0) / 1e6
            stated = c.duration / 1e6
            last = max(float(f.pts * f.time_base) for f in c.decode(video=0)) - origin
        info, clips = read_clips(p, ClipOptions(scenes="none"))
        assert last < clips[-1].end <= stated + 1e-6, p.name
        assert clips[-1].end == info.duration
    info, clips = read_clips(shared_videos / "goldeneye-vfr-drop3.mp4", ClipOptions())
    assert clips[-1].end == pytest.approx(239239 / 24000, abs=1e-6)
