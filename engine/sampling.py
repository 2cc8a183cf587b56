"""Frame sampling inside a clip and the bounded buffer of candidate frames.

Tarsier samples N frames uniformly including the first and the last: index round(i*(T-1)/(N-1))
over the T available frames (N=1 -> the middle one). We apply that rule over a clip's *candidate*
frames: a thinned, already-resized subset of the decoded frames kept while the clip is still open
(its end is known only when the next cut is found).
"""
from __future__ import annotations

import math
from collections import deque
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
    image: np.ndarray | None   # (S, S, 3) uint8 RGB; None when frames are not sampled (scenes only)


@dataclass
class CandidateBuffer:
    """Candidates of the clips not yet emitted, in time order.

    A frame is kept when its timestamp reaches the next keep time (`interval` seconds apart, so
    variable frame rate is handled by time, not by frame counts). The buffer never holds more than
    `cap` candidates: when it would, every other candidate is dropped and the interval doubles
    (the kept set stays uniform). After a clip is emitted and the buffer has drained below cap/4,
    the interval returns to its base value.
    """

    base_interval: float
    cap: int
    interval: float = field(init=False)
    next_keep: float = field(init=False, default=-math.inf)
    items: deque = field(init=False, default_factory=deque)
    max_len: int = field(init=False, default=0)      # statistic: most candidates ever held
    decimations: int = field(init=False, default=0)
    kept: int = field(init=False, default=0)
    last_popped: Candidate | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.cap = max(2, int(self.cap))
        self.interval = self.base_interval

    def wants(self, t: float) -> bool:
        return t >= self.next_keep - 1e-6

    def add(self, t: float, image: np.ndarray | None) -> None:
        nxt = self.next_keep + self.interval
        self.next_keep = nxt if nxt > t else t + self.interval
        if math.isinf(self.next_keep):
            self.next_keep = t + self.interval
        self.items.append(Candidate(t, image))
        self.kept += 1
        if len(self.items) > self.cap:
            self._decimate()
        self.max_len = max(self.max_len, len(self.items))

    def _decimate(self) -> None:
        items = list(self.items)
        # keep the newest and every other one before it
        keep = items[::-1][::2][::-1]
        self.items = deque(keep)
        self.interval *= 2
        self.next_keep = items[-1].time + self.interval
        self.decimations += 1

    def pop_until(self, end: float) -> list[Candidate]:
        """Remove and return the candidates with time < end."""
        out = []
        while self.items and self.items[0].time < end - 1e-9:
            out.append(self.items.popleft())
        if out:
            self.last_popped = out[-1]
        if len(self.items) <= self.cap // 4 and self.interval != self.base_interval:
            self.interval = self.base_interval
        return out

    def nearest_after(self) -> Candidate | None:
        return self.items[0] if self.items else None


def pick_frames(cands: list[Candidate], n: int) -> list[Candidate]:
    return [cands[i] for i in sample_indices(len(cands), n)]
