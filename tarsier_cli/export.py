"""`tarsier export MODEL OUT`: a Tarsier2 checkpoint as a standard transformers Qwen2-VL folder."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tarsier.cli.common import err_console, usage_error


def export(
    model: Annotated[str, typer.Argument(help="Tarsier2 checkpoint: a preset (tarsier2-recap-7b, tarsier2-7b), a hub "
                                              "id, a checkpoint folder in any published naming, or a run folder.")],
    out: Annotated[Path, typer.Argument(help="Folder to write.")],
    overwrite: Annotated[bool, typer.Option(show_default=False, help="Replace OUT when it is not empty.")] = False,
) -> None:
    """Write a Tarsier2 checkpoint as a standard transformers Qwen2-VL folder (config, safetensors + index,
    tokenizer, chat template, processor files; 4.52+ tensor names) that
    Qwen2VLForConditionalGeneration.from_pretrained loads with no remote code. Same weights, same dtype."""
    from tarsier.engine.checkpoint import ModelNotFound
    from tarsier.trainers.export import ExportError
    from tarsier.trainers.export import export as run

    try:
        folder = run(model, out, overwrite=overwrite)
    except (ExportError, ModelNotFound) as exc:
        raise usage_error(str(exc)) from None
    err_console.print(f"exported to {folder}", markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("export", short_help="Write a Tarsier2 checkpoint as a standard transformers Qwen2-VL folder.")(export)
