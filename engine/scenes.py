"""Scene detection (PySceneDetect 0.7's detectors, fed from our own decode pass) and the streaming
planner that turns cuts into clips.

Detectors see each frame's real timestamp (pts in the stream's time base, the way PySceneDetect's own
PyAV backend times frames), so variable frame rate video is timed by pts, never by frame counts, and
report cuts in seconds. The default (adaptive) and content detectors are PySceneDetect's rules
re-stated on plain numbers (LeanAdaptive, LeanContent: the same frame score bit for bit and the same
decisions, tests/test_scene_score.py); the threshold detector is PySceneDetect's own behind the same
calls (PySceneDetectCuts).

The planner is pure arithmetic on times (no frames), so it is unit-testable on its own:

- scenes shorter than `min_clip` are merged into the next scene (the last one into the previous);
- scenes longer than `max_clip` are split into near-equal windows, each <= max_clip;
- memory stays bounded by max_clip: while no cut is pending and the open region is already longer
  than 2*max_clip (past the detector's reporting delay), a window of exactly max_clip is emitted
  from its start. The remaining part is then still >= max_clip, so when the scene finally ends its
  last part (between max_clip and ~2*max_clip) is split near-equally and every window is
  >= max_clip/2. A scene that ends within 2*max_clip gets the plain near-equal split.
- a clip is emitted as soon as it is final: its end cut is known and at least `min_clip` of video
  follows it (so a short tail can still be merged into it).
"""
from __future__ import annotations

import math
from collections import deque
from fractions import Fraction
from itertools import compress, pairwise

SCENE_MODES = ("adaptive", "content", "threshold", "none")

_EPS = 1e-6


def make_detector(mode: str, threshold: float | None, min_scene_len: float, time_base: Fraction,
                  rate: Fraction | float, stock: bool = False):
    """A fresh cut detector for frames timed in `time_base` units (or None for mode 'none'): feed it
    `push(pts, bgr_image)` for every frame in order, then `finish(last_pts)`; both return cut times in
    seconds. Content and adaptive get LeanContent / LeanAdaptive (PySceneDetect's decisions and frame
    score on plain numbers: the same cuts, tests/test_scene_score.py); threshold, or any mode with
    `stock=True`, gets PySceneDetect's own detector behind the same calls."""
    if mode == "none":
        return None
    if mode not in SCENE_MODES:
        raise ValueError(f"unknown scene mode {mode!r} (choose from {', '.join(SCENE_MODES)})")
    msl = float(min_scene_len)  # float -> seconds in PySceneDetect 0.7
    if mode == "adaptive" and not stock:
        return LeanAdaptive(time_base, msl, *(() if threshold is None else (float(threshold),)))
    if mode == "content" and not stock:
        return LeanContent(time_base, msl, *(() if threshold is None else (float(threshold),)))
    from scenedetect.detectors import AdaptiveDetector, ContentDetector, ThresholdDetector

    key = {"adaptive": "adaptive_threshold"}.get(mode, "threshold")
    kw = {} if threshold is None else {key: float(threshold)}
    cls = {"adaptive": AdaptiveDetector, "content": ContentDetector, "threshold": ThresholdDetector}[mode]
    return PySceneDetectCuts(cls(min_scene_len=msl, **kw), time_base, rate)


class PySceneDetectCuts:
    """A PySceneDetect detector behind push/finish: each frame gets the FrameTimecode PySceneDetect's
    PyAV backend would build (`Timecode(pts, time_base)` at the average rate), so variable frame rate
    video is timed by pts."""

    def __init__(self, detector, time_base: Fraction, rate: Fraction | float):
        self.detector = detector
        self.time_base = Fraction(time_base)
        self.rate = rate
        # AdaptiveDetector reports a cut window_width frames late
        self.lag_frames = int(getattr(detector, "window_width", 0) or 0) + 2
        self._last = None

    def push(self, pts: int, image) -> list[float]:
        from scenedetect.common import FrameTimecode, Timecode

        self._last = FrameTimecode(Timecode(pts=pts, time_base=self.time_base), fps=self.rate)
        return [float(c.seconds) for c in self.detector.process_frame(self._last, image)]

    def finish(self) -> list[float]:
        if self._last is None or not hasattr(self.detector, "post_process"):
            return []
        return [float(c.seconds) for c in self.detector.post_process(self._last) or []]


