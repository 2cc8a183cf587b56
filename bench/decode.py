"""Decode benchmark: the describe pipeline's video side vs one plain threaded PyAV decode pass.

    python bench/decode.py [--seconds 60] [--repeat 2] [--keep DIR] [--agreement N]

Generates (with PyAV, into a temp dir) a 1080p and a 360p h264 video with simple moving content and
a few cuts, then times, side by side in the same run (best of --repeat):
  plain    : open + decode every frame with thread_type AUTO and thread_count = all cores, nothing else
  pipeline : engine.video.VideoReader(...).clips() with default ClipOptions (adaptive detection on
             downscaled frames + candidate buffering + sampling 8 frames of 224x224 per clip);
             the model is a no-op
  scenes   : the same with sample_frames=False (what `tarsier scenes` runs)
  stock    : the pipeline as before issue 22's detector work: 256-px detection frames from swscale's
             bgr24 output and PySceneDetect's own AdaptiveDetector (same cuts on these videos)
and reports the ratio pipeline/plain (wall time, best of each, and CPU time over all threads, which is
less sensitive to other load on the machine: the median over rounds of the ratio within a round) and
frames decoded / frames in the file. The four are interleaved in each repeat round so they see the
same machine load. Each video's cut times are printed beside those of PySceneDetect's own pipeline
(scenedetect.detect with its AdaptiveDetector, min_scene_len 0.6 s) and of the stock variant.

Then the sparse rows: the same videos encoded with a 1-second GOP, described as
`--scenes none --max-clip 10 --frames 2` (engine.sparse.SparseReader: seek to the keyframe before
each sampled frame instead of decoding through) against a plain decode of that file.

Last, with --agreement N: the cut times of the pipeline's detectors (adaptive and content; the default
detection frames, and the stock 256-px swscale ones) against PySceneDetect's own pipeline on N generated
videos made to put decisions near the thresholds (pans, flashes, noise): how many differ.
"""
from __future__ import annotations

import argparse
import os
import statistics
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


def write_h264(path: Path, images, width: int, height: int, fps: int, image_format: str, options: dict,
               gop: int | None = None) -> None:
    """Encode `images` (ndarrays in `image_format`, one per frame, pts 0, 1, ...) as yuv420p h264."""
    c = av.open(str(path), "w")
    s = c.add_stream("libx264", rate=fps)
    s.width, s.height, s.pix_fmt = width, height, "yuv420p"
    s.time_base = Fraction(1, fps)
    s.options = options
    if gop:
        s.codec_context.gop_size = gop
    for i, img in enumerate(images):
        f = av.VideoFrame.from_ndarray(img, format=image_format)
        f.pts = i
        for pkt in s.encode(f):
            c.mux(pkt)
    for pkt in s.encode():
        c.mux(pkt)
    c.close()


def make_yuv_video(path: Path, width: int, height: int, seconds: float, fps: int = 25,
                   scene_len: float = 12.0, gop: int | None = None) -> int:
    """Fast generator: per-scene textured YUV planes, a moving bright square; h264 (fast preset)."""
    rng = np.random.default_rng(0)
    n = int(seconds * fps)
    per_scene = int(scene_len * fps)
    side = height // 5

    def images():
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
            yield img

    write_h264(path, images(), width, height, fps, "yuv420p", {"preset": "fast"}, gop)
    return n


