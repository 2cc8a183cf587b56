"""DPO step cost by reference kind: a frozen copy of the starting model, log-probs precomputed once
(`--precompute-ref`), and LoRA with the adapters switched off as the reference.

    python bench/dpo.py [--videos 16] [--steps 8] [--batch 8] [--preset nano]

The model has the preset's architecture with a random LLM (and the tower the preset ships): this
measures cost, not quality, so it needs no trained model. Pairs: each fine description of the
synthetic world (chosen) against the same events in reverse order (rejected). The runs go side by
side in one process on the same pairs and the same data order, so the ratios are meaningful on a
noisy machine; the absolute seconds are for orientation only."""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from tarsier.evaluation.exact import parse_events
from tarsier.trainers.dpo import DPOArgs, train_dpo
from tarsier.trainers.train import TrainArgs, build_or_load
from tarsier.world.build import generate


def write_pairs(world: Path, out: Path) -> int:
    rows = []
    for line in (world / "stage2" / "describe.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["task"] != "describe/fine":
            continue
        reference = r["messages"][1]["content"][0]["text"]
        events = [e.sentence() for e in parse_events(reference)]
        if len(events) < 2:
            continue
        user = r["messages"][0]
        video = user["content"][0]["video"]
        video["video_file"] = str((world / "stage2" / video["video_file"]).resolve())
        rows.append({"messages": [user], "chosen": " ".join(events), "rejected": " ".join(events[::-1])})
    out.write_text("".join(json.dumps(x) + "\n" for x in rows))
    return len(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--preset", default="nano")
    a = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate(tmp / "world", videos=a.videos, seed=3, workers=1)
        n = write_pairs(tmp / "world", tmp / "pairs.jsonl")
        texts = [json.loads(x)["chosen"] for x in (tmp / "pairs.jsonl").read_text().splitlines()]
        model, _ = build_or_load(TrainArgs(stage="stage2", data="", out=str(tmp / "unused"), init=a.preset), texts)
        model.save(tmp / "start")
        params = sum(p.numel() for p in model.parameters())
        del model
        print(f"{a.preset} architecture, random LLM: {params / 1e6:.2f} M parameters; {n} pairs, "
              f"{a.steps} steps of {a.batch} pairs, {torch.get_num_threads()} threads")
        kinds = [("frozen copy", {}), ("precomputed", {"precompute_ref": True}),
                 ("LoRA, adapters off", {"lora": True, "lr": 1e-3})]
        results = []
        for name, kw in kinds:
            run = tmp / name.replace(" ", "_").replace(",", "")
            args = DPOArgs(data=str(tmp / "pairs.jsonl"), out=str(run), init=str(tmp / "start"), steps=a.steps,
                           batch_size=a.batch, lr=kw.pop("lr", 5e-4), warmup=0, log_every=1, device="cpu", **kw)
            t = time.perf_counter()
            train_dpo(args)
            total = time.perf_counter() - t
            rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
            loop = rows[-1]["elapsed_s"]
            # steps after the first: the first also decodes every clip it meets
            per_step = (loop - rows[0]["elapsed_s"]) / max(1, len(rows) - 1)
            models = 1 if kw else 2
            results.append((name, per_step, total - loop, models, rows[-1]["reward_margin"]))
        base = results[0][1]
        print(f"| reference | s/step | vs frozen copy | setup + saving s | models in memory | margin at step {a.steps} |")
        print("|---|---|---|---|---|---|")
        for name, per_step, setup, models, margin in results:
            print(f"| {name} | {per_step:.3f} | {per_step / base:.2f} | {setup:.1f} | {models} | {margin:.3f} |")


if __name__ == "__main__":
    main()
