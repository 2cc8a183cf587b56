"""engine.scenes' LeanAdaptive and LeanContent make PySceneDetect's decisions: the same frame score, bit
for bit, on the same images, and the same cuts from the same scores and timestamps."""
from __future__ import annotations

import random
from fractions import Fraction

import av
import pytest
from scenedetect.common import FrameTimecode, Timecode
from scenedetect.detectors import AdaptiveDetector, ContentDetector

from tarsier.engine.scenes import LeanAdaptive, LeanContent, make_detector
from tarsier.engine.video import DetectionImages

STOCK = {"adaptive": AdaptiveDetector, "content": ContentDetector}


def detection_frames(path, width=256, ours=True):
    """(pts, time_base, rate, BGR image) per frame: the pipeline's own detection images (ours), or
    swscale's bgr24 at the same size (the pipeline's input before, and a second set of pixels)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        images = None
        for f in c.decode(s):
            if images is None:
                images = DetectionImages(f.width, f.height, width)
            img = images(f) if ours else f.to_ndarray(width=images.width, height=images.height, format="bgr24")
            yield f.pts, s.time_base, s.average_rate, img


@pytest.mark.parametrize("mode", ["adaptive", "content"])
def test_same_scores_and_cuts_as_pyscenedetect(videos, shared_videos, mode):
    total = 0
    for path in (videos["cuts"].path, videos["vfr"].path, shared_videos / "goldeneye-vfr-drop3.mp4",
                 shared_videos / "counter.mp4"):
        for width, ours_images in ((256, True), (128, True), (256, False)):
            ours = theirs = None
            cuts_ours, cuts_theirs = [], []
            for pts, tb, rate, img in detection_frames(path, width, ours_images):
                if ours is None:
                    ours = make_detector(mode, None, 0.6, tb, rate)
                    theirs = STOCK[mode](min_scene_len=0.6)
                    assert isinstance(ours, (LeanAdaptive, LeanContent))
                cuts_ours += ours.push(pts, img)
                tc = FrameTimecode(Timecode(pts=pts, time_base=tb), fps=rate)
                cuts_theirs += [c.seconds for c in theirs.process_frame(tc, img)]
                assert ours.frame_score == theirs._frame_score   # bit for bit
            assert cuts_ours == cuts_theirs, (path.name, width, ours_images)
            total += len(cuts_theirs)
    assert total >= 20, "the samples have cuts: the comparison means something"


class _Fed:
    """A PySceneDetect detector whose frame score is given (the decisions alone are compared)."""

    score = 0.0

    def _calculate_frame_score(self, timecode, frame_img):
        return self.score


def _score_sequences(rng: random.Random, n: int) -> list[float]:
    """Motion-like scores with cuts, flashes (cut runs closer than min_scene_len), zero stretches
    (still frames: the adaptive average is zero) and values right at the thresholds."""
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.06:
            out.append(rng.uniform(20, 120))                 # a cut
        elif r < 0.09:
            out.append(rng.choice([15.0, 27.0, 45.0, 0.0]))  # at min_content_val / threshold, or still
        elif r < 0.15 and out:
            out.append(out[-1])                               # a repeat
        elif r < 0.25:
            out.append(0.0)
        else:
            out.append(rng.expovariate(1 / 4.0))
    return out


@pytest.mark.parametrize("mode", ["adaptive", "content"])
def test_same_cuts_as_pyscenedetect_on_given_scores(mode):
    """Many random score sequences, frame timings (constant rate, VFR gaps, repeated pts, 1/90000 and
    1001/24000-style time bases) and settings: LeanAdaptive/LeanContent report PySceneDetect's cuts."""
    rng = random.Random(22)
    stock = type(f"Fed{mode}", (_Fed, STOCK[mode]), {})
    total = merged = 0
    for case in range(300):
        tb = rng.choice([Fraction(1, 25), Fraction(1, 90000), Fraction(1, 24000), Fraction(1, 1000)])
        fps = rng.choice([Fraction(25), Fraction(24000, 1001), Fraction(30), Fraction(10)])
        step = max(1, round(1 / (fps * tb)))
        msl = rng.choice([0.0, 0.1, 0.6, 0.6, 1.0, 1 / 3])
        threshold = None if case % 3 == 0 else rng.choice([1.5, 2.0, 3.0, 5.0] if mode == "adaptive"
                                                           else [10.0, 20.0, 27.0, 40.0])
        kw = {} if threshold is None else {"adaptive_threshold" if mode == "adaptive" else "threshold": threshold}
        theirs = stock(min_scene_len=msl, **kw)
        ours = make_detector(mode, threshold, msl, tb, fps)
        pts = rng.randrange(0, 50) * step
        got, want = [], []
        for score in _score_sequences(rng, rng.randrange(5, 400)):
            theirs.score = score
            tc = FrameTimecode(Timecode(pts=pts, time_base=tb), fps=fps)
            want += [(c.seconds, c.seconds < tc.seconds) for c in theirs.process_frame(tc, None)]
            new = ours.push_score(pts, score)
            got += [ours.seconds(p) for p in ([] if new is None else [new] if isinstance(new, int) else new)]
            pts += rng.choice([step, step, step, 2 * step, 0, step + 1])
        assert got == [t for t, _ in want], (case, tb, msl, threshold)
        total += len(want)
        merged += sum(late for _, late in want)
    assert total > 1000
    if mode == "content":
        assert merged > 20, "flash filter merges were exercised"
