"""Entry point. Every command module registers itself; none may import torch at import time,
so `tarsier --help` stays fast."""
from __future__ import annotations

import importlib

import typer

from tarsier.cli.helptext import Group

app = typer.Typer(
    name="tarsier",
    help="Fine-grained, time-aligned video descriptions: describe, train, evaluate.",
    cls=Group,
    rich_markup_mode=None,   # plain --help: wraps at any width, never cuts an option name (tarsier_cli/helptext.py)
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Order here is the order in `tarsier --help`.
COMMAND_MODULES = ["describe", "scenes", "models", "synth", "train", "export", "cache", "eval", "report", "demo"]

for _name in COMMAND_MODULES:
    importlib.import_module(f"tarsier.cli.{_name}").register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
