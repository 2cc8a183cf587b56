"""The one model interface that describe, train and eval use, for every backend.

A backend is two objects:

processor (CPU only, picklable, no weights; `model.processor`)
    frame_spec(width, height, frames) -> FrameSpec
        what the decoder must deliver for a video of that display size: how many frames a clip gets,
        their size (square for Tarsier1 and nano, aspect kept for Tarsier2) and the resampling filter.
        The decoder (engine.video) follows it; nothing else decides frame geometry.
    grains -> {grain: instruction}
        the grains the model was trained for, with the model's own instruction for each.
    prompt(instruction) -> str
        the text the model sees, built with the model's own template.
    inputs(clips, instructions, answers=None, prefixes=None) -> dict of tensors
        clips (a list of (N, H, W, 3) uint8 arrays; N, H and W may differ between clips where the
        backend allows it) + one instruction each (+ one answer each for training: labels then cover
        the answer and its end token only; + text forced as the start of each answer, e.g. a
        benchmark's " Answer: (") -> the model's forward/generate inputs.

model (a torch.nn.Module)
    forward(**inputs, labelled_only=False) -> (loss, logits)   loss when the inputs carry labels;
        labelled_only: logits (N, vocab) only where a labelled token is predicted (the LM head runs there only)
    generate(clips, instructions, max_new_tokens=None, prefixes=None, temperature=0.0) -> list[Generation]
        greedy and batched; temperature > 0 samples (torch's global RNG)
    trainable_parameters() -> the parameters a fine-tune updates by default (vision encoder frozen)
    save(folder); loading is engine.checkpoint.load(name_or_folder)

Implementations: `engine.model.VideoLLM` + `VideoLLMProcessor` (the project's own models and the
Tarsier1/LLaVA layout) and `engine.qwen2_vl.QwenVideoModel` + `QwenProcessor` (Tarsier2, Qwen2-VL).
No torch at import: the CLI and the decode workers import this module.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class FrameSpec:
    """What the decoder delivers for one video."""

    frames: int                       # frames per clip
    width: int                        # size of every delivered frame (display orientation)
    height: int
    resample: str = "area"            # swscale filter: "area" (nano, Tarsier1) or "bicubic" (Tarsier2, as PIL)
    # A clip with fewer decoded frames than `frames` gives each of them once instead of repeating
    # frames to reach `frames` (Tarsier2's sampler); False: always exactly `frames` (Tarsier1, nano).
    all_frames_if_fewer: bool = False
    # (width, height) the model's processor turns each frame into, where it resizes again; None = as delivered
    model_size: tuple[int, int] | None = None


@dataclass(frozen=True)
class SquareGeometry:
    """Frames stretched to a square (Tarsier1 and the project's VideoLLM: no crop, no padding)."""

    size: int
    resample: str = "area"

    def frame_spec(self, width: int, height: int, frames: int) -> FrameSpec:
        return FrameSpec(frames=frames, width=self.size, height=self.size, resample=self.resample)


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's rounding rule: both sides to multiples of `factor`, nearest first; if that exceeds
    max_pixels, scale down by sqrt(area / max_pixels) and round down; if under min_pixels, scale up
    and round up. Returns (height, width)."""
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


@dataclass(frozen=True)
class AspectGeometry:
    """Tarsier2's input geometry, as upstream's inference does it (configs/tarser2_default_config.yaml,
    dataset/tarsier_processor.py): each frame keeps its aspect ratio, resized (bicubic) to at most
    `max_pixels` with factor 1; over all frames of a sample at most `sample_pixels`, counting each
    frame `copies` times (upstream duplicates every frame to fill Qwen2-VL's temporal patch of 2), so
    from 21 frames on the per-frame budget shrinks. The Qwen2-VL processor then rounds both sides to
    multiples of `factor` (28) within its own min/max pixels: `model_size()`."""

    max_pixels: int = 460_800            # 1280 * 720 // 2
    min_pixels: int = 0
    sample_pixels: int = 128 * 384 * 384
    copies: int = 2
    factor: int = 28                     # patch 14 * spatial merge 2
    processor_min_pixels: int = 56 * 56
    processor_max_pixels: int = 28 * 28 * 16384
    max_frames_all: bool = True          # a clip of T <= frames frames uses all T (no repeats)

    def budget(self, frames: int) -> tuple[int, int]:
        """(max_pixels, min_pixels) per frame for a clip of `frames` frames."""
        top = self.max_pixels
        images = frames * self.copies
        if images and self.sample_pixels // images < top:
            top = self.sample_pixels // images
        return top, min(self.min_pixels, top)

    def frame_spec(self, width: int, height: int, frames: int) -> FrameSpec:
        top, low = self.budget(frames)
        h, w = smart_resize(height, width, 1, low, top) if min(width, height) >= 1 else (height, width)
        w, h = max(1, w), max(1, h)
        return FrameSpec(frames=frames, width=w, height=h, resample="bicubic",
                         all_frames_if_fewer=self.max_frames_all, model_size=self.model_size(w, h))

    def model_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) the Qwen2-VL processor turns a delivered frame into."""
        h, w = smart_resize(height, width, self.factor, self.processor_min_pixels, self.processor_max_pixels)
        return w, h


@dataclass
class Generation:
    text: str
    tokens: int


@runtime_checkable
class VideoProcessor(Protocol):
    def frame_spec(self, width: int, height: int, frames: int | None = None) -> FrameSpec: ...

    @property
    def grains(self) -> dict[str, str]: ...

    def prompt(self, instruction: str) -> str: ...

    def inputs(self, clips, instructions: list[str], answers: list[str] | None = None,
               prefixes: list[str] | None = None) -> dict: ...


@runtime_checkable
class VideoModel(Protocol):
    processor: VideoProcessor

    def forward(self, **inputs): ...

    def generate(self, clips, instructions: list[str], max_new_tokens: int | None = None,
                 prefixes: list[str] | None = None, temperature: float = 0.0) -> list[Generation]: ...

    def trainable_parameters(self): ...

    def save(self, folder) -> None: ...


class GrainWarning(UserWarning):
    """A grain the model was not trained for: the project's generic instruction is used instead."""


def instruction_for(processor, grain: str, prompt: str | None = None) -> str:
    """The instruction for `grain` in the model's own words; `prompt` overrides. A grain the model does
    not list falls back to the project's template (prompts/<grain>.txt) with a GrainWarning."""
    from tarsier import prompts
    if prompt:
        return prompt.strip()
    own = dict(getattr(processor, "grains", None) or {})
    if grain in own:
        return own[grain]
    if grain not in prompts.GRAINS:
        raise ValueError(f"unknown grain {grain!r}; choose from {', '.join(prompts.GRAINS)}")
    name = getattr(processor, "name", "this model")
    warnings.warn(f"{name} was not trained for the {grain!r} grain (it knows: {', '.join(own) or 'none'}); "
                  f"using the generic instruction, expect weaker output", GrainWarning, stacklevel=2)
    return prompts.read(grain)
