"""Loading a model by name or folder: presets, checkpoint folders, published checkpoints.

A checkpoint folder is the project's own (engine/model_files.py: config.json, model.safetensors and
the tokenizer; safetensors only, nothing is ever unpickled) or a published one in a Hugging Face
layout (engine/hf_layouts.py: LLaVA for Tarsier1; engine/qwen2_vl.py: Qwen2-VL for Tarsier2).
A preset is a named JSON file in engine/presets/: a random model built from config (tests), a model
trained by this project (nano, whose trained weights ship in the package under presets/models/nano with
their model card; nano-demo, which `tarsier demo` installs in the user's cache), or a published checkpoint.
A trained preset that ships its weights always means those: a folder of the same name in the user's
cache (an older demo installed its model as `nano`) never shadows them.
"""
from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

from tarsier.common.files import home_dir
from tarsier.engine import hf_layouts
from tarsier.engine.config import ModelConfig
from tarsier.engine.model_files import CONFIG_NAME, WEIGHTS_NAME, ModelNotFound, save

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "ModelNotFound", "cache_model_dir", "load", "load_folder", "preset_names",
           "read_preset", "save", "shipped_model_dir", "trained_preset_dir"]


def preset_names() -> list[str]:
    folder = resources.files("tarsier.engine").joinpath("presets")
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def read_preset(name: str) -> dict:
    path = resources.files("tarsier.engine").joinpath("presets", f"{name}.json")
    if not path.is_file():
        raise ModelNotFound(f"unknown model {name!r}: not a preset ({', '.join(preset_names())}) nor a folder")
    return json.loads(path.read_text(encoding="utf-8"))


def shipped_model_dir(name: str) -> Path | None:
    """The package folder holding a trained preset's weights (its "weights" entry: nano), or None when
    the preset ships none."""
    rel = read_preset(name).get("weights")
    if not rel:
        return None
    return Path(str(resources.files("tarsier.engine").joinpath("presets", rel)))


def cache_model_dir(name: str) -> Path:
    """Where a model trained on this machine is installed under a name: under tarsier.common.files.home_dir()."""
    return home_dir() / "models" / name


def trained_preset_dir(name: str) -> Path:
    """Where a trained preset's weights are: in the package when it ships them (nano), else installed
    in the user's cache (nano-demo, by `tarsier demo`)."""
    return shipped_model_dir(name) or cache_model_dir(name)


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
        return load_published_folder(path, raw)
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
        if not (folder / CONFIG_NAME).is_file() and preset.get("weights"):
            raise ModelNotFound(f"model {name!r}: its shipped weights are missing from this install ({folder}); "
                                f"reinstall tarsier-cli")
        if not (folder / CONFIG_NAME).is_file():
            raise ModelNotFound(
                f"model {name!r} is not trained on this machine yet: run `tarsier demo` (trains it in "
                f"minutes on a CPU; the shipped `nano` needs no training) or pass --model PATH to a checkpoint folder"
            )
        return load_folder(folder)
    if kind == "published":
        return load_published_preset(name, preset)
    raise ModelNotFound(f"preset {name!r} has unknown kind {kind!r}")


def load(name_or_path, device: str = "auto", dtype=None):
    """A ready-to-run model (eval mode, on the device) from a preset name or a checkpoint folder."""
    path = Path(str(name_or_path)).expanduser()
    if path.is_dir():
        model = load_folder(path)
        model_id = str(name_or_path)
    elif "/" in str(name_or_path) or os.sep in str(name_or_path):
        if str(name_or_path).count("/") == 1 and not path.exists():
            model = load_published_hub(str(name_or_path))
            model_id = str(name_or_path)
        else:
            raise ModelNotFound(f"{name_or_path}: no such checkpoint folder")
    else:
        model = load_preset(str(name_or_path))
        model_id = str(name_or_path)
    dev = resolve_device(device)
    if not place_published(model, dev, dtype or default_dtype(dev)):  # several GPUs: split published models
        model.to(device=dev, dtype=dtype or default_dtype(dev))
    model.eval()
    model.model_id = model_id
    return model


# ---------------------------------------------------------------------------------------------
# Published checkpoints (engine/hf_layouts.py, engine/qwen2_vl.py): the layout decides the loader
# ---------------------------------------------------------------------------------------------
def load_published_folder(path, raw_config: dict | None = None):
    """A published-layout checkpoint folder -> a model with the engine interface (not yet placed)."""
    path = Path(path)
    if raw_config is None:
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"{path}: no config.json (not a checkpoint folder)")
        raw_config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    layout = hf_layouts.detect_layout(raw_config)
    if layout == "llava":
        model = hf_layouts.load_llava(path, raw_config)
    else:
        from tarsier.engine import qwen2_vl  # imports torch: not on the way of `tarsier models`

        model = qwen2_vl.load_qwen2_vl(path, raw_config)
    model.published_layout = layout
    return model


def load_published_preset(name: str, preset: dict):
    model = load_published_folder(hf_layouts.resolve_repo(preset["repo"]))
    model.config.name = name
    return model


def load_published_hub(repo_id: str):
    return load_published_folder(hf_layouts.resolve_repo(repo_id))


# ---------------------------------------------------------------------------------------------
# Placement: one device (default) or, for CUDA with several GPUs, the LLM split across them
# ---------------------------------------------------------------------------------------------
def place_published(model, device, dtype) -> bool:
    """Multi-GPU placement (like device_map="auto") for a published model too big for one GPU, on a plain
    --device cuda with several GPUs (Tarsier-34B); returns False when the caller should just do
    model.to(device, dtype). Not exercised by the test suite (no multi-GPU machine)."""
    import torch

    if getattr(model, "published_layout", None) is None or device.type != "cuda" or device.index is not None:
        return False
    if torch.cuda.device_count() < 2:
        return False
    need = sum(p.numel() for p in model.parameters()) * torch.empty((), dtype=dtype).element_size()
    if need * 1.3 < torch.cuda.mem_get_info(0)[0]:
        return False   # fits on one GPU (with room for activations and the KV cache): no split
    from accelerate import dispatch_model, infer_auto_device_map

    model.to(dtype=dtype)
    from tarsier.engine.qwen2_vl import QwenVideoModel

    if isinstance(model, QwenVideoModel):
        target, no_split = model.hf, ["Qwen2VLDecoderLayer", "Qwen2VLVisionBlock"]
    else:
        model.vision.to("cuda:0")
        model.projector.to("cuda:0")
        model.pixel_mean, model.pixel_std = model.pixel_mean.to("cuda:0"), model.pixel_std.to("cuda:0")
        target, no_split = model.llm, list(getattr(model.llm, "_no_split_modules", None) or ["LlamaDecoderLayer"])
    device_map = infer_auto_device_map(target, no_split_module_classes=no_split, dtype=dtype)
    emb = next(k for k, _ in target.named_modules() if k.endswith("embed_tokens"))
    if emb in device_map:
        device_map[emb] = 0   # VideoLLM reads newline/frame rows of the embedding table on cuda:0
    dispatch_model(target, device_map=device_map)
    return True
