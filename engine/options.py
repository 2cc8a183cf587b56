"""What a describe run is asked to do, as frozen option objects (one per concern) instead of 25 keywords.

    DescribeOptions
      .what    WhatToDescribe  model, grain, prompt, frames, max_new_tokens
      .cut     HowToCut        scenes, threshold, min_scene_len, min_clip, max_clip
      .output  WhereToWrite    output_dir, formats, stdout, overwrite, thumbnails, curate, shard_size
      .speed   HowFast         batch_size, device, workers, queue_size, threads
      .inputs  WhichFiles      extensions, recursive, stdin

Both engines (engine.describe, engine.ray_engine) take these. `DescribeOptions().replace(grain="brief",
workers=0)` changes fields by their names, whichever group holds them, so `describe(inputs, **keywords)`
keeps working; an unknown name is a TypeError, as for any function. The values are checked where they
are used (engine.prepare), so a bad one is the same usage error as before.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

DEFAULT_MODEL = "tarsier2-recap-7b"


@dataclass(frozen=True)
class WhatToDescribe:
    """The model and what it is asked: together with the clip settings, the key of every record."""
    model: Any = DEFAULT_MODEL          # a preset name, a checkpoint folder, a hub id, or a loaded model
    grain: str = "fine"                 # brief | fine (engine.prepare.GRAINS)
    prompt: str | None = None           # an instruction of one's own instead of the grain's
    frames: int | None = None           # frames per clip (None: the model's)
    max_new_tokens: int | None = None   # cap on generated tokens per clip (None: the model's)


@dataclass(frozen=True)
class HowToCut:
    """Where clips start and end (engine.video.ClipOptions gets these)."""
    scenes: str = "adaptive"            # adaptive | content | threshold | none
    threshold: float | None = None      # the detector's threshold (None: PySceneDetect's)
    min_scene_len: float = 0.6          # seconds: the shortest scene the detector reports
    min_clip: float = 1.0               # seconds: shorter scenes merge into a neighbour
    max_clip: float | None = 30.0       # seconds: longer scenes split into windows (None: no limit)


@dataclass(frozen=True)
class WhereToWrite:
    """What is written, and where: OUT/descriptions.jsonl is the resume log whenever there is an OUT."""
    output_dir: str | Path | None = "tarsier-out"
    formats: tuple[str, ...] = ("jsonl",)   # engine.writers.WRITERS
    stdout: IO[str] | None = None           # also stream the JSONL records here
    overwrite: bool = False                 # redo clips already in the output instead of skipping them
    thumbnails: bool = False                # each described clip's frames as JPEGs under OUT/thumbs/
    curate: Any = None                      # engine.curate.CurateOptions: clip files and filters
    shard_size: int = 1000                  # clips per -f webdataset shard


@dataclass(frozen=True)
class HowFast:
    """How the work is spread; changes no record (apart from the timings in it)."""
    batch_size: int = 4                 # clips per model call
    device: str = "auto"                # where a model given by name is loaded
    workers: int | None = None          # decode processes (None: engine.decode_pool.default_workers())
    queue_size: int | None = None       # clips decoded ahead of the model (None: engine.batching)
    threads: int = 0                    # decoder threads per video (0: the cores shared by the workers)


@dataclass(frozen=True)
class WhichFiles:
    """How the inputs become video files (engine.discover)."""
    extensions: tuple[str, ...] | None = None   # None: engine.discover.DEFAULT_EXTENSIONS
    recursive: bool = True
    stdin: IO[str] | None = None                # where an input '-' reads its paths (None: sys.stdin)


@dataclass(frozen=True)
class DescribeOptions:
    what: WhatToDescribe = field(default_factory=WhatToDescribe)
    cut: HowToCut = field(default_factory=HowToCut)
    output: WhereToWrite = field(default_factory=WhereToWrite)
    speed: HowFast = field(default_factory=HowFast)
    inputs: WhichFiles = field(default_factory=WhichFiles)

    def replace(self, **changes) -> DescribeOptions:
        """A copy with the named fields changed, whichever group holds them."""
        by_group: dict[str, dict] = {}
        for name, value in changes.items():
            group = _GROUP_OF.get(name)
            if group is None:
                raise TypeError(f"describe() got an unexpected keyword argument {name!r}")
            by_group.setdefault(group, {})[name] = value
        return dataclasses.replace(self, **{group: dataclasses.replace(getattr(self, group), **values)
                                            for group, values in by_group.items()})


def option_names() -> tuple[str, ...]:
    """Every field name `DescribeOptions.replace` (and so `describe(**keywords)`) accepts."""
    return tuple(_GROUP_OF)


_GROUP_OF = {f.name: group.name for group in dataclasses.fields(DescribeOptions)
             for f in dataclasses.fields(group.default_factory())}
