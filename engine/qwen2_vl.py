"""Tarsier2 (the Qwen2-VL layout) behind the model interface (engine/interface.py): transformers'
Qwen2VLForConditionalGeneration with upstream's inputs and rotary positions.

qwen2_vl (omni-research/Tarsier2-Recap-7b, Tarsier2-7b-0115): Qwen2-VL-7B. The config.json may be a Qwen2-VL
    config or upstream's LLaVA-style wrapper with text_config/vision_config of model_type "qwen2_vl";
    tensors in upstream's wrapper naming (vision_tower.*, language_model.model.*, language_model.lm_head.*),
    the pre-4.52 Qwen2-VL naming (visual.*, model.*, lm_head.*) or the 4.52+ one (model.visual.*,
    model.language_model.*, lm_head.*). Upstream inference (configs/tarser2_default_config.yaml,
    dataset/tarsier_processor.py, models/modeling_qwen2_vl_fast.py), reproduced by `QwenProcessor`:
    16 frames, all T when a clip has T <= 16; every frame duplicated (use_multi_images_for_video), so a
    temporal patch of 2 holds one frame twice (a checkpoint whose preprocessor_config.json says
    "use_multi_images_for_video": false gets Qwen2-VL's own packing instead: consecutive frames share a
    temporal patch, the last repeated when the count is odd); each frame aspect-kept at <= 460,800 pixels (factor 1,
    bicubic; <= 128*384*384 over all 2T images of a sample), then rounded by the Qwen2-VL processor to
    multiples of 28; the video's tokens are the image pad token (image_token_index), placed by the
    checkpoint's chat template; multimodal rotary positions continue after a video at its largest
    position + 1 (`upstream_rope_index`); greedy decoding on top of the checkpoint's generation_config.json.
    -> transformers' Qwen2VLForConditionalGeneration wrapped in `QwenVideoModel` (engine/interface.py).
Weights are read and renamed by engine/hf_layouts.py (`QWEN_NAMINGS` here lists every naming).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from tarsier.common.files import normal_permissions
from tarsier.engine.hf_layouts import (
    MAX_NEW_TOKENS,
    PUBLISHED_GRAINS,
    empty_init,
    generation_config,
    installed_targets,
    load_published,
    read_preprocessor,
    read_state,
    read_tokenizer,
)
from tarsier.engine.interface import AspectGeometry, FrameSpec

QWEN_FRAMES = 16

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


def duplicates_frames(pre: dict) -> bool:
    """Whether every frame fills a temporal patch alone (upstream's use_multi_images_for_video, which
    Tarsier2's config sets; the default when a checkpoint does not say)."""
    return bool(pre.get("use_multi_images_for_video", True))


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
    checkpoint's chat template, every frame twice, the video's tokens as the image pad token.
    `duplicate_frames` False: consecutive frames share a temporal patch instead, so the encoder's first
    layer sees two instants and with them what changed between them."""

    def __init__(self, tokenizer, chat_template: str, geometry: AspectGeometry, pre: dict, vision_config,
                 name: str = "tarsier2", frames: int = QWEN_FRAMES, grains: dict | None = None,
                 duplicate_frames: bool = True):
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
        self.set_duplicate_frames(duplicate_frames)
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

    def set_duplicate_frames(self, duplicate: bool) -> None:
        """The packing (a fine-tune may switch it; `save` records it for describe), and with it how many
        images upstream's pixel budget counts per frame: each frame twice when duplicated, once when paired."""
        from dataclasses import replace

        self.duplicate_frames = duplicate
        self.geometry = replace(self.geometry, copies=self.temporal if duplicate else 1)

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
        """(pixel values of all clips, grid (t, h, w) per clip): every frame twice (or consecutive frames
        paired, the last repeated to fill the final patch), rounded to multiples of 28."""
        import numpy as np
        import torch

        videos = [torch.as_tensor(np.asarray(c)).permute(0, 3, 1, 2) for c in clips]
        if self.duplicate_frames:
            videos = [v.repeat_interleave(self.temporal, dim=0) for v in videos]
        else:
            videos = [torch.cat([v, v[-1:].expand(-len(v) % self.temporal, -1, -1, -1)]) for v in videos]
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


def with_upstream_rope(hf) -> None:
    """Give the loaded Qwen2-VL upstream's rotary positions (see upstream_rope_index)."""
    inner = hf.model
    cls = type(inner)
    inner.__class__ = type(f"Tarsier2{cls.__name__}", (cls,), {"get_rope_index": upstream_rope_index})


def load_qwen2_vl(folder: Path, raw: dict):
    from transformers import Qwen2VLForConditionalGeneration

    tok = read_tokenizer(folder)
    config = qwen2_vl_config(raw, tok)
    with empty_init():
        hf = Qwen2VLForConditionalGeneration(config)
    targets = installed_targets(hf, QWEN_TARGETS, str(folder))
    # a tied head (Qwen2-VL-2B and its fine-tunes) is usually not stored: it is the embedding
    tied = frozenset(k for k in hf.state_dict() if k.endswith("lm_head.weight")) if config.tie_word_embeddings \
        else frozenset()
    naming = load_published(hf, read_state(folder), QWEN_NAMINGS, targets, str(folder), optional=tied)
    if config.tie_word_embeddings:
        hf.tie_weights()
    with_upstream_rope(hf)
    pre = read_preprocessor(folder)
    name = str(raw.get("_name_or_path") or "tarsier2")
    tok.padding_side = "left"
    # a fine-tune trained on N frames says so (`num_frames`, the video processor's own key), so that describe
    # feeds it what it learnt from; published checkpoints leave it out: upstream's 16
    frames = int(pre.get("num_frames") or QWEN_FRAMES)
    processor = QwenProcessor(tok, _chat_template(folder, tok), qwen_geometry(pre, config.vision_config), pre,
                              config.vision_config, name=name, frames=frames, duplicate_frames=duplicates_frames(pre))
    model = QwenVideoModel(hf, processor, QwenVideoConfig(name=name, frames=frames))
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
                mm_token_type_ids=None, labelled_only=False):
        """(loss, logits). `labelled_only` (with labels): the logits only where a labelled token is
        predicted, (N, vocab) as engine.model.labelled_loss returns them: the 152k-word head then runs on
        the answer's tokens, not on every video token."""
        import torch.nn.functional as F

        from tarsier.engine.model import IGNORE_INDEX, labelled_loss

        batch = self._to_device({"input_ids": input_ids, "attention_mask": attention_mask,
                                 "pixel_values": pixel_values, "image_grid_thw": image_grid_thw,
                                 "mm_token_type_ids": mm_token_type_ids})
        self.hf.model.rope_deltas = None   # positions of this batch, not of an earlier generate()
        if labelled_only and labels is not None:
            hidden = self.hf.model(**batch, use_cache=False).last_hidden_state
            return labelled_loss(hidden, self.hf.lm_head, labels)
        logits = self.hf(**batch, use_cache=False).logits
        loss = None
        if labels is not None:
            labels = labels.to(self.device)
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                   ignore_index=IGNORE_INDEX)
        return loss, logits

    def generate(self, clips, instructions: list[str], max_new_tokens: int | None = None,
                 prefixes: list[str] | None = None, temperature: float = 0.0):
        import torch

        from tarsier.engine.model import decode_generations, greedy_kwargs, stop_token_ids

        batch = self._to_device(self.processor.inputs(clips, instructions, prefixes=prefixes))
        stops = stop_token_ids(self.tokenizer, self.generation_config)
        self.hf.model.rope_deltas = None
        with torch.inference_mode():
            out = self.hf.generate(**batch, **greedy_kwargs(self.generation_config, max_new_tokens
                                                            or self.config.max_new_tokens, stops,
                                                            self.tokenizer.pad_token_id, temperature,
                                                            [self.processor.placeholder_id]))
        return decode_generations(self.tokenizer, out[:, batch["input_ids"].shape[1]:].tolist(), stops)

    def trainable_parameters(self):
        """The merger (Qwen2-VL's projector) and the LLM; the vision blocks stay frozen."""
        return [p for n, p in self.hf.named_parameters() if not n.startswith("model.visual.") or ".merger." in n]

    def save(self, folder, state_dict: dict | None = None) -> None:
        """A standard transformers Qwen2-VL folder (4.52+ names) with the tokenizer, chat template,
        processor settings and generation config, which engine.checkpoint.load_folder reads back.
        `state_dict` (self.hf's names) replaces the live weights: a model sharded by FSDP holds only its
        shard, so the trainer gathers the full tensors and passes them here."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.hf.save_pretrained(str(folder), safe_serialization=True, state_dict=state_dict)
        self.tokenizer.save_pretrained(str(folder))
        (folder / "chat_template.jinja").write_text(self.processor.chat_template, encoding="utf-8")
        g = self.processor.geometry
        (folder / "preprocessor_config.json").write_text(json.dumps({
            "min_pixels": g.processor_min_pixels, "max_pixels": g.processor_max_pixels,
            "patch_size": self.processor.patch, "merge_size": self.processor.merge,
            "temporal_patch_size": self.processor.temporal, "num_frames": self.processor.frames,
            "use_multi_images_for_video": self.processor.duplicate_frames,
            "image_mean": list(self.processor.video_processor.image_mean),
            "image_std": list(self.processor.video_processor.image_std),
            "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2VLProcessor"}, indent=2),
            encoding="utf-8")
        if self.generation_config is not None:
            self.generation_config.save_pretrained(str(folder))
        normal_permissions(folder)   # save_pretrained writes its safetensors 0600
