"""Published Tarsier checkpoints with plain transformers 5.x: no remote code, safetensors only.

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

qwen2_vl (omni-research/Tarsier2-Recap-7b, Tarsier2-7b-0115): Qwen2-VL-7B. The config.json may be a Qwen2-VL
    config or upstream's LLaVA-style wrapper with text_config/vision_config of model_type "qwen2_vl";
    tensors in upstream's wrapper naming (vision_tower.*, language_model.model.*, language_model.lm_head.*),
    the pre-4.52 Qwen2-VL naming (visual.*, model.*, lm_head.*) or the 4.52+ one (model.visual.*,
    model.language_model.*, lm_head.*). Upstream inference (configs/tarser2_default_config.yaml,
    dataset/tarsier_processor.py, models/modeling_qwen2_vl_fast.py), reproduced by `QwenProcessor`:
    16 frames, all T when a clip has T <= 16; every frame duplicated (use_multi_images_for_video), so a
    temporal patch of 2 holds one frame twice; each frame aspect-kept at <= 460,800 pixels (factor 1,
    bicubic; <= 128*384*384 over all 2T images of a sample), then rounded by the Qwen2-VL processor to
    multiples of 28; the video's tokens are the image pad token (image_token_index), placed by the
    checkpoint's chat template; multimodal rotary positions continue after a video at its largest
    position + 1 (`upstream_rope_index`); greedy decoding on top of the checkpoint's generation_config.json.
    -> transformers' Qwen2VLForConditionalGeneration wrapped in `QwenVideoModel` (engine/interface.py).

Weights are renamed by explicit tables of every published naming (`LLAVA_NAMINGS`, `QWEN_NAMINGS`) onto
the installed transformers' module names, checked against the built module: a load that leaves
tensors unmapped says which, so a transformers release that renames a module fails loudly.

Hub access: `snapshot_download` into the usual Hugging Face cache (json, safetensors and tokenizer files only;
never .bin pickles). Offline and not cached -> ModelNotFound with one line saying what to do.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from tarsier.engine.checkpoint import ModelNotFound
from tarsier.engine.interface import AspectGeometry, FrameSpec

ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "tokenizer.model"]
QWEN_FRAMES = 16
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

# Used only when a Qwen2-VL checkpoint ships no chat template (Qwen2-VL-Instruct's, video part only).
QWEN_FALLBACK_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}{% if content['type'] == 'video' %}"
    "<|vision_start|><|video_pad|><|vision_end|>{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


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
    files = _weight_files(folder, check=False)
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
# Entry points used by engine.checkpoint and engine.catalog
# ---------------------------------------------------------------------------------------------
def load_preset(name: str, preset: dict):
    model = load_folder(resolve_repo(preset["repo"]), None)
    model.config.name = name
    return model


def load_hub(repo_id: str):
    return load_folder(resolve_repo(repo_id), None)


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


def load_folder(path, raw_config: dict | None):
    """A published-layout checkpoint folder -> a model with the engine interface (not yet placed)."""
    path = Path(path)
    if raw_config is None:
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"{path}: no config.json (not a checkpoint folder)")
        raw_config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    layout = detect_layout(raw_config)
    model = load_llava(path, raw_config) if layout == "llava" else load_qwen2_vl(path, raw_config)
    model.published_layout = layout
    return model


# ---------------------------------------------------------------------------------------------
# Weights: safetensors shards -> renamed state dict, strict
# ---------------------------------------------------------------------------------------------
def _weight_files(folder: Path, check: bool = True) -> list[Path]:
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


def _read_state(folder: Path) -> dict:
    from safetensors import safe_open

    state = {}
    for file in _weight_files(folder):
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


def load_published(module, state: dict, namings: dict[str, list], targets: dict[str, str], what: str) -> str:
    """Load `state` (tensors under their published names) into `module`, strictly.

    `namings`: {naming: [(published prefix, part), ...]} for every naming a checkpoint of the layout has
    been published in; a part ("vision.", "lm.", ...) is a piece of the model, and `targets` says where
    that piece lives in the installed module ({"vision.": "model.visual.", ...}). The naming under which
    every tensor lands on a parameter and every parameter is filled wins; otherwise the closest one is
    reported with its unmapped tensors and unfilled parameters. Returns the naming's name."""
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
        missing = sorted(expected - set(renamed))
        if not unmapped and not missing:
            module.load_state_dict(renamed, strict=True, assign=True)
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


def _empty_init():
    """Build modules with parameters on the meta device (no 7B fp32 allocation); buffers stay real."""
    from accelerate import init_empty_weights

    return init_empty_weights(include_buffers=False)


