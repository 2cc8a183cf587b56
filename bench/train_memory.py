"""Training's memory against dataset size: peak RSS of `tarsier train stage2` with the feature cache, per
`--cache-ram` budget, sampled over the run so that growth shows.

    python bench/train_memory.py --world W [--steps 300] [--cache-ram 4GB 512MB] [--init nano]

Each budget is one training subprocess on the world's stage-2 mixture (the tower's features should be in the
disk cache already, e.g. from an earlier run or `tarsier train cache-features`, or the first run pays the fill).
Its whole process tree's RSS is read from /proc every second; the table gives the peak and the RSS at each
quarter of the run, beside the features' size on disk, so a flat line at the budget reads as flat."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, StopIteration):
            continue
    return total


def measure(world: Path, init: str, steps: int, budget: str, out: Path) -> dict:
    cmd = [str(Path(sys.executable).parent / "tarsier"), "train", "stage2", "-d", str(world / "stage2" / "mixture.json"),
           "--init", init, "-o", str(out), "--steps", str(steps), "--lr", "1e-3", "--warmup", "10",
           "--log-every", str(max(1, steps // 4)), "--cache-ram", budget]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    trace = []
    while proc.poll() is None:
        trace.append((time.perf_counter() - t0, tree_rss(proc.pid)))
        time.sleep(1.0)
    err = proc.stderr.read()
    if proc.returncode:
        raise SystemExit(f"training failed ({proc.returncode}):\n{err[-2000:]}")
    quarters = [max((r for t, r in trace if t <= trace[-1][0] * q / 4), default=0) for q in (1, 2, 3, 4)]
    return {"peak": max(r for _, r in trace), "quarters": quarters, "seconds": trace[-1][0]}


def gib(n: int) -> str:
    return f"{n / 1024**3:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--world", type=Path, required=True, help="a `tarsier synth` world")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--cache-ram", nargs="+", default=["4GB", "512MB"])
    ap.add_argument("--init", default="nano")
    a = ap.parse_args()
    clips = sum(1 for _ in (a.world / "videos").iterdir())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for budget in a.cache_ram:
            rows.append((budget, measure(a.world, a.init, a.steps, budget, Path(tmp) / budget)))
    print(f"{clips} videos ({a.world}), stage 2 from a fresh {a.init}, {a.steps} steps of 16 samples")
    print("| --cache-ram | peak RSS GiB | max RSS by quarter of the run, GiB | run s |")
    print("|---|---|---|---|")
    for budget, r in rows:
        print(f"| {budget} | {gib(r['peak'])} | {' / '.join(gib(q) for q in r['quarters'])} | {r['seconds']:.0f} |")


if __name__ == "__main__":
    main()
