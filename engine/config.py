"""Typed model configs. A checkpoint's config.json is `ModelConfig.to_dict()`; presets are the same
shape in engine/presets/*.json. No torch here: the CLI reads configs without loading a model."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class VisionConfig:
    """An open_clip vision tower: a named open_clip architecture, or a ViT or ResNet built from the fields; or
    (source="hf_clip") a transformers CLIPVisionModel built from `hf_config`, as in published Tarsier."""

    source: str = "open_clip"        # "open_clip" | "hf_clip"
    hf_config: dict | None = None    # hf_clip only: the CLIPVisionConfig dict (geometry fields follow it)
    name: str | None = None          # open_clip model name (e.g. "ViT-L-14-336"); None = custom tower below
    # Bottleneck blocks per stage of an open_clip ModifiedResNet (CLIP RN50's layout: (3, 4, 6, 3));
    # None = a ViT. For a ResNet, `patch_size` is the stride of the feature map read (4, 8, 16 or 32:
    # the output of stage 1, 2, 3 or 4, each cell a "patch") and `width` its channels.
    resnet_blocks: tuple[int, ...] | None = None
    pretrained: str | None = None    # open_clip weights file/tag, read only when a model is first built
    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    feature_layer: int = -2          # Tarsier/LLaVA take the second-to-last block's patch tokens
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    frozen: bool = True


@dataclass
class ProjectorConfig:
    """2-layer GELU MLP from vision width to LLM width, and how visual tokens are laid out."""

    spatial_pool: int = 1                 # average-pool patch grid by this factor (fewer tokens per frame)
    newline_token_id: int | None = None   # LLaVA/Tarsier1: append this token's embedding after each patch row
    frame_token_id: int | None = None     # embedding of this token after each frame; None = a learned vector
    # Learned embedding of each frame's place in the clip, added to its tokens; 0 = none (Tarsier: the LLM
    # reads time from token order alone). With N frames, frame i uses slot i * time_slots // N.
    time_slots: int = 0
    # Feed the projector each frame's features and their change to the next frame (zero for the last),
    # so a moved, grown or recoloured shape is visible in one token instead of across two.
    temporal_difference: bool = False
    # Add to each frame's separator token an MLP of the whole frame's change to the next (all cells'
    # changes, concatenated): where the shapes went is read across cells (a move crosses them), and
    # in the cell tokens that change is a small part of a token dominated by what is there.
    motion_separator: bool = False


@dataclass
class ModelConfig:
    name: str = "videollm"
    architecture: str = "VideoLLM"
    vision: VisionConfig = field(default_factory=VisionConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    llm: dict = field(default_factory=dict)   # a Hugging Face config dict; must include "model_type"
    frames: int = 8                           # default frames per clip
    video_token: str = "<video>"
    # Tarsier's template; {instruction} is the user's text, the video placeholder goes before it.
    prompt_template: str = "USER: <video>\n{instruction} ASSISTANT:"
    max_new_tokens: int = 512
    # The grains the model was trained for and its own instruction for each ({"fine": "...", ...});
    # None = the project's templates (prompts/brief.txt, prompts/fine.txt), which stage 2 trains on.
    prompts: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        d = dict(d)
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        vision = VisionConfig(**tuples_from_json(d.pop("vision", {})))
        projector = ProjectorConfig(**d.pop("projector", {}))
        return cls(vision=vision, projector=projector, **d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def cell_grid(self) -> int:
        """Cells per row of a frame after the projector's pooling."""
        return self.vision.image_size // self.vision.patch_size // self.projector.spatial_pool

    def visual_tokens_per_frame(self) -> int:
        grid = self.cell_grid()
        per_row = grid + (1 if self.projector.newline_token_id is not None else 0)
        return grid * per_row + 1


def tuples_from_json(d: dict) -> dict:
    """JSON has no tuples: turn a config dict's lists back into the tuples the dataclasses hold."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
