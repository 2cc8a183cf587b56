"""Frame sampling inside a clip and the bounded buffer of candidate frames.

Tarsier samples N frames uniformly including the first and the last: index round(i*(T-1)/(N-1))
over the T available frames (N=1 -> the middle one). We apply that rule over a clip's *candidate*
frames: a thinned subset of the decoded frames kept while the clip is still open (its end is known
only when the next cut is found).

Candidates are resized lazily: a candidate holds its decoded frame (`source`) and becomes a
model-size image only when a clip picks it (CandidateBuffer.image). Most candidates of a long scene
are thinned away before any clip can pick them, so resizing them on arrival (swscale, 1.6 ms per
1080p frame here) was most of the pipeline's cost above a plain decode. A decoded frame is large
(3 MB at 1080p), so at most `max_pending` candidates hold one: beyond that the oldest is resized
(the same call, so the same pixels: only when the resizing happens changes).
"""
from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


def sample_indices(t: int, n: int) -> list[int]:
    """N indices into T items, uniform including first and last. T < N repeats items (N exact)."""
    if n <= 0 or t <= 0:
        return []
    if n == 1:
        return [(t - 1) // 2]
    return [round(i * (t - 1) / (n - 1)) for i in range(n)]


@dataclass
class Candidate:
    time: float
    image: np.ndarray | None   # (S, S, 3) uint8 RGB; None when not sampled (scenes only) or not yet resized
    source: object = None      # the decoded frame, until it is resized into `image` (CandidateBuffer.image)


@dataclass
class CandidateBuffer:
    """Candidates of the clips not yet emitted, in time order.

    A frame is kept when its timestamp reaches the next keep time (`interval` seconds apart, so
    variable frame rate is handled by time, not by frame counts). The buffer never holds more than
    `cap` candidates: when it would, every other candidate is dropped and the interval doubles
    (the kept set stays uniform). After a clip is emitted and the buffer has drained below cap/4,
    the interval returns to its base value.

    With `resize`, candidates added with a `source` are resized only on demand (`image`) or when more
    than `max_pending` candidates in the buffer still hold their source (the oldest first).
    """

    base_interval: float
    cap: int
    resize: Callable[[object], np.ndarray] | None = None
    max_pending: int = 64
    interval: float = field(init=False)
    next_keep: float = field(init=False, default=-math.inf)
    items: deque = field(init=False, default_factory=deque)
    max_len: int = field(init=False, default=0)      # statistic: most candidates ever held
    decimations: int = field(init=False, default=0)
    kept: int = field(init=False, default=0)
    last_popped: Candidate | None = field(init=False, default=None)
    pending: int = field(init=False, default=0)      # candidates in the buffer that still hold a source
    max_pending_seen: int = field(init=False, default=0)   # statistic
    resized: int = field(init=False, default=0)      # statistic: candidates resized

    def __post_init__(self) -> None:
        self.cap = max(2, int(self.cap))
        self.interval = self.base_interval

    def wants(self, t: float) -> bool:
        return t >= self.next_keep - 1e-6

    def add(self, t: float, image: np.ndarray | None, source: object = None) -> None:
        nxt = self.next_keep + self.interval
        self.next_keep = nxt if nxt > t else t + self.interval
        if math.isinf(self.next_keep):
            self.next_keep = t + self.interval
        if source is not None and self.resize is None:
            raise ValueError("a candidate with a source needs a buffer with a resize function")
        self.items.append(Candidate(t, image, source))
        self.kept += 1
        if source is not None:
            self.pending += 1
            if self.pending > self.max_pending:
                # scan from the oldest: the older candidates are mostly resized already
                for c in self.items:
                    if c.source is not None:
                        self._resize(c)
                        self.pending -= 1
                        break
            self.max_pending_seen = max(self.max_pending_seen, self.pending)
        if len(self.items) > self.cap:
            self._decimate()
        self.max_len = max(self.max_len, len(self.items))

    def _resize(self, c: Candidate) -> None:
        c.image = self.resize(c.source)
        c.source = None
        self.resized += 1

    def image(self, c: Candidate) -> np.ndarray | None:
        """The candidate's model-size image, resized now if it still holds its decoded frame."""
        if c.source is not None:
            if any(x is c for x in self.items):
                self.pending -= 1
            self._resize(c)
        return c.image

    def _drop(self, dropped) -> None:
        for c in dropped:
            if c.source is not None:
                c.source = None        # its frame goes back to the decoder's pool, never resized
                self.pending -= 1

    def _decimate(self) -> None:
        items = list(self.items)
        # keep the newest and every other one before it
        keep = items[::-1][::2][::-1]
        self._drop(items[-2::-2])
        self.items = deque(keep)
        self.interval *= 2
        self.next_keep = items[-1].time + self.interval
        self.decimations += 1

    def pop_until(self, end: float) -> list[Candidate]:
        """Remove and return the candidates with time < end."""
        out = []
        while self.items and self.items[0].time < end - 1e-9:
            c = self.items.popleft()
            if c.source is not None:
                self.pending -= 1      # out of the buffer: the caller resizes what it picks
            out.append(c)
        if out:
            old = self.last_popped
            if old is not None:
                old.source = None      # no clip can borrow it any more (out of the buffer: not pending)
            self.last_popped = out[-1]
        if len(self.items) <= self.cap // 4 and self.interval != self.base_interval:
            self.interval = self.base_interval
        return out

    def nearest_after(self) -> Candidate | None:
        return self.items[0] if self.items else None

    def thin_before(self, before: float, origin: float, gap: float) -> int:
        """Keep, among the candidates older than `before`, only the first one in each cell of a
        grid of `gap` seconds anchored at `origin`. With gaps that are power-of-two multiples of
        the base interval the grids nest, so repeated thinning keeps the spacing regular.
        Returns how many were dropped."""
        if gap <= 0:
            return 0
        kept: deque = deque()
        gone = []
        last_cell = None
        for c in self.items:
            if c.time >= before:
                kept.append(c)
                continue
            cell = math.floor((c.time - origin) / gap + 1e-9)
            if cell != last_cell:
                kept.append(c)
                last_cell = cell
            else:
                gone.append(c)
        self._drop(gone)
        dropped = len(self.items) - len(kept)
        self.items = kept
        return dropped


def pick_frames(cands: list[Candidate], n: int, repeat: bool = True) -> list[Candidate]:
    """N candidates uniform in time including the first and the last (N=1: the middle one).

    Targets are evenly spaced between the first and the last candidate's time and each takes the
    nearest candidate, so a clip whose older part was thinned (sparser candidates) is still sampled
    uniformly in time. For evenly spaced candidates this is Tarsier's index rule
    round(i*(T-1)/(N-1)). Fewer candidates than N repeat frames (N stays exact), or with
    repeat=False are all taken once (Tarsier2's sampler: a clip of T <= N frames uses all T).
    """
    if not cands or n <= 0:
        return []
    t = len(cands)
    if t < n and not repeat:
        return list(cands)
    if t <= n:
        return [cands[i] for i in sample_indices(t, n)]
    times = [c.time for c in cands]
    t0, t1 = times[0], times[-1]
    if n == 1:
        targets = [(t0 + t1) / 2]
    else:
        targets = [t0 + i * (t1 - t0) / (n - 1) for i in range(n)]
    out = []
    for x in targets:
        j = bisect.bisect_left(times, x)
        if j >= t:
            j = t - 1
        elif j > 0 and x - times[j - 1] <= times[j] - x:
            j -= 1
        out.append(cands[j])
    return out