def content_score(hsv, last_hsv) -> float:
    """PySceneDetect ContentDetector's frame score with its default weights (hue, saturation and
    value 1, edges 0) between two HSV images, in fewer passes: each channel's mean absolute difference
    from cv2.absdiff + cv2.sumElems (exact integer sums, as numpy's int32 sum) instead of two int32
    copies, a subtraction, an abs and a sum per channel. Every float operation of PySceneDetect's
    `sum(c * w) / sum(abs(w))` with weights 1, 1, 1, 0 is kept or exact (x * 1.0, x + 0.0), so the
    number is the same bit for bit."""
    import cv2

    sums = cv2.sumElems(cv2.absdiff(hsv, last_hsv))
    pixels = float(hsv.shape[0] * hsv.shape[1])
    return (sums[0] / pixels + sums[1] / pixels + sums[2] / pixels) / 3.0


def _min_length_pts(time_base: Fraction, seconds: float) -> int:
    """The fewest time_base units d with float(time_base * d) >= seconds: PySceneDetect's
    `(later - earlier) >= min_scene_len` on Timecode-backed FrameTimecodes of one time base is
    `float(time_base * max(0, later.pts - earlier.pts)) >= min_scene_len`, monotonic in the pts
    difference, so comparing the integer difference with d decides the same."""
    tb = Fraction(time_base)
    if seconds <= 0.0:
        return 0
    d = max(0, math.floor(seconds / float(tb)) - 2)
    while float(tb * d) < seconds:
        d += 1
    return d


class _LeanBase:
    """Shared by LeanAdaptive and LeanContent: HSV of each frame, the frame score, pts -> seconds."""

    lag_frames = 2

    def __init__(self, time_base: Fraction, min_scene_len: float):
        import cv2

        self._hsv_code = cv2.COLOR_BGR2HSV
        self._cvt = cv2.cvtColor
        tb = Fraction(time_base)
        self._num, self._den = tb.numerator, tb.denominator
        self.min_scene_len = float(min_scene_len)
        self._min_pts = _min_length_pts(tb, self.min_scene_len)
        self._last_hsv = None
        self.frame_score: float | None = None

    def _met(self, a: int, b: int) -> bool:
        """min_scene_len has passed from pts a to pts b."""
        return max(0, b - a) >= self._min_pts

    def seconds(self, pts: int) -> float:
        # int / int is correctly rounded: the same float as PySceneDetect's float(time_base * pts)
        return pts * self._num / self._den

    def score(self, image) -> float:
        """ContentDetector._calculate_frame_score (default weights): 0.0 for the first frame."""
        hsv = self._cvt(image, self._hsv_code)
        last, self._last_hsv = self._last_hsv, hsv
        self.frame_score = 0.0 if last is None else content_score(hsv, last)
        return self.frame_score

    def finish(self) -> list[float]:
        return []   # neither detector has anything pending at the end (PySceneDetect's post_process: [])


