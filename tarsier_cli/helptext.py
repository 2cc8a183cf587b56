"""How `--help` looks: plain text that wraps at the terminal's width (80 columns included) and pipes
cleanly. The app runs Typer with rich_markup_mode=None (click's own layout: option names never cut,
help paragraphs re-flowed); this group lists each subcommand with its whole first sentence, wrapped,
where click would cut it at about 45 characters with "..."."""
from __future__ import annotations

from typer.core import TyperGroup


class Group(TyperGroup):
    def format_commands(self, ctx, formatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=10_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
