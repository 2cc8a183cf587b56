"""Every page of the reports, by the kind of result a folder holds:

    write_describe_report(out_dir)    OUT_DIR/report.html from OUT_DIR/descriptions.jsonl (describe_page)
    write_training_report(run_dir)   RUN_DIR/report.html (+ loss.png, lr.png, rewards.png) (train_page)
    evaluation_report_html(eval_dir)  EVAL_DIR/report.html (+ categories.png) (eval_page, task_page)
    write_reports(folder)             every kind the folder holds (results.detect_kinds); when a describe
                                      run and an evaluation share a folder (`tarsier eval bench`), the
                                      eval page is EVAL_DIR/eval.html and the two pages link each other

Every page is one self-contained file: inline CSS and JS (static/), only relative links, images as
files beside the page (thumbnails under thumbs/, charts as PNG), never inline base64.

Self-test hook (used by tests/test_report.py with headless Chromium): opening a page with
`#selftest=QUERY&mode=MODE` (and `&category=..&status=..` on the eval page) makes the page's own JS
run its filter and write the result into attributes of <html>: data-selftest="done",
data-visible-videos / -clips / -errors (describe), data-visible-samples (eval), and
data-js-errors (number of script or resource errors seen since the page started).
`#selftest&suite=[{"selftest": "cat"}, {"mode": "errors"}, ...]` (URL-encoded JSON) runs several
filters in one page load and writes their counts as JSON into data-selftest-results (then shows
everything again, unless `&keep=1` leaves the last filter on). Half a second
after the load, data-images-loaded / data-images-pending count the images that came into view;
data-load-ms is the time from navigation to the load event.
"""
from __future__ import annotations

from pathlib import Path

from tarsier.reports.describe_page import write_describe_report
from tarsier.reports.eval_page import evaluation_report_html
from tarsier.reports.results import DESCRIPTIONS, EVAL_REPORT, KINDS, METRICS, detect_kind, detect_kinds
from tarsier.reports.train_page import write_training_report

__all__ = ["KINDS", "detect_kind", "detect_kinds", "write_report", "write_reports"]


def write_report(folder: Path, kind: str | None = None, output: Path | None = None) -> Path:
    """The page of one kind of result (default: the folder's main kind)."""
    folder = Path(folder)
    kind = kind or detect_kind(folder)
    if kind == "describe":
        return write_describe_report(folder, output)
    if kind == "train":
        return write_training_report(folder, output)
    if kind == "eval":
        return evaluation_report_html(folder, output)
    raise ValueError(f"{folder} holds no {DESCRIPTIONS}, {METRICS} or AutoDQ {EVAL_REPORT}")


def write_reports(folder: Path) -> list[Path]:
    """The pages of every kind of result the folder holds (report.html, plus eval.html beside a
    describe run), cross-linked."""
    kinds = detect_kinds(folder)
    written = {k: write_report(folder, k) for k in sorted(kinds, key=lambda k: k != "eval")}  # eval first: linked
    return [written[k] for k in kinds]
