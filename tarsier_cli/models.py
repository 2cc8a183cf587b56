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

    console = Console()
    console.print(rich_table(rows, console.width))
    if console.width < 140:
        console.print("descriptions: tarsier models --json, or a terminal of 140 columns", style="dim")


# What stays as the terminal narrows: the columns that say which model it is and whether it runs here first.
PRIORITY = ["name", "ready", "hub id", "layout", "memory", "kind", "params"]


def fitted_columns(rows: list[dict], width: int) -> list[int]:
    """Indices (in table order) of the columns that fit whole in `width`, two spaces apart, taken in
    PRIORITY order: a column is either shown in full or left out, never cut or squeezed to nothing."""
    cells = [_cells(r) for r in rows]
    titles = [title for title, _ in COLUMNS]
    used, keep = -2, []
    for title in PRIORITY:
        i = titles.index(title)
        need = max([len(title)] + [len(c[i]) for c in cells])
        if used + 2 + need <= width:
            used += 2 + need
            keep.append(i)
    return sorted(keep)


def rich_table(rows: list[dict], width: int):
    """The terminal table: every column from 100 columns, the descriptions too from 140, and below 100
    the columns that fit (80 columns hold name, hub id, layout, memory and ready)."""
    from rich.table import Table

    shown = fitted_columns(rows, width)
    wide = width >= 140 and len(shown) == len(COLUMNS)
    table = Table(box=None, padding=(0, 2, 0, 0), pad_edge=False, header_style="bold underline")
    for i in shown:
        table.add_column(COLUMNS[i][0], no_wrap=True)
    if wide:
        table.add_column("description", overflow="fold", ratio=1)
    for r in rows:
        cells = _cells(r)
        table.add_row(*[cells[i] for i in shown], *([r.get("description", "")] if wide else []))
    return table


def register(app: typer.Typer) -> None:
    app.command("models")(models_command)
