"""Decode benchmark: the describe pipeline's video side vs one plain threaded PyAV decode pass.

    python bench/decode.py [--seconds 60] [--repeat 2] [--keep DIR]

Generates (with PyAV, into a temp dir) a 1080p and a 360p h264 video with simple moving content and
a few cuts, then times, side by side in the same run (best of --repeat):
  plain    : open + decode every frame with thread_type AUTO and thread_count = all cores, nothing else
  pipeline : engine.video.VideoReader(...).clips() with default ClipOptions (adaptive detection on
             downscaled frames + candidate buffering + sampling 8 frames of 224x224 per clip);
             the model is a no-op
  scenes   : the same with sample_frames=False (what `tarsier scenes` runs)
and reports the ratio pipeline/plain and frames decoded / frames in the file.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.video import ClipOptions, VideoReader  # noqa: E402


def make_yuv_video(path: Path, width: int, height: int, seconds: float, fps: int = 25,
                   scene_len: float = 12.0) -> int:
    """Fast generator: per-scene textured YUV planes, a moving bright square; h264 (fast preset)."""
    rng = np.random.default_rng(0)
    c = av.open(str(path), "w")
    s = c.add_stream("libx264", rate=fps)
    s.width, s.height, s.pix_fmt = width, height, "yuv420p"
    s.time_base = Fraction(1, fps)
    s.options = {"preset": "fast"}
    n = int(seconds * fps)
    per_scene = int(scene_len * fps)
    side = height // 5
    base = None
    for i in range(n):
        if i % per_scene == 0:   # a cut: new background
            yv = rng.integers(40, 200)
            tex = rng.integers(-20, 21, size=(height // 16 + 1, width // 16 + 1), dtype=np.int16)
            y = np.clip(yv + np.kron(tex, np.ones((16, 16), np.int16))[:height, :width], 0, 255).astype(np.uint8)
            u = np.full((height // 2, width // 2), rng.integers(60, 200), np.uint8)
            v = np.full((height // 2, width // 2), rng.integers(60, 200), np.uint8)
            base = np.concatenate([y, u.reshape(-1, width), v.reshape(-1, width)])
        img = base.copy()
        x = int((i % per_scene) / per_scene * (width - side))
        img[height // 3: height // 3 + side, x: x + side] = 235
        f = av.VideoFrame.from_ndarray(img, format="yuv420p")
        f.pts = i
        for p in s.encode(f):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return n


def plain_decode(path: Path, threads: int = 0) -> int:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        s.codec_context.thread_count = threads or os.cpu_count() or 1
        n = 0
        for _ in c.decode(s):
            n += 1
    return n


def pipeline(path: Path, options: ClipOptions) -> tuple[int, int]:
    with VideoReader(path, options) as r:
        clips = 0
        for _clip in r.clips():   # the model would run here: no-op
            clips += 1
        return r.info.frames_decoded, clips


def best(fn, repeat: int):
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return min(times), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None, help="write the videos here (reused if present)")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory() if args.keep is None else None
    folder = Path(tmp.name) if tmp else args.keep
    folder.mkdir(parents=True, exist_ok=True)
    sizes = [("1080p", 1920, 1080), ("360p", 640, 360)]
    print(f"cores: {os.cpu_count()}  PyAV {av.__version__}  video: {args.seconds:.0f} s, 25 fps, h264, "
          f"best of {args.repeat}")
    rows = []
    for name, w, h in sizes:
        path = folder / f"bench_{name}.mp4"
        if not path.exists():
            t = time.perf_counter()
            make_yuv_video(path, w, h, args.seconds)
            print(f"generated {path.name} in {time.perf_counter() - t:.1f} s", flush=True)
        in_file = plain_decode(path)
        t_plain, _ = best(lambda: plain_decode(path), args.repeat)
        t_pipe, (decoded, clips) = best(lambda: pipeline(path, ClipOptions()), args.repeat)
        t_scn, _ = best(lambda: pipeline(path, ClipOptions(sample_frames=False)), args.repeat)
        rows.append((name, in_file, t_plain, t_pipe, t_scn, decoded, clips))

    hdr = f"{'video':6} {'frames':>6} {'plain s':>8} {'plain fps':>9} {'pipeline s':>10} {'ratio':>6} " \
          f"{'scenes s':>8} {'ratio':>6} {'decoded/file':>12} {'clips':>5}"
    print(hdr)
    print("-" * len(hdr))
    for name, n, tp, tpi, ts, dec, clips in rows:
        print(f"{name:6} {n:6d} {tp:8.2f} {n / tp:9.0f} {tpi:10.2f} {tpi / tp:6.2f} {ts:8.2f} {ts / tp:6.2f} "
              f"{dec:>5d}/{n:<6d} {clips:5d}")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
