"""`tarsier eval`: AutoDQ scores of descriptions (DREAM-1K format references), multiple-choice and
open-ended video QA and captioning benchmarks (messages format), each report naming its judge."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tarsier.cli.common import EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, err_console, usage_error
from tarsier.cli.helptext import Group

eval_app = typer.Typer(
    cls=Group,
    help="Evaluate: AutoDQ on DREAM-1K, multiple-choice QA (accuracy), open-ended QA (LLM judge) and "
         "captioning (CIDEr-D, BLEU-4); describe/answer with a model first (`bench`) or score a file (`score`).",
    no_args_is_help=True,
)

JUDGE_HELP = ("openai:MODEL (any OpenAI-compatible endpoint: --judge-url or OPENAI_BASE_URL, key from "
              "OPENAI_API_KEY), hf:PATH_OR_ID or hf:smollm2 (local model), embed[@THRESHOLD] (offline "
              "sentence-embedding approximation), exact (synthetic world).")


def _make_judge(judge: str, *, judge_url, concurrency, timeout, max_retries, cache, no_cache, batch_size, device):
    from tarsier.evaluation.judges import JudgeSpecError, make_judge

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
    from tarsier.evaluation.judges import JudgeAuthError, JudgeError
    from tarsier.evaluation.report import JudgeMismatchError, rich_table
    from tarsier.evaluation.score_descriptions import score_file
    from tarsier.evaluation.tasks import MatchError

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
    except MatchError as e:
        err_console.print(f"[red]error:[/red] {escape(str(e))}", soft_wrap=True)
        return EXIT_SOME_FAILED
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
    _match_counts(counts, report.get("unmatched_predictions"))
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
        err_console.print(f"wrote {out / 'report.json'}, {out / 'report.md'}, {out / 'samples.jsonl'}", soft_wrap=True)
    return EXIT_SOME_FAILED if counts["failed"] else EXIT_OK


def _match_counts(counts: dict, unmatched: list | None) -> None:
    """One line when the predictions and the reference only partly match."""
    if counts.get("unmatched_predictions") or counts.get("no_prediction"):
        example = f" (e.g. {', '.join(repr(u) for u in unmatched[:5])})" if unmatched else ""
        err_console.print(
            f"warning: predictions matched {counts.get('matched')} of {counts.get('references')} reference rows; "
            f"{counts.get('no_prediction')} reference row(s) have no prediction, {counts.get('unmatched_predictions')} "
            f"prediction(s) match no reference row{example}", soft_wrap=True, markup=False)


JudgeOpt = Annotated[str, typer.Option("--judge", "-j", help=JUDGE_HELP)]
UrlOpt = Annotated[str | None, typer.Option("--judge-url", help="Base URL of the OpenAI-compatible endpoint (default: OPENAI_BASE_URL).")]
ConcOpt = Annotated[int, typer.Option("--concurrency", help="Parallel requests to an openai judge.", min=1)]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds per judge request.", min=0.1)]
RetryOpt = Annotated[int, typer.Option("--max-retries", help="Retries per judge request (429/5xx/timeouts).", min=0)]
CacheOpt = Annotated[Path | None, typer.Option("--cache", help="SQLite cache of judge calls [default: judge_cache.sqlite in "
                                                            "$TARSIER_HOME, else ~/.cache/tarsier].")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the judge cache.")]
JBatchOpt = Annotated[int, typer.Option("--judge-batch-size", help="Batch size of an hf judge.", min=1)]
JDeviceOpt = Annotated[str, typer.Option("--judge-device", help="Device of an hf judge: auto, cpu, cuda, cuda:N or mps.")]
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
                       batch_size: int, overwrite: bool, grain: str = "fine",
                       max_new_tokens: int | None = None) -> tuple[Path, int]:
    """Glue to engine.describe: one clip per benchmark video (scenes="none"). Returns the JSONL path
    and the number of videos that failed."""
    from tarsier.engine.describe import describe

    kwargs = {"model": model, "grain": grain, "output_dir": output_dir, "formats": ("jsonl",),
              "overwrite": overwrite, "scenes": "none", "batch_size": batch_size, "device": device}
    if frames:
        kwargs["frames"] = frames
    if max_new_tokens:
        kwargs["max_new_tokens"] = max_new_tokens
    summary = describe(videos, **kwargs)
    failed = getattr(summary, "videos_failed", None)
    if failed is None:
        failed = len(getattr(summary, "errors", []) or [])
    jsonl = getattr(summary, "jsonl", None) or Path(output_dir) / "descriptions.jsonl"
    return Path(jsonl), int(failed)


TaskOpt = Annotated[str | None, typer.Option(
    "--task", "-t", help="mcq | qa | caption | dream (default: from the rows' `task`; DREAM-1K files, and rows "
                         "whose extra_info lists their events, as the synthetic world's benchmark.jsonl, are dream).")]


def _task_of_file(ref: Path, task: str | None) -> str:
    """The task of a benchmark file: --task, else `dream` for DREAM-1K files (flat rows, DREAM/ datasets, or
    rows whose extra_info lists the events: what AutoDQ scores against, as in the synthetic world's
    benchmark.jsonl, which is shaped like DREAM-1K), else the rows' own task (one for the whole file)."""
    from tarsier.common.messages import read_records
    from tarsier.evaluation.benchdata import TASKS, BenchFileError, load_bench

    if task is not None:
        if task not in TASKS:
            raise usage_error(f"unknown task {task!r}: use one of {', '.join(TASKS)}")
        return task
    try:
        first = next(iter(read_records(ref)), {})
    except (OSError, ValueError) as e:
        raise usage_error(str(e)) from None
    if "messages" not in first or str(first.get("dataset") or "").upper().startswith("DREAM"):
        return "dream"
    if isinstance(first.get("extra_info"), dict) and isinstance(first["extra_info"].get("events"), list):
        return "dream"
    try:
        rows = load_bench(ref)
    except BenchFileError as e:
        raise usage_error(str(e)) from None
    kinds = sorted({r.task for r in rows})
    if len(kinds) > 1:
        raise usage_error(f"{ref} mixes tasks ({', '.join(kinds)}): pass --task, or split the file")
    return kinds[0]


