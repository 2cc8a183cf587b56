"""Local engine vs Ray engine on the same folder: throughput and identical output.

    python bench/ray_engine.py [--videos 24] [--seconds 4] [--tokens 16] [--repeat 1] [--cpus 2]

Starts a local Ray instance (127.0.0.1, --cpus CPUs, no dashboard), generates a folder of videos,
and runs, side by side in each repeat round, `describe` (local engine, default workers) and
`describe_ray` (decode tasks + one model actor) with tiny-random, then compares the records
(sorted, timings dropped). Ray's start-up (ray.init) is timed apart; the first Ray run also pays
for the actor's start and model load, so the table reports the best of --repeat rounds.
GPU rows: not measured (no GPU in this environment).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def records(out: Path) -> list[dict]:
    recs = [json.loads(x) for x in (out / "descriptions.jsonl").read_text().splitlines()]
    for r in recs:
        r.pop("timings", None)
    return sorted(recs, key=lambda r: (r["video"], r.get("clip", -1)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()

    import ray
    from describe_pipeline import make_folder, table

    from tarsier.engine.decode_pool import default_workers
    from tarsier.engine.describe import describe
    from tarsier.engine.ray_engine import describe_ray

    print(f"# bench/ray_engine.py  ({os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M')})")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        folder = make_folder(tmp / "in", args.videos, args.seconds)
        t = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, address="local", log_to_driver=False,
                 _node_ip_address="127.0.0.1")
        init_s = time.perf_counter() - t
        opts = {"model": "tiny-random", "device": "cpu", "max_new_tokens": args.tokens, "batch_size": args.batch,
                "formats": ("jsonl", "srt")}
        best = {"local": 1e9, "ray": 1e9}
        same = True
        clips = 0
        for i in range(args.repeat):
            t = time.perf_counter()
            s = describe([str(folder)], output_dir=tmp / f"local{i}", **opts)
            best["local"] = min(best["local"], time.perf_counter() - t)
            clips = s.clips_done
            t = time.perf_counter()
            r = describe_ray([str(folder)], output_dir=tmp / f"ray{i}", **opts)
            best["ray"] = min(best["ray"], time.perf_counter() - t)
            assert r.clips_done == clips
            same = same and records(tmp / f"ray{i}") == records(tmp / f"local{i}")
            for p in (tmp / f"local{i}").rglob("*.srt"):
                same = same and p.read_text() == (tmp / f"ray{i}" / p.relative_to(tmp / f"local{i}")).read_text()
        ray.shutdown()
    table(f"local vs Ray engine ({args.videos} videos x {args.seconds:g} s, {clips} clips, tiny-random, "
          f"{args.tokens} new tokens, batch {args.batch}, local Ray with {args.cpus} CPUs: 1 model actor + decode "
          f"tasks; model load included in both; best of {args.repeat})",
          ["engine", "wall s", "clips/s", "throughput vs local"],
          [[f"local (--workers {default_workers()})", f"{best['local']:.2f}", f"{clips / best['local']:.1f}", "1.00"],
           ["ray", f"{best['ray']:.2f}", f"{clips / best['ray']:.1f}", f"{best['local'] / best['ray']:.2f}"]])
    print(f"\nray.init (local instance): {init_s:.1f} s, not included above. "
          f"Records identical (sorted, timings dropped) and SRT files identical: {same}")
    print("GPU rows: not measured (no GPU in this environment)")


if __name__ == "__main__":
    main()
