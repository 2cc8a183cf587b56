"""Diagnostic: how well can nano's LLM learn the synthetic world from *perfect* per-frame features?

Trains stage 2 (fine + brief descriptions) exactly as `tarsier demo` does, but every clip's tower
features are replaced by the exact scene state at the sampled frame times, read from the world's
plan (`tarsier.trainers.tower.frame_targets`: for each of the 35 colour-shape identities, presence,
position, size, orientation; plus background and camera offset). It is an upper bound for a
frozen per-frame tower of each layout, so it tells apart "the tower sees too little" from "the LLM
learns too slowly". Then describes the benchmark with the same features and scores it with the
exact judge. The projector settings (time slots, temporal difference) are nano's preset's.

    python experiments/nano/oracle_features.py --world W --bench B --steps 1000 [--layout slots|cells|quads|objs]
    python experiments/nano/oracle_features.py --plans 20000 --world W ...   # W: plans only, no video rendered

Layouts (tokens per frame):
  slots  1   the whole state vector (what the old 1-token nano tower was trained to provide)
  cells  16  4x4 grid; each cell: one-hot identities centred there + their attributes
  quads  4   2x2 grid; each cell: colour and shape one-hot + attributes of what is centred there
             (what nano's stage-0 tower is trained to provide in its 4 cells)
  objs   4   one token per object on screen (up to 4, by identity): colour and shape one-hot,
             attributes, change to the next frame, "gone next frame" and "new" flags
The oracle reaches training as its feature source (`train(..., feature_source=...)`) and the
projector's input width as a config override (`config_overrides=`); nothing else in training changes.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

WIDTH = 256   # the state vector (35 x 6 + 5 + 2 = 217 numbers) must fit the projector's input


def frame_times(truth: dict, frames: int, start=None, end=None) -> list[float]:
    from tarsier.engine.sampling import sample_indices

    times = [i / truth["fps"] for i in range(truth["n_frames"])]
    if start is not None:
        times = [t for t in times if start - 1e-6 <= t <= (end if end is not None else 1e9) + 1e-6]
    return [times[i] for i in sample_indices(len(times), frames)]


def _one_hot_object(k: int, attrs: np.ndarray) -> np.ndarray:
    """colour one-hot (7), shape one-hot (5), then x, y, size, cos, sin."""
    from tarsier.world.vocabulary import SHAPES

    vec = np.zeros(17, np.float32)
    vec[k // len(SHAPES)] = 1.0
    vec[7 + k % len(SHAPES)] = 1.0
    vec[12:17] = attrs
    return vec


def _put(out: torch.Tensor, fi: int, quadrant: int, vec: np.ndarray, add: bool = False) -> None:
    """Write into the 2x2 block of the 4x4 grid that pools (spatial_pool 2) into one quadrant token."""
    qy, qx = divmod(quadrant, 2)
    for cy in (2 * qy, 2 * qy + 1):
        for cx in (2 * qx, 2 * qx + 1):
            cell = out[fi, cy * 4 + cx, :len(vec)]
            cell += torch.from_numpy(vec) if add else torch.from_numpy(vec) - cell


def oracle_features(truth: dict, frames: int, layout: str, start=None, end=None) -> torch.Tensor:
    from tarsier.trainers.tower import SLOT, frame_targets
    from tarsier.world.plan import replay_plan

    plan = replay_plan(truth)
    out = torch.zeros(frames, 16, WIDTH)
    targets = [frame_targets(plan, t) for t in frame_times(truth, frames, start, end)]
    for fi, (slots, bg, cam) in enumerate(targets):
        present = np.flatnonzero(slots[:, 0] > 0.5)
        if layout == "slots":
            vec = np.zeros(WIDTH, np.float32)
            vec[:slots.size] = slots.reshape(-1)
            vec[slots.size + bg] = 1.0
            vec[slots.size + 5:slots.size + 7] = cam
            out[fi, :] = torch.from_numpy(vec)   # every cell: pooled, it is still the same vector
        elif layout == "quads":
            for k in present:
                x, y = (slots[k, 1:3] + 2) / 4
                quadrant = min(1, max(0, int(y * 2))) * 2 + min(1, max(0, int(x * 2)))
                _put(out, fi, quadrant, _one_hot_object(k, slots[k, 1:]), add=True)
        elif layout == "objs":
            nxt = targets[fi + 1][0] if fi + 1 < frames else None
            prev = targets[fi - 1][0] if fi > 0 else None
            for j, k in enumerate(present[:4]):
                vec = np.zeros(24, np.float32)
                vec[:17] = _one_hot_object(k, slots[k, 1:])
                if nxt is not None and nxt[k, 0] > 0.5:
                    vec[17:22] = (nxt[k, 1:] - slots[k, 1:]) * 4
                elif nxt is not None:
                    vec[22] = 1.0                       # gone in the next frame
                vec[23] = float(prev is not None and prev[k, 0] <= 0.5)   # new since the last frame
                _put(out, fi, j, vec)
        else:   # cells
            for k in present:
                x, y = (slots[k, 1] + 2) / 4, (slots[k, 2] + 2) / 4     # back to [0, 1] screen units
                cell = min(3, max(0, int(y * 4))) * 4 + min(3, max(0, int(x * 4)))
                out[fi, cell, k] += 1.0                                   # which identity
                out[fi, cell, 40:40 + SLOT - 1] += torch.from_numpy(slots[k, 1:])
        if layout != "slots":
            out[fi, :, 200 + bg] = 1.0
            out[fi, :, 205:207] = torch.from_numpy(cam)
    return out


def plans_only_world(folder: Path, plans: int, seed: int) -> None:
    """A world of `plans` planned videos with manifests but no pixels: the oracle needs only the
    plans, so it can train on far more distinct videos than could be rendered in the time."""
    from tarsier.world.build import generate

    if (folder / "benchmark.jsonl").is_file():
        return
    generate(folder, videos=plans, seed=seed, render=False)
    for line in (folder / "truth.jsonl").read_text().splitlines():
        placeholder = folder / json.loads(line)["video_file"]     # manifests must name existing files
        placeholder.parent.mkdir(parents=True, exist_ok=True)
        placeholder.touch()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", required=True, type=Path)
    ap.add_argument("--bench", required=True, type=Path)
    ap.add_argument("--out", type=Path, default=Path("/tmp/tarsier-oracle"))
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--layout", choices=("slots", "cells", "quads", "objs"), default="slots")
    ap.add_argument("--plans", type=int, default=0, help="first build --world (and --bench, 100) from plans alone")
    ap.add_argument("--time-slots", type=int, default=None, help="override the preset's time_slots (0: none)")
    ap.add_argument("--frames", type=int, default=16, help="frames per clip (nano's default: 16)")
    a = ap.parse_args()
    if a.plans:
        plans_only_world(a.world, a.plans, seed=1)
        plans_only_world(a.bench, 100, seed=9001)

    from tarsier.engine import checkpoint as ckpt
    from tarsier.evaluation import make_judge, score_file
    from tarsier.trainers.data import clip_key
    from tarsier.trainers.train import TrainArgs, train

    truths = {}
    for folder in (a.world, a.bench):
        for line in (folder / "truth.jsonl").read_text().splitlines():
            t = json.loads(line)
            truths[t["video_id"]] = t

    class OracleFeatures:
        """train()'s feature source: each clip's exact scene state at its sampled frames, kept in memory."""

        def __init__(self, frames: int):
            self.frames, self.memory = frames, {}

        def get(self, samples) -> torch.Tensor:
            for s in samples:
                key = clip_key(s)
                if key not in self.memory:
                    self.memory[key] = oracle_features(truths[Path(s.video).stem], self.frames, a.layout,
                                                       s.start, s.end)
            return torch.stack([self.memory[clip_key(s)] for s in samples])

    # the tower is never run: its width only sizes the projector's input for the state vector
    overrides = {"vision": {"width": WIDTH, "image_size": 64, "patch_size": 16, "resnet_blocks": None, "layers": 1},
                 "projector": {"spatial_pool": {"slots": 4, "cells": 1, "quads": 2, "objs": 2}[a.layout]}}
    if a.time_slots is not None:
        overrides["projector"]["time_slots"] = a.time_slots
    run = a.out / f"{a.layout}-{a.steps}-f{a.frames}-lr{a.lr:g}-t{a.time_slots}"
    t0 = time.perf_counter()
    final = train(TrainArgs(stage="stage2", data=str(a.world / "stage2" / "mixture.json"), out=str(run),
                            init="nano", steps=a.steps, lr=a.lr, batch_size=16, warmup=30, log_every=50,
                            frames=a.frames, vision_init="none", resume=True, device="cpu"),
                  on_log=lambda r: print(f"step {r['step']} loss {r['loss']:.4f} {r['samples_per_s']:.0f} samples/s"),
                  config_overrides=overrides, feature_source=OracleFeatures(a.frames))
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
        overall = result.report["overall"]   # None where no event was described
        scores[grain] = {k: None if overall[k] is None else round(overall[k], 3) for k in ("precision", "recall", "f1")}
    print(json.dumps({"layout": a.layout, "time_slots": a.time_slots, "steps": a.steps, "frames": a.frames, "lr": a.lr, "train_s": round(train_s, 1), **scores}))


if __name__ == "__main__":
    main()
