"""`tarsier demo`: train the `nano` model on the synthetic world and score it, offline, in minutes."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tarsier.cli.common import err_console

HELP = """Run the whole story offline: render the synthetic world, train stage 1 and stage 2 with
nano's pretrained vision tower frozen, describe a held-out synthetic benchmark and score it (event
precision / recall / F1). nano ships its small tower pretrained on rendered frames of that world,
standing in for CLIP; --train-tower redoes that pretraining (stage 0) first.

The trained model is installed as the `nano` preset (`tarsier describe --model nano`).
nano knows only the synthetic shapes world; for real videos use a published checkpoint
(`--model tarsier2-recap-7b`) or your own (`--model PATH`)."""


def demo_command(
    work: Annotated[Path | None, typer.Option(help="Working folder. [default: ~/.cache/tarsier/demo]")] = None,
    train_videos: Annotated[int, typer.Option(help="Synthetic training videos.", min=8)] = 2000,
    bench_videos: Annotated[int, typer.Option(help="Held-out benchmark videos (another seed).", min=1)] = 100,
    train_tower: Annotated[bool, typer.Option(help="Pretrain the vision tower here (stage 0, about 3 min) instead of using the one nano ships.")] = False,
    tower_steps: Annotated[int, typer.Option(help="Stage-0 optimizer steps (with --train-tower).", min=1)] = 1000,
    stage1_steps: Annotated[int, typer.Option(help="Stage-1 optimizer steps.", min=1)] = 300,
    stage2_steps: Annotated[int, typer.Option(help="Stage-2 optimizer steps.", min=1)] = 2100,
    batch_size: Annotated[int, typer.Option(help="Training batch size.", min=1)] = 12,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    ablation: Annotated[bool, typer.Option(help="Also train stage 2 alone with the same total steps and compare.")] = False,
) -> None:
    import json

    from rich.table import Table

    from tarsier.demo import DemoConfig, run_demo
    from tarsier.evaluation.report import pct

    cfg = DemoConfig(train_videos=train_videos, bench_videos=bench_videos, train_tower=train_tower,
                     tower_steps=tower_steps,
                     stage1_steps=stage1_steps,
                     stage2_steps=stage2_steps, batch_size=batch_size, device=device)
    if work is not None:
        cfg.work = work

    def on_log(row: dict) -> None:
        err_console.print(f"  {row['stage']} step {row['step']} loss {row['loss']:.4f} "
                          f"{row['samples_per_s']:.1f} samples/s", markup=False)

    log = lambda m: err_console.print(m, markup=False)  # noqa: E731
    results = [("stage 1 + stage 2", run_demo(cfg, log=log, on_train_log=on_log))]
    if ablation:
        cfg.skip_stage1 = True
        results.append(("stage 2 only", run_demo(cfg, log=log, on_train_log=on_log)))
    table = Table(title="nano on the held-out synthetic benchmark (exact event judge, %)")
    for col in ("recipe", "grain", "precision", "recall", "F1"):
        table.add_column(col)
    for name, summary in results:
        for grain in ("fine", "brief"):
            s = summary["scores"][grain]
            table.add_row(name, grain, *(pct(s[k]) for k in ("precision", "recall", "f1")))   # as `tarsier eval`
    err_console.print(table)
    for name, summary in results:
        err_console.print(f"{name}: held-out loss per answer token {summary['scores']['heldout_loss']:.3f}; "
                          f"brief answers that are one sentence: {summary['scores']['brief']['one_sentence']:.0%}",
                          markup=False, soft_wrap=True)
    typer.echo(json.dumps({name: s["scores"] for name, s in results}, indent=2))


def register(app: typer.Typer) -> None:
    app.command("demo", help=HELP, short_help="Run the whole story offline on the synthetic world: synth, train, "
                                              "describe, score.")(demo_command)