def _tokenizer(folder: Path):
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


def _preprocessor(folder: Path) -> dict:
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
    from tarsier.engine.config import CLIP_MEAN, CLIP_STD, ModelConfig, ProjectorConfig, VisionConfig
    from transformers import CLIPVisionConfig

    if raw.get("vision_feature_select_strategy", "default") != "default":
        raise ModelNotFound("only vision_feature_select_strategy 'default' (CLS dropped) is supported")
    if raw.get("projector_hidden_act", "gelu") != "gelu" or raw.get("projection_head", "MLP") not in ("MLP", None):
        raise ModelNotFound("only the 2-layer GELU MLP projector is supported")
    vision = dict(raw.get("vision_config") or UPSTREAM_CLIP)   # upstream's default when config.json has none
    vision.pop("model_type", None)
    hf_vision = CLIPVisionConfig(**vision).to_dict()
    for k in ("transformers_version", "architectures", "_name_or_path", "dtype", "torch_dtype"):
        hf_vision.pop(k, None)
    pre = _preprocessor(folder) if folder is not None else {}
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
    tok = _tokenizer(folder)
    image_id = int(raw.get("image_token_index", 32000))
    if tok.convert_tokens_to_ids("<image>") != image_id:
        raise ModelNotFound(f"{folder}: tokenizer has no '<image>' token with id {image_id}")
    with _empty_init():
        model = VideoLLM(config, tok)
    targets = installed_targets(model, LLAVA_TARGETS, str(folder))
    model.published_naming = load_published(model, _read_state(folder), LLAVA_NAMINGS, targets, str(folder))
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


# ---------------------------------------------------------------------------------------------
# Tarsier2: Qwen2-VL layout -> transformers' Qwen2-VL behind the engine interface
# ---------------------------------------------------------------------------------------------
# Every naming a Qwen2-VL-layout Tarsier2 checkpoint has been saved in -> the parts of the model.
QWEN_NAMINGS = {
    "Tarsier2 wrapper (upstream modeling_tarsier.py; Tarsier2-Recap-7b)": [
        ("vision_tower.", "visual."),
        ("language_model.model.", "lm."),
        ("language_model.lm_head.", "head."),
    ],
    "Qwen2-VL, transformers before 4.52 (Tarsier2-7b-0115)": [
        ("visual.", "visual."),
        ("model.", "lm."),
        ("lm_head.", "head."),
    ],
    "Qwen2-VL, transformers 4.52+": [
        ("model.visual.", "visual."),
        ("model.language_model.", "lm."),
        ("lm_head.", "head."),
    ],
}
# Where transformers' Qwen2VLForConditionalGeneration keeps each part (4.52 and later).
QWEN_TARGETS = [{"visual.": "model.visual.", "lm.": "model.language_model.", "head.": "lm_head."}]

QWEN_SPECIAL = {"image_token_id": "<|image_pad|>", "video_token_id": "<|video_pad|>",
                "vision_start_token_id": "<|vision_start|>", "vision_end_token_id": "<|vision_end|>"}
QWEN_PREPROCESSOR = {"min_pixels": 56 * 56, "max_pixels": 28 * 28 * 16384}   # Qwen2-VL-7B-Instruct's own


def qwen2_vl_config(raw: dict, tok=None):
    """A transformers Qwen2VLConfig from either a Qwen2-VL config.json or upstream's LLaVA-style wrapper."""
    from transformers import Qwen2VLConfig

    if raw.get("model_type") == "qwen2_vl" and "text_config" not in raw:
        return Qwen2VLConfig.from_dict(dict(raw))
    text = dict(raw.get("text_config") or {})
    vision = dict(raw.get("vision_config") or {})
    for d in (text, vision):
        for k in ("architectures", "_name_or_path", "transformers_version", "auto_map"):
            d.pop(k, None)
    text["model_type"] = "qwen2_vl_text"
    vision["model_type"] = "qwen2_vl_vision"
    ids = {}
    for key, token in QWEN_SPECIAL.items():
        value = raw.get(key)
        if value is None and key == "image_token_id":
            value = raw.get("image_token_index")
        if tok is not None and token in tok.get_vocab():
            value = tok.convert_tokens_to_ids(token)
        if value is not None:
            ids[key] = int(value)
    tie = bool(raw.get("tie_word_embeddings", text.get("tie_word_embeddings", False)))
    return Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=tie, **ids)


