"""How many intra-op threads a training run uses, re-decided while it runs.

On 2 cores, nano's stage 2 ran at 39.5 samples/s with torch's 2 threads and fell to 12.6 (0.32x)
when another process kept one core busy: every parallel op ends in a barrier that waits for the
thread sharing its core with the neighbour. One thread, beside the same neighbour, ran at 30.3
(0.77x); idle, one thread gives 26.9. OMP_WAIT_POLICY=PASSIVE did not help (22.6 beside the
neighbour, and 22.5 idle). No fixed count is right on both an idle and a shared machine, so the
run measures: from `start`, and every `every` steps after, it times a few steps at each
candidate count (all threads, half, one) and keeps the fastest per token. Probing costs the
slower candidates' few steps, about 3% of a run at the defaults. The thread count changes only
the order of float additions, not what is trained."""
from __future__ import annotations

import time
from collections.abc import Callable


class ThreadTuner:
    """Call `step_done(tokens)` after every optimizer step; it sets torch's thread count itself."""

    def __init__(self, threads: int, every: int = 200, probe: int = 4, start: int = 20,
                 set_threads: Callable[[int], None] | None = None, clock: Callable[[], float] = time.perf_counter):
        if set_threads is None:
            import torch

            set_threads = torch.set_num_threads
        self.candidates = sorted({threads, max(1, threads // 2), 1}, reverse=True)
        self.every, self.probe, self.start = every, probe, start
        self.set_threads, self.clock = set_threads, clock
        self.threads = threads
        self.steps = 0
        self._last = clock()
        self._plan: list[tuple[int, bool]] = []   # (thread count, timed?) of each remaining probe step
        self._rates: dict[int, list[float]] = {}
        self.history: list[tuple[int, int, dict[int, float]]] = []   # (step, chosen, tokens/s per candidate)

    def _use(self, n: int) -> None:
        if n != self.threads:
            self.set_threads(n)
            self.threads = n

    def step_done(self, tokens: int) -> None:
        now = self.clock()
        seconds, self._last = now - self._last, now
        self.steps += 1
        if self._plan:
            n, timed = self._plan.pop(0)
            if timed:
                self._rates.setdefault(n, []).append(tokens / max(seconds, 1e-9))
            if self._plan:
                self._use(self._plan[0][0])
                return
            rates = {c: sorted(r)[len(r) // 2] for c, r in self._rates.items()}   # median: robust to one slow step
            best = max(rates, key=rates.get)
            self.history.append((self.steps, best, rates))
            self._use(best)
        elif len(self.candidates) > 1 and self.steps >= self.start and (self.steps - self.start) % self.every == 0:
            # per candidate: one step to settle after the switch (not timed), then `probe` timed ones
            self._plan = [(c, i > 0) for c in self.candidates for i in range(self.probe + 1)]
            self._rates = {}
            self._use(self._plan[0][0])


def cpu_threads(threads: int, device_type: str) -> ThreadTuner | None:
    """A training run's thread policy: a tuner for a CPU run with `threads` 0; a fixed count otherwise."""
    import torch

    if device_type != "cpu":
        return None
    if threads:
        torch.set_num_threads(threads)
        return None
    return ThreadTuner(torch.get_num_threads())
