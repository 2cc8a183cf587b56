"""`tarsier eval`: AutoDQ scores of descriptions (DREAM-1K format references), with a named judge."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tarsier_cli.common import EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, err_console, usage_error

eval_app = typer.Typer(
    help="Evaluate descriptions with AutoDQ (event recall / precision / F1) against DREAM-1K-format references.",
    no_args_is_help=True,
)

JUDGE_HELP = ("openai:MODEL (any OpenAI-compatible endpoint: --judge-url or OPENAI_BASE_URL, key from "
              "OPENAI_API_KEY), hf:PATH_OR_ID or hf:smollm2 (local model), embed[@THRESHOLD] (offline "
              "sentence-embedding approximation), exact (synthetic world).")


def _make_judge(judge: str, *, judge_url, concurrency, timeout, max_retries, cache, no_cache, batch_size, device):
    from evaluation.judges import JudgeSpecError, make_judge

    opts = {"url": judge_url, "concurrency": concurrency, "timeout": timeout, "max_retries": max_retries,
            "cache_path": str(cache) if cache else None, "use_cache": not no_cache, "batch_size": batch_size,
            "device": device}
    try:
        return make_judge(judge, **opts)
    except JudgeSpecError as e:
        raise usage_error(str(e)) from None
    except ImportError as e:
        raise usage_error(f"judge {judge!r} is not available: {e}") from None


def _score(pred: Path, ref: Path, judge, out: Path, *, limit, quiet: bool) -> int:
    """Score `pred` against `ref`, print the table, return the exit code."""
    import sys

    from evaluation.judges import JudgeAuthError, JudgeError
    from evaluation.report import JudgeMismatchError, rich_table
    from evaluation.run import score_file

    progress_cb = None
    bar = None
    if not quiet and sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn("[bold]judging"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       console=err_console)
        task = bar.add_task("judging", total=None)

        def progress_cb(done, total):
            bar.update(task, completed=done, total=total)

    try:
        if bar:
            bar.start()
        result = score_file(pred, ref, judge, out, limit=limit, progress=progress_cb)
    except JudgeAuthError as e:
        err_console.print(f"[red]error:[/red] {e}", soft_wrap=True)
        return EXIT_USAGE
    except (JudgeMismatchError, FileNotFoundError, ValueError) as e:
        err_console.print(f"[red]error:[/red] {e}", soft_wrap=True, markup=True)
        return EXIT_USAGE
    except JudgeError as e:
        err_console.print(f"[red]error:[/red] {e}", soft_wrap=True)
        return EXIT_SOME_FAILED
    finally:
        if bar:
            bar.stop()
        closer = getattr(judge, "close", None)
        if closer:
            closer()
    report = result.report
    if not quiet:
        err_console.print(rich_table(report))
        if report["judge"].get("approximate"):
            err_console.print(f"[yellow]note:[/yellow] {report['judge']['note']}", soft_wrap=True)
    counts = report["counts"]
    failure = report.get("inputs", {}).get("judge_failure")
    if failure:
        err_console.print(f"[red]error:[/red] {failure}", soft_wrap=True)
    if counts["missing"]:
        err_console.print(f"warning: {counts['missing']} reference video(s) have no usable prediction "
                          "(scored recall 0, excluded from precision)", soft_wrap=True)
    if counts["failed"]:
        err_console.print(f"warning: {counts['failed']} sample(s) failed: the judge's output could not be "
                          "parsed after retries (excluded from the means; see samples.jsonl)", soft_wrap=True)
    if not quiet:
        err_console.print(f"wrote {out / 'report.json'}, {out / 'report.md'}, {out / 'samples.jsonl'}")
    return EXIT_SOME_FAILED if counts["failed"] else EXIT_OK


JudgeOpt = Annotated[str, typer.Option("--judge", "-j", help=JUDGE_HELP)]
UrlOpt = Annotated[str | None, typer.Option("--judge-url", help="Base URL of the OpenAI-compatible endpoint (default: OPENAI_BASE_URL).")]
ConcOpt = Annotated[int, typer.Option("--concurrency", help="Parallel requests to an openai judge.", min=1)]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds per judge request.", min=0.1)]
RetryOpt = Annotated[int, typer.Option("--max-retries", help="Retries per judge request (429/5xx/timeouts).", min=0)]
CacheOpt = Annotated[Path | None, typer.Option("--cache", help="SQLite cache of judge calls [default: ~/.cache/tarsier/judge_cache.sqlite].")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the judge cache.")]
JBatchOpt = Annotated[int, typer.Option("--judge-batch-size", help="Batch size of an hf judge.", min=1)]
JDeviceOpt = Annotated[str, typer.Option("--judge-device", help="Device of an hf judge: auto, cpu, cuda...")]
LimitOpt = Annotated[int | None, typer.Option("--limit", help="Score only the first N reference rows.", min=1)]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No table, progress or notes on stderr.")]


@eval_app.command("autodq")
def autodq_command(
    predictions: Annotated[Path, typer.Argument(help="Predictions: `tarsier describe` JSONL, or records with idx + prediction/response.")],
    ref: Annotated[Path, typer.Option("--ref", "-r", help="DREAM-1K reference file (flat or messages format, JSONL or JSON).")],
    judge: JudgeOpt,
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", help="Where report.json, report.md and samples.jsonl go.")] = Path("eval-out"),
    judge_url: UrlOpt = None,
    concurrency: ConcOpt = 8,
    timeout: TimeoutOpt = 60.0,
    max_retries: RetryOpt = 5,
    cache: CacheOpt = None,
    no_cache: NoCacheOpt = False,
    judge_batch_size: JBatchOpt = 8,
    judge_device: JDeviceOpt = "auto",
    limit: LimitOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Score a prediction file with AutoDQ. Exit code: 0 ok, 1 some samples failed, 2 usage error.

    Every report names its judge; reports by different judges are never mixed."""
    for path, what in ((predictions, "prediction file"), (ref, "reference file")):
        if not path.is_file():
            raise usage_error(f"{what} not found: {path}")
    j = _make_judge(judge, judge_url=judge_url, concurrency=concurrency, timeout=timeout, max_retries=max_retries,
                    cache=cache, no_cache=no_cache, batch_size=judge_batch_size, device=judge_device)
    raise typer.Exit(_score(predictions, ref, j, output_dir, limit=limit, quiet=quiet))


