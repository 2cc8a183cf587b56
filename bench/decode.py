"""Decode benchmark: the describe pipeline's video side vs one plain threaded PyAV decode pass.

    python bench/decode.py [--seconds 60] [--repeat 2] [--keep DIR]

Generates (with PyAV, into a temp dir) a 1080p and a 360p h264 video with simple moving content and
a few cuts, then times, side by side in the same run (best of --repeat):
  plain    : open + decode every frame with thread_type AUTO and thread_count = all cores, nothing else
  pipeline : engine.video.VideoReader(...).clips() with default ClipOptions (adaptive detection on
             downscaled frames + candidate buffering + sampling 8 frames of 224x224 per clip);
             the model is a no-op
  scenes   : the same with sample_frames=False (what `tarsier scenes` runs)
  stock    : the pipeline with PySceneDetect's own frame-score code instead of engine.scenes' faster,
             bit-identical one (what the detector side cost before)
and reports the ratio pipeline/plain (wall time, and CPU time over all threads, which is less sensitive
to other load on the machine) and frames decoded / frames in the file. The three are interleaved in
each repeat round so they see the same machine load.

Then the sparse rows: the same videos encoded with a 1-second GOP, described as
`--scenes none --max-clip 10 --frames 2` (engine.sparse.SparseReader: seek to the keyframe before
each sampled frame instead of decoding through) against a plain decode of that file.
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

from tarsier.engine.sparse import SparseReader
from tarsier.engine.video import ClipOptions, VideoReader


def make_yuv_video(path: Path, width: int, height: int, seconds: float, fps: int = 25,
                   scene_len: float = 12.0, gop: int | None = None) -> int:
    """Fast generator: per-scene textured YUV planes, a moving bright square; h264 (fast preset)."""
    rng = np.random.default_rng(0)
    c = av.open(str(path), "w")
    s = c.add_stream("libx264", rate=fps)
    s.width, s.height, s.pix_fmt = width, height, "yuv420p"
    s.time_base = Fraction(1, fps)
    s.options = {"preset": "fast"}
    if gop:
        s.codec_context.gop_size = gop
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


def stock_pipeline(path: Path) -> tuple[int, int]:
    """The pipeline with the detectors' stock PySceneDetect frame score (engine.scenes bypassed)."""
    import tarsier.engine.scenes as scenes

    fast = scenes._fast_score_class
    scenes._fast_score_class = lambda base: base
    try:
        return pipeline(path, ClipOptions())
    finally:
        scenes._fast_score_class = fast


def timed(fn):
    """(wall seconds, CPU seconds of this process across all threads, result)."""
    w, c = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - w, time.process_time() - c, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--repeat", type=int, default=3)
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
        in_file = plain_decode(path)   # also warms the file cache and imports
        pipeline(path, ClipOptions(sample_frames=False))
        runs = {"plain": lambda p=path: plain_decode(p),
                "pipeline": lambda p=path: pipeline(p, ClipOptions()),
                "scenes": lambda p=path: pipeline(p, ClipOptions(sample_frames=False)),
                "stock": lambda p=path: stock_pipeline(p)}
        best_w = dict.fromkeys(runs, float("inf"))
        best_c = dict.fromkeys(runs, float("inf"))
        decoded = clips = 0
        for _ in range(args.repeat):          # interleaved, so the three see the same machine load
            for key, fn in runs.items():
                w, c, result = timed(fn)
                best_w[key] = min(best_w[key], w)
                best_c[key] = min(best_c[key], c)
                if key == "pipeline":
                    decoded, clips = result
        rows.append((name, in_file, best_w, best_c, decoded, clips))

    hdr = (f"{'video':6} {'frames':>6} {'plain s':>8} {'plain fps':>9} {'pipeline s':>10} {'ratio':>6} "
           f"{'cpu ratio':>9} {'scenes s':>8} {'ratio':>6} {'stock cpu ratio':>15} {'decoded/file':>12} {'clips':>5}")
    print(hdr)
    print("-" * len(hdr))
    for name, n, bw, bc, dec, clips in rows:
        print(f"{name:6} {n:6d} {bw['plain']:8.2f} {n / bw['plain']:9.0f} {bw['pipeline']:10.2f} "
              f"{bw['pipeline'] / bw['plain']:6.2f} {bc['pipeline'] / bc['plain']:9.2f} {bw['scenes']:8.2f} "
              f"{bw['scenes'] / bw['plain']:6.2f} {bc['stock'] / bc['plain']:15.2f} {dec:>5d}/{n:<6d} {clips:5d}")
    print("ratio = wall time / plain decode wall time (best of each); cpu ratio = process CPU time "
          "(all threads) / plain's")

    sparse_opts = ClipOptions(scenes="none", max_clip=10, frames=2)
    print("\nsparse: --scenes none --max-clip 10 --frames 2 on the same videos with a 1 s GOP (25 frames)")
    hdr = f"{'video':6} {'frames':>6} {'plain cpu s':>11} {'sparse cpu s':>12} {'cpu ratio':>9} {'decoded/file':>12} {'fraction':>8}"
    print(hdr)
    print("-" * len(hdr))
    for name, w, h in sizes:
        path = folder / f"bench_{name}_gop1s.mp4"
        if not path.exists():
            make_yuv_video(path, w, h, args.seconds, gop=25)
        in_file = plain_decode(path)

        def sparse(p=path):
            with SparseReader(p, sparse_opts) as r:
                for _ in r.clips():
                    pass
                return r.info.frames_decoded

        best_plain = best_sparse = float("inf")
        decoded = 0
        for _ in range(args.repeat):
            best_plain = min(best_plain, timed(lambda p=path: plain_decode(p))[1])
            _, c, decoded = timed(sparse)
            best_sparse = min(best_sparse, c)
        print(f"{name:6} {in_file:6d} {best_plain:11.2f} {best_sparse:12.2f} {best_sparse / best_plain:9.2f} "
              f"{decoded:>5d}/{in_file:<6d} {decoded / in_file:8.3f}")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
