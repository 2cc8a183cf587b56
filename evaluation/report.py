"""AutoDQ reports: report.json, report.md, samples.jsonl and a rich table.

Every report names its judge. Reports (and per-sample outputs) from different judges are never
mixed: `check_same_judge` / `compare_reports` refuse them, and an output folder holding a report
by another judge is not overwritten silently.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from tarsier.common.files import atomic_write, read_jsonl
from tarsier.evaluation.autodq import POLICY, SampleResult, aggregate

REPORT_VERSION = 1


class JudgeMismatchError(ValueError):
    """Scores from different judges cannot be merged or compared."""


def judge_info(judge) -> dict:
    approximate = bool(getattr(judge, "approximate", False))
    info = {"name": judge.name, "approximate": approximate}
    note = getattr(judge, "note", None)
    if approximate and not note:
        note = ("events are matched by sentence-embedding similarity, not judged by an "
                "LLM; not comparable with published AutoDQ figures")
    if note:
        info["note"] = str(note)
    return info


def build_report(samples: list[SampleResult], judge, *, counts: dict | None = None, meta: dict | None = None) -> dict:
    agg = aggregate(samples)
    report = {
        "metric": "AutoDQ",
        "version": REPORT_VERSION,
        "judge": judge_info(judge),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **agg,
        "counts": {
            "references": len(samples),
            "scored": sum(s.status == "ok" for s in samples),
            "failed": sum(s.status == "failed" for s in samples),
            "missing": sum(s.status == "missing" for s in samples),
            **(counts or {}),
        },
        "policy": POLICY,
    }
    stats = getattr(judge, "stats", None)
    if isinstance(stats, dict):
        report["judge"]["calls"] = dict(stats)
    if meta:
        report["inputs"] = meta
    return report


def pct(value) -> str:
    """A fraction as a percentage with one decimal; "-" for None."""
    return "-" if value is None else f"{100 * value:.1f}"


def markdown(report: dict) -> str:
    judge = report["judge"]
    lines = [f"# AutoDQ report — judge `{judge['name']}`", ""]
    if judge.get("approximate"):
        lines += [f"> **Approximate.** {judge.get('note', '')}", ""]
    else:
        lines += ["> Scores depend on the judge; compare only with reports made by the same judge.", ""]
        if judge.get("note"):
            lines += [f"> {judge['note']}", ""]
    o = report["overall"]
    lines += [(f"**Overall** (unweighted mean of {o['categories']} category means): "
              f"F1 {pct(o['f1'])} / P {pct(o['precision'])} / R {pct(o['recall'])}"), ""]
    lines += ["| category | F1 | P | R | n | scored | failed | missing |", "|---|---|---|---|---|---|---|---|"]
    for name, c in report["categories"].items():
        lines.append(f"| {name} | {pct(c['f1'])} | {pct(c['precision'])} | {pct(c['recall'])} | {c['n']} "
                     f"| {c['scored']} | {c['failed']} | {c['missing']} |")
    lines.append(f"| **overall** | **{pct(o['f1'])}** | **{pct(o['precision'])}** | **{pct(o['recall'])}** "
                 f"| {o['n']} | {o['scored']} | {o['failed']} | {o['missing']} |")
    lines.append("")
    for dim, groups in report["buckets"].items():
        lines += [f"### by {dim}", "", "| bucket | F1 | P | R | n | failed |", "|---|---|---|---|---|---|"]
        for label, c in groups.items():
            lines.append(f"| {label} | {pct(c['f1'])} | {pct(c['precision'])} | {pct(c['recall'])} | {c['n']} "
                         f"| {c['failed']} |")
        lines.append("")
    lines += ["### counts", ""] + [f"- {k}: {v}" for k, v in report["counts"].items()] + [""]
    lines += ["### policy", ""] + [f"- {k}: {v}" for k, v in report["policy"].items()] + [""]
    lines.append("Scores are percentages. Scores from different judges are not comparable.")
    return "\n".join(lines) + "\n"


def existing_judge(out_dir: str | Path) -> str | None:
    path = Path(out_dir) / "report.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))["judge"]["name"]
    except (ValueError, KeyError, TypeError):
        return None


def write_outputs(out_dir: str | Path, report: dict, samples: list[SampleResult]) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = report["judge"]["name"]
    paths = {"report.json": out / "report.json", "report.md": out / "report.md",
             "samples.jsonl": out / "samples.jsonl"}
    atomic_write(paths["samples.jsonl"],
                 "".join(json.dumps(s.to_record(name), ensure_ascii=False) + "\n" for s in samples))
    atomic_write(paths["report.json"], json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    atomic_write(paths["report.md"], markdown(report))
    return paths


def rich_table(report: dict):
    from rich.table import Table

    judge = report["judge"]
    title = f"AutoDQ — judge {judge['name']}" + (" (APPROXIMATE)" if judge.get("approximate") else "")
    table = Table(title=title)
    for col in ("category", "F1", "P", "R", "n", "failed", "missing"):
        table.add_column(col, justify="left" if col == "category" else "right")
    for cat, c in report["categories"].items():
        table.add_row(cat, pct(c["f1"]), pct(c["precision"]), pct(c["recall"]), str(c["n"]), str(c["failed"]),
                      str(c["missing"]))
    o = report["overall"]
    table.add_row("overall", pct(o["f1"]), pct(o["precision"]), pct(o["recall"]), str(o["n"]), str(o["failed"]),
                  str(o["missing"]), style="bold")
    return table


def load_report(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    return json.loads(path.read_text(encoding="utf-8"))


def check_same_judge(reports: list[dict]) -> str:
    names = {r["judge"]["name"] for r in reports}
    if len(names) != 1:
        raise JudgeMismatchError(f"reports come from different judges ({', '.join(sorted(names))}); "
                                 "scores from different judges are never mixed")
    return names.pop()


COMPARED = {None: ("f1", "precision", "recall"), "mcq": ("accuracy", "accuracy_questions"),
            "qa": ("accuracy", "score"), "caption": ("cider", "bleu4")}


def compare_reports(a: dict, b: dict) -> dict:
    """Differences (b - a) of overall and per-category scores (AutoDQ: F1/P/R; mcq: accuracy; qa:
    accuracy, score; caption: CIDEr, BLEU-4); refuses reports by different judges or tasks."""
    judge = check_same_judge([a, b])
    if a.get("task") != b.get("task"):
        raise JudgeMismatchError(f"reports of different tasks ({a.get('task') or 'dream'}, {b.get('task') or 'dream'})")
    keys = COMPARED.get(a.get("task"), COMPARED[None])

    def diff(x, y):
        return {k: (None if x.get(k) is None or y.get(k) is None else y[k] - x[k]) for k in keys}

    cats = [c for c in a["categories"] if c in b["categories"]]
    return {"judge": judge, "task": a.get("task") or "dream", "metrics": list(keys),
            "overall": diff(a["overall"], b["overall"]),
            "categories": {c: diff(a["categories"][c], b["categories"][c]) for c in cats}}


def merge_samples(files: list[str | Path]) -> list[dict]:
    """Concatenate samples.jsonl files of one judge (e.g. shards); refuses mixed judges."""
    records, judges = [], set()
    for f in files:
        for rec in read_jsonl(f, strict=True):
            judges.add(rec.get("judge"))
            records.append(rec)
    if len(judges) > 1:
        raise JudgeMismatchError(f"samples come from different judges ({', '.join(sorted(map(str, judges)))})")
    return records
