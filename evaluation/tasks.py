"""Scoring a prediction file on a benchmark of any task (mcq, qa, caption; dream is AutoDQ in
evaluation.score_descriptions), and the reports: report.json, report.md, samples.jsonl (one per question:
question, options, reference, answer, verdict) in the layout AutoDQ reports use, so `tarsier
report` and `eval compare` read them too.

Predictions are joined to the benchmark rows by idx (`{"idx", "answer" | "prediction" | "response"
| "text": {"prediction"} ...}`: the files `tarsier eval bench` writes and upstream-style files), else,
for `tarsier describe` records, by the video's file stem. A prediction that starts with the row's
answer prefix (" Answer: (") has it removed. A file that matches no row is an error (MatchError,
with both sides' counts and one key of each); a partial match is scored and its counts reported.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from tarsier.common.files import atomic_write
from tarsier.evaluation.benchdata import BenchRow
from tarsier.evaluation.predictions import Prediction, load_predictions
from tarsier.evaluation.report import existing_judge, pct

REPORT_VERSION = 1
METRIC = {"mcq": "multiple-choice accuracy", "qa": "open-ended QA (LLM judge)", "caption": "captioning (CIDEr-D)"}


class MatchError(ValueError):
    """No prediction matches any reference row."""


@dataclass
class Matched:
    answers: dict[str, str]                  # idx -> answer text (prefix removed)
    errors: dict[str, str] = field(default_factory=dict)   # idx -> why the prediction failed
    counts: dict = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)


def no_match_message(predictions, n_predictions: int, n_references: int, pred_key: str | None,
                     ref_key: str | None) -> str:
    return (f"none of the {n_predictions} prediction(s) in {predictions} matches any of the {n_references} "
            f"reference row(s): matched 0, unmatched predictions {n_predictions}, references without a "
            f"prediction {n_references}; a prediction key: {pred_key!r}, a reference key: {ref_key!r} "
            "(predictions are joined by idx, or by the video file's stem)")


def match_predictions(path, rows: list[BenchRow]) -> Matched:
    by_video, by_idx = load_predictions(path)
    used: set[int] = set()
    found: dict[str, Prediction] = {}
    for r in rows:
        pred = by_idx.get(r.idx)
        if pred is None and r.video_key and r.video_key in by_video:
            pred = by_video[r.video_key]
        if pred is not None:
            found[r.idx] = pred
            used.add(id(pred))
    everything = list(by_idx.values()) + list(by_video.values())
    unmatched = [p.video or p.key for p in everything if id(p) not in used]
    if everything and not found:
        ref = rows[0]
        raise MatchError(no_match_message(path, len(everything), len(rows), unmatched[0] if unmatched else None,
                                          f"idx={ref.idx}" + (f" / video={ref.video}" if ref.video else "")))
    prefixes = {r.idx: r.prefix.strip() for r in rows}
    answers, errors = {}, {}
    for idx, pred in found.items():
        if pred.description is None:
            errors[idx] = pred.error or "failed"
            continue
        text = pred.description
        prefix = prefixes.get(idx, "")
        if prefix and text.lstrip().startswith(prefix):
            text = text.lstrip()[len(prefix):]
        answers[idx] = text
    counts = {"predictions": len(everything), "matched": len(found), "no_prediction": len(rows) - len(found),
              "prediction_errors": len(errors), "unmatched_predictions": len(unmatched)}
    return Matched(answers=answers, errors=errors, counts=counts, unmatched=unmatched)


# ---------------------------------------------------------------------------------------------
def score(task: str, rows: list[BenchRow], answers: dict[str, str], *, judge=None, progress=None):
    """(results, aggregate, judge info) for one task."""
    if task == "mcq":
        from tarsier.evaluation import mcq

        results = mcq.score_rows(rows, answers)
        name = judge if isinstance(judge, str) else "mcq:letter"
        return results, mcq.aggregate(results), {"name": name, "approximate": False,
                                                  "note": "the option letter read from each answer" if
                                                  name == "mcq:letter" else
                                                  "the option with the highest log-probability (no parsing)"}, \
            mcq.POLICY
    if task == "qa":
        from tarsier.evaluation import qa
        from tarsier.evaluation.report import judge_info

        results = qa.judge_rows(rows, answers, judge, progress=progress)
        info = judge_info(judge)
        stats = getattr(judge, "stats", None)
        if isinstance(stats, dict):
            info["calls"] = dict(stats)
        return results, qa.aggregate_qa(results), info, qa.QA_POLICY
    if task == "caption":
        from tarsier.evaluation import qa

        results, agg = qa.score_captions(rows, answers)
        return results, agg, {"name": "cider-d", "approximate": False,
                              "note": "CIDEr-D and BLEU-4 against all references, PTB-style tokens"}, \
            qa.CAPTION_POLICY
    raise ValueError(f"unknown task {task!r}")


def build_report(task: str, results, agg: dict, judge: dict, policy: dict, *, counts: dict | None = None,
                 meta: dict | None = None) -> dict:
    report = {"metric": METRIC[task], "task": task, "version": REPORT_VERSION, "judge": judge,
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **agg,
              "counts": {"references": len(results), **(counts or {})}, "policy": policy}
    if meta:
        report["inputs"] = meta
    return report


def _num(v, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


TABLES = {
    "mcq": (["sub-task", "accuracy", "n", "correct", "wrong", "invalid", "missing"],
            lambda c: [pct(c["accuracy"]), c["n"], c["correct"], c["wrong"], c["invalid"], c["missing"]]),
    "qa": (["sub-task", "accuracy", "score (0-5)", "n", "judged", "failed", "missing"],
           lambda c: [pct(c["accuracy"]), _num(c["score"], 2), c["n"], c["scored"], c["failed"], c["missing"]]),
    "caption": (["sub-task", "CIDEr", "BLEU-4", "n", "scored", "missing"],
                lambda c: [_num(c["cider"]), pct(c["bleu4"]), c["n"], c["scored"], c["missing"]]),
}


def headline(report: dict) -> str:
    o, task = report["overall"], report["task"]
    if task == "mcq":
        return (f"accuracy {pct(o['accuracy_subtasks'])} (mean of {o['categories']} sub-task accuracies), "
                f"{pct(o['accuracy_questions'])} (mean over {o['answered']} answered questions); "
                f"{o['invalid']} invalid, {o['missing']} missing")
    if task == "qa":
        return (f"accuracy {pct(o['accuracy'])}, score {_num(o['score'], 2)} / 5 over {o['scored']} judged "
                f"questions (mean of sub-task accuracies {pct(o['accuracy_subtasks'])}); {o['failed']} failed, "
                f"{o['missing']} missing")
    return (f"CIDEr {_num(o['cider'])} ({_num(o['cider'] * 100 if o['cider'] is not None else None, 1)} as papers "
            f"print it), BLEU-4 {pct(o['bleu4'])} over {o['scored']} videos; {o['missing']} missing")


def markdown(report: dict) -> str:
    task = report["task"]
    judge = report["judge"]
    cols, cells = TABLES[task]
    lines = [f"# {report['metric']} — judge `{judge['name']}`", ""]
    if judge.get("note"):
        lines += [f"> {judge['note']}", ""]
    lines += [f"**Overall:** {headline(report)}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, c in report["categories"].items():
        lines.append("| " + " | ".join(str(x) for x in [name, *cells(c)]) + " |")
    lines.append("| **overall** | " + " | ".join(str(x) for x in cells(report["overall"])) + " |")
    lines += ["", "### counts", ""] + [f"- {k}: {v}" for k, v in report["counts"].items()] + [""]
    if report.get("timing"):
        lines += ["### timing", ""] + [f"- {k}: {v}" for k, v in report["timing"].items()] + [""]
    lines += ["### policy", ""] + [f"- {k}: {v}" for k, v in report["policy"].items()] + [""]
    lines.append("Accuracies and BLEU-4 are percentages; CIDEr is on the 0-10 scale.")
    return "\n".join(lines) + "\n"


def rich_table(report: dict):
    from rich.table import Table

    cols, cells = TABLES[report["task"]]
    table = Table(title=f"{report['metric']} — judge {report['judge']['name']}")
    for col in cols:
        table.add_column(col, justify="left" if col == "sub-task" else "right")
    for name, c in report["categories"].items():
        table.add_row(name, *(str(x) for x in cells(c)))
    table.add_row("overall", *(str(x) for x in cells(report["overall"])), style="bold")
    return table


def write_outputs(out_dir: str | Path, report: dict, results) -> dict[str, Path]:
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = report["judge"]["name"]
    paths = {"report.json": out / "report.json", "report.md": out / "report.md", "samples.jsonl": out / "samples.jsonl"}
    atomic_write(paths["samples.jsonl"],
                 "".join(json.dumps(r.to_record(name), ensure_ascii=False) + "\n" for r in results))
    atomic_write(paths["report.json"], json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    atomic_write(paths["report.md"], markdown(report))
    return paths


@dataclass
class TaskResult:
    report: dict
    results: list
    paths: dict

    @property
    def problems(self) -> int:
        """Questions not scored: failed judge output, missing or failed predictions."""
        o = self.report["overall"]
        return int(o.get("failed", 0) or 0) + int(o.get("missing", 0) or 0)


def score_file(predictions, rows: list[BenchRow], task: str, out_dir, *, judge=None, reference=None,
               replace_other_judge: bool = False, progress=None, timing: dict | None = None) -> TaskResult:
    """Join, score, write report.json / report.md / samples.jsonl into out_dir. `judge`: a judge
    object (qa), or for mcq the scoring name ("mcq:letter" / "mcq:likelihood")."""
    matched = match_predictions(predictions, rows)
    results, agg, info, policy = score(task, rows, matched.answers, judge=judge, progress=progress)
    previous = existing_judge(out_dir)
    if previous and previous != info["name"] and not replace_other_judge:
        from tarsier.evaluation.report import JudgeMismatchError

        raise JudgeMismatchError(f"{out_dir} holds a report by judge {previous!r}; refusing to mix it with "
                                 f"{info['name']!r} (use another output folder)")
    for res in results:
        if res.idx in matched.errors:
            res.extra["error"] = matched.errors[res.idx]
    meta = {"predictions": str(predictions), "reference": str(reference) if reference else None}
    failure = getattr(judge, "failure_message", None)
    if failure:
        meta["judge_failure"] = failure
    report = build_report(task, results, agg, info, policy, counts=matched.counts, meta=meta)
    if timing:
        report["timing"] = timing
    if matched.unmatched:
        report["unmatched_predictions"] = matched.unmatched[:50]
    missing = [r.idx for r in results if r.status == "missing"]
    if missing:
        report["missing_predictions"] = missing[:50]
    return TaskResult(report=report, results=results, paths=write_outputs(out_dir, report, results))
