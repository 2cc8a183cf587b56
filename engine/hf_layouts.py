"""Published Tarsier checkpoints in their Hugging Face layouts, with plain transformers 5.x: no remote
code, safetensors only. Here: finding the files (a folder, the Hugging Face cache or a download),
telling the layout, reading and renaming the weights, and the LLaVA layout (Tarsier1) loaded into
VideoLLM. The Qwen2-VL backend (Tarsier2) is engine/qwen2_vl.py; engine/checkpoint.py dispatches a
folder to the one its layout needs.

Two layouts exist on the hub (facts read from github.com/bytedance/tarsier, branches `tarsier` and `main`):

llava (omni-research/Tarsier-7b, Tarsier-34b), config.json is a LLaVA config:
    model_type "llava", architectures ["TarsierForConditionalGeneration"], vision_config (clip_vision_model,
    336 px, patch 14), text_config (llama; Vicuna-7B / Yi-34B), image_token_index 32000 ("<image>"),
    image_newline_idx 32002, image_new_idx 32003, vision_feature_layer -2,
    vision_feature_select_strategy "default" (CLS dropped), projector_hidden_act "gelu".
    Tensors (saved with transformers 4.x): vision_tower.vision_model.*, multi_modal_projector.linear_{1,2}.*,
    language_model.model.*, language_model.lm_head.weight. Prompt: "USER: <image>*N\n{instruction} ASSISTANT: "
    after BOS; each <image> becomes one frame's 24x(24+1)+1 = 601 embeddings; frames stretched to a square.
    -> loaded into the project's own VideoLLM (engine/model.py) with an HF CLIP tower (source "hf_clip").

qwen2_vl (omni-research/Tarsier2-Recap-7b, Tarsier2-7b-0115): Qwen2-VL-7B; its namings, inputs and rotary
    positions are written down in engine/qwen2_vl.py, whose QwenVideoModel wraps transformers'
    Qwen2VLForConditionalGeneration; this module reads and renames its weights.

Weights are renamed by explicit tables of every published naming (`LLAVA_NAMINGS` here, `QWEN_NAMINGS` in engine/qwen2_vl.py) onto
the installed transformers' module names, checked against the built module: a load that leaves
tensors unmapped says which, so a transformers release that renames a module fails loudly.

Hub access: `snapshot_download` into the usual Hugging Face cache (json, safetensors and tokenizer files only;
never .bin pickles). Offline and not cached -> ModelNotFound with one line saying what to do.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from tarsier.engine.model_files import ModelNotFound

ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "tokenizer.model"]
LLAVA_FRAMES = 8
MAX_NEW_TOKENS = 512
LLAVA_TEMPLATE = "USER: <image>\n{instruction} ASSISTANT: "   # upstream: USER: <image>*N\n... ASSISTANT: (space)
# The instructions upstream trained and evaluates the published models with: DREAM-1K's detailed
# description, and the MSVD-Caption short caption (data/annotations/MSVD-Caption-test.jsonl).
FINE_INSTRUCTION = "Describe the video in detail."
BRIEF_INSTRUCTION = ("Describe the video in a short sentence with simple words. It is important that the short "
                     "sentence must be like the following examples: \n1. A man is singing.\n2. A women is dancing."
                     "\n3. A cat is meowing.")
PUBLISHED_GRAINS = {"fine": FINE_INSTRUCTION, "brief": BRIEF_INSTRUCTION}
# Buffers some exporters save although the modules recompute them; never weights.
_IGNORABLE = re.compile(r"(\.position_ids|\.rotary_emb\.inv_freq)$")


# ---------------------------------------------------------------------------------------------
# Where the files are: a folder, the Hugging Face cache, or a download
# ---------------------------------------------------------------------------------------------
def _offline() -> bool:
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    if any(f.strip().lower() in ("1", "true", "yes", "on") for f in flags):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except (ImportError, AttributeError):  # pragma: no cover
        return False


def _snapshot(repo_id: str, local_files_only: bool) -> Path:
    """huggingface_hub.snapshot_download (its cache, its progress bar); tests replace this function."""
    from huggingface_hub import snapshot_download

    cache = os.environ.get("HF_HUB_CACHE") or (
        str(Path(os.environ["HF_HOME"]) / "hub") if os.environ.get("HF_HOME") else None)  # read now, not at import
    return Path(snapshot_download(repo_id, allow_patterns=ALLOW_PATTERNS, local_files_only=local_files_only,
                                  cache_dir=cache))


def _complete(folder: Path) -> bool:
    files = weight_files(folder, check=False)
    return (folder / "config.json").is_file() and bool(files) and all(f.is_file() for f in files)


def not_found_message(repo_id: str, why: str) -> str:
    return (f"model {repo_id} is not in the local Hugging Face cache and {why}; "
            f"use --model nano (offline demo model) or --model PATH (a checkpoint folder), "
            f"or download it once with network access")


def resolve_repo(repo_id: str) -> Path:
    """A local snapshot folder of `repo_id`: from the cache, else downloaded; ModelNotFound otherwise."""
    folder = _cached_folder(repo_id)
    if folder is not None:
        return folder
    if _offline():
        raise ModelNotFound(not_found_message(repo_id, "the hub is off (HF_HUB_OFFLINE)"))
    try:
        folder = _snapshot(repo_id, local_files_only=False)
    except Exception as exc:  # noqa: BLE001 - any hub/network failure becomes the one-line message
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ModelNotFound(not_found_message(repo_id, f"the hub cannot be reached ({type(exc).__name__}: {first})")
                            ) from None
    if not _complete(folder):
        raise ModelNotFound(f"{repo_id}: downloaded, but no config.json + safetensors weights in it")
    return folder


def _cached_folder(repo_id: str) -> Path | None:
    try:
        folder = _snapshot(repo_id, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached (or a broken cache entry): treated as absent
        return None
    return folder if _complete(folder) else None


# ---------------------------------------------------------------------------------------------
# What engine.catalog and engine.checkpoint ask of a published checkpoint
# ---------------------------------------------------------------------------------------------
def catalog_row(name: str, preset: dict) -> dict:
    folder = _cached_folder(preset["repo"])   # a cache probe only: never touches the network
    row = {"ready": folder is not None, "layout": preset.get("layout", ""), "path": str(folder or preset["repo"])}
    if "params" in preset:
        row["memory"] = f"{preset['params'] * 2 / 1e9:.1f} GB bf16"
    return row


def detect_layout(raw: dict) -> str:
    archs = " ".join(raw.get("architectures") or [])
    kinds = {raw.get("model_type"), (raw.get("text_config") or {}).get("model_type"),
             (raw.get("vision_config") or {}).get("model_type")}
    if "qwen2_vl" in kinds or "Qwen2VL" in archs or "Tarsier2" in archs:
        return "qwen2_vl"
    if raw.get("model_type") == "llava" or "vision_config" in raw and "text_config" in raw:
        return "llava"
    raise ModelNotFound(f"unsupported checkpoint layout (model_type {raw.get('model_type')!r}, "
                        f"architectures {raw.get('architectures')!r}); expected LLaVA-style Tarsier or Qwen2-VL")


# ---------------------------------------------------------------------------------------------
# Weights: safetensors shards -> renamed state dict, strict
# ---------------------------------------------------------------------------------------------
def weight_files(folder: Path, check: bool = True) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        files = [folder / n for n in names]
    else:
        # the weights only: a training run's folder also holds optimizer, RNG and adapter safetensors
        files = sorted(folder.glob("model*.safetensors")) or sorted(folder.glob("*.safetensors"))
    if check and (not files or not all(f.is_file() for f in files)):
        pickles = list(folder.glob("*.bin")) + list(folder.glob("*.pt"))
        extra = " (only pickle .bin weights there: they are never loaded, convert them to safetensors)" if pickles else ""
        raise ModelNotFound(f"{folder}: no complete safetensors weights{extra}")
    return files


def read_state(folder: Path) -> dict:
    from safetensors import safe_open

    state = {}
    for file in weight_files(folder):
        with safe_open(str(file), framework="pt", device="cpu") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open handles are not dicts
                state[key] = f.get_tensor(key)
    return state


def _rename(key: str, rules) -> str | None:
    """The first rule whose published prefix starts `key` renames it; None when no rule does."""
    for old, new in rules:
        if key.startswith(old):
            return new + key[len(old):]
    return None


def load_published(module, state: dict, namings: dict[str, list], targets: dict[str, str], what: str,
                   optional: frozenset[str] = frozenset()) -> str:
    """Load `state` (tensors under their published names) into `module`, strictly.

    `namings`: {naming: [(published prefix, part), ...]} for every naming a checkpoint of the layout has
    been published in; a part ("vision.", "lm.", ...) is a piece of the model, and `targets` says where
    that piece lives in the installed module ({"vision.": "model.visual.", ...}). The naming under which
    every tensor lands on a parameter and every parameter is filled wins; otherwise the closest one is
    reported with its unmapped tensors and unfilled parameters. `optional`: parameters a checkpoint may
    leave out (an LM head tied to the embedding, which the caller ties afterwards). Returns the naming's name."""
    expected = set(module.state_dict().keys())
    best = None
    for naming, rules in namings.items():
        renamed, unmapped = {}, []
        for key, tensor in state.items():
            part_key = _rename(key, rules)
            target = None
            if part_key is not None:
                part = next((p for p in targets if part_key.startswith(p)), None)
                target = targets[part] + part_key[len(part):] if part is not None else None
            if target is None or target not in expected:
                if not _IGNORABLE.search(key):
                    unmapped.append(key)
                continue
            renamed[target] = tensor
        missing = sorted(expected - set(renamed) - optional)
        if not unmapped and not missing:
            module.load_state_dict(renamed, strict=not (optional - set(renamed)), assign=True)
            return naming
        score = len(unmapped) + len(missing)
        if best is None or score < best[0]:
            best = (score, naming, sorted(unmapped), missing)
    _, naming, unmapped, missing = best
    raise ModelNotFound(f"{what}: checkpoint tensors do not match the model (closest naming: {naming}): "
                        f"{len(unmapped)} unexpected tensors, unmapped: {unmapped[:5]}{'...' if len(unmapped) > 5 else ''}, "
                        f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}")


