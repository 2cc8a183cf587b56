"""The result folders the pages read, as the describe, training and evaluation commands leave them:
their file names, which kinds of result a folder holds, and tolerant readers (a torn or missing
file is shown as empty, never fatal: a page may be written while a run is still going)."""
from __future__ import annotations

import json
from pathlib import Path

REPORT_NAME = "report.html"
EVAL_PAGE = "eval.html"          # the eval page's name when a describe run shares the folder
DESCRIPTIONS = "descriptions.jsonl"
METRICS = "metrics.jsonl"
RUN_ARGS = "run.json"
EVAL_REPORT = "report.json"
EVAL_SAMPLES = "samples.jsonl"

KINDS = ("describe", "train", "eval")


def read_json(path: Path):
    """The parsed file, or None when it is missing or not JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def fill_stages(rows: list[dict]) -> list[dict]:
    """Copies of metrics rows with "stage" set: a row without one (an eval row, say) belongs to the
    stage logged before it ("train" when none was)."""
    out, stage = [], None
    for r in rows:
        if r.get("stage") is not None:
            stage = str(r["stage"])
        out.append({**r, "stage": stage or "train"})
    return out


def judge_name(report: dict) -> str:
    judge = report.get("judge")
    if isinstance(judge, dict):
        return str(judge.get("name") or "unknown judge")
    return str(judge) if judge else "unknown judge"


def is_eval_dir(folder: Path) -> bool:
    """The folder holds an evaluation's report.json (AutoDQ or a benchmark task)."""
    path = Path(folder) / EVAL_REPORT
    rep = read_json(path) if path.is_file() else None
    return isinstance(rep, dict) and ("categories" in rep or "overall" in rep or rep.get("metric") == "AutoDQ")


def detect_kinds(folder: Path) -> list[str]:
    """Every kind of result the folder holds: describe (descriptions.jsonl), train (metrics.jsonl or
    run.json), eval (an AutoDQ report.json). `tarsier eval bench` puts describe + eval in one folder."""
    folder = Path(folder)
    kinds = []
    if (folder / DESCRIPTIONS).is_file():
        kinds.append("describe")
    if (folder / METRICS).is_file() or (folder / RUN_ARGS).is_file():
        kinds.append("train")
    if is_eval_dir(folder):
        kinds.append("eval")
    return kinds


def detect_kind(folder: Path) -> str | None:
    """The main kind of the folder (the first of detect_kinds), or None."""
    kinds = detect_kinds(folder)
    return kinds[0] if kinds else None


def eval_page_name(eval_dir: Path) -> str:
    """report.html; eval.html when a describe run shares the folder (`tarsier eval bench`), whose
    page is report.html."""
    return EVAL_PAGE if (Path(eval_dir) / DESCRIPTIONS).is_file() else REPORT_NAME
