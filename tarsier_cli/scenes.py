"""`tarsier scenes PATH...`: the clip list only (no model, no frame sampling), fast.

Shares discovery, the decode pass and the detection/clip code with `describe`
(engine.video.VideoReader with sample_frames=False). Heavy imports happen inside the command.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

SCENE_MODES = ("adaptive", "content", "threshold", "none")
FORMATS = ("csv", "jsonl")


def _csv_field(s: str) -> str:
    if any(c in s for c in ',"\n\r'):
        return '"' + s.replace('"', '""') + '"'
    return s


def scenes(
    paths: list[str] = typer.Argument(..., help="Video files, folders, globs, or '-' to read paths from stdin."),
    scenes_mode: str = typer.Option("adaptive", "--scenes", help="Scene detector: adaptive | content | threshold | none."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Detector threshold (default: the detector's own)."),
    min_scene_len: float = typer.Option(0.6, "--min-scene-len", help="Seconds; passed to the detector."),
    min_clip: float = typer.Option(1.0, "--min-clip", help="Seconds; shorter scenes merge into a neighbour."),
    max_clip: Optional[float] = typer.Option(30.0, "--max-clip", help="Seconds; longer scenes are split. 0 = no limit."),
    ext: Optional[str] = typer.Option(None, "--ext", help="Comma-separated extensions for folder walks and globs."),
    fmt: str = typer.Option("csv", "--format", help="csv (video,clip,start,end) or jsonl."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write here instead of stdout."),
) -> None:
    """List the clips (scene cuts, merged and split) of each video: no model is loaded."""
    from tarsier_cli.common import split_list, usage_error

    if scenes_mode not in SCENE_MODES:
        raise usage_error(f"unknown --scenes {scenes_mode!r} (choose {', '.join(SCENE_MODES)})")
    if fmt not in FORMATS:
        raise usage_error(f"unknown --format {fmt!r} (choose {', '.join(FORMATS)})")
    if max_clip is not None and max_clip <= 0:
        max_clip = None
    if min_clip < 0 or min_scene_len < 0:
        raise usage_error("--min-clip and --min-scene-len must be >= 0")
    if max_clip is not None and min_clip > max_clip:
        raise usage_error("--min-clip must not exceed --max-clip")
    if "-" in paths and sys.stdin.isatty():
        raise usage_error("'-' reads video paths from stdin, but stdin is a terminal")

    from engine.discover import DEFAULT_EXTENSIONS, discover
    from engine.types import VideoError
    from engine.video import ClipOptions, VideoReader

    exts = tuple(split_list([ext])) if ext else DEFAULT_EXTENSIONS
    videos, problems = discover(paths, extensions=exts, stdin=sys.stdin)
    failed = False
    for given, msg in problems:
        typer.echo(f"error: {given}: {msg}", err=True)
        failed = True

    options = ClipOptions(scenes=scenes_mode, threshold=threshold, min_scene_len=min_scene_len,
                          min_clip=min_clip, max_clip=max_clip, sample_frames=False)
    out = open(output, "w", encoding="utf-8", newline="") if output else sys.stdout
    try:
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
    finally:
        if output:
            out.close()
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("scenes")(scenes)