class LeanAdaptive(_LeanBase):
    """PySceneDetect 0.7's AdaptiveDetector (default weights, window_width 2, min_content_val 15) on
    plain numbers: the frame score of each frame, its ratio to the mean score of the window_width
    frames on each side, a cut where the ratio reaches adaptive_threshold, the score min_content_val
    and min_scene_len has passed since the last cut (or the first frame). The same float operations in
    the same order, and integer pts instead of FrameTimecode/Fraction arithmetic (30-50 us a frame in
    PySceneDetect), so the same cuts (tests/test_scene_score.py feeds both the same scores)."""

    def __init__(self, time_base: Fraction, min_scene_len: float, adaptive_threshold: float = 3.0,
                 window_width: int = 2, min_content_val: float = 15.0):
        if window_width < 1:
            raise ValueError("window_width must be at least 1.")
        super().__init__(time_base, min_scene_len)
        self.adaptive_threshold = float(adaptive_threshold)
        self.window_width = int(window_width)
        self.min_content_val = float(min_content_val)
        self.lag_frames = self.window_width + 2
        n = 2 * self.window_width + 1
        self._pts: deque[int] = deque(maxlen=n)
        self._scores: deque[float] = deque(maxlen=n)
        self._around = [i != self.window_width for i in range(n)]   # the window without its centre
        self._last_cut: int | None = None

    def push(self, pts: int, image) -> list[float]:
        cut = self.push_score(pts, self.score(image))
        return [] if cut is None else [self.seconds(cut)]

    def push_score(self, pts: int, score: float) -> int | None:
        """The decision for a frame's score: the pts of a cut, or None."""
        if self._last_cut is None:
            self._last_cut = pts
        scores = self._scores
        self._pts.append(pts)
        scores.append(score)
        w = self.window_width
        if len(scores) <= 2 * w:
            return None
        target_pts, target_score = self._pts[w], scores[w]
        # PySceneDetect: sum(score for i, (_tc, score) in enumerate(buffer) if i != w) / (2.0 * w),
        # the same additions in the same order
        average = sum(compress(scores, self._around)) / (2.0 * w)
        ratio = 0.0
        if not abs(average) < 0.00001:
            ratio = min(target_score / average, 255.0)
        elif target_score >= self.min_content_val:
            ratio = 255.0
        if ratio >= self.adaptive_threshold and target_score >= self.min_content_val \
                and self._met(self._last_cut, target_pts):
            self._last_cut = target_pts
            return target_pts
        return None


class LeanContent(_LeanBase):
    """PySceneDetect 0.7's ContentDetector (default weights, FlashFilter in MERGE mode over
    min_scene_len seconds) on plain numbers, as LeanAdaptive: a frame whose score reaches `threshold`
    is a cut unless it comes within min_scene_len of the previous frame above the threshold; such
    runs are merged and reported at their last frame above the threshold once min_scene_len passes
    (the filter's exact rules, including that merging starts only after the first cut)."""

    def __init__(self, time_base: Fraction, min_scene_len: float, threshold: float = 27.0):
        super().__init__(time_base, min_scene_len)
        self.threshold = float(threshold)
        self._last_above: int | None = None
        self._merge_enabled = False
        self._merge_triggered = False
        self._merge_start = 0

    def push(self, pts: int, image) -> list[float]:
        return [self.seconds(c) for c in self.push_score(pts, self.score(image))]

    def push_score(self, pts: int, score: float) -> list[int]:
        """FlashFilter.filter(above_threshold=score >= threshold): the pts of the cuts reported now."""
        above = score >= self.threshold
        if self.min_scene_len <= 0.0:
            return [pts] if above else []
        if self._last_above is None:
            self._last_above = pts
        met = self._met(self._last_above, pts)
        if above:
            self._last_above = pts
        if self._merge_triggered:
            if met and not above and self._met(self._merge_start, self._last_above):
                self._merge_triggered = False
                return [self._last_above]
            return []
        if not above:
            return []
        if met:
            self._merge_enabled = True
            return [pts]
        if self._merge_enabled:
            self._merge_triggered = True
            self._merge_start = pts
        return []


def detector_lag_frames(detector) -> int:
    """How many frames behind the current one a cut may be reported (adaptive: window_width + 2)."""
    return 0 if detector is None else int(detector.lag_frames)