def make_hard_video(path: Path, seed: int, width: int = 640, height: int = 360, seconds: float = 12.0,
                    fps: int = 25) -> None:
    """A video made to put the detector's decisions near its thresholds: pans (slow and fast) over a
    multi-scale coloured texture, cuts to other places of the same texture (similar colours) or to a
    new one, flashes, and sensor noise in every frame."""
    import cv2

    rng = np.random.default_rng(seed)

    def texture():
        h, w = 2 * height, 2 * width
        img = np.full((h, w, 3), rng.uniform(60, 190, 3), np.float32)
        for cells, amp in ((8, 60), (32, 40), (128, 25), (512, 12)):
            noise = rng.normal(0, 1, (max(2, h * cells // 2048), max(2, w * cells // 2048), 3)).astype(np.float32)
            img += amp * cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
        return img

    def images():
        big = texture()
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        vx, vy = rng.normal(0, 6, 2)
        gain = 1.0
        for _ in range(int(seconds * fps)):
            r = rng.random()
            if r < 0.03:      # a cut: elsewhere in the same texture, or (30%) a new one
                x, y = rng.uniform(0, width), rng.uniform(0, height)
                vx, vy = rng.normal(0, 6, 2)
                if rng.random() < 0.3:
                    big = texture()
            elif r < 0.05:    # a fast pan
                vx, vy = rng.normal(0, 25, 2)
            x, y = float(np.clip(x + vx, 0, width - 1)), float(np.clip(y + vy, 0, height - 1))
            if rng.random() < 0.02:
                gain = 1.8    # a flash, fading over a few frames
            frame = big[int(y):int(y) + height, int(x):int(x) + width] * gain
            gain = 1.0 + (gain - 1.0) * 0.3
            frame += rng.normal(0, 3, frame.shape).astype(np.float32)
            yield np.clip(frame, 0, 255).astype(np.uint8)

    write_h264(path, images(), width, height, fps, "rgb24", {"preset": "fast", "crf": "23"})


def agreement(folder: Path, n: int) -> None:
    """Cuts of the pipeline's detectors vs PySceneDetect's own pipeline on n hard videos: how many cut
    times differ (in either list), for the default detection frames and for the stock ones."""
    from functools import partial

    from scenedetect import AdaptiveDetector, ContentDetector, detect

    import tarsier.engine.video as video

    print(f"\ncut agreement with scenedetect.detect() on {n} hard 640x360 videos (12 s, pans, flashes, noise)")
    totals: dict = {}
    for k in range(n):
        path = folder / f"hard_{k}.mp4"
        if not path.exists():
            make_hard_video(path, seed=100 + k)
        for mode, cls in (("adaptive", AdaptiveDetector), ("content", ContentDetector)):
            ref = {round(s[0].seconds, 6) for s in detect(str(path), cls(min_scene_len=0.6), backend="pyav")[1:]}
            for label, planes, width in (("default", True, ClipOptions.detect_width), ("stock input", False, 256)):
                saved = video.DetectionImages
                video.DetectionImages = partial(video.DetectionImages, planes=planes)
                try:
                    got = {round(t, 6) for t in pipeline(path, ClipOptions(scenes=mode, detect_width=width, min_clip=0,
                                                                           max_clip=None, sample_frames=False))[2]}
                finally:
                    video.DetectionImages = saved
                t = totals.setdefault((mode, label), [0, 0])
                t[0] += len(got ^ ref)
                t[1] += len(ref)
    for (mode, label), (differ, total) in totals.items():
        print(f"  {mode:8s} {label:12s}: {differ} cut times differ, of {total} PySceneDetect cuts")


def plain_decode(path: Path, threads: int = 0) -> int:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        s.codec_context.thread_count = threads or os.cpu_count() or 1
        n = 0
        for _ in c.decode(s):
            n += 1
    return n


def pipeline(path: Path, options: ClipOptions) -> tuple[int, int, list[float]]:
    """(frames decoded, clips, the detector's cut times)."""
    with VideoReader(path, options) as r:
        clips = 0
        for _clip in r.clips():   # the model would run here: no-op
            clips += 1
        return r.info.frames_decoded, clips, r.stats["cuts"]


def pyscenedetect_cuts(path: Path) -> list[float]:
    """PySceneDetect's own pipeline (full-size BGR frames resized to 256 px by cv2, its AdaptiveDetector)."""
    from scenedetect import AdaptiveDetector, detect

    return [s[0].seconds for s in detect(str(path), AdaptiveDetector(min_scene_len=0.6), backend="pyav")][1:]


def stock_pipeline(path: Path) -> tuple[int, int, list[float]]:
    """The pipeline as it was before issue 22's detector work: swscale bgr24 detection frames 256 px
    wide and PySceneDetect's own detector (its frame score, FrameTimecode arithmetic)."""
    from functools import partial

    import tarsier.engine.video as video

    saved = video.make_detector, video.DetectionImages
    video.make_detector = partial(video.make_detector, stock=True)
    video.DetectionImages = partial(video.DetectionImages, planes=False)
    try:
        return pipeline(path, ClipOptions(detect_width=256))
    finally:
        video.make_detector, video.DetectionImages = saved


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
    ap.add_argument("--agreement", type=int, default=0, metavar="N",
                    help="also compare cuts with PySceneDetect's own pipeline on N hard generated videos")
    args = ap.parse_args()
    av.logging.set_level(av.logging.WARNING)   # libx264's per-file statistics when generating

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
        cpu: dict[str, list[float]] = {key: [] for key in runs}
        results = {}
        for _ in range(args.repeat):          # interleaved, so the four see the same machine load
            for key, fn in runs.items():
                w, c, results[key] = timed(fn)
                best_w[key] = min(best_w[key], w)
                cpu[key].append(c)
        decoded, clips, cuts = results["pipeline"]
        ref = pyscenedetect_cuts(path)
        same = [round(x, 6) for x in cuts] == [round(x, 6) for x in ref]
        print(f"{name}: cuts {[round(x, 3) for x in cuts]}; PySceneDetect's own pipeline "
              f"{'the same' if same else [round(x, 3) for x in ref]}; stock "
              f"{'the same' if results['stock'][2] == cuts else 'DIFFERENT'}", flush=True)
        rows.append((name, in_file, best_w, cpu, decoded, clips))

    def per_round(cpu, key):
        """The median over rounds of key's CPU time / plain's in the same round (on a loaded machine the
        ratio of the best times pairs a quiet moment of one with a busy one of the other)."""
        return statistics.median(a / b for a, b in zip(cpu[key], cpu["plain"]))

    hdr = (f"{'video':6} {'frames':>6} {'plain s':>8} {'plain fps':>9} {'pipeline s':>10} {'ratio':>6} "
           f"{'cpu ratio':>9} {'(of bests)':>10} {'scenes s':>8} {'ratio':>6} {'scenes cpu':>10} "
           f"{'stock cpu':>9} {'decoded/file':>12} {'clips':>5}")
    print(hdr)
    print("-" * len(hdr))
    for name, n, bw, cpu, dec, clips in rows:
        print(f"{name:6} {n:6d} {bw['plain']:8.2f} {n / bw['plain']:9.0f} {bw['pipeline']:10.2f} "
              f"{bw['pipeline'] / bw['plain']:6.2f} {per_round(cpu, 'pipeline'):9.2f} "
              f"{min(cpu['pipeline']) / min(cpu['plain']):10.2f} {bw['scenes']:8.2f} {bw['scenes'] / bw['plain']:6.2f} "
              f"{per_round(cpu, 'scenes'):10.2f} {per_round(cpu, 'stock'):9.2f} {dec:>5d}/{n:<6d} {clips:5d}")
    print("ratio = wall time / plain decode wall time (best of each); cpu ratio = process CPU time (all threads) / "
          "plain's in the same round, median over rounds (and the ratio of the best CPU times)")

    sparse_opts = ClipOptions(scenes="none", max_clip=10, frames=2)
    print("\nsparse: --scenes none --max-clip 10 --frames 2 on the same videos with a 1 s GOP (25 frames); "
          "CPU seconds best of each, cpu ratio the median over rounds")
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

        cpu = {"plain": [], "sparse": []}
        decoded = 0
        for _ in range(args.repeat):
            cpu["plain"].append(timed(lambda p=path: plain_decode(p))[1])
            _, c, decoded = timed(sparse)
            cpu["sparse"].append(c)
        print(f"{name:6} {in_file:6d} {min(cpu['plain']):11.2f} {min(cpu['sparse']):12.2f} "
              f"{per_round(cpu, 'sparse'):9.2f} {decoded:>5d}/{in_file:<6d} {decoded / in_file:8.3f}")
    if args.agreement:
        agreement(folder, args.agreement)
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
