"""The AutoDQ page: EVAL_DIR/report.html (eval.html beside a describe run) from the report.json and
samples.jsonl that tarsier.evaluation writes: the judge, overall and per-category scores with a
bar chart, bucket tables, and every sample's reference / predicted events with their judgements
(matched in green, unmatched in grey or red), filtered by static/eval.js. A benchmark task's
report (multiple choice, open-ended QA, captioning) gets its own page (task_page)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tarsier.common.files import read_jsonl
from tarsier.engine.thumbnails import THUMBS_DIR, thumbnail_relpath
from tarsier.reports.charts import EVAL_CHART, write_eval_charts
from tarsier.reports.formats import flatten, fmt_pct
from tarsier.reports.render import write_page
from tarsier.reports.results import (
    DESCRIPTIONS,
    EVAL_REPORT,
    EVAL_SAMPLES,
    REPORT_NAME,
    eval_page_name,
    judge_name,
    read_json,
)
from tarsier.reports.task_page import TASK_COLUMNS, task_report_html

SHOWN_LABEL = {"entailment": "matched", "neutral": "unmatched (neutral)", "contradiction": "unmatched (contradiction)"}


@dataclass
class Events:
    """One side of a sample: its events, each with its judgement label when judged."""
    title: str
    count: str                          # "1/2 matched", "3 events, not judged", "" when none
    items: list[tuple[str | None, str, object]]    # (label class or None, label shown, event)


def _events(judgements, events, title: str) -> Events:
    items = []
    if isinstance(judgements, list) and judgements:
        for j in judgements:
            if not isinstance(j, dict):
                continue
            lab = str(j.get("label") or "unjudged")
            items.append((lab, SHOWN_LABEL.get(lab, lab), j.get("event")))
    elif isinstance(events, list):
        items = [(None, "", e) for e in events]
    n_ok = sum(1 for j in judgements or [] if isinstance(j, dict) and j.get("label") == "entailment")
    count = ("" if not items else f"{n_ok}/{len(items)} matched" if judgements
             else f"{len(items)} event{'' if len(items) == 1 else 's'}, not judged")
    return Events(title, count, items)


def _sample_frames(eval_dir: Path, video) -> list[str]:
    """The frames of the video's first clip, when a describe run with thumbnails shares the folder."""
    if not isinstance(video, str) or not video or not (eval_dir / THUMBS_DIR).is_dir():
        return []
    rels = []
    for i in range(64):
        rel = thumbnail_relpath(video, 0, i)
        if not (eval_dir / rel).is_file():
            break
        rels.append(rel)
    return rels


@dataclass
class SampleView:
    rec: dict
    status: str
    recall: str
    precision: str
    frames: list[str]
    sides: tuple[Events, Events]


def _sample_view(s: dict, eval_dir: Path) -> SampleView:
    ref_title = "Reference events → judged against the prediction (recall)" + (
        " · extracted by the judge" if s.get("ref_events_source") == "extracted" else "")
    return SampleView(
        s, str(s.get("status") or "ok"), fmt_pct(s.get("recall")), fmt_pct(s.get("precision")),
        _sample_frames(eval_dir, s.get("video")),
        (_events(s.get("recall_judgements"), s.get("ref_events"), ref_title),
         _events(s.get("precision_judgements"), s.get("pred_events"),
                 "Predicted events → judged against the reference (precision)")))


SCORES = ("f1", "precision", "recall")
COUNTS = ("n", "scored", "failed", "missing")


def _score_rows(groups: dict, overall: dict | None = None) -> list[tuple[str, bool, list[str], list]]:
    """(name, bold, F1 / P / R in percent, the counts) per group, then overall in bold."""
    items = list(groups.items()) + ([("overall", overall)] if overall else [])
    return [(str(name), name == "overall" and overall is not None, [fmt_pct(c.get(k)) for k in SCORES],
             [c.get(k, "–") for k in COUNTS]) for name, c in items if isinstance(c, dict)]


def evaluation_report_html(eval_dir: Path, output: Path | None = None, charts: bool = True) -> Path:
    """Write EVAL_DIR/report.html (eval.html beside a describe run) from report.json and samples.jsonl."""
    eval_dir = Path(eval_dir)
    report = read_json(eval_dir / EVAL_REPORT)
    if not isinstance(report, dict):
        raise FileNotFoundError(f"no readable {EVAL_REPORT} in {eval_dir}")
    if report.get("task") in TASK_COLUMNS:
        return task_report_html(eval_dir, report, output)
    notes = []
    if charts:
        try:
            write_eval_charts(eval_dir)
        except ImportError as exc:
            notes.append(f"chart not drawn: {exc}")
    samples = list(read_jsonl(eval_dir / EVAL_SAMPLES))
    if not samples and isinstance(report.get("samples"), list):
        samples = [s for s in report["samples"] if isinstance(s, dict)]
    name = judge_name(report)
    judge = report.get("judge") if isinstance(report.get("judge"), dict) else {"name": name}
    overall = report.get("overall") if isinstance(report.get("overall"), dict) else {}
    cats = report.get("categories") if isinstance(report.get("categories"), dict) else {}
    cards = [
        ("judge", name, False), ("F1", fmt_pct(overall.get("f1")), False),
        ("precision", fmt_pct(overall.get("precision")), False), ("recall", fmt_pct(overall.get("recall")), False),
        ("samples", str(overall.get("n", len(samples))), False),
        ("failed (judge)", str(overall.get("failed", "–")), bool(overall.get("failed"))),
        ("missing (no description)", str(overall.get("missing", "–")), bool(overall.get("missing"))),
    ]
    info = []
    for key in ("metric", "version", "counts", "inputs"):
        if key in report:
            info += flatten(report[key], key)
    info += flatten({k: v for k, v in judge.items() if k != "note"}, "judge")
    policy = report.get("policy") if isinstance(report.get("policy"), dict) else {}
    buckets = report.get("buckets") if isinstance(report.get("buckets"), dict) else {}
    warn = (judge.get("note") or "approximate judge") if judge.get("approximate") else None
    link = None
    if (eval_dir / DESCRIPTIONS).is_file():
        link = {"href": REPORT_NAME, "text": "the descriptions scored here"}
    return write_page(
        Path(output) if output else eval_dir / eval_page_name(eval_dir), "eval.html.j2",
        title=f"AutoDQ — {name} — {eval_dir.resolve().name}",
        heading=f"AutoDQ evaluation — {eval_dir.resolve().name}",
        subtitle=f"{EVAL_REPORT} in {eval_dir}" + (f" · created {report['created']}" if report.get("created") else ""),
        link=link, cards=cards, judge=name, approximate=warn.rstrip(".") if warn else None, notes=notes,
        chart=EVAL_CHART if (eval_dir / EVAL_CHART).is_file() else None,
        categories=_score_rows(cats, overall or None),
        show_buckets=bool(buckets),
        buckets=[(str(dim), _score_rows(groups)) for dim, groups in buckets.items() if isinstance(groups, dict)],
        info=info, policy=[(k, str(v)) for k, v in policy.items()],
        category_names=list(cats) + sorted({str(s.get("category")) for s in samples} - set(cats)),
        statuses=sorted({str(s.get("status") or "ok") for s in samples}),
        samples=[_sample_view(s, eval_dir) for s in samples])
