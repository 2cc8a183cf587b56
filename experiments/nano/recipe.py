"""Train one nano recipe on a synthetic world and score it on a held-out synthetic benchmark.

The demo's budget is fixed at about 10 minutes; this experiment is for the budgets and data regimes
beyond it (BENCHMARKS.md, "Longer budgets"): how many stage-1 and stage-2 steps, which stage-1
task weights, and whether stage 2 sees every video or only the first M (the paper's regime, where
fine descriptions are scarce and stage 1's data is plentiful). Run one recipe per call, each into
its own folder, and compare the RESULT lines:

    tarsier synth W --videos 8000 --seed 1 && tarsier synth B --videos 100 --seed 9001
    python experiments/nano/recipe.py --world W --bench B --out R1 --stage2-steps 3200 --stage2-videos 2000
    python experiments/nano/recipe.py --world W --bench B --out R2 --stage1-steps 1600 --stage2-steps 1600 \
        --stage2-videos 2000 --stage1-weights caption=4,qa=1,action=0.5,mcq=0.5,order=0.5

Every run starts from a fresh `nano` with the tower it ships (`--projector` changes its projector
settings, e.g. `motion_separator=false` for nano before it had one); a rerun resumes finished stages.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def stage1_mixture(world: Path, weights: str | None, out: Path) -> Path:
    """The world's stage-1 mixture, or one with other task weights (`caption=4,qa=1,...`)."""
    if not weights:
        return world / "stage1" / "mixture.json"
    mixture = json.loads((world / "stage1" / "mixture.json").read_text())
    asked = {k: float(v) for k, v in settings(weights).items()}
    unknown = set(asked) - {m["task"] for m in mixture["manifests"]}
    if unknown:
        raise SystemExit(f"--stage1-weights: no such stage-1 task: {', '.join(sorted(unknown))}")
    for m in mixture["manifests"]:
        m["weight"] = asked.get(m["task"], m["weight"])
        m["path"] = str((world / "stage1" / m["path"]).resolve())
    out.mkdir(parents=True, exist_ok=True)
    (out / "stage1-mixture.json").write_text(json.dumps(mixture, indent=1))
    return out / "stage1-mixture.json"


def stage2_subset(world: Path, videos: int | None, out: Path) -> Path:
    """The world's stage-2 mixture, or a manifest of the rows of its first `videos` videos only."""
    if not videos:
        return world / "stage2" / "mixture.json"
    source = world / "stage2" / "describe.jsonl"
    kept: set[str] = set()
    rows = []
    for line in source.read_text().splitlines():
        row = json.loads(line)
        if row["video_id"] not in kept and len(kept) >= videos:
            continue
        kept.add(row["video_id"])
        for turn in row["messages"]:
            for part in turn["content"]:
                if part.get("type") == "video":   # the subset lives elsewhere: make its video paths absolute
                    part["video"]["video_file"] = str((source.parent / part["video"]["video_file"]).resolve())
        rows.append(json.dumps(row))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"stage2-first{videos}.jsonl").write_text("\n".join(rows) + "\n")
    return out / f"stage2-first{videos}.jsonl"


def settings(text: str) -> dict:
    """`key=value,...` with JSON values (`true`, `2`), else strings."""
    out = {}
    for kv in text.split(","):
        key, _, value = kv.partition("=")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", type=Path, required=True, help="a `tarsier synth` training world")
    p.add_argument("--bench", type=Path, required=True, help="a `tarsier synth` world of another seed, for scoring")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--stage1-steps", type=int, default=0, help="0: stage 2 alone")
    p.add_argument("--stage1-weights", help="stage-1 task weights, e.g. caption=4,qa=1 (others keep the world's)")
    p.add_argument("--stage2-steps", type=int, required=True)
    p.add_argument("--stage2-videos", type=int, help="stage 2 sees only the world's first M videos")
    p.add_argument("--projector", type=settings, help="nano's projector settings to change, e.g. motion_separator=false")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0, help="weights' init and data order; rerun with others to see the noise")
    args = p.parse_args()

    from tarsier.demo import score_on_benchmark
    from tarsier.engine.checkpoint import load
    from tarsier.trainers.train import TrainArgs, train

    common = dict(batch_size=args.batch_size, lr=args.lr, log_every=50, resume=True, warmup=30, seed=args.seed)
    seconds = {}
    init = "nano"
    if args.stage1_steps:
        t = time.perf_counter()
        init = train(TrainArgs(stage="stage1", data=str(stage1_mixture(args.world, args.stage1_weights, args.out / "data")),
                               out=str(args.out / "stage1"), init="nano", steps=args.stage1_steps,
                               projector=args.projector, **common),
                     on_status=lambda m: None)
        seconds["stage1"] = round(time.perf_counter() - t)
    t = time.perf_counter()
    final = train(TrainArgs(stage="stage2", data=str(stage2_subset(args.world, args.stage2_videos, args.out / "data")),
                            out=str(args.out / "stage2"), init=str(init), steps=args.stage2_steps,
                            projector=None if args.stage1_steps else args.projector, **common),
                  on_status=lambda m: None)
    seconds["stage2"] = round(time.perf_counter() - t)

    model = load(final)
    model.model_id = "nano"
    scores = score_on_benchmark(model, args.bench, args.out, "recipe", log=lambda m: None)
    scores = {k: ({m: None if x is None else round(x, 3) for m, x in v.items()} if isinstance(v, dict) else v)
              for k, v in scores.items()}
    recipe = {k: v for k, v in vars(args).items() if k not in ("world", "bench", "out")}
    print("RESULT", args.out.name, json.dumps(recipe), json.dumps(scores), json.dumps({"seconds": seconds}), flush=True)


if __name__ == "__main__":
    main()
