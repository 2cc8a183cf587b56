"""The training thread tuner picks the thread count that runs fastest, and changes its mind when the
machine does (trainers/threads.py). A fake clock stands in for the machine: a neighbour that takes
a core makes 2 threads slower than 1."""
from tarsier.trainers.threads import ThreadTuner


class Machine:
    """Seconds per step for each thread count; `busy` is whether a neighbour holds a core."""

    def __init__(self):
        self.now = 0.0
        self.busy = False
        self.tuner = None

    def seconds(self, threads: int) -> float:
        idle = {2: 1.0, 1: 1.5}
        shared = {2: 3.0, 1: 1.3}
        return (shared if self.busy else idle)[threads]

    def run(self, steps: int, tokens: int = 1000) -> list[int]:
        used = []
        for _ in range(steps):
            used.append(self.tuner.threads)
            self.now += self.seconds(self.tuner.threads)
            self.tuner.step_done(tokens)
        return used


def test_tuner_follows_the_machine():
    m = Machine()
    calls = []
    m.tuner = ThreadTuner(2, every=50, probe=3, start=10, set_threads=calls.append, clock=lambda: m.now)
    assert m.tuner.candidates == [2, 1]
    assert m.run(10) == [2] * 10                       # nothing probed before `start`
    probe = m.run(8)
    assert probe == [2, 2, 2, 2, 1, 1, 1, 1]           # one settling + 3 timed steps per candidate
    assert m.tuner.threads == 2 and m.tuner.history[-1][1] == 2
    assert m.tuner.history[-1][2] == {2: 1000.0, 1: 1000 / 1.5}

    m.busy = True                                      # a neighbour takes a core
    assert m.run(42) == [2] * 42                       # not noticed before the next probe, at step 60
    m.run(8)
    assert m.tuner.threads == 1 and m.tuner.history[-1][1] == 1
    assert m.run(42) == [1] * 42                       # kept until the next probe
    m.busy = False
    m.run(8)
    assert m.tuner.threads == 2                        # the neighbour left: back to all threads
    assert calls == [1, 2, 1, 2, 1, 2]                 # torch is told only when the count changes


def test_one_thread_has_nothing_to_tune():
    calls = []
    tuner = ThreadTuner(1, every=5, probe=2, start=0, set_threads=calls.append, clock=lambda: 0.0)
    for _ in range(30):
        tuner.step_done(100)
    assert tuner.candidates == [1] and calls == [] and tuner.history == []
