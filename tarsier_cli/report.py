"""`tarsier report DIR`: one static HTML page to review a describe run, a training run or an evaluation."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tarsier.cli.common import err_console, usage_error

HELP = """Write DIR/report.html: a static page to review the results in a browser (no server).

The kind of folder is detected: descriptions.jsonl -> describe run (scene timeline, frame
thumbnails, descriptions, errors, search); metrics.jsonl or run.json -> training run (loss and
learning-rate curves, final numbers, arguments, checkpoints); report.json -> AutoDQ evaluation
(per-category chart, bucket tables, every sample's events and judgements).

A folder holding both descriptions and their AutoDQ scores (`tarsier eval bench`) gets both
pages: report.html (descriptions) and eval.html (scores), linked to each other.

The pages use relative links only: copy the whole folder to share it. Prints each page's path.

Examples:

  tarsier describe ./videos --report -o captions/ && tarsier report captions/

  tarsier report runs/nano-stage2 --open
"""


def report_command(
    folder: Annotated[Path, typer.Argument(help="A describe output folder, a training run folder or an eval folder.",
                                           show_default=False)],
    kind: Annotated[str, typer.Option(help="auto, describe, train or eval.")] = "auto",
    output: Annotated[Path | None, typer.Option("--output", "-o",
                                                help="Write the page here instead of DIR/report.html "
                                                     "(relative links then only work beside DIR).")] = None,
    open_page: Annotated[bool, typer.Option("--open", help="Open the page in the default browser.")] = False,
) -> None:
    from tarsier.reports.pages import KINDS, detect_kinds, write_report, write_reports

    if not folder.is_dir():
        raise usage_error(f"{folder} is not a folder")
    if kind != "auto" and kind not in KINDS:
        raise usage_error(f"unknown --kind {kind!r} (choose auto, {', '.join(KINDS)})")
    kinds = detect_kinds(folder) if kind == "auto" else [kind]
    if not kinds:
        raise usage_error(f"{folder} holds no descriptions.jsonl, metrics.jsonl/run.json or AutoDQ report.json; "
                          "nothing to report")
    if output is not None and len(kinds) > 1:
        raise usage_error(f"{folder} holds {' and '.join(kinds)} results: pick one with --kind to use --output")
    try:
        paths = write_reports(folder) if kind == "auto" and output is None else [write_report(folder, kinds[0], output)]
    except (FileNotFoundError, ValueError) as exc:
        raise usage_error(str(exc)) from None
    for k, path in zip(kinds, paths):
        err_console.print(f"{k} report written", markup=False)
        typer.echo(str(path))
    if open_page:
        import webbrowser

        webbrowser.open(paths[0].resolve().as_uri())


def register(app: typer.Typer) -> None:
    app.command("report", help=HELP, no_args_is_help=True)(report_command)
