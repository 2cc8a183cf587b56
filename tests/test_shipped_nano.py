"""The nano that ships: its weights load right after install, `--model nano` always means them (an older
demo's cache folder never shadows them), and `tarsier eval bench --model nano` reproduces its model card."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tarsier.cli.app import app
from tarsier.engine import checkpoint as ckpt

pytestmark = pytest.mark.usefixtures("tarsier_home")
SHIPPED = ckpt.shipped_model_dir("nano")


def card() -> dict:
    return json.loads((SHIPPED / "card.json").read_text(encoding="utf-8"))


def test_the_shipped_files_are_the_ones_the_card_describes():
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "MODEL_CARD.md"):
        assert (SHIPPED / name).is_file(), name
    c = card()
    assert hashlib.sha256((SHIPPED / "model.safetensors").read_bytes()).hexdigest() == c["weights_sha256"]
    text = (SHIPPED / "MODEL_CARD.md").read_text(encoding="utf-8")
    for grain in ("fine", "brief"):   # the card's table is made from card.json's numbers
        s = c["scores"][grain]
        assert f"| {grain} | {100 * s['precision']:.1f} | {100 * s['recall']:.1f} | {100 * s['f1']:.1f} |" in text
        assert " ".join(c["eval_commands"][grain]) in text
    assert c["benchmark"]["command"] in text and c["training"]["command"] in text
    # the package declares them, so a wheel carries them
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    assert '"presets/models/*/*"' in pyproject


def test_nano_means_the_shipped_weights_even_with_an_old_demo_folder(tarsier_home):
    from safetensors.torch import load_file

    # an earlier `tarsier demo` installed its model as `nano` in the cache: another checkpoint there
    old = ckpt.cache_model_dir("nano")
    ckpt.save(ckpt.load("tiny-random", device="cpu"), old)
    model = ckpt.load("nano", device="cpu")
    assert model.config.name == "nano" and model.model_id == "nano"
    shipped = load_file(str(SHIPPED / "model.safetensors"))
    for name, p in model.state_dict().items():
        if name in shipped:
            assert p.equal(shipped[name]), name
    # what `tarsier train dpo --init nano` starts from (trainers/dpo.py loads --init through ckpt.load), while
    # stage 1 and 2 build a fresh nano from the preset's config (the recipe's start)
    assert ckpt.trained_preset_dir("nano") == SHIPPED and "config" in ckpt.read_preset("nano")

    from tarsier.engine.catalog import list_models

    rows = {r["name"]: r for r in list_models()}
    assert rows["nano"]["ready"] and rows["nano"]["path"] == str(SHIPPED)
    assert not rows["nano-demo"]["ready"]
    listed = rows[str(old)]   # the old folder is listed by its path, saying what it is
    assert listed["kind"] == "checkpoint" and "earlier `tarsier demo`" in listed["description"]
    with pytest.raises(ckpt.ModelNotFound, match="tarsier demo"):
        ckpt.load("nano-demo", device="cpu")

    r = CliRunner().invoke(app, ["models"])
    assert r.exit_code == 0 and str(old) in r.output


@pytest.fixture(scope="module")
def card_benchmark(tmp_path_factory) -> Path:
    """The card's held-out benchmark, rendered as its command says (seed 9001, 100 videos: about 10 s)."""
    from tarsier.world.build import generate

    b = card()["benchmark"]
    out = tmp_path_factory.mktemp("card-bench")
    generate(out, videos=b["videos"], seed=b["seed"])
    return out


@pytest.mark.parametrize("grain", ["fine", "brief"])
def test_eval_bench_reproduces_the_card(card_benchmark, grain, tmp_path):
    """The card's own command, run in-process: equal to 3 decimals. Measured on a CPU: -b 4 and -b 16 gave the
    same text for all 100 videos, and 1 thread (this test under OMP_NUM_THREADS=1) the card's scores, measured
    with 2."""
    c = card()
    cmd = [arg.replace("B/", f"{card_benchmark}/") if arg.startswith("B/") else (str(card_benchmark) if arg == "B"
           else arg) for arg in c["eval_commands"][grain]]
    assert cmd[:3] == ["tarsier", "eval", "bench"] and "nano" in cmd
    r = CliRunner().invoke(app, [*cmd[1:], "-o", str(tmp_path / "out"), "-q"])
    assert r.exit_code == 0, r.output
    got = json.loads((tmp_path / "out" / "report.json").read_text())["overall"]
    assert got["n"] == c["benchmark"]["videos"] and got["missing"] == 0
    for key in ("precision", "recall", "f1"):
        assert round(got[key], 3) == round(c["scores"][grain][key], 3), (grain, key)


def test_eval_bench_takes_the_synthetic_benchmark_as_dream_and_refuses_grain_elsewhere(world, tmp_path):
    """benchmark.jsonl lists each video's events (DREAM-1K's shape): AutoDQ without --task; --grain is for
    descriptions only."""
    r = CliRunner().invoke(app, ["eval", "bench", "--model", "nano", "-r", str(world / "benchmark.jsonl"),
                                 "--videos", str(world), "--grain", "brief", "--limit", "2", "--device", "cpu",
                                 "-o", str(tmp_path / "o"), "-q"])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["metric"] == "AutoDQ" and report["judge"]["name"] == "exact" and report["overall"]["n"] == 2
    descriptions = [json.loads(line) for line in (tmp_path / "o" / "descriptions.jsonl").read_text().splitlines()]
    assert {d["grain"] for d in descriptions} == {"brief"}
    r = CliRunner().invoke(app, ["eval", "bench", "--model", "nano", "-r", str(world / "bench" / "caption.jsonl"),
                                 "--videos", str(world), "--grain", "brief", "-o", str(tmp_path / "c")])
    assert r.exit_code == 2 and "--grain is for dream" in r.output
