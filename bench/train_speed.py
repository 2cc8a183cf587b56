"""Training-step speed: the frozen tower's features cached vs decoding + encoding every step, and
batches grouped by length (`TrainArgs.group_by_length`) vs the sampler's order, and the tower's
batch and decode processes when the cache is filled.

    python bench/train_speed.py [--videos 48] [--steps 16] [--fill-videos 240] [--preset nano] [--stage stage1|stage2]
    python bench/train_speed.py --contention [--steps 120]

`--contention` measures training beside a CPU hog (a busy loop on one core): samples/s with torch's
fixed thread count (as before trainers/threads.py) and with the run's thread tuner, as ratios to the
idle machine, each loop in its own process so that thread settings cannot leak between them.

The loops run side by side in one process on the same synthetic data and the same samples (the
grouped loop batches them differently), so the ratios are meaningful on a noisy machine; the
absolute samples/s are for orientation only."""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from tarsier.engine import checkpoint as ckpt
from tarsier.engine.config import ModelConfig
from tarsier.engine.tokenizer import build_bpe_tokenizer
from tarsier.trainers.data import FeatureStore, _decode, clip_key, collate, default_decode_workers
from tarsier.trainers.manifest import LengthGroupedBatches, load_mixture
from tarsier.world.build import generate


class DecodeEveryStep:
    """What training costs without the cache: every sample decoded and encoded each time."""

    def __init__(self, model, frames):
        self.model, self.frames = model, frames

    def get(self, samples):
        clips = [torch.from_numpy(_decode((str(s.video), self.frames, self.model.frame_size, s.start, s.end,
                                           s.frame_times))) for s in samples]
        with torch.no_grad():
            feats = self.model.encode_frames(torch.stack(clips))
        return feats.view(len(samples), self.frames, *feats.shape[1:])


def padding_share(model, samples, batch) -> float:
    real = padded = 0
    for i in range(0, len(samples), batch):
        mask = collate(model, samples[i:i + batch], model.config.frames)["attention_mask"]
        real, padded = real + int(mask.sum()), padded + mask.numel()
    return 1 - real / padded


def tower_rate(model, clips: list[torch.Tensor], per_call: int, repeats: int = 3) -> float:
    """Clips per second through the frozen tower, `per_call` clips per forward (best of `repeats`)."""
    best = 0.0
    with torch.inference_mode():
        for _ in range(repeats):
            t = time.perf_counter()
            for i in range(0, len(clips), per_call):
                model.encode_frames(torch.stack(clips[i:i + per_call]))
            best = max(best, len(clips) / (time.perf_counter() - t))
    return best


def fill_rate(model, samples, folder: Path, workers: int) -> float:
    """Clips per second filling an empty feature cache (decode + tower once per clip)."""
    store = FeatureStore(model, model.config.frames, folder, workers=workers)
    t = time.perf_counter()
    store.ensure(samples)
    return store.computed / (time.perf_counter() - t)


def random_model(mix, preset_name: str):
    """A fresh model of a preset, its tokenizer trained on the mixture's texts, tower frozen."""
    preset = ckpt.read_preset(preset_name)
    tok = build_bpe_tokenizer([t for s in mix.samples for t in (s.prompt, s.answer)],
                              vocab_size=preset.get("tokenizer", {}).get("vocab_size", 512))
    config = ModelConfig.from_dict(preset["config"])
    config.llm["vocab_size"] = len(tok)
    model = ckpt.build_random(config, tok)
    model.set_vision_trainable(False)
    return model


