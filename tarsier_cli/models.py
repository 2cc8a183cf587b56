"""`tarsier models`: the presets and the checkpoints trained on this machine."""
from __future__ import annotations

from typing import Annotated

import typer

COLUMNS = [("name", "name"), ("hub id", "hub_id"), ("kind", "kind"), ("layout", "layout"), ("params", "params"),
           ("memory", "memory"), ("ready", "ready")]   # memory: the weights in bf16


def _cells(row: dict) -> list[str]:
    cells = []
    for _, key in COLUMNS:
        value = ("yes" if row["ready"] else "no") if key == "ready" else str(row.get(key) or "-")
        cells.append(value.removesuffix(" bf16"))
    return cells


def plain_table(rows: list[dict]) -> str:
    """Space-aligned columns, one model a line, descriptions last: for pipes, grep and awk."""
    header = [title for title, _ in COLUMNS] + ["description"]
    lines = [header] + [_cells(r) + [r.get("description", "")] for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)) + "  " + line[-1] for line in lines)


def models_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List model presets (name, hub id, kind, layout, size, whether it is ready here)."""
    import json
    import sys

    from tarsier.engine.catalog import list_models

    rows = list_models()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not sys.stdout.isatty():
        typer.echo(plain_table(rows))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    # What fits: every column and the descriptions from 140 columns, every column from 100, below that
    # the ones that say which model it is and whether it runs here (80 columns hold them).
    keep = {t for t, _ in COLUMNS} if console.width >= 100 else {"name", "hub id", "layout", "memory", "ready"}
    wide = console.width >= 140
    table = Table(box=None, padding=(0, 2, 0, 0), pad_edge=False, header_style="bold underline")
    shown = [i for i, (title, _) in enumerate(COLUMNS) if title in keep]
    for i in shown:
        table.add_column(COLUMNS[i][0], no_wrap=True)
    if wide:
        table.add_column("description", overflow="fold", ratio=1)
    for r in rows:
        cells = _cells(r)
        table.add_row(*[cells[i] for i in shown], *([r.get("description", "")] if wide else []))
    console.print(table)
    if not wide:
        console.print("descriptions: tarsier models --json, or a terminal of 140 columns", style="dim")


def register(app: typer.Typer) -> None:
    app.command("models")(models_command)