def _chat_template(folder: Path, tok) -> str:
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    for name in ("chat_template.json", "processor_config.json"):
        if (folder / name).is_file():
            data = json.loads((folder / name).read_text(encoding="utf-8"))
            if isinstance(data.get("chat_template"), str):
                return data["chat_template"]
    if isinstance(getattr(tok, "chat_template", None), str):
        return tok.chat_template
    return QWEN_FALLBACK_TEMPLATE


def qwen_geometry(pre: dict, vision_config) -> AspectGeometry:
    """Upstream's inference geometry; the second stage (rounding to multiples of patch * merge) within the
    checkpoint processor's own min/max pixels (preprocessor_config.json; Qwen2-VL's when absent)."""
    size = pre.get("size") or {}
    low = pre.get("min_pixels") or size.get("shortest_edge") or size.get("min_pixels") or QWEN_PREPROCESSOR["min_pixels"]
    high = pre.get("max_pixels") or size.get("longest_edge") or size.get("max_pixels") or QWEN_PREPROCESSOR["max_pixels"]
    factor = int(getattr(vision_config, "patch_size", 14)) * int(getattr(vision_config, "spatial_merge_size", 2))
    copies = int(getattr(vision_config, "temporal_patch_size", 2))
    return AspectGeometry(factor=factor, copies=copies, processor_min_pixels=int(low),
                          processor_max_pixels=int(high))


class QwenProcessor:
    """Tarsier2's inputs exactly as upstream builds them (engine/interface.py): frame geometry, the
    checkpoint's chat template, every frame twice, the video's tokens as the image pad token."""

    def __init__(self, tokenizer, chat_template: str, geometry: AspectGeometry, pre: dict, vision_config,
                 name: str = "tarsier2", frames: int = QWEN_FRAMES, grains: dict | None = None):
        from transformers import Qwen2VLVideoProcessor

        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.geometry = geometry
        self.name = name
        self.frames = frames
        self._grains = dict(grains or PUBLISHED_GRAINS)
        self.patch = int(getattr(vision_config, "patch_size", 14))
        self.merge = int(getattr(vision_config, "spatial_merge_size", 2))
        self.temporal = int(getattr(vision_config, "temporal_patch_size", 2))
        norm = {k: pre[k] for k in ("image_mean", "image_std") if k in pre}
        self.video_processor = Qwen2VLVideoProcessor(
            patch_size=self.patch, merge_size=self.merge, temporal_patch_size=self.temporal,
            size={"shortest_edge": geometry.processor_min_pixels, "longest_edge": geometry.processor_max_pixels},
            cap_pixels_per_frame=False, do_sample_frames=False, **norm)
        vocab = tokenizer.get_vocab()
        # upstream's TarsierProcessor writes a video's tokens with its image token, and its model
        # scatters the visual features at image_token_index (151655, "<|image_pad|>")
        self.placeholder = "<|image_pad|>"
        self.placeholder_id = vocab[self.placeholder]
        self.end_id = vocab.get("<|im_end|>", tokenizer.eos_token_id)

    @property
    def grains(self) -> dict[str, str]:
        return dict(self._grains)

    def frame_spec(self, width: int, height: int, frames: int | None = None) -> FrameSpec:
        return self.geometry.frame_spec(width, height, frames or self.frames)

    def prompt(self, instruction: str) -> str:
        """The checkpoint's chat template over upstream's sample: a user turn with the video, then the text."""
        messages = [{"role": "user", "content": [
            {"type": "video", "num_vision_tokens": 1}, {"type": "text", "text": instruction.strip()}]}]
        text = self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, tokenize=False,
                                                  add_generation_prompt=True)
        # one placeholder per video (expanded in inputs()), whichever pad token and count the template wrote
        text = re.sub(r"(?:<\|image_pad\|>|<\|video_pad\|>)+", self.placeholder, text)
        if text.count(self.placeholder) != 1:
            raise ValueError("the chat template did not place exactly one video in the prompt")
        return text

    def pixels(self, clips) -> tuple:
        """(pixel values of all clips, grid (t, h, w) per clip): every frame twice, rounded to multiples of 28."""
        import numpy as np
        import torch

        videos = [torch.as_tensor(np.asarray(c)).permute(0, 3, 1, 2).repeat_interleave(self.temporal, dim=0)
                  for c in clips]
        out = self.video_processor(videos=videos, return_tensors="pt")
        return out["pixel_values_videos"], out["video_grid_thw"]

    def inputs(self, clips, instructions: list[str], answers: list[str] | None = None,
               prefixes: list[str] | None = None) -> dict:
        import torch
        from tarsier.engine.model import IGNORE_INDEX, pad_rows

        pixel_values, grid = self.pixels(clips)
        tok = self.tokenizer
        rows, labels = [], []
        for i, instruction in enumerate(instructions):
            n_tokens = int(grid[i].prod()) // (self.merge * self.merge)
            before, after = (self.prompt(instruction) + (prefixes[i] if prefixes else "")).split(self.placeholder)
            ids = (tok(before, add_special_tokens=False)["input_ids"] + [self.placeholder_id] * n_tokens
                   + tok(after, add_special_tokens=False)["input_ids"])
            lab = [IGNORE_INDEX] * len(ids)
            if answers is not None:   # the assistant turn and its end token are the targets
                ans = tok(answers[i].strip(), add_special_tokens=False)["input_ids"] + [self.end_id]
                ids, lab = ids + ans, lab + ans
            rows.append(ids)
            labels.append(lab)
        batch = pad_rows(rows, labels, tok.pad_token_id, left=answers is None)
        if answers is None:
            del batch["labels"]
        batch["mm_token_type_ids"] = (batch["input_ids"] == self.placeholder_id).to(torch.int32)
        batch.update(pixel_values=pixel_values, image_grid_thw=grid)
        return batch


