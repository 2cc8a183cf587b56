"""Shared CLI helpers: stderr console, progress bar, usage errors. No torch here."""
from __future__ import annotations

import sys
from contextlib import contextmanager

import typer
from rich.console import Console

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2

err_console = Console(stderr=True, highlight=False)


def usage_error(message: str) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}", markup=True, soft_wrap=True)
    return typer.Exit(EXIT_USAGE)


def split_list(values: list[str] | None) -> list[str]:
    """Options that take 'a,b' or are repeated."""
    out: list[str] = []
    for v in values or []:
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


def show_progress(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


@contextmanager
def video_progress(enabled: bool, quiet: bool):
    """Yields a callback for engine progress events: a rich bar (videos, clips, ETA) on a terminal,
    one line per error otherwise (--quiet drops the bar, never the error lines)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if not enabled:
        def plain(event: str, **info) -> None:
            if event == "error":  # errors are shown even with --quiet: they are the one line per bad input
                err_console.print(f"error: {info['message']}", markup=False, soft_wrap=True)
            elif event == "warning" and not quiet:
                err_console.print(f"warning: {info['message']}", markup=False, soft_wrap=True)

        yield plain
        return

    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[clips]} clips"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=err_console, transient=False,
    )
    state = {"task": None, "clips": 0}

    def callback(event: str, **info) -> None:
        if event == "start":
            state["task"] = progress.add_task("videos", total=info["todo"], clips=0)
        elif event == "clips":
            state["clips"] += info["n"]
            progress.update(state["task"], clips=state["clips"])
        elif event == "video":
            progress.advance(state["task"])
        elif event == "error":
            progress.console.print(f"[red]error:[/red] {info['message']}", soft_wrap=True)
            if state["task"] is not None and info.get("video") is not None:
                progress.advance(state["task"])
        elif event == "warning":
            from rich.markup import escape

            progress.console.print(f"[yellow]warning:[/yellow] {escape(info['message'])}", soft_wrap=True)

    with progress:
        yield callback