def _load_rows(ref: Path, task: str, videos: Path | None, limit: int | None):
    from tarsier.evaluation.benchdata import BenchFileError, load_bench

    try:
        return load_bench(ref, task=task, videos=videos, limit=limit)
    except (BenchFileError, ValueError, OSError) as e:
        raise usage_error(str(e)) from None


def _score_task(pred: Path, rows, task: str, judge, out: Path, *, ref: Path, quiet: bool, timing: dict | None = None
                ) -> int:
    """Score an mcq / qa / caption prediction file, print the table, return the exit code."""
    from tarsier.evaluation.judges import JudgeAuthError, JudgeError
    from tarsier.evaluation.report import JudgeMismatchError
    from tarsier.evaluation.tasks import MatchError, headline, rich_table, score_file

    try:
        result = score_file(pred, rows, task, out, judge=judge, reference=ref, timing=timing)
    except MatchError as e:
        err_console.print(f"[red]error:[/red] {escape(str(e))}", soft_wrap=True)
        return EXIT_SOME_FAILED
    except JudgeAuthError as e:
        err_console.print(f"[red]error:[/red] {e}", soft_wrap=True)
        return EXIT_USAGE
    except (JudgeMismatchError, FileNotFoundError, ValueError) as e:
        err_console.print(f"[red]error:[/red] {escape(str(e))}", soft_wrap=True)
        return EXIT_USAGE
    except JudgeError as e:
        err_console.print(f"[red]error:[/red] {e}", soft_wrap=True)
        return EXIT_SOME_FAILED
    finally:
        closer = getattr(judge, "close", None)
        if closer:
            closer()
    report = result.report
    if not quiet:
        err_console.print(rich_table(report))
        err_console.print(headline(report), soft_wrap=True, markup=False)
    _match_counts(report["counts"], report.get("unmatched_predictions"))
    o = report["overall"]
    failure = report.get("inputs", {}).get("judge_failure")
    if failure:
        err_console.print(f"[red]error:[/red] {failure}", soft_wrap=True)
    if o.get("failed"):
        err_console.print(f"warning: {o['failed']} question(s) failed: the judge's output could not be parsed after "
                          "retries (excluded from the means; see samples.jsonl)", soft_wrap=True)
    if o.get("missing"):
        err_console.print(f"warning: {o['missing']} reference row(s) have no usable prediction (excluded from the "
                          "scores; listed in report.json under missing_predictions)", soft_wrap=True)
    if not quiet:
        err_console.print(f"wrote {out / 'report.json'}, {out / 'report.md'}, {out / 'samples.jsonl'}", soft_wrap=True)
    return EXIT_SOME_FAILED if result.problems else EXIT_OK


