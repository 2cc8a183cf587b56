"""The training page: RUN_DIR/report.html from the files a training run leaves (metrics.jsonl,
run.json, checkpoints/, final/): its curves (redrawn here), the latest and best numbers, a table
per stage, the evaluation losses, the run's arguments, its checkpoints and the last logged rows."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from tarsier.common.files import read_jsonl
from tarsier.reports.charts import CURVES, REWARDS, write_curves, write_reward_curves
from tarsier.reports.formats import flatten, fmt_duration, fmt_num, number
from tarsier.reports.render import write_page
from tarsier.reports.results import METRICS, REPORT_NAME, RUN_ARGS, fill_stages, read_json

LAST_ROWS_KEYS = ["step", "stage", "loss", "eval_loss", "lr", "samples_per_s", "elapsed_s"]


@dataclass
class Checkpoint:
    name: str                # relative to the run folder: checkpoints/step-0000100, final
    step: int | None
    files: int
    size: str                # "12.3 MB"
    written: str             # UTC
    has_config: bool


def checkpoints(run_dir: Path) -> list[Checkpoint]:
    found = []
    cdir = run_dir / "checkpoints"
    # a folder still being written (name.tmp) is not a checkpoint yet
    cands = sorted(p for p in cdir.iterdir() if p.is_dir() and not p.name.endswith(".tmp")) if cdir.is_dir() else []
    if (run_dir / "final").is_dir():
        cands.append(run_dir / "final")
    for p in cands:
        files = [f for f in p.rglob("*") if f.is_file()]
        step = None
        if p.name.startswith("step-") and p.name[5:].isdigit():
            step = int(p.name[5:])
        mtime = max((f.stat().st_mtime for f in files), default=p.stat().st_mtime)
        found.append(Checkpoint(
            name=p.relative_to(run_dir).as_posix(), step=step, files=len(files),
            size=f"{sum(f.stat().st_size for f in files) / 1e6:.1f} MB",
            written=time.strftime("%Y-%m-%d %H:%M", time.gmtime(mtime)),
            has_config=(p / "config.json").is_file()))
    return found


def training_summary(rows: list[dict]) -> dict:
    rows = fill_stages(rows)
    train = [r for r in rows if number(r.get("loss")) is not None]
    evals = [r for r in rows if number(r.get("eval_loss")) is not None]
    last = train[-1] if train else {}
    best = min(train, key=lambda r: r["loss"]) if train else {}
    sps = [number(r.get("samples_per_s")) for r in train[-20:]]
    sps = [x for x in sps if x is not None]
    elapsed = [number(r.get("elapsed_s")) for r in rows if number(r.get("elapsed_s")) is not None]
    stages: dict[str, list[dict]] = {}
    for r in train:
        stages.setdefault(str(r.get("stage") or "train"), []).append(r)
    stepped = [r for r in rows if isinstance(r.get("step"), int)]
    return {
        "step": stepped[-1]["step"] if stepped else None, "stage": stepped[-1]["stage"] if stepped else None,
        "last": last, "best": best,
        "eval_last": evals[-1] if evals else {}, "eval_best": min(evals, key=lambda r: r["eval_loss"]) if evals else {},
        "samples_per_s": sum(sps) / len(sps) if sps else None,
        "elapsed_s": max(elapsed) if elapsed else None, "stages": stages,
    }


def _stage_rows(stages: dict[str, list[dict]]) -> list[list[str]]:
    """One row per stage: name, step range, number of logs, first / last / lowest loss, samples/s."""
    out = []
    for name, rs in stages.items():
        sp = [x for x in (number(r.get("samples_per_s")) for r in rs) if x is not None]
        out.append([name, f"{_text(rs[0].get('step'))}–{_text(rs[-1].get('step'))}", str(len(rs)),
                    fmt_num(rs[0]["loss"]), fmt_num(rs[-1]["loss"]), fmt_num(min(r["loss"] for r in rs)),
                    fmt_num(sum(sp) / len(sp), 3) if sp else "–"])
    return out


def _text(value) -> str:
    return "" if value is None else str(value)


def write_training_report(run_dir: Path, output: Path | None = None, curves: bool = True) -> Path:
    """Write RUN_DIR/report.html: loss and lr curves (redrawn by charts.write_curves), final
    numbers, per-stage table, run arguments (run.json), checkpoints, the last logged rows."""
    run_dir = Path(run_dir)
    rows = list(read_jsonl(run_dir / METRICS))
    notes = []
    pngs: list[Path] = []
    if curves and rows:
        try:
            pngs = write_curves(run_dir, strict=True)
        except ImportError as exc:  # matplotlib missing: the page still works without pictures
            notes.append(f"curves not drawn: {type(exc).__name__}: {exc}")
    pngs = pngs or [p for p in (run_dir / name for name in CURVES) if p.is_file()]
    if curves and rows and any("reward_margin" in r for r in rows):   # a DPO run: its implicit rewards too
        write_reward_curves(run_dir)
    pngs += [p for p in (run_dir / REWARDS,) if p.is_file() and p not in pngs]
    s = training_summary(rows)
    last, best = s["last"], s["best"]
    cards = [
        ("last logged step", "–" if s["step"] is None else f"{s['step']} ({s['stage']})", False),
        ("last loss", fmt_num(last.get("loss")), False),
        (f"lowest loss ({best.get('stage', '')} step {best.get('step', '–')})", fmt_num(best.get("loss")), False),
    ] + ([("last eval loss", fmt_num(s["eval_last"].get("eval_loss")), False)] if s["eval_last"] else []) + [
        ("learning rate now", fmt_num(last.get("lr"), 3), False),
        ("samples/s (last 20 logs)", fmt_num(s["samples_per_s"], 3), False),
        ("elapsed", fmt_duration(s["elapsed_s"]), False),
    ]
    args = read_json(run_dir / RUN_ARGS)
    keys = [k for k in LAST_ROWS_KEYS if any(k in r for r in rows)]
    last_rows = [[_text(r.get(k)) if k in ("step", "stage") else fmt_num(r.get(k)) for k in keys]
                 for r in fill_stages(rows)[-10:]]
    name = run_dir.resolve().name
    return write_page(
        Path(output) if output else run_dir / REPORT_NAME, "train.html.j2",
        title=f"tarsier training — {name}", heading=f"tarsier training run — {name}",
        subtitle=f"{METRICS} in {run_dir}", link=None, cards=cards, notes=notes, has_rows=bool(rows),
        curves=[(p.name, p.stem) for p in pngs], stages=_stage_rows(s["stages"]),
        evals=[(_text(r.get("step")), r.get("stage") or "", fmt_num(r["eval_loss"]))
               for r in rows if number(r.get("eval_loss")) is not None][-20:],
        args=flatten(args) if isinstance(args, dict) else None, checkpoints=checkpoints(run_dir),
        last_keys=keys, last_rows=last_rows)
