"""What the published models are fed, and what describing with them costs on the CPU.

    python bench/published_geometry.py                       # input geometry table: project vs upstream
    python bench/published_geometry.py --describe --before DIR
        # describe's clips/s with tiny Tarsier2 / Tarsier-7b checkpoints (tests/published_fixtures.py):
        # this tree and the tree at DIR (e.g. `git worktree add DIR <commit>`) in alternating runs of one process

The table decodes a generated 1-second video of each aspect ratio through the project's decoder and the
Tarsier2 processor and reports the frames, the size the model sees and the visual tokens per clip, next to
upstream's rule (smart_resize with factor 1 under 460,800 pixels, then multiples of 28: see
tests/test_published_inputs.py) and the project's rule before this change (every frame stretched to 672x672).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASPECTS = [("16:9", 1280, 720), ("2.4:1", 1920, 800), ("9:16", 720, 1280), ("4:3", 640, 480), ("small 4:3", 320, 240)]


def _upstream(width: int, height: int, frames: int = 16) -> tuple[int, int, int]:
    def rnd(h, w, f, lo, hi):
        hb, wb = round(h / f) * f, round(w / f) * f
        if hb * wb > hi:
            b = math.sqrt(h * w / hi)
            hb, wb = math.floor(h / b / f) * f, math.floor(w / b / f) * f
        elif hb * wb < lo:
            b = math.sqrt(lo / (h * w))
            hb, wb = math.ceil(h * b / f) * f, math.ceil(w * b / f) * f
        return hb, wb

    h1, w1 = rnd(height, width, 1, 0, 460800)
    h2, w2 = rnd(h1, w1, 28, 3136, 12845056)
    return w2, h2, frames * (h2 // 28) * (w2 // 28)


def geometry_table() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    import published_fixtures as pf
    import videogen

    import tarsier
    from tarsier.engine.video import ClipOptions, read_clips

    tmp = Path(tempfile.mkdtemp())
    qwen = tarsier.load(pf.write_qwen2_vl(tmp / "qwen", style="llava"), device="cpu")
    print("| clip | upstream: size seen, visual tokens | project now | project before (stretched square) |")
    print("|---|---|---|---|")
    for name, w, h in ASPECTS:
        video = videogen.make_video(tmp / f"{w}x{h}.mp4", [(1.0, 0)], fps=25, size=(w, h))
        options = ClipOptions(scenes="none", max_clip=None, frames=16, geometry=qwen.processor.geometry, threads=1)
        clip = read_clips(video.path, options)[1][0]
        grid = qwen.processor.inputs([clip.frames], ["Describe the video in detail."])["image_grid_thw"][0].tolist()
        tokens = grid[0] * grid[1] * grid[2] // 4
        uw, uh, ut = _upstream(w, h)
        print(f"| {name} {w}x{h}, 16 frames | {uw}x{uh}, {ut:,} | {clip.frame_size[0]}x{clip.frame_size[1]}, "
              f"{tokens:,} (decoded at {clip.frames.shape[2]}x{clip.frames.shape[1]}) | 672x672, {16 * 24 * 24:,} |")


DESCRIBE = r"""
import json, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path.cwd() / "tests"))
import published_fixtures as pf, videogen
from tarsier import engine
from tarsier.engine.describe import describe
tmp = Path(tempfile.mkdtemp())
videos = tmp / "videos"
videos.mkdir()
for i, size in enumerate([(320, 180), (320, 240), (180, 320), (288, 120)]):
    videogen.make_video(videos / f"v{i}.mp4", [(2.0, i), (2.0, i + 1)], fps=25, size=size)
out = {}
qwen = pf.write_qwen2_vl(tmp / "q", style="llava")
# both trees read the processor limits Qwen2-VL-7B-Instruct publishes (older fixtures wrote a tiny cap)
(qwen / "preprocessor_config.json").write_text(json.dumps({
    "min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
    "image_mean": pf.CLIP_MEAN, "image_std": pf.CLIP_STD, "image_processor_type": "Qwen2VLImageProcessor"}))
for name, folder in [("tarsier2 (tiny)", qwen), ("tarsier-7b (tiny)", pf.write_llava(tmp / "l"))]:
    model = tarsier.load(folder, device="cpu")
    describe([str(videos)], model=model, output_dir=tmp / "warm", max_new_tokens=2, workers=0, threads=1)
    t = time.perf_counter()
    s = describe([str(videos)], model=model, output_dir=tmp / name, max_new_tokens=8, workers=0, threads=1,
                 batch_size=4)
    out[name] = [s.clips_done / (time.perf_counter() - t), s.tokens / max(1, s.clips_done)]
print(json.dumps(out))
"""


def _describe_rate(tree: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", DESCRIBE], cwd=tree, env=env, capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def describe_table(before: Path | None, rounds: int) -> None:
    trees = [("after", ROOT)] + ([("before", before)] if before else [])
    rates: dict = {}
    for _ in range(rounds):
        for label, tree in trees:
            for model, (rate, tokens) in _describe_rate(tree).items():
                rates.setdefault(model, {}).setdefault(label, []).append(rate)
                rates[model][label + " tokens"] = tokens
    print("| describe, 4 generated videos (8 clips), CPU, 1 thread | before: clips/s (tokens/clip) "
          "| after: clips/s (tokens/clip) | after/before |")
    print("|---|---|---|---|")
    for model, by in rates.items():
        after = statistics.median(by["after"])
        now = f"{after:.2f} ({by['after tokens']:.1f})"
        if "before" in by:
            b = statistics.median(by["before"])
            print(f"| {model} | {b:.2f} ({by['before tokens']:.1f}) | {now} | {after / b:.2f}x |")
        else:
            print(f"| {model} | - | {now} | - |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--describe", action="store_true", help="time describe instead of printing the geometry")
    ap.add_argument("--before", type=Path, help="a checkout of the code to compare with (with --describe)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    if args.describe:
        describe_table(args.before, args.rounds)
    else:
        geometry_table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