def upstream_rope_index(self, input_ids, mm_token_type_ids, image_grid_thw=None, video_grid_thw=None,
                        attention_mask=None, **kwargs):
    """Multimodal rotary positions by upstream's rule (modeling_qwen2_vl_fast.get_rope_index): text
    counts up by one; a vision block of grid (t, h, w) merged to (t, h/2, w/2) takes positions
    start + (i_t, i_h, i_w); the text after it continues at the block's largest position + 1, i.e.
    start + max(t, h/2, w/2). (transformers 5.x continues at start + max(h/2, w/2), which differs once
    t exceeds the merged grid side.) Returns (position_ids (3, B, L), rope_deltas (B, 1))."""
    import itertools

    import torch

    merge = self.config.vision_config.spatial_merge_size
    grids = iter([g for g in (image_grid_thw if image_grid_thw is not None else video_grid_thw)])
    position_ids = torch.zeros(3, *input_ids.shape, dtype=input_ids.dtype, device=input_ids.device)
    deltas = []
    for b in range(input_ids.shape[0]):
        keep = attention_mask[b].bool() if attention_mask is not None else torch.ones_like(input_ids[b], dtype=torch.bool)
        types = mm_token_type_ids[b][keep].tolist()
        pieces, pos = [], 0
        for kind, group in itertools.groupby(types):
            n = len(list(group))
            if kind == 0:
                pieces.append(torch.arange(pos, pos + n).expand(3, -1))
                pos += n
                continue
            t, h, w = (int(x) for x in next(grids))
            h, w = h // merge, w // merge
            ti, hi, wi = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
            block = torch.stack([ti.flatten(), hi.flatten(), wi.flatten()]) + pos
            if block.shape[1] != n:
                raise ValueError(f"{n} vision tokens in the prompt, the grid {t}x{h}x{w} needs {block.shape[1]}")
            pieces.append(block)
            pos = int(block.max()) + 1
        positions = torch.cat(pieces, dim=1).to(position_ids.device)
        position_ids[:, b, keep] = positions
        deltas.append(int(positions.max()) + 1 - int(keep.sum()))
    return position_ids, torch.tensor(deltas, device=input_ids.device).unsqueeze(1)


def _with_upstream_rope(hf) -> None:
    """Give the loaded Qwen2-VL upstream's rotary positions (see upstream_rope_index)."""
    inner = hf.model
    cls = type(inner)
    inner.__class__ = type(f"Tarsier2{cls.__name__}", (cls,), {"get_rope_index": upstream_rope_index})


def load_qwen2_vl(folder: Path, raw: dict):
    from transformers import Qwen2VLForConditionalGeneration

    tok = _tokenizer(folder)
    config = qwen2_vl_config(raw, tok)
    with _empty_init():
        hf = Qwen2VLForConditionalGeneration(config)
    targets = installed_targets(hf, QWEN_TARGETS, str(folder))
    naming = load_published(hf, _read_state(folder), QWEN_NAMINGS, targets, str(folder))
    if config.tie_word_embeddings:
        hf.tie_weights()
    _with_upstream_rope(hf)
    pre = _preprocessor(folder)
    name = str(raw.get("_name_or_path") or "tarsier2")
    tok.padding_side = "left"
    processor = QwenProcessor(tok, _chat_template(folder, tok), qwen_geometry(pre, config.vision_config), pre,
                              config.vision_config, name=name)
    model = QwenVideoModel(hf, processor, QwenVideoConfig(name=name))
    model.published_naming = naming
    model.generation_config = generation_config(folder)
    return model


