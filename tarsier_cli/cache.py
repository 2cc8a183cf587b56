"""`tarsier cache`: what the training feature cache holds, and removing from it."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from tarsier.cli.common import err_console, usage_error


def cache(
    older_than: Annotated[str | None, typer.Option(help="Remove the entries no run has used for this long "
                                                        "(30d, 12h, 2w).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Remove every entry.")] = False,
    dry_run: Annotated[bool, typer.Option(show_default=False, help="Only say what would be removed.")] = False,
    folder: Annotated[Path | None, typer.Option("--dir", help="Cache folder [default: the tarsier cache's "
                                                              "features/, as `train --feature-cache auto`].")] = None,
) -> None:
    """List the training feature cache (one entry per vision tower and frame count: its model, the datasets
    that filled it, clips, size, last use), or remove entries with --older-than / --all. Decoded-on-the-fly
    models (Tarsier2) have no entries."""
    from tarsier.trainers.cache import entries, human_size, parse_age, remove

    root = folder
    if older_than is None and not all_:
        rows = entries(root)
        if not rows:
            err_console.print("the feature cache is empty", markup=False, soft_wrap=True)
            return
        now = time.time()
        for e in rows:
            age = now - e.last_used
            when = f"{age / 86400:.1f} days ago" if age >= 86400 else f"{age / 3600:.1f} hours ago"
            frames = f", {e.frames} frames" if e.frames else ""
            typer.echo(f"{e.folder.name}  {human_size(e.size):>9}  {e.clips:>6} clips  used {when}  "
                       f"{e.model}{frames}")
            for d in e.datasets:
                typer.echo(f"    {d}")
        typer.echo(f"total {human_size(sum(e.size for e in rows))} in {len(rows)} entries")
        return
    try:
        age = parse_age(older_than) if older_than is not None else None
        gone = remove(root, older_than=age, everything=all_, dry_run=dry_run)
    except ValueError as exc:
        raise usage_error(str(exc)) from None
    verb = "would remove" if dry_run else "removed"
    for e in gone:
        typer.echo(f"{verb} {e.folder.name}  {human_size(e.size)}  {e.model}")
    err_console.print(f"{verb} {len(gone)} entries, {human_size(sum(e.size for e in gone))}", markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("cache", short_help="List the training feature cache, or remove entries from it.")(cache)
