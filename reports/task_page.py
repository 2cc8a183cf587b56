"""The page of a benchmark task beside AutoDQ (tarsier.evaluation.tasks: multiple choice,
open-ended QA, captioning): the judge, a table per sub-task, and every question with its options,
the answer, the reference and the verdict, filtered by static/eval.js as the AutoDQ page is."""
from __future__ import annotations

from pathlib import Path

from tarsier.common.files import read_jsonl
from tarsier.reports.formats import flatten, fmt_pct, number
from tarsier.reports.render import write_page
from tarsier.reports.results import EVAL_REPORT, EVAL_SAMPLES, eval_page_name, judge_name

TASK_COLUMNS = {   # (title, [(report key, header, format)])
    "mcq": ("Multiple-choice accuracy", [("accuracy", "accuracy", "pct"), ("n", "n", ""), ("correct", "correct", ""),
                                         ("wrong", "wrong", ""), ("invalid", "invalid", ""), ("missing", "missing", "")]),
    "qa": ("Open-ended QA", [("accuracy", "accuracy", "pct"), ("score", "score 0-5", "num"), ("n", "n", ""),
                             ("scored", "judged", ""), ("failed", "failed", ""), ("missing", "missing", "")]),
    "caption": ("Captioning", [("cider", "CIDEr", "num"), ("bleu4", "BLEU-4", "pct"), ("n", "n", ""),
                               ("scored", "scored", ""), ("missing", "missing", "")]),
}
TASK_STATUS_CLASS = {"correct": "ok", "wrong": "failed", "invalid": "failed", "missing": "missing", "ok": "ok",
                     "failed": "failed"}
TABLE_NOTE = {"mcq": "overall accuracy = mean of the sub-task accuracies (the mean over questions is on the card)",
              "qa": "overall: over all questions", "caption": "overall: over all videos"}


def _cell(value, kind: str):
    if kind == "pct":
        return fmt_pct(value)
    if kind == "num":
        return "–" if number(value) is None else f"{value:.3f}"
    return value if value is not None else "–"


def _verdict(s: dict, task: str) -> str:
    if task == "mcq":
        return f" · chose {s.get('choice') or '–'}, reference {_text(s.get('reference'))}"
    if task == "qa":
        return f" · judge: {s.get('verdict') or '–'}, score {_text(s.get('score') if s.get('score') is not None else '–')}"
    if task == "caption":
        return f" · CIDEr {'–' if number(s.get('cider')) is None else format(s['cider'], '.3f')}"
    return ""


def _text(value) -> str:
    return "" if value is None else str(value)


def _sample_view(s: dict, task: str) -> dict:
    status = str(s.get("status") or "ok")
    options = s.get("options") if isinstance(s.get("options"), list) else []
    error = (s.get("extra") or {}).get("error") if isinstance(s.get("extra"), dict) else None
    return {"rec": s, "status": status, "status_class": TASK_STATUS_CLASS.get(status, "ok"),
            "verdict": _verdict(s, task), "error": error,
            "options": [(o.get("letter") == s.get("reference"), o.get("letter"), o.get("text"))
                        for o in options if isinstance(o, dict)],
            "references": [r for r in (s.get("references") if task == "caption" else [s.get("reference")]) or [] if r]}


def task_report_html(eval_dir: Path, report: dict, output: Path | None = None) -> Path:
    """Write the page of a multiple-choice / open-ended QA / captioning report (report["task"])."""
    eval_dir = Path(eval_dir)
    task = report["task"]
    title, columns = TASK_COLUMNS[task]
    samples = list(read_jsonl(eval_dir / EVAL_SAMPLES))
    name = judge_name(report)
    overall = report.get("overall") if isinstance(report.get("overall"), dict) else {}
    cats = report.get("categories") if isinstance(report.get("categories"), dict) else {}
    cards = [("judge", name, False)] + [(header, _cell(overall.get(key), kind), False)
                                        for key, header, kind in columns[:2]]
    if task == "mcq":
        cards.append(("mean over questions", fmt_pct(overall.get("accuracy_questions")), False))
    cards += [("questions", str(overall.get("n", len(samples))), False),
              ("missing", str(overall.get("missing", "–")), bool(overall.get("missing")))]
    judge = report.get("judge") if isinstance(report.get("judge"), dict) else {}
    rows = [(label, [_cell(c.get(k), kind) for k, _, kind in columns])
            for label, c in list(cats.items()) + [("overall", overall)] if isinstance(c, dict)]
    info = []
    for key in ("metric", "task", "version", "counts", "inputs", "timing"):
        if key in report:
            info += flatten(report[key], key)
    policy = report.get("policy") if isinstance(report.get("policy"), dict) else {}
    return write_page(
        Path(output) if output else eval_dir / eval_page_name(eval_dir), "task.html.j2",
        title=f"{title} — {name} — {eval_dir.resolve().name}", heading=f"{title} — {eval_dir.resolve().name}",
        subtitle=f"{EVAL_REPORT} in {eval_dir}" + (f" · created {report['created']}" if report.get("created") else ""),
        link=None, cards=cards, judge=name, note=judge.get("note") or "", table_note=TABLE_NOTE[task],
        headers=[h for _, h, _ in columns], rows=rows, info=info, policy=[(k, str(v)) for k, v in policy.items()],
        categories=list(cats), statuses=sorted({str(s.get("status") or "ok") for s in samples}),
        samples=[_sample_view(s, task) for s in samples])
