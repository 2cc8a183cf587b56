"""Checkpoint folders and presets.

A checkpoint is a folder holding `config.json` (ModelConfig), `model.safetensors` and the tokenizer
files (`tokenizer.json`, `tokenizer_config.json`). Safetensors only: nothing is ever unpickled.
A preset is a named JSON file in engine/presets/: a random model built from config (tests), a model
trained by this project and kept in the user's cache (nano), or a published checkpoint.
"""
from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

from tarsier.common.files import home_dir
from tarsier.engine.config import ModelConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class ModelNotFound(ValueError):
    """The model name or path does not lead to a usable checkpoint; the message says what to do."""


def cache_dir() -> Path:
    """Where trained presets (nano) live: tarsier.common.files.home_dir()."""
    return home_dir()


def preset_names() -> list[str]:
    folder = resources.files("tarsier.engine").joinpath("presets")
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def read_preset(name: str) -> dict:
    path = resources.files("tarsier.engine").joinpath("presets", f"{name}.json")
    if not path.is_file():
        raise ModelNotFound(f"unknown model {name!r}: not a preset ({', '.join(preset_names())}) nor a folder")
    return json.loads(path.read_text(encoding="utf-8"))


def trained_preset_dir(name: str) -> Path:
    return cache_dir() / "models" / name


def resolve_device(device: str = "auto"):
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelNotFound("--device cuda was asked for but no CUDA device is available")
    return torch.device(device)


def default_dtype(device):
    import torch

    return torch.bfloat16 if device.type == "cuda" else torch.float32


def save(model, path: str | Path) -> Path:
    """Write config + weights + tokenizer; written to a temp folder and renamed, so a kill never
    leaves a half checkpoint under the final name."""
    from safetensors.torch import save_model

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model.config.save(tmp / CONFIG_NAME)
    save_model(model, str(tmp / WEIGHTS_NAME))
    model.tokenizer.save_pretrained(str(tmp))
    if path.exists():
        import shutil

        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def build_random(config: ModelConfig, tokenizer, seed: int = 0):
    import torch
    from tarsier.engine.model import VideoLLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VideoLLM(config, tokenizer)


def load_tokenizer(path: str | Path):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(path))


def load_folder(path: Path):
    """A VideoLLM checkpoint folder written by `save`."""
    from safetensors.torch import load_model
    from tarsier.engine.model import VideoLLM

    if not (path / CONFIG_NAME).is_file():
        raise ModelNotFound(f"{path}: no {CONFIG_NAME} (not a checkpoint folder)")
    raw = json.loads((path / CONFIG_NAME).read_text(encoding="utf-8"))
    if raw.get("architecture") != "VideoLLM":
        from tarsier.engine import published

        return published.load_folder(path, raw)
    config = ModelConfig.from_dict(raw)
    config.vision.pretrained = None  # the weights below already hold the tower
    model = VideoLLM(config, load_tokenizer(path))
    if not (path / WEIGHTS_NAME).is_file():
        raise ModelNotFound(f"{path}: no {WEIGHTS_NAME}")
    load_model(model, str(path / WEIGHTS_NAME), strict=True)
    return model


def load_preset(name: str):
    preset = read_preset(name)
    kind = preset["kind"]
    if kind == "random":
        from tarsier.engine.tokenizer import build_bpe_tokenizer

        tok = build_bpe_tokenizer(vocab_size=preset.get("tokenizer", {}).get("vocab_size", 512))
        config = ModelConfig.from_dict(preset["config"])
        config.llm["vocab_size"] = len(tok)
        return build_random(config, tok, seed=preset.get("seed", 0))
    if kind == "trained":
        folder = trained_preset_dir(name)
        if not (folder / CONFIG_NAME).is_file():
            raise ModelNotFound(
                f"model {name!r} is not trained on this machine yet: run `tarsier demo` (trains it in "
                f"minutes on a CPU) or pass --model PATH to a checkpoint folder"
            )
        return load_folder(folder)
    if kind == "published":
        from tarsier.engine import published

        return published.load_preset(name, preset)
    raise ModelNotFound(f"preset {name!r} has unknown kind {kind!r}")


def load(name_or_path, device: str = "auto", dtype=None):
    """A ready-to-run model (eval mode, on the device) from a preset name or a checkpoint folder."""
    path = Path(str(name_or_path)).expanduser()
    if path.is_dir():
        model = load_folder(path)
        model_id = str(name_or_path)
    elif "/" in str(name_or_path) or os.sep in str(name_or_path):
        if str(name_or_path).count("/") == 1 and not path.exists():
            from tarsier.engine import published

            model = published.load_hub(str(name_or_path))
            model_id = str(name_or_path)
        else:
            raise ModelNotFound(f"{name_or_path}: no such checkpoint folder")
    else:
        model = load_preset(str(name_or_path))
        model_id = str(name_or_path)
    dev = resolve_device(device)
    from tarsier.engine import published

    if not published.place(model, dev, dtype or default_dtype(dev)):  # several GPUs: split published models
        model.to(device=dev, dtype=dtype or default_dtype(dev))
    model.eval()
    model.model_id = model_id
    return model
