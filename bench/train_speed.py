"""Training-step speed: the frozen tower's features cached vs decoding + encoding every step, and
batches grouped by length (`TrainArgs.group_by_length`) vs the sampler's order.

    python bench/train_speed.py [--videos 48] [--steps 16] [--preset nano] [--stage stage1|stage2]

The loops run side by side in one process on the same synthetic data and the same samples (the
grouped loop batches them differently), so the ratios are meaningful on a noisy machine; the
absolute samples/s are for orientation only."""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from engine import checkpoint as ckpt
from engine.config import ModelConfig
from engine.tokenizer import build_bpe_tokenizer
from trainers.data import FeatureStore, _decode, clip_key, collate
from trainers.manifest import LengthGroupedBatches, load_mixture
from trainers.synth import generate


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


def run(model, source, samples, batch, steps) -> float:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    t = time.perf_counter()
    for i in range(steps):
        chunk = samples[i * batch:(i + 1) * batch]
        b = collate(model, chunk, model.config.frames)
        loss, _ = model(b["input_ids"], b["attention_mask"], b["labels"], features=source.get(chunk))
        loss.backward()
        opt.step()
        opt.zero_grad()
    return steps * batch / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=48)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--stage", choices=("stage1", "stage2"), default="stage1")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--preset", default="nano")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        world = Path(tmp) / "world"
        generate(world, videos=a.videos, seed=3, workers=1)
        mix = load_mixture(world / a.stage / "mixture.json")
        sampler = mix.sampler(seed=0)
        samples = [next(sampler) for _ in range(a.steps * a.batch)]
        # one group as long as the run: the very same samples, sorted into batches by length
        grouper = LengthGroupedBatches(mix.sampler(seed=0), a.batch, group=a.steps)
        grouped = [s for _ in range(a.steps) for s in next(grouper)]
        preset = ckpt.read_preset(a.preset)
        tok = build_bpe_tokenizer([t for s in mix.samples for t in (s.prompt, s.answer)],
                                  vocab_size=preset.get("tokenizer", {}).get("vocab_size", 512))
        config = ModelConfig.from_dict(preset["config"])
        config.llm["vocab_size"] = len(tok)
        model = ckpt.build_random(config, tok)
        model.set_vision_trainable(False)
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


if __name__ == "__main__":
    main()