def installed_targets(module, candidates: list[dict[str, str]], what: str) -> dict[str, str]:
    """Which of the known module namings the installed transformers uses (every part's prefix found)."""
    keys = list(module.state_dict().keys())
    for targets in candidates:
        if all(any(k.startswith(prefix) for k in keys) for prefix in targets.values()):
            return targets
    raise ModelNotFound(f"{what}: the installed transformers names this model's modules in a way this version "
                        f"of tarsier does not know (first parameters: {keys[:3]}); see `task test-latest`")


def empty_init():
    """Build modules with parameters on the meta device (no 7B fp32 allocation); buffers stay real."""
    from accelerate import init_empty_weights

    return init_empty_weights(include_buffers=False)


def read_tokenizer(folder: Path):
    from transformers import PreTrainedTokenizerFast

    if (folder / "tokenizer.json").is_file():   # exactly the tokenizer the checkpoint was trained with
        tok = PreTrainedTokenizerFast.from_pretrained(str(folder))
    else:   # vocab/merges or tokenizer.model only: transformers' own class for it (never remote code)
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
        except (OSError, ValueError) as exc:
            raise ModelNotFound(f"{folder}: no usable tokenizer ({type(exc).__name__})") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.unk_token if tok.unk_token is not None else tok.eos_token
    return tok


