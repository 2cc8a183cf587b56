"""Every chart of the reports, as PNG files beside the page that shows them:

    write_curves(run_dir)          RUN_DIR/loss.png, RUN_DIR/lr.png from RUN_DIR/metrics.jsonl
    write_reward_curves(run_dir)   RUN_DIR/rewards.png (a DPO run's implicit rewards)
    write_training_charts(run_dir) both of the above: what `tarsier train` draws at every checkpoint
    write_eval_charts(eval_dir)    EVAL_DIR/categories.png (AutoDQ recall / precision / F1 per category)

matplotlib is imported inside the functions that draw, and draws with the Agg canvas on a bare
Figure (no pyplot, no global backend switch), so this module is cheap to import and safe inside a
training process. Every PNG is written atomically: a page open in a browser never shows half a
picture.

metrics.jsonl rows: {"step", "loss", "lr", "samples_per_s", "elapsed_s", "stage"}, optionally
{"step", "eval_loss"} and a DPO run's {"reward_margin", "reward_chosen", "reward_rejected",
"reward_accuracy"}; missing keys and torn lines are tolerated. When a later stage restarts its step
count, its steps are drawn after the previous stage's (offset, marked by a dashed line).
"""
from __future__ import annotations

import warnings
from pathlib import Path

from tarsier.common.files import atomic_file, read_jsonl
from tarsier.reports.formats import number
from tarsier.reports.results import EVAL_REPORT, METRICS, fill_stages, judge_name, read_json

EVAL_CHART = "categories.png"
CURVES = ("loss.png", "lr.png")
REWARDS = "rewards.png"
COLORS = ["#2f6fde", "#e07b20", "#3a9a5b", "#9b4fd0", "#c62f2f"]