def describe_benchmark(videos: list[str], *, model: str, output_dir: Path, device: str, frames: int | None,
                       batch_size: int, overwrite: bool) -> tuple[Path, int]:
    """Glue to engine.describe: one clip per benchmark video (scenes="none"). Returns the JSONL path
    and the number of videos that failed."""
    from engine import describe

    kwargs = {"model": model, "grain": "fine", "output_dir": output_dir, "formats": ("jsonl",),
              "overwrite": overwrite, "scenes": "none", "batch_size": batch_size, "device": device}
    if frames:
        kwargs["frames"] = frames
    summary = describe(videos, **kwargs)
    failed = getattr(summary, "videos_failed", None)
    if failed is None:
        failed = len(getattr(summary, "errors", []) or [])
    jsonl = getattr(summary, "jsonl", None) or Path(output_dir) / "descriptions.jsonl"
    return Path(jsonl), int(failed)


@eval_app.command("bench")
def bench_command(
    model: Annotated[str, typer.Option("--model", "-m", help="Preset name or checkpoint folder to describe with.")],
    ref: Annotated[Path, typer.Option("--ref", "-r", help="Benchmark reference file (DREAM-1K format).")],
    videos: Annotated[Path, typer.Option("--videos", help="Folder holding the benchmark's videos.")],
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", help="Descriptions and reports go here.")] = Path("bench-out"),
    judge: Annotated[str, typer.Option("--judge", "-j", help=JUDGE_HELP)] = "exact",
    judge_url: UrlOpt = None,
    concurrency: ConcOpt = 8,
    timeout: TimeoutOpt = 60.0,
    max_retries: RetryOpt = 5,
    cache: CacheOpt = None,
    no_cache: NoCacheOpt = False,
    judge_batch_size: JBatchOpt = 8,
    judge_device: JDeviceOpt = "auto",
    frames: Annotated[int | None, typer.Option(help="Frames per video (default: the model's).", min=1)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Videos per model batch.", min=1)] = 4,
    device: Annotated[str, typer.Option(help="Device of the described model: auto, cpu, cuda...")] = "auto",
    overwrite: Annotated[bool, typer.Option(help="Describe again videos already in the output.")] = False,
    limit: LimitOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Describe a benchmark's videos with MODEL (one clip per video), then score them with AutoDQ."""
    if not ref.is_file():
        raise usage_error(f"reference file not found: {ref}")
    if not videos.is_dir():
        raise usage_error(f"videos folder not found: {videos}")
    from evaluation.dream1k import load_references

    try:
        refs = load_references(ref)
    except (ValueError, OSError) as e:
        raise usage_error(str(e)) from None
    if limit:
        refs = refs[:limit]
    files = [videos / r.video_file for r in refs if r.video_file]
    if files and len(files) == len(refs) and all(f.is_file() for f in files):
        inputs = [str(f) for f in files]
    else:
        inputs = [str(videos)]
    j = _make_judge(judge, judge_url=judge_url, concurrency=concurrency, timeout=timeout, max_retries=max_retries,
                    cache=cache, no_cache=no_cache, batch_size=judge_batch_size, device=judge_device)
    try:
        jsonl, failed_videos = describe_benchmark(inputs, model=model, output_dir=output_dir, device=device,
                                                  frames=frames, batch_size=batch_size, overwrite=overwrite)
    except (FileNotFoundError, ValueError) as e:
        raise usage_error(f"describe failed: {e}") from None
    code = _score(jsonl, ref, j, output_dir, limit=limit, quiet=quiet)
    if code == EXIT_OK and failed_videos:
        err_console.print(f"warning: {failed_videos} video(s) failed to describe (scored as missing)")
        code = EXIT_SOME_FAILED
    raise typer.Exit(code)


@eval_app.command("compare")
def compare_command(
    a: Annotated[Path, typer.Argument(help="report.json (or its folder) A")],
    b: Annotated[Path, typer.Argument(help="report.json (or its folder) B")],
) -> None:
    """Difference B - A of two reports; refuses reports made by different judges."""
    from evaluation.report import JudgeMismatchError, compare_reports, load_report

    try:
        diff = compare_reports(load_report(a), load_report(b))
    except (OSError, ValueError, KeyError) as e:
        if isinstance(e, JudgeMismatchError):
            raise usage_error(str(e)) from None
        raise usage_error(f"cannot read reports: {e}") from None
    from rich.table import Table

    table = Table(title=f"AutoDQ B - A (judge {diff['judge']})")
    for col in ("", "ΔF1", "ΔP", "ΔR"):
        table.add_column(col, justify="right" if col else "left")

    def pts(v):
        return "-" if v is None else f"{100 * v:+.1f}"

    for name, d in list(diff["categories"].items()) + [("overall", diff["overall"])]:
        table.add_row(name, pts(d["f1"]), pts(d["precision"]), pts(d["recall"]))
    err_console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")
