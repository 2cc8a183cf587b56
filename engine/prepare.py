"""What both engines work out before the first decode: usage errors, the videos, the model's
instruction, the clip options and the resume key every record carries.

The key (model, grain, prompt, settings) says which clips an earlier run already finished: `settings`
is a short hash of everything else that changes which clips exist or what the model sees, so a rerun
with other settings does not count earlier clips as done.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from tarsier.common.types import VideoInput
from tarsier.engine.options import DescribeOptions
from tarsier.engine.writers import JSONL_NAME, WRITERS

GRAINS = ("brief", "fine")


def instruction_for(grain: str, prompt: str | None, processor=None) -> str:
    """The instruction for `grain` in the model's own words (engine.interface.instruction_for); without a
    processor (usage checks before the model loads), the project's template."""
    from tarsier import prompts
    if processor is not None:
        from tarsier.engine.interface import instruction_for as model_instruction

        return model_instruction(processor, grain, prompt)
    if prompt:
        return prompt.strip()
    if grain not in GRAINS:
        raise ValueError(f"unknown grain {grain!r}; choose from {', '.join(GRAINS)}")
    return prompts.read(grain)


def settings_key(clip_options) -> str:
    """Short hash of the engine.video.ClipOptions fields that change which clips exist or what the
    model sees (not the decoder threads)."""
    fields_ = {k: getattr(clip_options, k) for k in sorted(vars(clip_options)) if k not in ("threads", "geometry")}
    if not _plain_square(clip_options):   # the square of `frame_size` keeps the keys of runs made before geometries
        fields_["geometry"] = clip_options.geometry
    return hashlib.sha1(json.dumps(fields_, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _plain_square(clip_options) -> bool:
    from tarsier.engine.interface import SquareGeometry

    g = clip_options.geometry
    return g is None or g == SquareGeometry(clip_options.frame_size)


def check_usage(options: DescribeOptions) -> str:
    """Usage errors (ValueError) before anything slow happens; returns the instruction."""
    what, out = options.what, options.output
    instruction = instruction_for(what.grain, what.prompt)
    unknown = set(out.formats) - set(WRITERS)
    if unknown:
        raise ValueError(f"unknown output format(s): {', '.join(sorted(unknown))}")
    if out.output_dir is None and out.stdout is None:
        raise ValueError("nowhere to write: give an output folder or a stdout stream")
    if out.output_dir is None and set(out.formats) - {"jsonl"}:
        raise ValueError(f"{', '.join(sorted(set(out.formats) - {'jsonl'}))} output needs an output folder")
    return instruction


def model_id(model) -> str:
    """The name a loaded model goes by in the records."""
    return getattr(model, "model_id", getattr(model.config, "name", "model"))


@dataclass
class PreparedRun:
    """The videos, the model's identity, the clip options, the record key and where the output goes."""
    videos: list[VideoInput]
    problems: list[tuple[str, str]]      # (input, message): inputs that led to no video file
    instruction: str
    clip_options: object                 # engine.video.ClipOptions
    record_key: dict                     # model, grain, prompt, settings: the resume key of every record
    out: Path | None
    jsonl_path: Path | None              # the resume log, written whenever there is an output folder
    formats: tuple[str, ...]
    stems: set[str]                      # videos whose output name keeps its extension (x.mp4 beside x.mov)
    notes: list[str] = field(default_factory=list)   # warnings for the user (a grain the model lacks)

    def warn(self, notify, progress) -> None:
        """The notes: to the progress callback (the CLI prints one line each), else as Python warnings."""
        from tarsier.engine.interface import GrainWarning

        for note in self.notes:
            if progress is not None:
                notify("warning", message=note)
            else:
                warnings.warn(note, GrainWarning, stacklevel=4)


def prepare_run(inputs: list[str], options: DescribeOptions, model_name: str, processor) -> PreparedRun:
    """Discover the videos and work out the key; `processor` says the model's frames, size and words."""
    from tarsier.engine.discover import DEFAULT_EXTENSIONS, discover
    from tarsier.engine.video import ClipOptions

    what, cut, out = options.what, options.cut, options.output
    check_usage(options)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        instruction = instruction_for(what.grain, what.prompt, processor)
    geometry = processor.geometry
    videos, problems = discover(list(inputs), extensions=options.inputs.extensions or DEFAULT_EXTENSIONS,
                                recursive=options.inputs.recursive, stdin=options.inputs.stdin)
    clip_options = ClipOptions(
        scenes=cut.scenes, threshold=cut.threshold, min_scene_len=cut.min_scene_len, min_clip=cut.min_clip,
        max_clip=cut.max_clip, frames=what.frames or processor.frames, threads=options.speed.threads,
        frame_size=getattr(geometry, "size", 224), geometry=geometry,
    )
    clip_options.validate()  # a bad option is a usage error, not one decode error per video
    settings = settings_key(clip_options) + (f"-t{what.max_new_tokens}" if what.max_new_tokens else "")
    record_key = {"model": model_name, "grain": what.grain if not what.prompt else "custom", "prompt": instruction,
                  "settings": settings}
    folder = Path(out.output_dir) if out.output_dir is not None else None
    jsonl_path = folder / JSONL_NAME if folder is not None else None
    return PreparedRun(videos, problems, instruction, clip_options, record_key, folder, jsonl_path, tuple(out.formats),
                       stem_collisions(v.rel for v in videos), notes=[str(w.message) for w in caught])


def stem_collisions(rels) -> set[str]:
    """Videos whose subtitle name would collide (x.mp4 and x.mov in one folder) keep their extension."""
    seen: dict[str, list[str]] = {}
    for rel in rels:
        seen.setdefault(str(Path(rel).with_suffix("")), []).append(rel)
    return {r for group in seen.values() if len(group) > 1 for r in group}
