"""`tarsier describe`: folders of video in, time-aligned descriptions out.

The command parses, turns the flags into the library's option objects (tarsier.engine.options),
shows progress and calls the engine (tarsier.engine.describe, or tarsier.engine.ray_engine); the
`-f` choices come from the writers' registry (tarsier.engine.writers.WRITERS).
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated

import typer

from tarsier.cli.common import (
    EXIT_SOME_FAILED,
    EXIT_USAGE,
    err_console,
    show_progress,
    split_list,
    usage_error,
    video_progress,
)
from tarsier.engine.options import DEFAULT_MODEL
from tarsier.engine.writers import ALL_FORMATS, DEFAULT_FORMATS, MANIFEST_WRITERS, WRITERS, formats_help

HELP = f"""Describe videos: one description per clip, clips cut at scene changes.

PATH may be files, folders (walked recursively), globs, or '-' to read paths from stdin.
Writes OUT/descriptions.jsonl (one record per clip, appended as clips finish) and, with
-f srt or vtt, one subtitle file per video mirroring the input tree. For training a video
generator: --clips DIR cuts every clip into a file of its own, and -f {', '.join(MANIFEST_WRITERS)}
writes the captions where trainers read them. A rerun with the same settings skips
finished clips. Exit code: 0 all done, 1 some inputs failed, 2 usage error.

Examples:

\b
  tarsier describe ./videos --grain fine -f all -o captions/
  find /data -name '*.mp4' | tarsier describe - --stdout > captions.jsonl
  tarsier describe /data/videos -o captions/ --engine ray --ray-address auto
  tarsier describe ./videos -o data/ --clips data/clips -f txt,csv \\
      --min-size 640x360