@dataclass
class QwenVideoConfig:
    name: str = "tarsier2"
    frames: int = QWEN_FRAMES
    max_new_tokens: int = MAX_NEW_TOKENS
    layout: str = "qwen2_vl"


def _module_base():
    from torch import nn

    return nn.Module


class QwenVideoModel(_module_base()):
    """Tarsier2 (transformers Qwen2-VL) behind the model interface (engine/interface.py): clips of any
    geometry and one instruction each in, greedy descriptions out; batched with left padding."""

    def __init__(self, hf_model, processor: QwenProcessor, config: QwenVideoConfig):
        super().__init__()
        self.hf = hf_model
        self.processor = processor
        self.config = config
        self.model_id = config.name
        self.generation_config = None

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def device(self):
        return self.hf.get_input_embeddings().weight.device

    @property
    def dtype(self):
        return self.hf.get_input_embeddings().weight.dtype

    def inputs(self, clips, instructions: list[str], answers: list[str] | None = None,
               prefixes: list[str] | None = None):
        return self.processor.inputs(clips, instructions, answers, prefixes)

    def _to_device(self, batch: dict) -> dict:
        batch = {k: v.to(self.device) for k, v in batch.items()}
        batch["pixel_values"] = batch["pixel_values"].to(self.dtype)
        return batch

    def forward(self, input_ids, attention_mask, labels=None, pixel_values=None, image_grid_thw=None,
                mm_token_type_ids=None):
        import torch.nn.functional as F
        from tarsier.engine.model import IGNORE_INDEX

        batch = self._to_device({"input_ids": input_ids, "attention_mask": attention_mask,
                                 "pixel_values": pixel_values, "image_grid_thw": image_grid_thw,
                                 "mm_token_type_ids": mm_token_type_ids})
        self.hf.model.rope_deltas = None   # positions of this batch, not of an earlier generate()
        logits = self.hf(**batch, use_cache=False).logits
        loss = None
        if labels is not None:
            labels = labels.to(self.device)
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                   ignore_index=IGNORE_INDEX)
        return loss, logits

    def generate(self, clips, instructions: list[str], max_new_tokens: int | None = None,
                 prefixes: list[str] | None = None):
        import torch
        from tarsier.engine.model import decode_generations, greedy_kwargs, stop_token_ids

        batch = self._to_device(self.processor.inputs(clips, instructions, prefixes=prefixes))
        stops = stop_token_ids(self.tokenizer, self.generation_config)
        self.hf.model.rope_deltas = None
        with torch.inference_mode():
            out = self.hf.generate(**batch, **greedy_kwargs(self.generation_config, max_new_tokens
                                                            or self.config.max_new_tokens, stops,
                                                            self.tokenizer.pad_token_id))
        return decode_generations(self.tokenizer, out[:, batch["input_ids"].shape[1]:].tolist(), stops)

    def trainable_parameters(self):
        """The merger (Qwen2-VL's projector) and the LLM; the vision blocks stay frozen."""
        return [p for n, p in self.hf.named_parameters() if not n.startswith("model.visual.") or ".merger." in n]

    def save(self, folder) -> None:
        """A standard transformers Qwen2-VL folder (4.52+ names) with the tokenizer, chat template,
        processor settings and generation config, which load_folder reads back."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.hf.save_pretrained(str(folder), safe_serialization=True)
        self.tokenizer.save_pretrained(str(folder))
        (folder / "chat_template.jinja").write_text(self.processor.chat_template, encoding="utf-8")
        g = self.processor.geometry
        (folder / "preprocessor_config.json").write_text(json.dumps({
            "min_pixels": g.processor_min_pixels, "max_pixels": g.processor_max_pixels,
            "patch_size": self.processor.patch, "merge_size": self.processor.merge,
            "temporal_patch_size": self.processor.temporal,
            "image_mean": list(self.processor.video_processor.image_mean),
            "image_std": list(self.processor.video_processor.image_std),
            "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2VLProcessor"}, indent=2),
            encoding="utf-8")
        if self.generation_config is not None:
            self.generation_config.save_pretrained(str(folder))


# ---------------------------------------------------------------------------------------------
# Placement: one device (default) or, for CUDA with several GPUs, the LLM split across them
# ---------------------------------------------------------------------------------------------
def place(model, device, dtype) -> bool:
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
