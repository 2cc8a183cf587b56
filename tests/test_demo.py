"""`tarsier demo` as a user sees it (in miniature): installed as nano-demo beside the shipped nano, both
scored in the same run, progress lines in a log, an earlier run named in one line, --fresh."""
from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from tarsier.cli.app import app

pytestmark = pytest.mark.usefixtures("tarsier_home")


def test_demo_beside_the_shipped_nano_then_earlier_run_then_fresh(tmp_path, tarsier_home):
    import tarsier
    from tarsier.engine import checkpoint as ckpt

    work = tmp_path / "demo"
    args = ["demo", "--work", str(work), "--train-videos", "8", "--bench-videos", "2", "--stage1-steps", "2",
            "--stage2-steps", "2", "--batch-size", "4", "--device", "cpu"]
    runner = CliRunner()
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    out = r.output
    assert "installed as nano-demo" in out and "`--model nano` stays the shipped nano" in out
    assert "earlier run:" not in out
    # long phases report progress; stderr is no terminal here, so as plain lines
    assert "render world-s1-n8: 8/8" in out and "render bench-s9001-n2: 2/2" in out
    assert re.search(r"tower features: (\d+)/\1 ", out)
    assert "tower features: 0 computed" in out   # training found every clip in the cache the demo filled
    # both models' scores, measured in this run, side by side
    scores = json.loads(r.stdout[r.stdout.index("{"):])
    assert set(scores) == {"nano-demo: stage 1 + stage 2", "nano (shipped): full recipe"}
    for name in scores:
        assert set(scores[name]["fine"]) >= {"precision", "recall", "f1"} and scores[name]["heldout_loss"] > 0
    assert "nano (shipped)" in out and "model card states" in out
    assert tarsier.load("nano-demo", device="cpu").config.name == "nano"
    assert ckpt.trained_preset_dir("nano") == ckpt.shipped_model_dir("nano")   # untouched by the demo
    assert (tarsier_home / "models" / "nano-demo").is_dir() and not (tarsier_home / "models" / "nano").exists()
    summary = json.loads((work / "demo-full.json").read_text())
    assert summary["installed_as"] == "nano-demo" and summary["earlier_run"] is None

    # a rerun says in one line that it reuses an earlier run (where, when, how to start afresh)
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    [line] = [x for x in r.output.splitlines() if x.startswith("earlier run:")]
    assert str(work / "runs") in line and "finished training on" in line and "UTC" in line and "--fresh" in line
    assert "step 2 loss" not in r.output   # nothing trained again

    r = runner.invoke(app, [*args, "--fresh"])
    assert r.exit_code == 0, r.output
    assert "fresh: removed earlier runs" in r.output and "earlier run:" not in r.output
    assert "stage1 step 2 loss" in r.output and "stage2 step 2 loss" in r.output   # trained again
    assert (work / "world-s1-n8" / "benchmark.jsonl").is_file()   # the rendered worlds are kept


def test_earlier_run_unfinished_says_resuming(tmp_path):
    from tarsier.demo import earlier_run, forget_earlier_runs

    runs = tmp_path / "runs" / "abc"
    assert earlier_run(runs, "full") is None
    (runs / "stage1-full" / "checkpoints").mkdir(parents=True)
    (runs / "stage1-full" / "metrics.jsonl").write_text("{}\n")
    found = earlier_run(runs, "full")
    assert not found["finished"] and "resuming it" in found["line"] and "--fresh" in found["line"]
    (tmp_path / "world-s1-n8").mkdir()
    (tmp_path / "demo-full.json").write_text("{}")
    lines = []
    forget_earlier_runs(tmp_path, lines.append)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world-s1-n8"] and len(lines) == 1