"""

FORMAT_HELP = (f"{formats_help()}, or all ({', '.join(ALL_FORMATS)}). Comma-separated or repeated.  "
               f"[default: {','.join(DEFAULT_FORMATS)}]")
SCENE_MODES = ("adaptive", "content", "threshold", "none")
GRAINS = ("brief", "fine")
ENGINES = ("local", "ray")
CURATION = "Curation"   # the --help section of the dataset options


def describe_command(
    paths: Annotated[list[str], typer.Argument(help="Videos, folders, globs, or '-' for a list on stdin.",
                                                show_default=False)],
    model: Annotated[str, typer.Option("--model", "-m", help="Preset name (see `tarsier models`), Hugging Face id (owner/name) or checkpoint folder.")] = DEFAULT_MODEL,
    grain: Annotated[str, typer.Option(help="brief: one short sentence; fine: every event in detail (in each model's own instruction).")] = "fine",
    prompt: Annotated[str | None, typer.Option(help="Instruction text; overrides --grain's template.")] = None,
    frames: Annotated[int | None, typer.Option(help="Frames per clip (default: the model's: 16 for Tarsier2 and nano, 8 for Tarsier1; Tarsier2 takes every frame of a clip that has fewer).", min=1)] = None,
    scenes: Annotated[str, typer.Option(help="Scene detector: adaptive, content, threshold or none.")] = "adaptive",
    threshold: Annotated[float | None, typer.Option(help="Detector threshold (default: PySceneDetect's for that detector).")] = None,
    min_scene_len: Annotated[float, typer.Option(help="Shortest scene the detector reports, seconds.")] = 0.6,
    min_clip: Annotated[float, typer.Option(help="Scenes shorter than this (seconds) merge into a neighbour.")] = 1.0,
    max_clip: Annotated[float, typer.Option(help="Scenes longer than this (seconds) split into windows; 0 = no limit.")] = 30.0,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Clips per model batch.", min=1)] = 4,
    max_new_tokens: Annotated[int | None, typer.Option(help="Cap on generated tokens per clip (default: the model's).", min=1)] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    output_dir: Annotated[Path | None, typer.Option("--output-dir", "-o", help="Output folder.", show_default="tarsier-out, or none with --stdout")] = None,
    fmt: Annotated[list[str] | None, typer.Option("--format", "-f", help=FORMAT_HELP)] = None,
    stdout: Annotated[bool, typer.Option("--stdout", help="Stream JSONL records to stdout (logs and progress go to stderr).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Redo clips already in the output instead of skipping them.")] = False,
    ext: Annotated[list[str] | None, typer.Option("--ext", help="Video extensions to pick up in folders, comma-separated.  [default: mp4,mov,mkv,webm,avi,wmv,m4v,gif]")] = None,
    recursive: Annotated[bool, typer.Option("--recursive/--no-recursive", help="Walk folders recursively.")] = True,
    threads: Annotated[int, typer.Option(help="Decoder threads per video; 0 = all cores.", min=0)] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no per-file messages.")] = False,
    workers: Annotated[int | None, typer.Option(help="Decode worker processes; 0 = a thread in the model's process.", min=0, show_default="cores - 1, at most 16")] = None,
    report: Annotated[bool, typer.Option("--report", help="Save clip thumbnails and write OUT/report.html after the run.")] = False,
    engine_name: Annotated[str, typer.Option("--engine", help="local: this machine; ray: a Ray cluster (needs the 'ray' extra).")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster to join (e.g. ray://head:10001 or auto); default: start a local Ray.")] = None,
    clips: Annotated[Path | None, typer.Option("--clips", help="Also write every described clip as a video file under this folder (a/x.mp4 -> DIR/a/x/0003.mp4); skipped on rerun when present.", rich_help_panel=CURATION)] = None,
    clip_codec: Annotated[str, typer.Option(help="copy: no re-encode, cut points snap to the nearest keyframe (the record says where); h264: frame-accurate re-encode.", rich_help_panel=CURATION)] = "copy",
    crf: Annotated[int, typer.Option(help="libx264 quality for --clip-codec h264 (lower = better, larger).", min=0, max=51, rich_help_panel=CURATION)] = 23,
    no_audio: Annotated[bool, typer.Option("--no-audio", help="Leave the audio out of clip files.", rich_help_panel=CURATION)] = False,
    min_size: Annotated[str | None, typer.Option(help="Skip videos smaller than WxH (e.g. 640x360), without decoding them.", rich_help_panel=CURATION)] = None,
    max_aspect: Annotated[float | None, typer.Option(help="Skip videos whose long side / short side is above this.", min=1.0, rich_help_panel=CURATION)] = None,
    min_motion: Annotated[float | None, typer.Option(help="Skip near-static clips: motion score (0-1, in every record) below this; e.g. 0.002 (a still picture scores ~0.0005, moving footage 0.003 and up: look at a run's scores first).", min=0.0, max=1.0, rich_help_panel=CURATION)] = None,
    shard_size: Annotated[int, typer.Option(help="Clips per -f webdataset shard.", min=1, rich_help_panel=CURATION)] = 1000,
) -> None:
    from tarsier.engine.options import DescribeOptions, HowFast, HowToCut, WhatToDescribe, WhereToWrite, WhichFiles

    formats = _formats(fmt)
    if grain not in GRAINS:
        raise usage_error(f"unknown --grain {grain!r} (choose brief or fine)")
    if scenes not in SCENE_MODES:
        raise usage_error(f"unknown --scenes {scenes!r} (choose adaptive, content, threshold or none)")
    if output_dir is None and not stdout:
        output_dir = Path("tarsier-out")
    if output_dir is None and set(formats) - {"jsonl"}:
        raise usage_error(f"-f {','.join(sorted(set(formats) - {'jsonl'}))} needs --output-dir")
    curate = _curate_options(clips, clip_codec, crf, no_audio, min_size, max_aspect, min_motion)
    if "webdataset" in formats and clips is None:
        raise usage_error("-f webdataset needs --clips DIR (its shards hold the clip files)")
    if engine_name == "ray" and (curate.clips_dir is not None or curate.filtering or set(formats) & set(MANIFEST_WRITERS)):
        raise usage_error(f"--clips, the curation filters and -f {'/'.join(MANIFEST_WRITERS)} run with --engine local")
    if paths == ["-"] and sys.stdin.isatty():
        raise usage_error("'-' reads video paths from stdin, but stdin is a terminal")
    if report and output_dir is None:
        raise usage_error("--report needs --output-dir")
    _check_engine(engine_name, ray_address)

    options = DescribeOptions(
        what=WhatToDescribe(model=model, grain=grain, prompt=prompt, frames=frames, max_new_tokens=max_new_tokens),
        cut=HowToCut(scenes=scenes, threshold=threshold, min_scene_len=min_scene_len, min_clip=min_clip,
                     max_clip=max_clip or None),
        output=WhereToWrite(output_dir=output_dir, formats=tuple(formats), stdout=sys.stdout if stdout else None,
                            overwrite=overwrite, thumbnails=report, curate=curate, shard_size=shard_size),
        speed=HowFast(batch_size=batch_size, device=device, workers=workers, threads=threads),
        inputs=WhichFiles(extensions=tuple(e.lower().lstrip(".") for e in split_list(ext)) or None,
                          recursive=recursive, stdin=sys.stdin),
    )
    summary = _run(paths, options, engine_name, ray_address, quiet)
    if report:
        from tarsier.reports.describe_page import write_describe_report

        page = write_describe_report(output_dir)
        err_console.print(f"report: {page}", markup=False, soft_wrap=True)
    _print_summary(summary, quiet)
    if summary.videos == 0 and not summary.errors:
        err_console.print("no videos found", markup=False)
        raise typer.Exit(EXIT_USAGE)
    raise typer.Exit(summary.exit_code)


def _formats(values: list[str] | None) -> list[str]:
    formats = split_list(values) or list(DEFAULT_FORMATS)
    if "all" in formats:
        formats = list(ALL_FORMATS)
    bad = sorted(set(formats) - set(WRITERS))
    if bad:
        raise usage_error(f"unknown --format {', '.join(bad)} (choose {', '.join(WRITERS)} or all)")
    return formats


def _check_engine(engine_name: str, ray_address: str | None) -> None:
    if engine_name not in ENGINES:
        raise usage_error(f"unknown --engine {engine_name!r} (choose local or ray)")
    if ray_address and engine_name != "ray":
        raise usage_error("--ray-address needs --engine ray")
    if engine_name == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            from rich.markup import escape

            raise usage_error(escape("--engine ray needs Ray: pip install 'tarsier-cli[ray]'"))


def _run(paths: list[str], options, engine_name: str, ray_address: str | None, quiet: bool):
    """The engine's call under the progress display; its errors as the CLI's exit codes."""
    from tarsier.engine.writers import OutputError

    if engine_name == "ray":
        from tarsier.engine.ray_engine import RayOptions, describe_ray

        cluster = RayOptions(address=ray_address, quiet=quiet)

        def run(progress):
            return describe_ray(paths, options, cluster, progress=progress)
    else:
        from tarsier.engine.describe import describe

        def run(progress):
            return describe(paths, options, progress=progress)
    hush = contextlib.nullcontext()
    output_dir = options.output.output_dir
    if engine_name == "ray" and quiet and output_dir is not None:   # Ray's C++ core writes straight to fd 2
        from tarsier.engine.ray_local import native_stderr_to

        hush = native_stderr_to(output_dir / "ray-stderr.log")
    with hush, video_progress(show_progress(quiet), quiet) as callback:
        try:
            return run(callback)
        except ValueError as exc:   # a usage error: ModelNotFound and engine.lock.OutputBusy included
            raise usage_error(str(exc)) from None
        except OutputError as exc:   # a full disk: what is finished stays, the rerun goes on from there
            err_console.print(f"error: {exc}", markup=False, soft_wrap=True)
            raise typer.Exit(EXIT_SOME_FAILED) from None
        except BrokenPipeError:   # `| head -1`: the reader has what it wanted; finished work is kept
            _quiet_stdout()
            raise typer.Exit(0) from None


def _print_summary(summary, quiet: bool) -> None:
    for name, (_listed, left_out) in summary.manifests.items():
        if left_out and not quiet:
            err_console.print(f"-f {name}: {left_out} clips of videos with several clips left out (no file of "
                              "their own: add --clips DIR)", markup=False, soft_wrap=True)
    if not quiet:
        where = f" -> {summary.jsonl}" if summary.jsonl else ""
        err_console.print(
            f"{summary.videos_ok} videos described ({summary.clips_done} clips), "
            f"{summary.videos_skipped} already done, {len(summary.errors)} failed "
            f"in {summary.seconds:.1f}s{where}", markup=False, soft_wrap=True,
        )


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush does not hit the closed pipe again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _curate_options(clips, clip_codec, crf, no_audio, min_size, max_aspect, min_motion):
    from tarsier.engine.curate import CurateOptions, parse_size

    if clip_codec not in ("copy", "h264"):
        raise usage_error(f"unknown --clip-codec {clip_codec!r} (choose copy or h264)")
    try:
        size = parse_size(min_size) if min_size else None
    except ValueError as exc:
        raise usage_error(f"--min-size: {exc}") from None
    return CurateOptions(clips_dir=str(clips) if clips is not None else None, clip_codec=clip_codec, crf=crf,
                         audio=not no_audio, min_size=size, max_aspect=max_aspect, min_motion=min_motion)


def register(app: typer.Typer) -> None:
    app.command("describe", help=HELP, no_args_is_help=True)(describe_command)
