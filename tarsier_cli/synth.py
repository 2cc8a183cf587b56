"""`tarsier synth`: render the synthetic world (videos, ground truth, training manifests, benchmark)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def synth(
    out: Annotated[Path, typer.Argument(
        help="Output folder (videos/, truth.jsonl, stage1/, stage2/, benchmark.jsonl).")],
    videos: Annotated[int, typer.Option("--videos", "-n", min=1, help="Number of videos to render.")] = 200,
    seed: Annotated[int, typer.Option(
        "--seed", help="Seed: drives everything; another seed gives other videos.")] = 0,
    size: Annotated[int, typer.Option("--size", min=32, help="Frame width and height in pixels (even).")] = 128,
    fps: Annotated[int, typer.Option("--fps", min=1, max=60, help="Frames per second.")] = 12,
    cuts_prob: Annotated[float, typer.Option(
        "--cuts-prob", min=0.0, max=1.0, help="Probability that a video has a scene cut (two shots).")] = 0.3,
    pan_prob: Annotated[float, typer.Option(
        "--pan-prob", min=0.0, max=1.0, help="Probability that a shot has a camera pan (not an event).")] = 0.3,
    workers: Annotated[int, typer.Option(
        "--workers", "-j", min=0,
        help="Worker processes (0: one per CPU core). Output is identical for any value.")] = 0,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Write into OUT even if it already holds a world.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Render short videos of coloured shapes with exact ground truth, plus stage-1/stage-2 training
    manifests and a benchmark in DREAM-1K format."""
    import os
    import sys

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from tarsier.world.build import generate

    err = Console(stderr=True)
    if size % 2:
        err.print("[red]error:[/] --size must be even")
        raise typer.Exit(2)
    if (out / "truth.jsonl").exists() and not overwrite:
        err.print(f"[red]error:[/] {out} already holds a synthetic world (truth.jsonl); use --overwrite")
        raise typer.Exit(2)
    if overwrite and (out / "truth.jsonl").exists():
        # remove the videos the previous world listed (only those), so no stale clip stays behind
        from tarsier.common.files import read_jsonl

        for record in read_jsonl(out / "truth.jsonl"):
            rel = record.get("video_file")
            if isinstance(rel, str) and rel.startswith("videos/") and "/" not in rel[len("videos/"):]:
                (out / rel).unlink(missing_ok=True)
    nworkers = workers or (os.cpu_count() or 1)
    show = not quiet and sys.stderr.isatty()
    with Progress(TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, disable=not show) as prog:
        task = prog.add_task("synth", total=videos)
        summary = generate(out, videos, seed=seed, size=size, fps=fps, cuts_prob=cuts_prob,
                           pan_prob=pan_prob, workers=nworkers,
                           progress=lambda k: prog.advance(task, k))
    err.print(f"wrote {summary.videos} videos to {out} in {summary.seconds:.1f} s "
              f"({summary.clips_per_min:.0f} clips/min, {nworkers} workers)")
    for name, n in summary.files.items():
        err.print(f"  {name}: {n} rows")


def register(app: typer.Typer) -> None:
    app.command("synth", help="Render the synthetic world: videos with exact ground truth, "
                              "training manifests and a DREAM-1K-format benchmark.")(synth)
