"""The checkpoint folder of the project's own VideoLLM: its file names and its writer, and the error
every loader raises for a model it cannot find or read.

A checkpoint is a folder holding `config.json` (ModelConfig), `model.safetensors` and the tokenizer
files (`tokenizer.json`, `tokenizer_config.json`). Safetensors only: nothing is ever unpickled.
Reading one back is engine/checkpoint.py's job (it also reads the published layouts)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from tarsier.common.files import normal_permissions

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class ModelNotFound(ValueError):
    """The model name or path does not lead to a usable checkpoint; the message says what to do."""


def save(model, path: str | Path) -> Path:
    """Write config + weights + tokenizer; written to a temp folder and renamed, so a kill never
    leaves a half checkpoint under the final name. Every file gets the user's normal permissions."""
    from safetensors.torch import save_model

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model.config.save(tmp / CONFIG_NAME)
    save_model(model, str(tmp / WEIGHTS_NAME))
    model.tokenizer.save_pretrained(str(tmp))
    normal_permissions(tmp)   # safetensors' save_model creates the weights 0600
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path
