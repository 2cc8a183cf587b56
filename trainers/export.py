"""`tarsier export`: a Tarsier2 checkpoint (any published naming, a fine-tune, a run) as a standard
transformers Qwen2-VL folder: config.json, safetensors with an index, tokenizer, chat template, processor
and generation settings, 4.52+ tensor names. `Qwen2VLForConditionalGeneration.from_pretrained` loads it
with no remote code, and so can serving engines that read standard Qwen2-VL.

The weights are written in the dtype they were read in (bf16 for the published checkpoints), so the
exported model computes exactly what the source does. It lives with training because it reads run
folders and fine-tunes as training does (the inference library never imports training)."""
from __future__ import annotations

import shutil
from pathlib import Path


class ExportError(ValueError):
    """The source cannot be exported (its layout, or the output folder)."""


def load_source(name_or_path: str):
    """A model from a preset, hub id, checkpoint or run folder, on the CPU in its stored dtype."""
    from tarsier.engine import checkpoint as ckpt
    from tarsier.trainers.finetune import load_init
    from tarsier.trainers.train import resolve_run_checkpoint

    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return ckpt.load_folder(resolve_run_checkpoint(path))
    model = load_init(name_or_path)
    if model is None:
        raise ExportError(f"{name_or_path}: not a published Tarsier2 checkpoint (a preset such as tarsier2-7b, "
                          f"a hub id or a folder)")
    return model


def export(name_or_path: str, out: str | Path, overwrite: bool = False) -> Path:
    from tarsier.trainers.finetune import declare_weights, is_qwen

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out} exists and is not empty; pass --overwrite to replace it")
    model = load_source(name_or_path)
    if not is_qwen(model):
        layout = getattr(model, "published_layout", None) or "VideoLLM"
        raise ExportError(f"{name_or_path}: export writes Tarsier2 (Qwen2-VL layout) checkpoints; this one is "
                          f"{layout}, which `tarsier describe` and `tarsier train` load as it is")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(tmp)
    declare_weights(tmp)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out
