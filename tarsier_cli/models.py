"""`tarsier models`: the presets and the checkpoints trained on this machine."""
from __future__ import annotations

from typing import Annotated

import typer


def models_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List model presets (name, kind, where it comes from, whether it is ready here)."""
    import json

    from rich.console import Console
    from rich.table import Table

    from engine.catalog import list_models

    rows = list_models()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="tarsier models")
    for col in ("name", "kind", "layout", "params", "memory", "ready"):
        table.add_column(col, no_wrap=True)
    table.add_column("description", no_wrap=True, overflow="ellipsis", max_width=60)
    for r in rows:
        table.add_row(r["name"], r["kind"], r.get("layout", ""), r.get("params", ""), r.get("memory", ""),
                      "yes" if r["ready"] else "no", r.get("description", ""))
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("models")(models_command)
