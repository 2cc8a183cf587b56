"""The CLI at 80 columns: every command's --help keeps its option names whole and its lines within
the width, and `tarsier models` shows no empty or cut column."""
from __future__ import annotations

import io
import re

import pytest
import typer
from typer.testing import CliRunner

from tarsier.cli.app import app

WIDTH = 80


def _command_paths(command, path=()):
    yield list(path)
    for name, sub in getattr(command, "commands", {}).items():
        yield from _command_paths(sub, (*path, name))


PATHS = list(_command_paths(typer.main.get_command(app)))


def _help(path: list[str]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=WIDTH, env={"COLUMNS": str(WIDTH)})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "tarsier")
def test_help_fits_80_columns_and_names_every_option_whole(path):
    text = _help(path)
    assert "…" not in text, text
    assert not re.search(r"-[\w-]+\.\.\.", text), text       # no option name cut with "..."
    assert all(len(line) <= WIDTH for line in text.splitlines()), text
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        for opt in param.opts + param.secondary_opts:
            if opt.startswith("-"):
                assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", text), (opt, text)


def test_group_help_lists_each_command_with_a_whole_sentence():
    text = _help([])
    commands = text.split("Commands:")[1]
    assert "..." not in commands
    for name in ("describe", "scenes", "models", "train", "eval", "demo"):
        assert re.search(rf"^  {name} ", commands, re.M), commands


def test_models_at_80_columns_has_no_empty_or_cut_column(tarsier_home):   # not the user's cache: its rows vary
    from rich.console import Console

    from tarsier.cli.models import COLUMNS, rich_table
    from tarsier.engine.catalog import list_models

    rows = list_models()
    for width in (60, WIDTH, 100, 140):
        out = io.StringIO()
        Console(file=out, width=width, color_system=None).print(rich_table(rows, width))
        lines = out.getvalue().splitlines()
        assert "…" not in out.getvalue() and all(len(line.rstrip()) <= width for line in lines), out.getvalue()
        titles = [t for t, _ in COLUMNS if re.search(rf"(^|  ){t}(  |$)", lines[0].rstrip())]
        assert {"name", "ready"} <= set(titles), lines[0]
        if width >= WIDTH:
            assert {"hub id", "layout", "memory"} <= set(titles), lines[0]
        if width >= 100:
            assert len(titles) == len(COLUMNS), lines[0]
        if width < 140:   # one line a model (from 140 the descriptions fold over several)
            for row, line in zip(rows, lines[1:]):
                cells = re.split(r"\s{2,}", line.strip())
                assert len(cells) == len(titles) and cells[0] == row["name"] and cells[-1] in ("yes", "no"), line


def test_models_piped_at_80_columns_is_the_plain_table():
    result = CliRunner().invoke(app, ["models"], terminal_width=WIDTH, env={"COLUMNS": str(WIDTH)})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert re.split(r"\s{2,}", lines[0])[:2] == ["name", "hub id"] and "…" not in result.output
    assert all(line.split()[0] for line in lines[1:])