def read_preprocessor(folder: Path) -> dict:
    for name in ("preprocessor_config.json", "video_preprocessor_config.json"):
        if (folder / name).is_file():
            return json.loads((folder / name).read_text(encoding="utf-8"))
    return {}


# ---------------------------------------------------------------------------------------------
# Tarsier1: LLaVA layout -> VideoLLM with an HF CLIP tower
# ---------------------------------------------------------------------------------------------
# Every naming a LLaVA-layout Tarsier checkpoint has been saved in -> the parts of VideoLLM.
LLAVA_NAMINGS = {
    "LLaVA, transformers 4.x (Tarsier-7b/34b as published)": [
        ("vision_tower.vision_model.", "clip."),
        ("multi_modal_projector.linear_1.", "projector.0."),
        ("multi_modal_projector.linear_2.", "projector.2."),
        ("language_model.model.", "llm.model."),
        ("language_model.lm_head.", "llm.lm_head."),
    ],
    "LLaVA, transformers 4.52+ (a re-saved copy)": [
        ("model.vision_tower.vision_model.", "clip."),
        ("model.vision_tower.", "clip."),
        ("model.multi_modal_projector.linear_1.", "projector.0."),
        ("model.multi_modal_projector.linear_2.", "projector.2."),
        ("model.language_model.", "llm.model."),
        ("lm_head.", "llm.lm_head."),
    ],
}
# Where VideoLLM keeps each part: its CLIP tower has a `vision_model` level in transformers 4.x only.
LLAVA_TARGETS = [
    {"clip.": "vision.", "projector.": "projector.", "llm.": "llm."},
    {"clip.": "vision.vision_model.", "projector.": "projector.", "llm.": "llm."},
]


