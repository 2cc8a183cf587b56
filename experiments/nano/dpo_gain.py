"""Does DPO (Tarsier2's stage 3) make nano's fine descriptions more precise, and is the preference signal the cause?

Builds preference pairs with the starting model on training clips (`tarsier train dpo-pairs`, exact judge),
trains DPO from it with two seeds and one control whose pairs are swapped at random (`--swap-labels`), and
scores the start and every run on a held-out benchmark (`tarsier eval bench`, fine grain, exact judge).
Every step is the CLI command a user would run (printed as it runs); a rerun skips the steps whose output
exists. The table it prints is what BENCHMARKS.md's "DPO on nano" records.

    tarsier synth W --videos 500 --seed 2024      # training clips for the pairs
    tarsier synth H --videos 300 --seed 7777      # held out: a seed no training data used
    # the recipe that gains (BENCHMARKS.md): on-policy pairs from the shipped nano's own samples
    python experiments/nano/dpo_gain.py --start nano --world W --bench H --out R --clips 400 --samples 4 \
        --temperature 0.7 --corruption none --steps 120 --lr 5e-5 --sft-weight 1
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import time
from pathlib import Path


def run(cmd: list[str], log: Path) -> float:
    print("$", shlex.join(cmd), flush=True)
    t = time.perf_counter()
    with open(log, "a") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT)
    return time.perf_counter() - t


def scores(model: str, bench: Path, out: Path, log: Path, seconds: dict, name: str) -> dict:
    report = out / "report.json"
    if not report.is_file():
        seconds[f"eval {name}"] = round(run(["tarsier", "eval", "bench", "--model", model, "-r", str(bench / "benchmark.jsonl"),
                                             "--videos", str(bench), "-o", str(out), "--judge", "exact"], log))
    overall = json.loads(report.read_text())["overall"]
    return {k: round(overall[k], 3) for k in ("precision", "recall", "f1")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--start", required=True, help="model DPO starts from (and its frozen reference)")
    p.add_argument("--world", type=Path, required=True, help="a `tarsier synth` training world (pairs come from it)")
    p.add_argument("--bench", type=Path, required=True, help="a `tarsier synth` world of a seed never trained on")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--pairs", type=Path, help="an existing pairs file (default: OUT/pairs.jsonl, built here)")
    p.add_argument("--clips", type=int, default=400, help="training clips to build pairs from")
    p.add_argument("--samples", type=int, default=1, help="dpo-pairs candidates per clip and corruption")
    p.add_argument("--temperature", type=float, default=0.0, help="dpo-pairs sampling temperature (0: greedy)")
    p.add_argument("--corruption", default="reverse,shuffle,drop,swap", help="dpo-pairs --corruption (none: "
                   "rejected texts from the clean clip's own lower-ranked samples)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=240)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--sft-weight", type=float, default=0.0, help="RPO's NLL term on the chosen answers")
    p.add_argument("--no-control", action="store_true", help="skip the swapped-labels run (a settings search)")
    p.add_argument("--ref-logps", type=Path, help="the start's reference log-probs of these pairs from an earlier "
                   "run (RUN/ref_logps.jsonl; default: computed by the first run here)")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    log, seconds = a.out / "commands.log", {}
    pairs = a.pairs or a.out / "pairs.jsonl"
    # the pairs builder resumes from its ledger: running it again finishes an interrupted file
    if not a.pairs:
        seconds["pairs"] = round(run(["tarsier", "train", "dpo-pairs", "--model", a.start, "-d",
                                      str(a.world / "stage2" / "describe.jsonl"), "--task", "describe/fine",
                                      "--limit", str(a.clips), "-o", str(pairs), "--judge", "exact", "-q",
                                      "--samples", str(a.samples), "--temperature", str(a.temperature),
                                      "--corruption", a.corruption], log))
    rows = {"start": scores(a.start, a.bench, a.out / "eval-start", log, seconds, "start")}
    runs = [(f"dpo seed {s}", a.out / f"dpo-s{s}", ["--seed", str(s)]) for s in a.seeds]
    if not a.no_control:
        runs.append((f"control: swapped labels, seed {a.seeds[0]}", a.out / f"swapped-s{a.seeds[0]}",
                     ["--seed", str(a.seeds[0]), "--swap-labels"]))
    reference = a.ref_logps   # the start's log-probs of the pairs, computed by the first run, read by the rest
    for name, folder, extra in runs:
        if reference is not None and reference.is_file():
            extra = [*extra, "--ref-logps", str(reference)]
        if not (folder / "final").is_dir():
            seconds[name] = round(run(["tarsier", "train", "dpo", "-d", str(pairs), "--init", a.start, "-o", str(folder),
                                       "--steps", str(a.steps), "-b", str(a.batch_size), "--lr", str(a.lr),
                                       "--beta", str(a.beta), "--sft-weight", str(a.sft_weight), "--precompute-ref", "--save-every", "60", "--resume",
                                       *extra], log))
        reference = reference or folder / "ref_logps.jsonl"
        last = json.loads((folder / "metrics.jsonl").read_text().splitlines()[-1])
        rows[name] = {**scores(str(folder / "final"), a.bench, a.out / f"eval-{folder.name}", log, seconds, name),
                      "reward_margin": round(last["reward_margin"], 3), "reward_accuracy": round(last["reward_accuracy"], 3)}
    kept = sum(1 for _ in pairs.open())
    print(f"\n{kept} pairs from {a.clips} clips; DPO {a.steps} steps x {a.batch_size} pairs, lr {a.lr}, beta {a.beta}, "
          f"sft weight {a.sft_weight}")
    print("| model | fine P | fine R | fine F1 | final reward margin / accuracy |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        extra = f"{r['reward_margin']} / {r['reward_accuracy']}" if "reward_margin" in r else "–"
        print(f"| {name} | {r['precision']} | {r['recall']} | {r['f1']} | {extra} |")
    print("RESULT", json.dumps({"rows": rows, "pairs": kept, "seconds": seconds}))


if __name__ == "__main__":
    main()