def run(model, source, samples, batch, steps, tuner=None) -> float:
    """Samples/s of `steps` training steps; `tuner` (a ThreadTuner) is told each step's tokens."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    t = time.perf_counter()
    for i in range(steps):
        chunk = samples[i * batch:(i + 1) * batch]
        b = collate(model, chunk, model.config.frames)
        loss, _ = model(b["input_ids"], b["attention_mask"], b["labels"], features=source.get(chunk))
        loss.backward()
        opt.step()
        opt.zero_grad()
        if tuner:
            tuner.step_done(int(b["attention_mask"].sum()))
    return steps * batch / (time.perf_counter() - t)


def contention_child(tuned: bool, steps: int, batch: int, folder: Path) -> None:
    """One training loop on cached features; prints its samples/s over the whole loop, probes included."""
    import json

    from tarsier.trainers.threads import ThreadTuner

    mix = load_mixture(folder / "world" / "stage2" / "mixture.json")
    sampler = mix.sampler(seed=0)
    samples = [next(sampler) for _ in range(steps * batch)]
    model = random_model(mix, "nano")
    store = FeatureStore(model, model.config.frames, folder / "features", workers=1)
    store.ensure(samples)
    # the trainer's own tuner, probing sooner and more often than its defaults so a short bench sees it act
    tuner = ThreadTuner(torch.get_num_threads(), every=40, probe=3, start=2) if tuned else None
    rate = run(model, store, samples, batch, steps, tuner)
    print(json.dumps({"samples_per_s": rate,
                      "threads": [h[1] for h in tuner.history] if tuner else [torch.get_num_threads()]}))


def contention(steps: int, batch: int) -> None:
    import json
    import subprocess
    import sys

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        generate(folder / "world", videos=24, seed=3, workers=1)

        def loop(tuned: bool, hog: bool) -> dict:
            neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if hog else None
            try:
                out = subprocess.run([sys.executable, __file__, "--contention-child", "tuned" if tuned else "fixed",
                                      "--steps", str(steps), "--batch", str(batch), "--folder", str(folder)],
                                     check=True, capture_output=True, text=True).stdout
            finally:
                if neighbour:
                    neighbour.kill()
            return json.loads(out.strip().splitlines()[-1])

        loop(False, False)   # fills the feature cache, warms the disk cache
        rows = [("idle, fixed threads", loop(False, False)), ("idle, tuned", loop(True, False)),
                ("hog beside, fixed threads (before)", loop(False, True)), ("hog beside, tuned (after)", loop(True, True))]
    idle = rows[0][1]["samples_per_s"]
    print(f"nano stage-2 steps on cached features, batch {batch}, {steps} steps, {os.cpu_count()} cores; "
          "hog = one busy Python loop")
    print("| loop | samples/s | vs idle, fixed | threads chosen |")
    print("|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['samples_per_s']:.1f} | {r['samples_per_s'] / idle:.2f}x | "
              f"{', '.join(map(str, r['threads']))} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=48)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--stage", choices=("stage1", "stage2"), default="stage1")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--preset", default="nano")
    ap.add_argument("--fill-videos", type=int, default=240, help="videos for the cache-fill comparison")
    ap.add_argument("--contention", action="store_true", help="training beside a CPU hog, fixed threads vs tuned")
    ap.add_argument("--contention-child", choices=("fixed", "tuned"), help=argparse.SUPPRESS)
    ap.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.contention_child:
        return contention_child(a.contention_child == "tuned", a.steps, a.batch, a.folder)
    if a.contention:
        return contention(a.steps if a.steps != 16 else 120, a.batch)
    with tempfile.TemporaryDirectory() as tmp:
        world = Path(tmp) / "world"
        generate(world, videos=a.videos, seed=3, workers=1)
        mix = load_mixture(world / a.stage / "mixture.json")
        sampler = mix.sampler(seed=0)
        samples = [next(sampler) for _ in range(a.steps * a.batch)]
        # one group as long as the run: the very same samples, sorted into batches by length
        grouper = LengthGroupedBatches(mix.sampler(seed=0), a.batch, group=a.steps)
        grouped = [s for _ in range(a.steps) for s in next(grouper)]
        model = random_model(mix, a.preset)
        store = FeatureStore(model, model.config.frames, Path(tmp) / "features", workers=1)
        t = time.perf_counter()
        store.ensure(samples)
        fill = time.perf_counter() - t
        unique = len({clip_key(s) for s in samples})
        # warm both paths once, then measure them back to back
        run(model, store, samples, a.batch, 1)
        run(model, DecodeEveryStep(model, model.config.frames), samples, a.batch, 1)
        cached = run(model, store, samples, a.batch, a.steps)
        uncached = run(model, DecodeEveryStep(model, model.config.frames), samples, a.batch, a.steps)
        by_length = run(model, store, grouped, a.batch, a.steps)
        clips = [torch.from_numpy(_decode((str(v), model.config.frames, model.frame_size, None, None, None)))
                 for v in sorted((world / "videos").iterdir())[:32]]
        tower_rate(model, clips, 4, repeats=1)  # warm-up: the first forward pays oneDNN's setup
        tower_16, tower_4 = tower_rate(model, clips, 16), tower_rate(model, clips, 4)
        fill_world = Path(tmp) / "fill"
        generate(fill_world, videos=a.fill_videos, seed=4)
        fill_samples = load_mixture(fill_world / "stage2" / "mixture.json").samples
        pool_2 = fill_rate(model, fill_samples, Path(tmp) / "fill-pool", workers=2)
        in_process = fill_rate(model, fill_samples, Path(tmp) / "fill-inline", workers=1)
        pad_plain, pad_grouped = padding_share(model, samples, a.batch), padding_share(model, grouped, a.batch)
    print(f"preset {a.preset}, {a.stage} data, batch {a.batch}, {a.steps} steps, {unique} distinct clips, torch threads "
          f"{torch.get_num_threads()}")
    print(f"cache fill (decode + encode once per clip): {fill:.1f}s")
    print("| loop | samples/s |")
    print("|---|---|")
    print(f"| decode + tower every step | {uncached:.1f} |")
    print(f"| cached tower features | {cached:.1f} |")
    print(f"| cached, batches grouped by length | {by_length:.1f} |")
    print(f"feature cache speedup: {cached / uncached:.2f}x")
    print(f"grouping by length: padding {pad_plain:.0%} -> {pad_grouped:.0%} of tokens, "
          f"speedup {by_length / cached:.2f}x")
    print(f"tower batch (feature cache fill): {tower_16:.1f} clips/s at 16 clips per call, {tower_4:.1f} at 4 "
          f"(FeatureStore's): {tower_4 / tower_16:.2f}x")
    print(f"cache fill, {a.fill_videos} clips: {pool_2:.1f} clips/s decoding in a pool of 2 processes, "
          f"{in_process:.1f} in-process: {in_process / pool_2:.2f}x (FeatureStore's default on {os.cpu_count()} cores: "
          f"{'in-process' if default_decode_workers() <= 1 else 'a pool'})")


if __name__ == "__main__":
    main()
