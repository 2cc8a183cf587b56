"""What `tarsier train` needs beyond the model interface to fine-tune every layout it can load.

Two layouts train: the project's `VideoLLM` (its own models and Tarsier1's LLaVA layout, loaded into
it) and Tarsier2's Qwen2-VL layout (transformers' Qwen2VLForConditionalGeneration behind
`engine.qwen2_vl.QwenVideoModel`). For Tarsier2 this module supplies

- the starting model from a preset, hub id or folder (`load_init`),
- what trains: the merger and the LLM, the vision blocks frozen unless --train-vision, or LoRA
  adapters (peft) on the LLM's attention and MLP projections with the merger still trained in full,
- clips decoded per batch in the model's own frame geometry (a Tarsier2 clip is thousands of
  visual tokens of 3,584 values: caching them would take more disk than decoding takes time),
- the checkpoint: a standard transformers Qwen2-VL folder (`QwenVideoModel.save`, with the LoRA
  deltas folded in for a LoRA run, plus the adapters in peft's format and the trainable tensors that
  resume needs).
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

# The LLM's attention and MLP projections (Llama, Qwen2, Mistral, Yi): LoRA's default targets.
LORA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
TRAINABLE_NAME = "trainable.safetensors"
ADAPTER_DIR = "adapter"


class LayoutError(ValueError):
    """An --init whose model cannot be trained here."""


def is_qwen(model) -> bool:
    return getattr(getattr(model, "config", None), "layout", None) == "qwen2_vl" and hasattr(model, "hf")


def check_trainable(model, init: str) -> None:
    from tarsier.engine.model import VideoLLM
    from tarsier.engine.qwen2_vl import QwenVideoModel

    if isinstance(model, (VideoLLM, QwenVideoModel)):
        return
    raise LayoutError(f"--init {init}: a {type(model).__name__} cannot be trained; trainable layouts: the project's "
                      f"VideoLLM (nano, tiny-random), Tarsier1 (LLaVA layout) and Tarsier2 (Qwen2-VL layout)")


def load_init(init: str):
    """A published preset (tarsier2-7b, tarsier-7b, ...) or a hub id (owner/name) -> the model, on the CPU, in
    the checkpoint's dtype; None when `init` is neither (a preset with a config: a fresh model is built)."""
    from tarsier.engine import checkpoint as ckpt

    if "/" in init and not Path(init).expanduser().exists():
        if init.count("/") != 1:
            raise ckpt.ModelNotFound(f"--init {init}: no such checkpoint folder")
        return ckpt.load_published_hub(init)
    if init in ckpt.preset_names():
        preset = ckpt.read_preset(init)
        if preset.get("kind") == "published":
            return ckpt.load_published_preset(init, preset)
    return None


def context_length(model) -> int | None:
    if is_qwen(model):
        text = getattr(model.hf.config, "text_config", model.hf.config)
        return getattr(text, "max_position_embeddings", None)
    return getattr(model.llm.config, "max_position_embeddings", None)


def check_context(model, batch: dict, samples, frames: list[int]) -> None:
    """Every row of a batch within the model's context once its visual tokens are counted; else one line
    saying how many tokens, how many of them visual, and how many frames would fit."""
    limit = context_length(model)
    if not limit:
        return
    placeholder = model.processor.placeholder_id if is_qwen(model) else model.processor.video_token_id
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    for i, n in enumerate(lengths):
        if n <= limit:
            continue
        visual = int((batch["input_ids"][i] == placeholder).sum())
        per_frame = max(1, visual // max(1, frames[i]))
        fit = (limit - (n - visual)) // per_frame
        how = f"use --frames {fit} or fewer" if fit >= 1 else "shorten the prompt and answer"
        raise ValueError(f"{samples[i].source}: {n:,} tokens ({visual:,} visual: {frames[i]} frames x "
                         f"{per_frame:,}) exceed the model's context of {limit:,} tokens; {how}")


# ---------------------------------------------------------------------------------------------
# What trains
# ---------------------------------------------------------------------------------------------
def llm_of(model) -> nn.Module:
    """The decoder LoRA adapts (without its LM head)."""
    if is_qwen(model):
        return model.hf.model.language_model
    llm = model.llm
    return getattr(llm, "model", llm)


def lora_targets(model, requested: list[str] | None) -> list[str]:
    """The linear layers (by name) LoRA adapts: the requested ones, each checked to exist in the LLM, or
    its attention and MLP projections."""
    names = sorted({n.rsplit(".", 1)[-1] for n, m in llm_of(model).named_modules()
                    if isinstance(m, nn.Linear) and not n.endswith("lm_head")})   # the head is never adapted
    if requested:
        unknown = [t for t in requested if t not in names]
        if unknown:
            raise ValueError(f"--lora-targets: no linear layer named {', '.join(map(repr, unknown))} in the LLM; "
                             f"it has: {', '.join(names)}")
        return list(requested)
    chosen = [t for t in LORA_PROJECTIONS if t in names]
    return chosen or names


def freeze(model, train_vision: bool) -> None:
    """Tarsier2: the merger and the LLM train, the vision blocks only with --train-vision."""
    trainable = {id(p) for p in model.trainable_parameters()}
    for p in model.parameters():
        p.requires_grad_(train_vision or id(p) in trainable)


def add_qwen_lora(model, r: int, alpha: int, targets: list[str], train_vision: bool = False) -> None:
    """LoRA adapters in the Qwen2-VL LLM's `targets`, injected in place: `model.hf` stays the plain
    transformers model (its forward, rotary positions and save_pretrained unchanged); the peft wrapper is
    kept beside it for saving the adapters. The merger (and with --train-vision the vision blocks) trains in full."""
    from peft import LoraConfig, get_peft_model

    pattern = r"model\.language_model\..*\.(?:" + "|".join(targets) + ")"
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=pattern, bias="none")
    model.hf.requires_grad_(False)
    model.__dict__["peft"] = get_peft_model(model.hf, config)   # not a submodule: model.hf is already one
    for name, p in model.hf.named_parameters():
        if name.startswith("model.visual.") and (train_vision or ".merger." in name):
            p.requires_grad_(True)