def save_figure(fig, path: Path, dpi: int = 100) -> Path:
    """Render a matplotlib Figure with the Agg canvas and write it atomically as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with atomic_file(path, "wb", fsync=False) as f:
        fig.savefig(f, format="png", dpi=dpi)
    return Path(path)


# ----------------------------------------------------------------------------------------------
# training curves

def smooth(values: list[float], window: int) -> list[float]:
    """Centred moving average (no lag, unlike an EMA); shorter windows at the ends."""
    import numpy as np

    y = np.asarray(values, dtype=float)
    half = max(0, window // 2)
    if half == 0 or len(y) < 3:
        return list(y)
    kernel = np.ones(2 * half + 1)
    num = np.convolve(np.pad(y, half), kernel, mode="valid")
    den = np.convolve(np.pad(np.ones_like(y), half), kernel, mode="valid")
    return list(num / den)


def stage_offsets(rows: list[dict]) -> dict[str, int]:
    """Step offset per stage, so that stage 2 starting again at step 0 is drawn after stage 1."""
    order: list[str] = []
    bounds: dict[str, list[int]] = {}
    for r in fill_stages(list(rows)):
        step = r.get("step")
        if not isinstance(step, int) or isinstance(step, bool):
            continue
        stage = str(r.get("stage") or "train")
        if stage not in bounds:
            order.append(stage)
            bounds[stage] = [step, step]
        bounds[stage][0] = min(bounds[stage][0], step)
        bounds[stage][1] = max(bounds[stage][1], step)
    offsets, end = {}, None
    for stage in order:
        lo, hi = bounds[stage]
        off = 0 if end is None or lo > end else end - lo + 1
        offsets[stage] = off
        end = hi + off
    return offsets


def write_curves(run_dir: Path, strict: bool = False) -> list[Path]:
    """Draw loss.png (training loss per stage, smoothed when noisy, plus eval loss) and lr.png
    (learning rate per step) into run_dir. Returns the files written ([] when nothing is logged).

    Called after every checkpoint of a training run, so by default it never raises: without
    matplotlib, or on any plotting failure, it warns and returns what it wrote (strict=True raises)."""
    try:
        return _write_curves(Path(run_dir))
    except Exception as exc:
        if strict:
            raise
        warnings.warn(f"training curves not drawn: {type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2)
        return [p for p in (Path(run_dir) / name for name in CURVES) if p.is_file()]


def _write_curves(run_dir: Path) -> list[Path]:
    from matplotlib.figure import Figure

    rows = [r for r in fill_stages(list(read_jsonl(run_dir / METRICS)))
            if isinstance(r.get("step"), int) and not isinstance(r.get("step"), bool)]
    if not rows:
        return []
    offsets = stage_offsets(rows)
    stages = list(offsets)

    def series(key: str):
        out: dict[str, tuple[list[int], list[float]]] = {}
        for r in rows:
            v = number(r.get(key))
            if v is None:
                continue
            stage = str(r.get("stage") or "train")
            xs, ys = out.setdefault(stage, ([], []))
            xs.append(r["step"] + offsets.get(stage, 0))
            ys.append(v)
        return out

    def boundaries(ax):
        for stage in stages[1:]:  # where each later stage begins
            first = min(r["step"] + offsets[stage] for r in rows if str(r.get("stage") or "train") == stage)
            ax.axvline(first, color="#888", ls="--", lw=0.8)
            ax.annotate(stage, (first, 1), xycoords=("data", "axes fraction"), xytext=(3, -12),
                        textcoords="offset points", fontsize=8, color="#555")

    shifted = any(offsets.values())
    xlabel = "step" + (" (later stages drawn after earlier ones)" if shifted else "")
    written: list[Path] = []

    loss, eval_loss = series("loss"), series("eval_loss")
    if loss or eval_loss:
        fig = Figure(figsize=(6.0, 3.4))
        ax = fig.add_subplot(1, 1, 1)
        all_y = []
        for i, (stage, (xs, ys)) in enumerate(loss.items()):
            color = COLORS[stages.index(stage) % len(COLORS)] if stage in stages else COLORS[i % len(COLORS)]
            all_y += ys
            if len(ys) > 50:  # noisy: raw faint, smoothed on top
                ax.plot(xs, ys, color=color, alpha=0.25, lw=0.8)
                ax.plot(xs, smooth(ys, max(3, len(ys) // 25)), color=color, lw=1.6, label=f"{stage} loss (smoothed)")
            else:
                ax.plot(xs, ys, color=color, lw=1.4, marker="." if len(ys) < 50 else None, label=f"{stage} loss")
        for stage, (xs, ys) in eval_loss.items():
            all_y += ys
            ax.plot(xs, ys, color="#c62f2f", lw=1.2, marker="o", ms=3, label=f"{stage} eval loss")
        positive = [y for y in all_y if y > 0]
        if positive and len(positive) == len(all_y) and max(positive) / min(positive) > 50:
            ax.set_yscale("log")
        boundaries(ax)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel("loss", fontsize=9)
        ax.set_title(f"loss — {run_dir.resolve().name}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
        fig.tight_layout()
        written.append(save_figure(fig, run_dir / "loss.png"))

    lr = series("lr")
    if lr:
        fig = Figure(figsize=(6.0, 3.4))
        ax = fig.add_subplot(1, 1, 1)
        for i, (stage, (xs, ys)) in enumerate(lr.items()):
            color = COLORS[stages.index(stage) % len(COLORS)] if stage in stages else COLORS[i % len(COLORS)]
            ax.plot(xs, ys, color=color, lw=1.4, label=stage)
        boundaries(ax)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel("learning rate", fontsize=9)
        ax.set_title("learning rate", fontsize=10)
        ax.grid(alpha=0.3)
        if len(lr) > 1:
            ax.legend(fontsize=8, frameon=False)
        fig.tight_layout()
        written.append(save_figure(fig, run_dir / "lr.png"))
    return written


REWARD_SERIES = (("reward_margin", "margin (chosen - rejected)", "#2f6fde"),
                 ("reward_chosen", "chosen", "#3a9a5b"), ("reward_rejected", "rejected", "#c62f2f"))


def write_reward_curves(run_dir: Path, strict: bool = False) -> list[Path]:
    """rewards.png for a DPO run: implicit rewards (chosen, rejected, their margin) and the reward
    accuracy per step, from the same metrics.jsonl. [] when the run logged no rewards; like
    write_curves, it warns instead of raising unless strict."""
    try:
        return _write_reward_curves(Path(run_dir))
    except Exception as exc:
        if strict:
            raise
        warnings.warn(f"reward curves not drawn: {type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2)
        return [p for p in (Path(run_dir) / REWARDS,) if p.is_file()]


def _write_reward_curves(run_dir: Path) -> list[Path]:
    rows = [r for r in read_jsonl(run_dir / METRICS)
            if isinstance(r.get("step"), int) and not isinstance(r.get("step"), bool)
            and number(r.get("reward_margin")) is not None]
    if not rows:
        return []
    from matplotlib.figure import Figure

    steps = [r["step"] for r in rows]
    fig = Figure(figsize=(6.0, 5.2))
    top, bottom = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2)
    for key, label, color in REWARD_SERIES:
        ys = [number(r.get(key)) for r in rows]
        if len(ys) > 50:
            top.plot(steps, ys, color=color, alpha=0.25, lw=0.8)
            ys = smooth(ys, max(3, len(ys) // 25))
        top.plot(steps, ys, color=color, lw=1.4, label=label)
    top.axhline(0.0, color="#888", lw=0.8)
    top.set_ylabel("implicit reward", fontsize=9)
    top.set_title(f"DPO rewards — {run_dir.resolve().name}", fontsize=10)
    top.grid(alpha=0.3)
    top.legend(fontsize=8, frameon=False)
    acc = [number(r.get("reward_accuracy")) for r in rows]
    bottom.plot(steps, acc, color="#9b4fd0", lw=1.4)
    bottom.set_ylim(-0.02, 1.02)
    bottom.set_xlabel("step", fontsize=9)
    bottom.set_ylabel("reward accuracy", fontsize=9)
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    return [save_figure(fig, run_dir / REWARDS)]


def write_training_charts(run_dir: Path) -> list[Path]:
    """The curves of a training run: loss.png and lr.png, and rewards.png when it is a DPO run.
    Never raises (warns instead), so a training command can call it after every checkpoint."""
    return write_curves(run_dir) + write_reward_curves(run_dir)


# ----------------------------------------------------------------------------------------------
# evaluations

def write_eval_charts(eval_dir: Path) -> list[Path]:
    """EVAL_DIR/categories.png: recall / precision / F1 per category and overall (percent)."""
    from matplotlib.figure import Figure

    eval_dir = Path(eval_dir)
    report = read_json(eval_dir / EVAL_REPORT)
    if not isinstance(report, dict):
        return []
    cats = report.get("categories") if isinstance(report.get("categories"), dict) else {}
    groups = [(name, c) for name, c in cats.items() if isinstance(c, dict)]
    if isinstance(report.get("overall"), dict):
        groups.append(("overall", report["overall"]))
    if not groups:
        return []
    metrics = [("recall", "R", "#4f86e0"), ("precision", "P", "#f0a43a"), ("f1", "F1", "#3a9a5b")]
    fig = Figure(figsize=(min(14.0, max(6.5, 1.15 * len(groups) + 1.5)), 3.8))
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(metrics)
    for j, (key, label, color) in enumerate(metrics):
        xs = [i + (j - 1) * width for i in range(len(groups))]
        vals = [100 * (number(c.get(key)) or 0.0) for _, c in groups]
        bars = ax.bar(xs, vals, width * 0.95, label=label, color=color)
        for bar, (_, c) in zip(bars, groups):
            v = number(c.get(key))
            ax.annotate("–" if v is None else f"{100 * v:.1f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7, xytext=(0, 1), textcoords="offset points")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{name}\n(n={c.get('n', '?')})" for name, c in groups], fontsize=8)
    top = max([100 * (number(c.get(k)) or 0) for _, c in groups for k, _, _ in metrics] + [10])
    ax.set_ylim(0, min(100, top * 1.18 + 2))
    ax.set_ylabel("%")
    ax.set_title(f"AutoDQ per category — judge {judge_name(report)}", fontsize=10)
    ax.legend(fontsize=8, ncols=3, loc="upper left", frameon=False)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    fig.tight_layout()
    return [save_figure(fig, eval_dir / EVAL_CHART)]
