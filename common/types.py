"""Plain records passed between the pipeline stages (no torch here: the CLI imports this)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class VideoError(Exception):
    """A bad input. `stage` says where it failed: open, probe, decode or model (error records also
    use discover for an input that is not there and clip for a clip file that could not be cut)."""

    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage
        self.message = message

    def __str__(self) -> str:
        return f"{self.stage}: {self.message}"

    def __reduce__(self):  # survives a trip through a process pool
        return (VideoError, (self.stage, self.message))


@dataclass
class VideoInput:
    path: Path   # absolute path on disk
    rel: str     # path relative to the input root, '/'-separated: the record key and the output layout


@dataclass
class VideoInfo:
    duration: float          # seconds, from timestamps of decoded frames when the container lies
    fps: float               # average frame rate reported by the stream
    width: int               # display size, after rotation
    height: int
    rotation: int = 0        # degrees clockwise applied to decoded frames
    frames_decoded: int = 0  # filled in as the single decode pass proceeds


@dataclass
class Clip:
    index: int
    start: float                 # seconds
    end: float                   # seconds (exclusive)
    frames: np.ndarray           # (N, H, W, 3) uint8 RGB, at the size the model's frame spec asked for
    frame_times: list[float] = field(default_factory=list)  # seconds, one per frame
    # (width, height) of the frames the model sees: the delivered size, or where the model's processor
    # resizes again (Qwen2-VL rounds to multiples of 28), that size. None = the delivered size.
    model_size: tuple[int, int] | None = None

    @property
    def frame_size(self) -> tuple[int, int]:
        if self.model_size is not None:
            return tuple(self.model_size)
        return int(self.frames.shape[2]), int(self.frames.shape[1])