def fp32_master_weights(model) -> None:
    """The parameters that train in float32 (AdamW's updates at fine-tuning learning rates are below bf16's
    resolution), the frozen ones left in the checkpoint's bf16; the forward runs under bf16 autocast."""
    for p in model.parameters():
        if p.requires_grad and p.is_floating_point() and p.dtype != torch.float32:
            p.data = p.data.float()


def enable_gradient_checkpointing(model) -> None:
    target = model.hf if is_qwen(model) else model.llm
    # non-reentrant: frozen embeddings (LoRA) would otherwise leave the checkpointed blocks without gradients
    kwargs = {"use_reentrant": False}
    if hasattr(target, "activation_checkpointing_enable"):   # transformers 5.x's name (the old one warns)
        target.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        target.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


# ---------------------------------------------------------------------------------------------
# Data: clips decoded per batch in the model's geometry
# ---------------------------------------------------------------------------------------------
class ClipSource:
    """(N, H, W, 3) clips as `tarsier describe` decodes them for this model (frame count, aspect-kept size,
    bicubic resampling), decoded for each batch."""

    def __init__(self, processor, frames: int):
        self.processor = processor
        self.frames = frames

    def get(self, samples) -> list:
        from tarsier.trainers.frames import sample_frames

        geometry = self.processor.geometry
        return [sample_frames(str(s.video), self.frames, 224, s.start, s.end, s.frame_times, geometry=geometry)
                for s in samples]

    def inputs(self, model, samples) -> tuple[dict, list[int]]:
        clips = self.get(samples)
        batch = model.processor.inputs(clips, [s.prompt for s in samples], [s.answer for s in samples])
        return batch, [len(c) for c in clips]


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------
@contextmanager
def lora_merged(root: nn.Module):
    """Inside: every LoRA layer of `root` replaced by its base layer with the adapter's delta added, so the
    module saves as a plain model; afterwards the live adapters are back, untouched."""
    from peft.tuners.lora import LoraLayer

    swaps = []
    try:
        for name, module in list(root.named_modules()):
            if not isinstance(module, LoraLayer) or not hasattr(module, "base_layer"):
                continue
            parent_name, _, attr = name.rpartition(".")
            parent = root.get_submodule(parent_name) if parent_name else root
            plain = module.base_layer   # the wrapped layer, without the adapter
            original = plain.weight.data
            delta = sum(module.get_delta_weight(a) for a in module.active_adapters)
            plain.weight.data = original + delta.to(original.dtype)
            setattr(parent, attr, plain)
            swaps.append((parent, attr, module, plain, original))
        yield root
    finally:
        for parent, attr, module, plain, original in reversed(swaps):
            plain.weight.data = original
            setattr(parent, attr, module)


def declare_weights(folder: Path) -> None:
    """Name the weight file in a model.safetensors.index.json (Hugging Face's index format) when the save
    wrote one file: a checkpoint folder also holds optimizer, RNG and adapter tensors, and a loader that
    finds no index reads every *.safetensors of the folder."""
    weights = folder / "model.safetensors"
    if (folder / "model.safetensors.index.json").exists() or not weights.is_file():
        return
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        names = list(f.keys())  # noqa: SIM118 - safe_open handles are not dicts
    index = {"metadata": {"total_size": weights.stat().st_size}, "weight_map": dict.fromkeys(names, weights.name)}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")


def save_qwen(model, folder: Path, lora: bool, weights: dict | None = None) -> None:
    """A standard transformers Qwen2-VL folder; a LoRA run also writes adapter/ (peft's format, for
    PeftModel.from_pretrained over the base) and trainable.safetensors (adapters + merger, for resume).
    `weights`: the full state dict gathered from an FSDP-sharded model (the wrapper's names, "hf." first)."""
    from tarsier.common.files import normal_permissions, save_safetensors

    folder = Path(folder)
    if weights is not None:   # FSDP: never with LoRA (the trainer refuses the combination)
        model.save(folder, state_dict={n.removeprefix("hf."): t for n, t in weights.items()})
        declare_weights(folder)
        return
    if not lora:
        model.save(folder)
        declare_weights(folder)
        return
    with lora_merged(model.hf):
        model.save(folder)
    declare_weights(folder)
    model.peft.save_pretrained(str(folder / ADAPTER_DIR))
    normal_permissions(folder / ADAPTER_DIR)   # peft writes its safetensors 0600
    trainable = {n: p.detach().cpu().contiguous() for n, p in model.hf.named_parameters() if p.requires_grad}
    save_safetensors(folder / TRAINABLE_NAME, trainable, metadata={"format": "pt"})