class ClipPlanner:
    """Streaming scenes -> clips. Feed cuts with add_cut(), call ready() after every frame and
    finish() at the end; both return final (start, end) clip spans in time order."""

    def __init__(self, min_clip: float, max_clip: float | None, start: float = 0.0,
                 expected_end: float | None = None, detecting: bool = True):
        if max_clip is not None and max_clip <= 0:
            raise ValueError("max_clip must be > 0")
        if min_clip < 0:
            raise ValueError("min_clip must be >= 0")
        if max_clip is not None and min_clip > max_clip:
            raise ValueError("min_clip must not exceed max_clip")
        self.min_clip = float(min_clip)
        self.max_clip = None if max_clip is None else float(max_clip)
        self.seg_start = float(start)   # start of the region not yet emitted
        self.cuts: list[float] = []     # pending cuts (increasing, > seg_start)
        self.cuts_seen: list[float] = []  # every cut the detector reported (for inspection)
        self.cuts_dropped = 0           # cuts reported inside already-emitted time (late or out of order)
        # Without a detector (scenes=none) no cut can come: fixed windows, near-equal over the
        # expected duration when the container tells it, emitted as soon as min_clip follows them.
        self.window: float | None = None
        if not detecting and self.max_clip is not None:
            self.window = self.max_clip
            if expected_end and expected_end > start:
                n = math.ceil((expected_end - start) / self.max_clip - 1e-9)
                self.window = (expected_end - start) / max(1, n)

    def add_cut(self, t: float) -> None:
        self.cuts_seen.append(t)
        last = self.cuts[-1] if self.cuts else self.seg_start
        if t <= last + _EPS:
            self.cuts_dropped += 1
            return
        self.cuts.append(t)

    def _split(self, a: float, b: float) -> list[tuple[float, float]]:
        m = self.max_clip
        if m is None or b - a <= m + _EPS:
            return [(a, b)]
        n = math.ceil((b - a) / m - 1e-9)
        step = (b - a) / n
        edges = [a + i * step for i in range(n)] + [b]
        return list(pairwise(edges))

    def _merge_short_first(self) -> None:
        while self.cuts and self.cuts[0] - self.seg_start < self.min_clip - _EPS:
            self.cuts.pop(0)

    def ready(self, now_end: float, safe: float) -> list[tuple[float, float]]:
        """now_end: end time of the last decoded frame; safe: no future cut can be earlier."""
        out: list[tuple[float, float]] = []
        while True:
            self._merge_short_first()
            if self.cuts and now_end - self.cuts[0] >= self.min_clip - _EPS:
                c = self.cuts.pop(0)
                out.extend(self._split(self.seg_start, c))
                self.seg_start = c
                continue
            w = self.window
            if w is not None and now_end - (self.seg_start + w) >= self.min_clip - _EPS \
                    and now_end - (self.seg_start + w) > _EPS:
                out.append((self.seg_start, self.seg_start + w))
                self.seg_start += w
                continue
            m = self.max_clip
            if w is None and m is not None and not self.cuts and safe - self.seg_start >= 2 * m:
                out.append((self.seg_start, self.seg_start + m))
                self.seg_start += m
                continue
            return out

    def finish(self, end: float) -> list[tuple[float, float]]:
        bounds = [self.seg_start] + [c for c in self.cuts if c < end - _EPS] + [end]
        self.cuts = []
        # merge short scenes forward
        i = 0
        while i < len(bounds) - 2:
            if bounds[i + 1] - bounds[i] < self.min_clip - _EPS:
                del bounds[i + 1]
            else:
                i += 1
        # the last one into the previous
        if len(bounds) > 2 and bounds[-1] - bounds[-2] < self.min_clip - _EPS:
            del bounds[-2]
        out: list[tuple[float, float]] = []
        for a, b in pairwise(bounds):
            if b > a:
                out.extend(self._split(a, b))
        if not out:
            out = [(self.seg_start, max(end, self.seg_start))]
        self.seg_start = end
        return out
