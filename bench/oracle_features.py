"""Diagnostic: how well can nano's LLM learn the synthetic world from *perfect* per-frame features?

Trains stage 2 (fine + brief descriptions) exactly as `tarsier demo` does, but every clip's tower
features are replaced by the exact scene state at the sampled frame times, read from the world's
plan (`trainers.tower.frame_targets`: for each of the 35 colour-shape identities, presence,
position, size, orientation; plus background and camera offset). It is an upper bound for any
frozen per-frame tower, so it tells apart "the tower sees too little" from "the LLM learns too
slowly". Then describes the benchmark with the same features and scores it with the exact judge.

    python bench/oracle_features.py --world W --bench B --steps 1000 [--layout slots|cells]

`slots`: one token per frame holding the whole state vector (what nano's pretrained tower is
trained to provide). `cells`: nano's older layout, 16 tokens per frame on a 4x4 grid, each holding
the identities whose centre lies in that cell (no cell position: the LLM only has RoPE for it).
Works by swapping the feature store's fill step for the oracle; nothing else in training changes.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WIDTH = 256   # the state vector (35 x 6 + 5 + 2 = 217 numbers) must fit the projector's input


def frame_times(truth: dict, frames: int, start=None, end=None) -> list[float]:
    from engine.sampling import sample_indices

    times = [i / truth["fps"] for i in range(truth["n_frames"])]
    if start is not None:
        times = [t for t in times if start - 1e-6 <= t <= (end if end is not None else 1e9) + 1e-6]
    return [times[i] for i in sample_indices(len(times), frames)]


def oracle_features(truth: dict, frames: int, layout: str, start=None, end=None) -> torch.Tensor:
    from trainers.synth import replay_plan
    from trainers.tower import SLOT, frame_targets

    plan = replay_plan(truth)
    out = torch.zeros(frames, 16, WIDTH)
    for fi, t in enumerate(frame_times(truth, frames, start, end)):
        slots, bg, cam = frame_targets(plan, t)
        if layout == "slots":
            vec = np.zeros(WIDTH, np.float32)
            vec[:slots.size] = slots.reshape(-1)
            vec[slots.size + bg] = 1.0
            vec[slots.size + 5:slots.size + 7] = cam
            out[fi, :] = torch.from_numpy(vec)   # every cell: pooled, it is still the same vector
            continue
        out[fi, :, 200 + bg] = 1.0
        for k in np.flatnonzero(slots[:, 0] > 0.5):
            x, y = (slots[k, 1] + 2) / 4, (slots[k, 2] + 2) / 4     # back to [0, 1] screen units
            cell = min(3, max(0, int(y * 4))) * 4 + min(3, max(0, int(x * 4)))
            out[fi, cell, k] += 1.0                                   # which identity
            out[fi, cell, 40:40 + SLOT - 1] += torch.from_numpy(slots[k, 1:])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", required=True, type=Path)
    ap.add_argument("--bench", required=True, type=Path)
    ap.add_argument("--out", type=Path, default=Path("/tmp/tarsier-oracle"))
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--layout", choices=("slots", "cells"), default="slots")
    ap.add_argument("--frames", type=int, default=8, help="frames per clip (nano's default: 8)")
    a = ap.parse_args()

    import trainers.train as train_mod
    from engine import checkpoint as ckpt
    from evaluation import make_judge, score_file
    from trainers.data import FeatureStore, clip_key
    from trainers.train import TrainArgs, train

    truths = {}
    for folder in (a.world, a.bench):
        for line in (folder / "truth.jsonl").read_text().splitlines():
            t = json.loads(line)
            truths[t["video_id"]] = t

    def ensure(self, samples, batch=16, progress=None):
        for s in samples:
            key = clip_key(s)
            if key not in self.memory:
                self.memory[key] = oracle_features(truths[Path(s.video).stem], self.frames, a.layout, s.start, s.end)

    FeatureStore.ensure = ensure
    original = ckpt.read_preset

    def nano_for_oracle(name: str) -> dict:
        preset = original(name)
        preset["config"]["vision"].update(width=WIDTH, image_size=64, patch_size=16)
        preset["config"]["projector"]["spatial_pool"] = 4 if a.layout == "slots" else 1
        return preset

    train_mod.ckpt.read_preset = nano_for_oracle
    run = a.out / f"{a.layout}-{a.steps}-f{a.frames}-lr{a.lr:g}"
    t0 = time.perf_counter()
    final = train(TrainArgs(stage="stage2", data=str(a.world / "stage2" / "mixture.json"), out=str(run),
                            init="nano", steps=a.steps, lr=a.lr, batch_size=16, warmup=30, log_every=50,
                            frames=a.frames,
                            resume=True, device="cpu"),
                  on_log=lambda r: print(f"step {r['step']} loss {r['loss']:.4f} {r['samples_per_s']:.0f} samples/s"))
    train_s = time.perf_counter() - t0
    model = ckpt.load(final, device="cpu")
    model.eval()
    tok = model.tokenizer
    bench_ids = [json.loads(line)["video_id"] for line in (a.bench / "truth.jsonl").read_text().splitlines()]
    scores = {}
    for grain, prompt in (("fine", "Describe the video in detail."), ("brief", "Describe the video in one short sentence.")):
        rows = []
        for i in range(0, len(bench_ids), 16):
            chunk = bench_ids[i:i + 16]
            feats = torch.stack([oracle_features(truths[v], model.config.frames, a.layout) for v in chunk])
            batch = model.tokenize([model.format_prompt(prompt)] * len(chunk), model.config.frames, padding_side="left")
            with torch.inference_mode():
                embeds = model.embed_inputs(batch["input_ids"], model.visual_tokens(features=feats))
                out = model.llm.generate(inputs_embeds=embeds, attention_mask=batch["attention_mask"],
                                         max_new_tokens=96, do_sample=False, eos_token_id=tok.eos_token_id,
                                         pad_token_id=tok.pad_token_id)
            for vid, row in zip(chunk, out.tolist()):
                n = row.index(tok.eos_token_id) if tok.eos_token_id in row else len(row)
                rows.append({"video": vid + ".mp4", "description": tok.decode(row[:n], skip_special_tokens=True).strip()})
        pred = run / f"oracle-{grain}.jsonl"
        pred.write_text("".join(json.dumps(r) + "\n" for r in rows))
        result = score_file(pred, a.bench / "benchmark.jsonl", make_judge("exact"), run / f"eval-{grain}",
                            replace_other_judge=True)
        scores[grain] = {k: round(result.report["overall"][k], 3) for k in ("precision", "recall", "f1")}
    print(json.dumps({"layout": a.layout, "steps": a.steps, "frames": a.frames, "lr": a.lr, "train_s": round(train_s, 1), **scores}))


if __name__ == "__main__":
    main()