def load_trainable(model, folder: Path) -> None:
    """A LoRA checkpoint's adapters and merger onto a model that has the same adapters injected."""
    from safetensors.torch import load_file

    result = model.hf.load_state_dict(load_file(str(Path(folder) / TRAINABLE_NAME)), strict=False)
    if result.unexpected_keys:
        raise ValueError(f"{folder}: trainable tensors the model does not have: {result.unexpected_keys[:3]}")


# ---------------------------------------------------------------------------------------------
# FSDP (configs/accelerate/fsdp.yaml): what to shard, and checkpoints gathered from the shards
# ---------------------------------------------------------------------------------------------
def decoder_layer_class(model) -> str:
    """The class name of the LLM's decoder layers (Qwen2VLDecoderLayer for Tarsier2 under transformers 5.x,
    LlamaDecoderLayer for Tarsier1 and the project's presets), read from the live model."""
    layers = getattr(llm_of(model), "layers", None)
    if not layers:
        raise LayoutError(f"{type(model).__name__}: no decoder layers found to shard with FSDP")
    return type(layers[0]).__name__


def mark_fsdp_units(model) -> list[str]:
    """Name the LLM's decoder layers as the model's FSDP units. accelerate's TRANSFORMER_BASED_WRAP shards the
    classes a config lists (all must exist in the model, so one list cannot serve every layout) or else those
    in the model's `_no_split_modules`, keeping the ones the model has: fsdp.yaml lists none and the trainer
    sets them here on the wrapper (which is not a transformers model and has no such list of its own)."""
    names = [decoder_layer_class(model)]
    model._no_split_modules = names
    return names


def tied_duplicates(model) -> set[str]:
    """State-dict names that share a tensor with another (tied embeddings), as safetensors' save_model drops
    them; found on the unsharded model, since the gathered full state dict no longer shows the sharing."""
    from safetensors.torch import _remove_duplicate_names

    return {n for names in _remove_duplicate_names(model.state_dict()).values() for n in names}


def optimizer_param_names(model, optimizer) -> list[str]:
    """The name of each parameter in the optimizer's order (the integer ids of optimizer.state_dict()), taken
    before FSDP shards the model: the bridge between the trainer's id-keyed optimizer file and the name-keyed
    full state dicts of torch.distributed.checkpoint."""
    name = {id(p): n for n, p in model.named_parameters()}
    return [name[id(p)] for group in optimizer.param_groups for p in group["params"]]


class OptimizerState:
    """A full optimizer state dict in torch's id-keyed form, for trainers/state.py's writer (state_dict) and
    reader (load_state_dict): under FSDP the real optimizer holds shards, and its state goes through here."""

    def __init__(self, state: dict | None = None):
        self.state = state

    def state_dict(self) -> dict:
        return self.state

    def load_state_dict(self, state: dict) -> None:
        self.state = state


FULL_STATE = {"full_state_dict": True, "cpu_offload": True}   # what accelerate's get_state_dict uses for FSDP2


def gather_full_weights(model) -> dict:
    """The whole model's weights gathered from every rank's shards (call on every rank): on the main process
    the full tensors, on the CPU; an empty dict on the others."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(**FULL_STATE))


def gather_full_optimizer(model, optimizer, names: list[str]) -> OptimizerState:
    """The optimizer's state gathered from every rank's shards (call on every rank), keyed by torch's integer
    ids as a single process's optimizer.state_dict() is. The gather copies each shard's values unchanged, so a
    resume is exact, and the files are those of a single-process run: any number of processes resume them."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    by_name = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(**FULL_STATE))
    if not by_name:   # not the main process
        return OptimizerState({})
    index = {n: i for i, n in enumerate(names)}
    state = {index[n]: s for n, s in by_name["state"].items()}
    groups = [{**g, "params": [index[n] for n in g["params"]]} for g in by_name["param_groups"]]
    return OptimizerState({"state": state, "param_groups": groups})


def load_full_optimizer_state(model, optimizer, full: dict, names: list[str]) -> None:
    """A full id-keyed optimizer state (read from the checkpoint by every rank) into a sharded optimizer:
    each rank keeps its shard of every tensor."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    by_name = {"state": {names[int(i)]: s for i, s in full["state"].items()},
               "param_groups": [{**g, "params": [names[int(i)] for i in g["params"]]} for g in full["param_groups"]]}
    set_optimizer_state_dict(model, optimizer, by_name, options=StateDictOptions(full_state_dict=True))
