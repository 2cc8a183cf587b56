"""`tarsier scenes PATH...`: the clip list only (no model, no frame sampling), fast.

Shares discovery, the decode pass and the detection/clip code with `describe`
(engine.video.VideoReader with sample_frames=False). Heavy imports happen inside the command.
"""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

SCENE_MODES = ("adaptive", "content", "threshold", "none")
FORMATS = ("csv", "jsonl")


def _csv_field(s: str) -> str:
    if any(c in s for c in ',"\n\r'):
        return '"' + s.replace('"', '""') + '"'
    return s


def scenes(
    paths: Annotated[list[str], typer.Argument(help="Videos, folders, globs, or '-' for a list on stdin.",
                                                show_default=False)],
    scenes_mode: Annotated[str, typer.Option("--scenes", help="Scene detector: adaptive, content, threshold or none.")] = "adaptive",
    threshold: Annotated[float | None, typer.Option(help="Detector threshold (default: PySceneDetect's for that detector).")] = None,
    min_scene_len: Annotated[float, typer.Option(help="Shortest scene the detector reports, seconds.")] = 0.6,
    min_clip: Annotated[float, typer.Option(help="Scenes shorter than this (seconds) merge into a neighbour.")] = 1.0,
    max_clip: Annotated[float, typer.Option(help="Scenes longer than this (seconds) split into windows; 0 = no limit.")] = 30.0,
    ext: Annotated[list[str] | None, typer.Option("--ext", help="Video extensions to pick up in folders, comma-separated. [default: mp4,mov,mkv,webm,avi,wmv,m4v,gif]")] = None,
    recursive: Annotated[bool, typer.Option("--recursive/--no-recursive", help="Walk folders recursively.")] = True,
    fmt: Annotated[str, typer.Option("--format", help="csv (video,clip,start,end; seconds) or jsonl.")] = "csv",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
    threads: Annotated[int, typer.Option(help="Decoder threads per video; 0 = all cores.", min=0)] = 0,
) -> None:
    """List the clips (scene cuts, merged and split) of each video: no model is loaded."""
    from tarsier.cli.common import split_list, usage_error

    if scenes_mode not in SCENE_MODES:
        raise usage_error(f"unknown --scenes {scenes_mode!r} (choose {', '.join(SCENE_MODES)})")
    if fmt not in FORMATS:
        raise usage_error(f"unknown --format {fmt!r} (choose {', '.join(FORMATS)})")
    max_clip_s: float | None = max_clip if max_clip > 0 else None
    if min_clip < 0 or min_scene_len < 0:
        raise usage_error("--min-clip and --min-scene-len must be >= 0")
    if max_clip_s is not None and min_clip > max_clip_s:
        raise usage_error("--min-clip must not exceed --max-clip")
    if "-" in paths and sys.stdin.isatty():
        raise usage_error("'-' reads video paths from stdin, but stdin is a terminal")

    from tarsier.common.types import VideoError
    from tarsier.engine.discover import DEFAULT_EXTENSIONS, discover
    from tarsier.engine.video import ClipOptions, VideoReader

    exts = tuple(split_list(ext)) or DEFAULT_EXTENSIONS
    videos, problems = discover(paths, extensions=exts, recursive=recursive, stdin=sys.stdin)
    failed = False
    for given, msg in problems:
        typer.echo(f"error: {given}: {msg}", err=True)
        failed = True

    options = ClipOptions(scenes=scenes_mode, threshold=threshold, min_scene_len=min_scene_len,
                          min_clip=min_clip, max_clip=max_clip_s, threads=threads, sample_frames=False)
    with contextlib.ExitStack() as stack:
        out = sys.stdout
        if output:
            try:
                out = stack.enter_context(open(output, "w", encoding="utf-8", newline=""))
            except OSError as e:
                raise usage_error(f"cannot write {output}: {e.strerror or e}") from None
        if fmt == "csv":
            out.write("video,clip,start,end\n")
        for v in videos:
            try:
                with VideoReader(v.path, options) as reader:
                    rows = [(c.index, c.start, c.end) for c in reader.clips()]
            except VideoError as e:
                typer.echo(f"error: {v.rel}: {e.stage}: {e.message}", err=True)
                failed = True
                continue
            for i, a, b in rows:
                if fmt == "csv":
                    out.write(f"{_csv_field(v.rel)},{i},{a:.3f},{b:.3f}\n")
                else:
                    out.write(json.dumps({"video": v.rel, "clip": i, "start": round(a, 3), "end": round(b, 3)}) + "\n")
            out.flush()
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("scenes")(scenes)
