"""Published Tarsier checkpoints with plain transformers 5.x: no remote code, safetensors only.

Two layouts exist on the hub (facts read from github.com/bytedance/tarsier, branches `tarsier` and `main`):

llava (omni-research/Tarsier-7b, Tarsier-34b), config.json is a LLaVA config:
    model_type "llava", architectures ["TarsierForConditionalGeneration"], vision_config (clip_vision_model,
    336 px, patch 14), text_config (llama; Vicuna-7B / Yi-34B), image_token_index 32000 ("<image>"),
    image_newline_idx 32002, image_new_idx 32003, vision_feature_layer -2,
    vision_feature_select_strategy "default" (CLS dropped), projector_hidden_act "gelu".
    Tensors: vision_tower.vision_model.*, multi_modal_projector.linear_{1,2}.*, language_model.model.*,
    language_model.lm_head.weight. Prompt: "USER: <image>*N\\n{instruction} ASSISTANT: " after BOS;
    each <image> becomes one frame's 24x(24+1)+1 = 601 embeddings. The newline/new-frame ids index the LLM's
    embedding table only (the tokenizer's added_tokens.json has just "<image>": 32000).
    -> loaded into the project's own VideoLLM (engine/model.py) with an HF CLIP tower (source "hf_clip").

qwen2_vl (omni-research/Tarsier2-Recap-7b, Tarsier2-7b-0115): Qwen2-VL-7B. The config.json may be a Qwen2-VL
    config or upstream's LLaVA-style wrapper with text_config/vision_config of model_type "qwen2_vl";
    tensors in the pre-4.52 Qwen2-VL naming (visual.*, model.*, lm_head.*) or the 4.52+ one
    (model.visual.*, model.language_model.*, lm_head.*). Upstream inference (configs/tarser2_default_config.yaml):
    16 frames, at most 460,800 pixels per frame (1280*720/2), min_pixels 0, every frame duplicated
    (use_multi_images_for_video) so a temporal patch of 2 holds one frame twice, the checkpoint's chat template.
    -> transformers' Qwen2VLForConditionalGeneration + Qwen2VLProcessor, wrapped in `QwenVideoModel`
    with the same engine interface as VideoLLM (config.frames, frame_size, tokenizer, generate()).

Hub access: `snapshot_download` into the usual Hugging Face cache (json, safetensors and tokenizer files only;
never .bin pickles). Offline and not cached -> ModelNotFound with one line saying what to do.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from engine.checkpoint import ModelNotFound

ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "tokenizer.model"]
QWEN_MAX_PIXELS = 460_800        # 1280 * 720 // 2, upstream Tarsier2 inference config
QWEN_FRAMES = 16
LLAVA_FRAMES = 8
MAX_NEW_TOKENS = 512
LLAVA_TEMPLATE = "USER: <image>\n{instruction} ASSISTANT: "   # upstream: USER: <image>*N\n... ASSISTANT: (space)
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
        files = sorted(folder.glob("*.safetensors"))
    if check and (not files or not all(f.is_file() for f in files)):
        pickles = list(folder.glob("*.bin")) + list(folder.glob("*.pt"))
        extra = " (only pickle .bin weights there: they are never loaded, convert them to safetensors)" if pickles else ""
        raise ModelNotFound(f"{folder}: no complete safetensors weights{extra}")
    return files


def _read_state(folder: Path, rename) -> dict:
    from safetensors import safe_open

    state = {}
    for file in _weight_files(folder):
        with safe_open(str(file), framework="pt", device="cpu") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open handles are not dicts
                state[rename(key)] = f.get_tensor(key)
    return state


def _load_strict(module, state: dict, what: str) -> None:
    expected = set(module.state_dict().keys())
    for key in [k for k in state if k not in expected and _IGNORABLE.search(k)]:
        del state[key]
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ModelNotFound(f"{what}: checkpoint tensors do not match the model: missing {missing[:5]}"
                            f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                            f"{'...' if len(unexpected) > 5 else ''}")
    module.load_state_dict(state, strict=True, assign=True)


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
LLAVA_RENAMES = [  # (published prefix, VideoLLM prefix); the first match wins
    ("vision_tower.", "vision."),
    ("multi_modal_projector.linear_1.", "projector.0."),
    ("multi_modal_projector.linear_2.", "projector.2."),
    ("language_model.model.", "llm.model."),
    ("language_model.lm_head.", "llm.lm_head."),
    # transformers >= 4.52 LLaVA naming, should a re-saved copy use it
    ("model.vision_tower.", "vision."),
    ("model.multi_modal_projector.linear_1.", "projector.0."),
    ("model.multi_modal_projector.linear_2.", "projector.2."),
    ("model.language_model.", "llm.model."),
    ("lm_head.", "llm.lm_head."),
]


def _rename(key: str, rules) -> str:
    for old, new in rules:
        if key.startswith(old):
            return new + key[len(old):]
    return key


UPSTREAM_CLIP = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
                 "image_size": 336, "patch_size": 14, "projection_dim": 768}   # CLIP ViT-L/14-336


def llava_model_config(raw: dict, folder: Path | None = None):
    """The ModelConfig (engine/config.py) of a published LLaVA-layout Tarsier config.json."""
    from transformers import CLIPVisionConfig

    from engine.config import CLIP_MEAN, CLIP_STD, ModelConfig, ProjectorConfig, VisionConfig

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
    )


def load_llava(folder: Path, raw: dict):
    from engine.model import VideoLLM

    config = llava_model_config(raw, folder)
    tok = _tokenizer(folder)
    image_id = int(raw.get("image_token_index", 32000))
    if tok.convert_tokens_to_ids("<image>") != image_id:
        raise ModelNotFound(f"{folder}: tokenizer has no '<image>' token with id {image_id}")
    with _empty_init():
        model = VideoLLM(config, tok)
    _load_strict(model, _read_state(folder, lambda k: _rename(k, LLAVA_RENAMES)), str(folder))
    if getattr(model.llm.config, "tie_word_embeddings", False):
        model.llm.tie_weights()
    return model


# ---------------------------------------------------------------------------------------------
# Tarsier2: Qwen2-VL layout -> transformers' Qwen2-VL behind the engine interface
# ---------------------------------------------------------------------------------------------
QWEN_RENAMES = [
    ("model.visual.", "model.visual."),
    ("model.language_model.", "model.language_model."),
    ("visual.", "model.visual."),
    ("vision_tower.", "model.visual."),
    ("language_model.model.", "model.language_model."),
    ("language_model.lm_head.", "lm_head."),
    ("model.", "model.language_model."),
    ("lm_head.", "lm_head."),
]

QWEN_SPECIAL = {"image_token_id": "<|image_pad|>", "video_token_id": "<|video_pad|>",
                "vision_start_token_id": "<|vision_start|>", "vision_end_token_id": "<|vision_end|>"}


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
    for name in ("chat_template.jinja",):
        if (folder / name).is_file():
            return (folder / name).read_text(encoding="utf-8")
    for name in ("chat_template.json", "processor_config.json"):
        if (folder / name).is_file():
            data = json.loads((folder / name).read_text(encoding="utf-8"))
            if isinstance(data.get("chat_template"), str):
                return data["chat_template"]
    if isinstance(getattr(tok, "chat_template", None), str):
        return tok.chat_template
    return QWEN_FALLBACK_TEMPLATE


def qwen_max_pixels(pre: dict) -> int:
    """Upstream's 460,800 pixels per frame, or the checkpoint's own max_pixels when that is smaller."""
    own = pre.get("max_pixels") or (pre.get("size") or {}).get("longest_edge") or (pre.get("size") or {}).get(
        "max_pixels")
    return min(QWEN_MAX_PIXELS, int(own)) if own else QWEN_MAX_PIXELS


def qwen_frame_size(max_pixels: int = QWEN_MAX_PIXELS, factor: int = 28) -> int:
    """Largest square side S (a multiple of 28) with S*S <= max_pixels: 672 for 460,800."""
    return int(math.isqrt(max_pixels) // factor * factor)


@dataclass
class QwenVideoConfig:
    name: str = "tarsier2"
    frames: int = QWEN_FRAMES
    max_new_tokens: int = MAX_NEW_TOKENS
    max_pixels: int = QWEN_MAX_PIXELS
    frame_size: int = 672
    layout: str = "qwen2_vl"


def load_qwen2_vl(folder: Path, raw: dict):
    from transformers import Qwen2VLForConditionalGeneration

    tok = _tokenizer(folder)
    config = qwen2_vl_config(raw, tok)
    with _empty_init():
        hf = Qwen2VLForConditionalGeneration(config)
    _load_strict(hf, _read_state(folder, lambda k: _rename(k, QWEN_RENAMES)), str(folder))
    if config.tie_word_embeddings:
        hf.tie_weights()
    processor = _qwen_processor(folder, tok, config)
    name = str(raw.get("_name_or_path") or "tarsier2")
    max_pixels = qwen_max_pixels(_preprocessor(folder))
    factor = processor.video_processor.patch_size * processor.video_processor.merge_size
    return QwenVideoModel(hf, processor, QwenVideoConfig(name=name, max_pixels=max_pixels,
                                                         frame_size=qwen_frame_size(max_pixels, factor)))


def _qwen_processor(folder: Path, tok, config):
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    pre = _preprocessor(folder)
    vc = config.vision_config
    common = {
        "patch_size": int(getattr(vc, "patch_size", 14)), "merge_size": int(getattr(vc, "spatial_merge_size", 2)),
        "temporal_patch_size": int(getattr(vc, "temporal_patch_size", 2)),
        "max_pixels": qwen_max_pixels(pre),   # upstream inference: at most 1280*720/2 pixels per frame
    }
    common["min_pixels"] = min(int(pre.get("min_pixels") or 56 * 56), common["max_pixels"])
    for key in ("image_mean", "image_std"):
        if key in pre:
            common[key] = pre[key]
    tok.padding_side = "left"
    return Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**common),
        video_processor=Qwen2VLVideoProcessor(**common, cap_pixels_per_frame=False),  # per-frame cap only
        tokenizer=tok,
        chat_template=_chat_template(folder, tok),
    )


def _module_base():
    from torch import nn

    return nn.Module


class QwenVideoModel(_module_base()):
    """Tarsier2 (transformers Qwen2-VL) with VideoLLM's engine interface: frames (B, N, S, S, 3) uint8
    and one instruction per clip in, greedy descriptions out; batched with left padding."""

    def __init__(self, hf_model, processor, config: QwenVideoConfig):
        super().__init__()
        self.hf = hf_model
        self.processor = processor
        self.config = config
        self.model_id = config.name

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def frame_size(self) -> int:
        return self.config.frame_size

    @property
    def device(self):
        return self.hf.get_input_embeddings().weight.device

    @property
    def dtype(self):
        return self.hf.get_input_embeddings().weight.dtype

    def _prompt(self, instruction: str) -> str:
        messages = [{"role": "user", "content": [
            {"type": "video", "num_vision_tokens": 1}, {"type": "text", "text": instruction.strip()}]}]
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # One placeholder per video; the processor expands it to the real count. Templates that expand
        # the placeholder themselves or write the image pad for videos are brought to that form.
        text = re.sub(r"(?:<\|image_pad\|>|<\|video_pad\|>)+", "<|video_pad|>", text)
        if text.count("<|video_pad|>") != 1:
            raise ValueError("the chat template did not place exactly one video in the prompt")
        return text

    def _stop_ids(self) -> list[int]:
        tok = self.tokenizer
        ids = {tok.eos_token_id}
        for t in ("<|im_end|>", "<|endoftext|>"):
            if t in tok.get_vocab():
                ids.add(tok.convert_tokens_to_ids(t))
        return sorted(i for i in ids if i is not None)

    def inputs(self, frames, instructions: list[str]):
        """Processor inputs for a batch: each frame duplicated to fill the temporal patch of 2."""
        import torch

        t = self.processor.video_processor.temporal_patch_size
        videos = [clip.permute(0, 3, 1, 2).repeat_interleave(t, dim=0).contiguous()
                  for clip in torch.as_tensor(frames)]
        texts = [self._prompt(i) for i in instructions]
        return self.processor(text=texts, videos=videos, padding=True, return_tensors="pt",
                              videos_kwargs={"do_sample_frames": False})

    def generate(self, frames, instructions: list[str], max_new_tokens: int | None = None):
        import torch

        from engine.model import Generation

        batch = self.inputs(frames, instructions).to(self.device)
        if "pixel_values_videos" in batch:
            batch["pixel_values_videos"] = batch["pixel_values_videos"].to(self.dtype)
        stops = self._stop_ids()
        tok = self.tokenizer
        with torch.inference_mode():
            out = self.hf.generate(**batch, max_new_tokens=max_new_tokens or self.config.max_new_tokens,
                                   do_sample=False, num_beams=1, eos_token_id=stops,
                                   pad_token_id=tok.pad_token_id, use_cache=True)
        results = []
        for row in out[:, batch["input_ids"].shape[1]:].tolist():
            n = next((i for i, t in enumerate(row) if t in stops), len(row))
            results.append(Generation(text=tok.decode(row[:n], skip_special_tokens=True).strip(), tokens=n))
        return results


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