UPSTREAM_CLIP = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
                 "image_size": 336, "patch_size": 14, "projection_dim": 768}   # CLIP ViT-L/14-336


def llava_model_config(raw: dict, folder: Path | None = None):
    """The ModelConfig (engine/config.py) of a published LLaVA-layout Tarsier config.json."""
    from transformers import CLIPVisionConfig

    from tarsier.engine.config import CLIP_MEAN, CLIP_STD, ModelConfig, ProjectorConfig, VisionConfig

    if raw.get("vision_feature_select_strategy", "default") != "default":
        raise ModelNotFound("only vision_feature_select_strategy 'default' (CLS dropped) is supported")
    if raw.get("projector_hidden_act", "gelu") != "gelu" or raw.get("projection_head", "MLP") not in ("MLP", None):
        raise ModelNotFound("only the 2-layer GELU MLP projector is supported")
    vision = dict(raw.get("vision_config") or UPSTREAM_CLIP)   # upstream's default when config.json has none
    vision.pop("model_type", None)
    hf_vision = CLIPVisionConfig(**vision).to_dict()
    for k in ("transformers_version", "architectures", "_name_or_path", "dtype", "torch_dtype"):
        hf_vision.pop(k, None)
    pre = read_preprocessor(folder) if folder is not None else {}
    text = dict(raw.get("text_config") or {})
    text.setdefault("model_type", "llama")
    if "vocab_size" not in text and "vocab_size" in raw:
        text["vocab_size"] = raw["vocab_size"]
    for k in ("architectures", "_name_or_path", "transformers_version"):
        text.pop(k, None)
    return ModelConfig(
        name=str(raw.get("_name_or_path") or "tarsier"),
        vision=VisionConfig(source="hf_clip", hf_config=hf_vision,
                            feature_layer=int(raw.get("vision_feature_layer", -2)),
                            mean=tuple(pre.get("image_mean", CLIP_MEAN)), std=tuple(pre.get("image_std", CLIP_STD))),
        projector=ProjectorConfig(spatial_pool=1, newline_token_id=int(raw.get("image_newline_idx", 32002)),
                                  frame_token_id=int(raw.get("image_new_idx", 32003))),
        llm=text,
        frames=LLAVA_FRAMES,
        video_token="<image>",
        prompt_template=LLAVA_TEMPLATE,
        max_new_tokens=MAX_NEW_TOKENS,
        prompts=dict(PUBLISHED_GRAINS),
    )


def load_llava(folder: Path, raw: dict):
    from tarsier.engine.model import VideoLLM

    config = llava_model_config(raw, folder)
    tok = read_tokenizer(folder)
    image_id = int(raw.get("image_token_index", 32000))
    if tok.convert_tokens_to_ids("<image>") != image_id:
        raise ModelNotFound(f"{folder}: tokenizer has no '<image>' token with id {image_id}")
    with empty_init():
        model = VideoLLM(config, tok)
    targets = installed_targets(model, LLAVA_TARGETS, str(folder))
    model.published_naming = load_published(model, read_state(folder), LLAVA_NAMINGS, targets, str(folder))
    if getattr(model.llm.config, "tie_word_embeddings", False):
        model.llm.tie_weights()
    model.generation_config = generation_config(folder)
    return model


def generation_config(folder: Path):
    """The checkpoint's generation_config.json as transformers reads it, or None."""
    if not (folder / "generation_config.json").is_file():
        return None
    from transformers import GenerationConfig

    return GenerationConfig.from_pretrained(str(folder))
