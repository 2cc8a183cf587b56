"""Cutting clip files (`describe --clips`): clips per second with --clip-codec copy and h264.

    python bench/clips.py [--seconds 60] [--clip 5] [--repeat 2] [--keep DIR]

Generates (PyAV) a 1080p and a 360p h264 video with a 1-second GOP (bench/decode.py's generator),
cuts each into --clip-second windows with engine.clips.cut_clips, once with `copy` (packets copied,
cut points on keyframes) and once with `h264` (decoded and re-encoded with libx264, veryfast, crf 23),
into a fresh folder each time, best of --repeat, and prints clips/s and the CPU time of each.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from decode import make_yuv_video  # noqa: E402

from tarsier.engine.clips import ClipSpan, clip_file, cut_clips  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--clip", type=float, default=5.0, help="clip length, seconds")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None, help="write the videos here (reused if present)")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory()
    folder = args.keep or Path(tmp.name)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"cores: {os.cpu_count()}  PyAV {av.__version__}  video: {args.seconds:.0f} s, 25 fps, 1 s GOP; "
          f"clips of {args.clip:g} s; best of {args.repeat}")
    hdr = f"{'video':6} {'codec':5} {'clips':>5} {'wall s':>7} {'cpu s':>6} {'clips/s':>8} {'MB out':>7}"
    print(hdr)
    print("-" * len(hdr))
    for name, w, h in (("1080p", 1920, 1080), ("360p", 640, 360)):
        src = folder / f"bench_{name}_gop1s.mp4"
        if not src.exists():
            make_yuv_video(src, w, h, args.seconds, gop=25)
        n = int(args.seconds // args.clip)
        spans = [ClipSpan(i, i * args.clip, (i + 1) * args.clip) for i in range(n)]
        for codec in ("copy", "h264"):
            best = (float("inf"), 0.0, 0)
            for _ in range(args.repeat):
                out = Path(tmp.name) / f"out_{name}_{codec}"
                shutil.rmtree(out, ignore_errors=True)
                dest = {sp.index: clip_file(out, src.name, sp.index, ".mp4") for sp in spans}
                wall, cpu = time.perf_counter(), time.process_time()
                results = cut_clips(src, spans, dest, codec=codec, video_end=args.seconds)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                bad = [r.error for r in results.values() if r.error]
                if bad:
                    raise SystemExit(f"{name} {codec}: {bad[0]}")
                size = sum(p.stat().st_size for p in dest.values())
                if wall < best[0]:
                    best = (wall, cpu, size)
            wall, cpu, size = best
            print(f"{name:6} {codec:5} {n:5d} {wall:7.2f} {cpu:6.2f} {n / wall:8.1f} {size / 1e6:7.1f}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
