"""Scene detection (PySceneDetect 0.7 detectors fed from our own decode pass) and the streaming
planner that turns cuts into clips.

Detectors receive `FrameTimecode(Timecode(pts, time_base), fps=average_rate)` built from the real
frame timestamps (the same way PySceneDetect's own PyAV backend does), so variable frame rate
video is timed by pts, never by frame counts. Cuts come back as FrameTimecodes; we use `.seconds`.

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
from itertools import pairwise

SCENE_MODES = ("adaptive", "content", "threshold", "none")

_EPS = 1e-6


def make_detector(mode: str, threshold: float | None, min_scene_len: float):
    """A fresh PySceneDetect detector, or None for mode 'none'. Content and adaptive detectors get
    the same frame score in fewer passes (_fast_score_class): the same numbers, so the same cuts."""
    if mode == "none":
        return None
    from scenedetect.detectors import AdaptiveDetector, ContentDetector, ThresholdDetector

    msl = float(min_scene_len)  # float -> seconds in PySceneDetect 0.7
    if mode == "adaptive":
        kw = {} if threshold is None else {"adaptive_threshold": float(threshold)}
        return _fast_score_class(AdaptiveDetector)(min_scene_len=msl, **kw)
    if mode == "content":
        kw = {} if threshold is None else {"threshold": float(threshold)}
        return _fast_score_class(ContentDetector)(min_scene_len=msl, **kw)
    if mode == "threshold":
        kw = {} if threshold is None else {"threshold": float(threshold)}
        return ThresholdDetector(min_scene_len=msl, **kw)
    raise ValueError(f"unknown scene mode {mode!r} (choose from {', '.join(SCENE_MODES)})")


_FAST: dict[type, type] = {}


def _fast_score_class(base: type) -> type:
    """`base` (ContentDetector or a subclass) with ContentDetector's frame score computed in fewer
    passes: one HSV image kept per frame instead of three planes, and each channel's mean absolute
    difference from cv2.absdiff + cv2.sumElems (exact integer sums, as numpy's int32 sum) instead of
    two int32 copies, a subtraction, an abs and a sum per channel. The numbers are the very same
    (same sums, same division, same weighted mean), so the cuts are. With edges weighted, or a stats
    manager attached, PySceneDetect's own code runs."""
    if base in _FAST:
        return _FAST[base]
    import cv2

    class FastScore(base):
        _fast_last = None

        def _calculate_frame_score(self, timecode, frame_img):
            weights = self._weights
            if weights.delta_edges > 0.0 or self.stats_manager is not None:
                return super()._calculate_frame_score(timecode, frame_img)
            hsv = cv2.cvtColor(frame_img, cv2.COLOR_BGR2HSV)
            last, self._fast_last = self._fast_last, hsv
            if last is None:
                return 0.0
            sums = cv2.sumElems(cv2.absdiff(hsv, last))
            pixels = float(hsv.shape[0] * hsv.shape[1])
            components = (sums[0] / pixels, sums[1] / pixels, sums[2] / pixels, 0.0)
            return sum(c * w for c, w in zip(components, weights)) / sum(abs(w) for w in weights)

    FastScore.__name__ = FastScore.__qualname__ = f"Fast{base.__name__}"
    _FAST[base] = FastScore
    return FastScore


def detector_lag_frames(detector) -> int:
    """How many frames behind the current one a cut may be reported (AdaptiveDetector: window_width)."""
    if detector is None:
        return 0
    return int(getattr(detector, "window_width", 0) or 0) + 2


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
