"""`tarsier demo`: train a `nano` on the synthetic world in minutes, offline, and score it beside the shipped one."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from tarsier.cli.common import err_console

HELP = """Run the whole story offline: render the synthetic world, train stage 1 and stage 2 of a fresh
nano with its pretrained vision tower frozen, describe a held-out synthetic benchmark and score it
(event precision / recall / F1), beside the shipped nano scored on the same benchmark in the same run:
what about 10 CPU minutes give, next to what the full recipe gives. nano ships its small tower
pretrained on rendered frames of that world, standing in for CLIP; --train-tower redoes that
pretraining (stage 0) first.

The trained model is installed as `nano-demo` (`tarsier describe --model nano-demo`); `--model nano`
is always the shipped model. A rerun reuses what an earlier run trained in the working folder and says
so; --fresh trains afresh. nano knows only the synthetic shapes world; for real videos use a published
checkpoint (`--model tarsier2-recap-7b`) or your own (`--model PATH`)."""


class PhaseProgress:
    """progress(phase, done, total) of the demo's long phases: a rich bar per phase on a terminal; in a
    log (stderr not a terminal), a plain line when a phase starts, every `every` seconds, and at its end,
    as `tarsier train` prints its steps."""

    def __init__(self, console, every: float = 10.0):
        self.console, self.every = console, every
        self.bar = None
        self.task = None
        self.phase: str | None = None
        self.started = self.last = 0.0

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if phase != self.phase:
            self.close()
            self.phase, self.started, self.last = phase, now, now
            if self.console.is_terminal:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

                self.bar = Progress(TextColumn(f"[bold]{phase}"), BarColumn(), MofNCompleteColumn(),
                                    TimeRemainingColumn(), console=self.console)
                self.task = self.bar.add_task(phase, total=total)
                self.bar.start()
            else:
                self.console.print(f"{phase}: 0/{total}", markup=False, soft_wrap=True)
        if self.bar is not None:
            self.bar.update(self.task, completed=done, total=total)
        elif done >= total or now - self.last >= self.every:
            self.last = now
            rate = done / max(now - self.started, 1e-9)
            left = f", about {(total - done) / rate:.0f} s left" if 0 < done < total else ""
            self.console.print(f"{phase}: {done}/{total} ({rate:.1f}/s{left})", markup=False, soft_wrap=True)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
        self.bar, self.task, self.phase = None, None, None


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
    fresh: Annotated[bool, typer.Option(show_default=False, help="Forget earlier runs in the working folder (what they trained, described and scored) and train afresh; the rendered worlds are kept.")] = False,
) -> None:
    import json

    from rich.table import Table

    from tarsier.demo import DemoConfig, run_demo
    from tarsier.evaluation.report import pct

    cfg = DemoConfig(train_videos=train_videos, bench_videos=bench_videos, train_tower=train_tower,
                     tower_steps=tower_steps,
                     stage1_steps=stage1_steps,
                     stage2_steps=stage2_steps, batch_size=batch_size, device=device, fresh=fresh)
    if work is not None:
        cfg.work = work

    def on_log(row: dict) -> None:
        err_console.print(f"  {row['stage']} step {row['step']} loss {row['loss']:.4f} "
                          f"{row['samples_per_s']:.1f} samples/s", markup=False)

    log = lambda m: err_console.print(m, markup=False, soft_wrap=True)  # noqa: E731
    progress = PhaseProgress(err_console)
    try:
        results = [("nano-demo: stage 1 + stage 2", run_demo(cfg, log=log, on_train_log=on_log, progress=progress))]
        if ablation:
            cfg.skip_stage1, cfg.fresh, cfg.score_shipped = True, False, False
            results.append(("stage 2 only", run_demo(cfg, log=log, on_train_log=on_log, progress=progress)))
    finally:
        progress.close()
    shipped = results[0][1].get("shipped")
    rows = [(name, summary["scores"]) for name, summary in results]
    if shipped:
        rows.append(("nano (shipped): full recipe", shipped["scores"]))
    table = Table(title="on the held-out synthetic benchmark, measured in this run (exact event judge, %)")
    for col in ("model", "grain", "precision", "recall", "F1"):
        table.add_column(col)
    for name, scores in rows:
        for grain in ("fine", "brief"):
            s = scores[grain]
            table.add_row(name, grain, *(pct(s[k]) for k in ("precision", "recall", "f1")))   # as `tarsier eval`
    err_console.print(table)
    for name, scores in rows:
        err_console.print(f"{name}: held-out loss per answer token {scores['heldout_loss']:.3f}; "
                          f"brief answers that are one sentence: {scores['brief']['one_sentence']:.0%}",
                          markup=False, soft_wrap=True)
    if shipped and shipped.get("card"):
        card = shipped["card"]
        where = ("the same benchmark" if shipped["same_benchmark_as_card"]
                 else f"its own benchmark, `{shipped['card_benchmark']}`")
        err_console.print(f"the shipped nano's model card states, on {where}: fine F1 {pct(card['fine']['f1'])}, "
                          f"brief precision {pct(card['brief']['precision'])} (MODEL_CARD.md beside its weights; "
                          "`tarsier models` shows where)", markup=False, soft_wrap=True)
    typer.echo(json.dumps({name: scores for name, scores in rows}, indent=2))


def register(app: typer.Typer) -> None:
    app.command("demo", help=HELP, short_help="Run the whole story offline on the synthetic world: synth, train, "
                                              "describe, score beside the shipped nano.")(demo_command)
