"""Can nano learn which way a shape moves? One question, four answers, two projector layouts.

Fine descriptions of the synthetic world name a direction for every move, and nano without a
motion separator wrote them at chance ("up" for most). This experiment isolates that skill: each
training sample asks "Which way does the red circle move?" about a move of a shape that moves
once in its clip, and the answer is Left., Right., Up. or Down. Each projector layout trains a
fresh nano (the tower it ships) for the same steps on the same samples; accuracy is scored on
held-out clips by which of the four answers the model finds most likely. Chance is about 0.25.

    tarsier synth W --videos 8000 --seed 1
    python experiments/nano/direction.py --world W --out R --steps 600

It also prints how well a linear probe reads the direction from the frozen tower's pooled cell
features at the move's own frames: the information the LLM is given, without the LLM.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ANSWERS = {"left": "Left.", "right": "Right.", "up": "Up.", "down": "Down."}


def direction_rows(world: Path, first: int, last: int) -> list[dict]:
    """Manifest rows (DREAM-1K "messages") for the moves of clips first..last-1."""
    rows = []
    for line in (world / "truth.jsonl").read_text().splitlines():
        truth = json.loads(line)
        if not first <= truth["index"] < last:
            continue
        movers = [(e["colour"], e["shape"]) for e in truth["events"] if e["verb"] == "move"]
        for e in truth["events"]:
            if e["verb"] != "move" or movers.count((e["colour"], e["shape"])) != 1:
                continue
            video = {"type": "video", "video": {"video_file": str((world / truth["video_file"]).resolve())}}
            question = {"type": "text", "text": f"Which way does the {e['colour']} {e['shape']} move?"}
            answer = {"type": "text", "text": ANSWERS[e["args"]["direction"]]}
            rows.append({"messages": [{"role": "user", "content": [video, question]},
                                      {"role": "assistant", "content": [answer]}],
                         "task": "direction", "video_id": truth["video_id"],
                         "move": {"t_start": e["t_start"], "t_end": e["t_end"], "n_frames": truth["n_frames"],
                                  "fps": truth["fps"]}})
    return rows


def accuracy(model, samples) -> float:
    """Share of samples whose true answer is the most likely of the four (teacher-forced NLL)."""
    from dataclasses import replace

    import torch

    from tarsier.demo import answer_nll
    from tarsier.trainers.data import FeatureStore

    store = FeatureStore(model, model.config.frames, workers=1)
    answers = list(ANSWERS.values())
    right = 0
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(samples), 16):
            chunk = samples[i:i + 16]
            features = store.get(chunk)
            nll = [answer_nll(model, [replace(s, answer=a) for s in chunk], features)[0] for a in answers]
            picks = torch.stack(nll, 1).argmin(1).tolist()
            right += sum(s.answer == answers[k] for s, k in zip(chunk, picks))
    return right / len(samples)


def probe(model, train_set, test_set) -> float:
    """Held-out accuracy of a linear read-out of the direction from the pooled cells' change
    between the two sampled frames around the move's middle (standardised, AdamW, full batch).
    Each set is (samples, manifest rows)."""
    import torch

    from tarsier.engine.model import pool_patches
    from tarsier.engine.sampling import sample_indices
    from tarsier.trainers.data import FeatureStore

    frames = model.config.frames
    store = FeatureStore(model, frames, workers=1)

    def changes(samples, rows):
        xs, ys = [], []
        for s, row in zip(samples, rows):
            m = row["move"]
            # Tarsier's uniform index rule: the frames the sampler picks from a constant-rate clip
            times = [i / m["fps"] for i in sample_indices(m["n_frames"], frames)]
            middle = (m["t_start"] + m["t_end"]) / 2
            k = min(max(i for i in range(frames) if times[i] <= middle), frames - 2)
            cells = pool_patches(store.get([s])[0], model.config.projector.spatial_pool)
            xs.append((cells[k + 1] - cells[k]).flatten())
            ys.append(list(ANSWERS.values()).index(s.answer))
        return torch.stack(xs), torch.tensor(ys)

    x, y = changes(*train_set)
    x_test, y_test = changes(*test_set)
    mean, std = x.mean(0), x.std(0) + 1e-4
    linear = torch.nn.Linear(x.shape[1], len(ANSWERS))
    opt = torch.optim.AdamW(linear.parameters(), lr=1e-3, weight_decay=1e-2)
    for _ in range(400):
        loss = torch.nn.functional.cross_entropy(linear((x - mean) / std), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float((linear((x_test - mean) / std).argmax(1) == y_test).float().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", type=Path, required=True, help="a `tarsier synth` world")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--held-out", type=int, default=1000, help="the world's last N clips are scored, not trained on")
    args = p.parse_args()

    from tarsier.engine.checkpoint import load
    from tarsier.trainers.manifest import load_manifest
    from tarsier.trainers.train import TrainArgs, train

    videos = sum(1 for _ in (args.world / "truth.jsonl").open())
    split = videos - args.held_out
    args.out.mkdir(parents=True, exist_ok=True)
    sets = {}
    for name, rows in (("train", direction_rows(args.world, 0, split)),
                       ("test", direction_rows(args.world, split, videos))):
        (args.out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        sets[name] = (load_manifest(args.out / f"{name}.jsonl"), rows)
    test = sets["test"][0]
    print(f"{len(sets['train'][0])} training moves, {len(test)} held-out", flush=True)

    for layout, projector in (("cells + change (nano before)", {"motion_separator": False}),
                              ("+ motion separator (nano now)", {"motion_separator": True})):
        folder = args.out / ("motion" if projector["motion_separator"] else "cells")
        t = time.perf_counter()
        final = train(TrainArgs(stage="stage1", data=str(args.out / "train.jsonl"), out=str(folder), init="nano",
                                steps=args.steps, lr=1e-3, warmup=30, log_every=50, resume=True, projector=projector),
                      on_status=lambda m: None)
        seconds = time.perf_counter() - t
        model = load(final)
        print(f"RESULT {layout}: held-out direction accuracy {accuracy(model, test):.3f} after {args.steps} steps "
              f"({seconds:.0f} s)", flush=True)
    print(f"RESULT linear probe on the pooled cells' change at the move: "
          f"{probe(model, sets['train'], sets['test']):.3f}", flush=True)


if __name__ == "__main__":
    main()