@eval_app.command("bench")
def bench_command(
    model: Annotated[str, typer.Option("--model", "-m", help="Preset name or checkpoint folder to answer with.")],
    ref: Annotated[Path, typer.Option("--ref", "-r", help="Benchmark file: DREAM-1K (flat or messages), or messages-format MCQ / QA / caption rows.")],
    videos: Annotated[Path, typer.Option("--videos", help="Folder holding the benchmark's videos (row video_file, else vid, relative to it).")],
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", help="Predictions and reports go here.")] = Path("bench-out"),
    task: TaskOpt = None,
    grain: Annotated[str, typer.Option("--grain", help="dream: describe at this grain, fine (the benchmark's prompt) "
                                                       "or brief (one sentence; scored against the same events: brief "
                                                       "precision is what it gets right).")] = "fine",
    mcq_scoring: Annotated[str, typer.Option("--mcq-scoring", help="mcq: generate (read the letter of the greedy answer) or likelihood (the option the model scores highest; the project's VideoLLM models).")] = "generate",
    judge: Annotated[str, typer.Option("--judge", "-j", help=JUDGE_HELP + " Used by dream and qa.")] = "exact",
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
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", help="Answer length cap (default: the model's).", min=1)] = None,
    device: Annotated[str, typer.Option(help="Device of the model: auto, cpu, cuda, cuda:N or mps.")] = "auto",
    overwrite: Annotated[bool, typer.Option(show_default=False, help="Answer / describe again rows already in the output.")] = False,
    limit: LimitOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Answer a benchmark with MODEL, then score it. dream: describe each video (one clip, at --grain), AutoDQ.
    mcq / qa / caption: the row's prompt exactly, its answer prefix forced, batched; then accuracy
    (mcq), the judge's verdicts (qa) or CIDEr-D / BLEU-4 (caption). Every bad row is listed as
    file:line: reason before the model loads. Exit code: 0 ok, 1 some rows failed, 2 usage error."""
    if not ref.is_file():
        raise usage_error(f"reference file not found: {ref}")
    if not videos.is_dir():
        raise usage_error(f"videos folder not found: {videos}")
    if mcq_scoring not in ("generate", "likelihood"):
        raise usage_error(f"--mcq-scoring must be generate or likelihood, not {mcq_scoring!r}")
    if grain not in ("fine", "brief"):
        raise usage_error(f"--grain must be fine or brief, not {grain!r}")
    kind = _task_of_file(ref, task)
    if kind != "dream" and grain != "fine":
        raise usage_error(f"--grain is for dream benchmarks (descriptions); {kind} rows bring their own prompts")
    if kind != "dream":
        rows = _load_rows(ref, kind, videos, limit)
        j = None
        if kind == "qa":
            j = _make_judge(judge, judge_url=judge_url, concurrency=concurrency, timeout=timeout,
                            max_retries=max_retries, cache=cache, no_cache=no_cache, batch_size=judge_batch_size,
                            device=judge_device)
            if not hasattr(j, "judge_qa"):
                raise usage_error(f"judge {judge!r} cannot judge open-ended answers: use openai:MODEL, hf:PATH, "
                                  "hf:smollm2 or (synthetic world) exact")
        elif kind == "mcq":
            j = f"mcq:{'likelihood' if mcq_scoring == 'likelihood' else 'letter'}"
        code, timing = _answer(rows, model=model, videos=videos, out=output_dir, device=device, frames=frames,
                               batch_size=batch_size, max_new_tokens=max_new_tokens, mcq_scoring=mcq_scoring,
                               overwrite=overwrite, quiet=quiet)
        if code == EXIT_USAGE:
            raise typer.Exit(code)
        result = _score_task(output_dir / "predictions.jsonl", rows, kind, j, output_dir, ref=ref, quiet=quiet,
                             timing=timing)
        raise typer.Exit(max(code, result) if result != EXIT_USAGE else result)
    from tarsier.common.dream import load_references

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
                                                  frames=frames, batch_size=batch_size, overwrite=overwrite,
                                                  grain=grain, max_new_tokens=max_new_tokens)
    except (FileNotFoundError, ValueError) as e:
        raise usage_error(f"describe failed: {e}") from None
    code = _score(jsonl, ref, j, output_dir, limit=limit, quiet=quiet)
    if code == EXIT_OK and failed_videos:
        err_console.print(f"warning: {failed_videos} video(s) failed to describe (scored as missing)", soft_wrap=True)
        code = EXIT_SOME_FAILED
    raise typer.Exit(code)


def _answer(rows, *, model: str, videos: Path, out: Path, device: str, frames, batch_size: int, max_new_tokens,
            mcq_scoring: str, overwrite: bool, quiet: bool) -> tuple[int, dict]:
    """Load the model and answer every row into OUT/predictions.jsonl; (exit code, timing)."""
    from tarsier.engine.checkpoint import ModelNotFound, load
    from tarsier.evaluation.answering import answer_rows

    try:
        m = load(model, device=device)
    except (ModelNotFound, ValueError, OSError) as e:
        err_console.print(f"[red]error:[/red] {escape(str(e))}", soft_wrap=True)
        return EXIT_USAGE, {}
    bar = None
    progress_cb = None
    if not quiet and sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn("[bold]answering"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       console=err_console)
        bar_task = bar.add_task("answering", total=len(rows))

        def progress_cb(done, total):
            bar.update(bar_task, completed=done, total=total)

        bar.start()
    try:
        run = answer_rows(rows, m, videos, out, batch_size=batch_size, max_new_tokens=max_new_tokens,
                          mcq_scoring=mcq_scoring, frames=frames, overwrite=overwrite, progress=progress_cb)
    finally:
        if bar:
            bar.stop()
    timing = {"answered": run.answered, "reused": run.reused, "failed": run.failed,
              "model_seconds": round(run.seconds, 3), "decode_seconds": round(run.decode_seconds, 3)}
    if run.answered:
        timing["seconds_per_100_questions"] = round(100 * (run.seconds + run.decode_seconds) / run.answered, 2)
    if not quiet:
        per = timing.get("seconds_per_100_questions")
        err_console.print(f"answered {run.answered} row(s) ({run.reused} reused from an earlier run, {run.failed} "
                          f"failed) in {run.seconds:.1f} s model + {run.decode_seconds:.1f} s decode"
                          + (f": {per} s per 100 questions" if per is not None else ""), markup=False, soft_wrap=True)
    return (EXIT_SOME_FAILED if run.failed else EXIT_OK), timing


@eval_app.command("score")
def score_command(
    predictions: Annotated[Path, typer.Argument(help="Predictions: records with idx + answer/prediction/response (upstream-style too), or `tarsier describe` JSONL.")],
    ref: Annotated[Path, typer.Option("--ref", "-r", help="Benchmark file (DREAM-1K, or messages-format MCQ / QA / caption rows).")],
    task: TaskOpt = None,
    judge: Annotated[str | None, typer.Option("--judge", "-j", help=JUDGE_HELP + " Needed by dream and qa.")] = None,
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
    """Score an existing prediction file on a benchmark, without running a model.
    Exit code: 0 ok, 1 some rows failed or had no prediction (or none matched), 2 usage error."""
    for path, what in ((predictions, "prediction file"), (ref, "reference file")):
        if not path.is_file():
            raise usage_error(f"{what} not found: {path}")
    kind = _task_of_file(ref, task)
    if kind in ("dream", "qa") and not judge:
        raise usage_error(f"--task {kind} needs --judge ({JUDGE_HELP})")
    j = None
    if judge and kind in ("dream", "qa"):
        j = _make_judge(judge, judge_url=judge_url, concurrency=concurrency, timeout=timeout, max_retries=max_retries,
                        cache=cache, no_cache=no_cache, batch_size=judge_batch_size, device=judge_device)
    if kind == "dream":
        raise typer.Exit(_score(predictions, ref, j, output_dir, limit=limit, quiet=quiet))
    rows = _load_rows(ref, kind, None, limit)
    raise typer.Exit(_score_task(predictions, rows, kind, j, output_dir, ref=ref, quiet=quiet))


@eval_app.command("compare")
def compare_command(
    a: Annotated[Path, typer.Argument(help="report.json (or its folder) A")],
    b: Annotated[Path, typer.Argument(help="report.json (or its folder) B")],
) -> None:
    """Difference B - A of two reports; refuses reports made by different judges."""
    from tarsier.evaluation.report import JudgeMismatchError, compare_reports, load_report

    try:
        diff = compare_reports(load_report(a), load_report(b))
    except (OSError, ValueError, KeyError) as e:
        if isinstance(e, JudgeMismatchError):
            raise usage_error(str(e)) from None
        raise usage_error(f"cannot read reports: {e}") from None
    from rich.table import Table

    labels = {"f1": "ΔF1", "precision": "ΔP", "recall": "ΔR", "accuracy": "Δaccuracy",
              "accuracy_questions": "Δaccuracy (questions)", "score": "Δscore", "cider": "ΔCIDEr", "bleu4": "ΔBLEU-4"}
    metric = "AutoDQ" if diff["task"] == "dream" else diff["task"]
    table = Table(title=f"{metric} B - A (judge {diff['judge']})")
    for col in ["", *(labels[k] for k in diff["metrics"])]:
        table.add_column(col, justify="right" if col else "left")

    def pts(key, v):
        if v is None:
            return "-"
        return f"{v:+.3f}" if key in ("cider", "score") else f"{100 * v:+.1f}"

    for name, d in list(diff["categories"].items()) + [("overall", diff["overall"])]:
        table.add_row(name, *(pts(k, d[k]) for k in diff["metrics"]))
    err_console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval", short_help="Evaluate: AutoDQ on DREAM-1K, multiple-choice and open-ended QA, "
                                                   "captioning.")
