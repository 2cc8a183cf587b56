"""The synthetic world: files written, determinism, DREAM-1K benchmark shape, the CLI."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tarsier.world.build import generate
from tarsier.world.manifests import BRIEF_PROMPTS, FINE_PROMPTS
from tarsier.world.truth import make_truth
from tarsier.world.vocabulary import VERBS, canonical_sentence

DREAM_MESSAGES = Path(__file__).resolve().parents[1].parent / "shared" / "dream1k" / \
    "DREAM-1k.messages-format.sample.jsonl"
MANIFESTS = ["truth.jsonl", "benchmark.jsonl", "stage1/caption.jsonl", "stage1/qa.jsonl",
             "stage1/action.jsonl", "stage1/mcq.jsonl", "stage1/order.jsonl", "stage1/mixture.json",
             "stage2/describe.jsonl", "stage2/mixture.json"]


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    generate(out, 6, seed=11, workers=1, cuts_prob=0.5, pan_prob=0.5)
    return out


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_files_written(world):
    for name in MANIFESTS:
        assert (world / name).is_file(), name
    videos = sorted((world / "videos").glob("*.mp4"))
    assert len(videos) == 6
    truths = _rows(world / "truth.jsonl")
    assert [t["video_file"] for t in truths] == [f"videos/{v.name}" for v in videos]
    for t in truths:
        assert 2 <= t["n_events"] <= 5 and len(t["events"]) == t["n_events"]
        assert 3.0 <= t["duration"] <= 6.1
        starts = [e["t_start"] for e in t["events"]]
        assert starts == sorted(starts)
        for e in t["events"]:
            assert e["t_start"] < e["t_end"] <= t["duration"]
            assert set(e) >= {"colour", "shape", "verb", "args", "t_start", "t_end", "sentence"}
            assert e["sentence"] == canonical_sentence(e["colour"], e["shape"], e["verb"], e["args"])
        assert t["brief"] and t["fine"] and t["qa"]
    mix = json.loads((world / "stage1" / "mixture.json").read_text())
    assert {m["task"] for m in mix["manifests"]} == {"caption", "qa", "action", "mcq", "order"}


def test_videos_decode(world):
    av = pytest.importorskip("av")
    t = _rows(world / "truth.jsonl")[0]
    with av.open(str(world / t["video_file"])) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == t["n_frames"]
    assert frames[0].shape == (128, 128, 3)
    # something moves or changes between the first and last frame
    assert abs(frames[0].astype(int) - frames[-1].astype(int)).sum() > 0


def test_deterministic_and_worker_independent(world, tmp_path):
    other = tmp_path / "again"
    generate(other, 6, seed=11, workers=2, cuts_prob=0.5, pan_prob=0.5)
    assert _digest(world) == _digest(other)          # mp4 bytes included


def test_other_seed_other_videos(tmp_path):
    a = [make_truth(1, i) for i in range(20)]
    b = [make_truth(2, i) for i in range(20)]
    assert not {t["video_file"] for t in a} & {t["video_file"] for t in b}
    assert [t["fine"] for t in a] != [t["fine"] for t in b]


def test_benchmark_matches_dream1k_shape(world):
    def shape(o):
        if isinstance(o, dict):
            return {k: shape(v) for k, v in o.items()}
        if isinstance(o, list):
            return [shape(o[0])] if o and isinstance(o[0], (dict, list)) else "list"
        return type(o).__name__ if o is not None else None

    row = _rows(world / "benchmark.jsonl")[0]
    if DREAM_MESSAGES.is_file():
        ref = json.loads(DREAM_MESSAGES.read_text().splitlines()[0])
        assert list(row) == list(ref)
        assert list(row["extra_info"]) == list(ref["extra_info"])
        assert shape(row) == shape(ref)
    user, asst = row["messages"]
    assert user["content"][1]["text"] == "Describe the video in detail."
    assert (world / user["content"][0]["video"]["video_file"]).is_file()
    truth = _rows(world / "truth.jsonl")[0]
    assert asst["content"][0]["reference"] == truth["fine"]
    assert row["extra_info"]["events"] == truth["event_sentences"]
    assert row["dataset"] == "synthetic/shapes" and row["task"] == "video/caption"


def test_stage2_prompts_cover_product_defaults():
    from tarsier import prompts
    assert prompts.read("fine") in FINE_PROMPTS
    assert prompts.read("brief") in BRIEF_PROMPTS


def test_stage2_has_both_grains(world):
    rows = _rows(world / "stage2" / "describe.jsonl")
    tasks = [r["task"] for r in rows]
    assert tasks.count("describe/brief") == tasks.count("describe/fine") == 6
    for r in rows:
        prompt = r["messages"][0]["content"][1]["text"]
        assert prompt in (BRIEF_PROMPTS if r["task"] == "describe/brief" else FINE_PROMPTS)


def test_many_plans_are_valid():
    seen_verbs = set()
    for i in range(300):
        t = make_truth(5, i, cuts_prob=0.4, pan_prob=0.4)
        seen_verbs |= {e["verb"] for e in t["events"]}
        assert len(set(t["event_sentences"])) == t["n_events"]
        for q in t["mcq"]:
            letter, _, text = q["answer"].partition(". ")
            assert f"{letter}. {text}" in q["question"] and text in t["event_sentences"]
        for o in t["order"]:
            assert o["answer"] in t["event_sentences"]
    assert seen_verbs == set(VERBS)


def test_cli_synth(tmp_path):
    from typer.testing import CliRunner

    from tarsier.cli.app import app

    out = tmp_path / "w"
    runner = CliRunner()
    res = runner.invoke(app, ["synth", str(out), "--videos", "3", "--seed", "4", "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert len(list((out / "videos").glob("*.mp4"))) == 3
    assert len(_rows(out / "benchmark.jsonl")) == 3
    res = runner.invoke(app, ["synth", str(out), "--videos", "3", "--seed", "4"])
    assert res.exit_code == 2                     # refuses to overwrite without --overwrite
    res = runner.invoke(app, ["synth", str(out), "--videos", "2", "--seed", "4", "--overwrite", "-j", "1"])
    assert res.exit_code == 0, res.output
    assert len(_rows(out / "truth.jsonl")) == 2
    assert len(list((out / "videos").glob("*.mp4"))) == 2     # the stale third clip is gone


# sha256 (first 16 hex digits) of every file of generate(OUT, 5, seed=3, render=False, cuts_prob=0.5,
# pan_prob=0.5), as trainers/synth.py wrote them before the world became the tarsier.world package:
# a change of one byte in any manifest (a key order, a rounding, a random draw) fails here.
PINNED_MANIFESTS = {
    "bench/caption.jsonl": "118e5e22a4a65d6c",
    "bench/mcq.jsonl": "efe74430898ff9fb",
    "bench/qa.jsonl": "98f3db8bcd59baa0",
    "benchmark.jsonl": "36dc6145496a12ce",
    "stage1/action.jsonl": "e10d74cc8ce4a1d6",
    "stage1/caption.jsonl": "8aabbc10bd1c6316",
    "stage1/mcq.jsonl": "02160c9da905d523",
    "stage1/mixture.json": "046633643f4243a1",
    "stage1/order.jsonl": "e9099e8a0078f1f5",
    "stage1/qa.jsonl": "f12f50feb819ef33",
    "stage2/describe.jsonl": "f751f3d9b928ee6b",
    "stage2/mixture.json": "06e73b7863bbaad5",
    "truth.jsonl": "90dbafa7e972a05d",
}


def test_manifests_are_pinned(tmp_path):
    generate(tmp_path, 5, seed=3, workers=1, render=False, cuts_prob=0.5, pan_prob=0.5)
    assert {name: digest[:16] for name, digest in _digest(tmp_path).items()} == PINNED_MANIFESTS


def test_plan_records_serialise_the_dataclasses_in_a_fixed_order():
    from tarsier.world.plan import PlacedObject, PlannedEvent

    e = PlannedEvent(0, 1, "red", "circle", "move", {"direction": "left", "distance": 0.25}, 0.5, 1.2)
    assert list(e.record()) == ["shot", "subject_id", "colour", "shape", "verb", "args", "t_start", "t_end",
                                "sentence"]
    assert e.record()["sentence"] == "The red circle moves to the left."
    o = PlacedObject(3, 0, "star", "blue", 0.123456, 0.5, 0.1, 1.0, True)
    assert o.record() == {"id": 3, "shot": 0, "shape": "star", "colour": "blue", "x": 0.1235, "y": 0.5,
                          "r": 0.1, "angle": 1.0, "visible": True}
    plan = make_truth(11, 0)["_plan"]
    assert all(list(r) == list(e.record()) for r in plan["events"])
    assert all(list(r) == list(o.record()) for r in plan["objects"])
    assert all(list(r) == ["index", "background", "pan", "t_start", "t_end"] for r in plan["shots"])


def test_frame_state_lists_the_shapes_on_screen():
    from tarsier.world.render import ShapeOnScreen, frame_state
    from tarsier.world.vocabulary import COLOURS

    truth = make_truth(11, 0)
    state = frame_state(truth["_plan"], 0.0)      # before the first event (events start at 0.3 s or later)
    first = {o["id"]: o for o in truth["objects"] if o["shot"] == 0 and o["visible"]}
    assert all(isinstance(s, ShapeOnScreen) for s in state.objects)
    assert {s.id for s in state.objects} == set(first)
    for s in state.objects:
        o = first[s.id]
        assert (s.shape, s.x, s.y, s.r, s.angle, s.alpha) == (o["shape"], o["x"], o["y"], o["r"], o["angle"], 1.0)
        assert s.rgb == [float(v) for v in COLOURS[o["colour"]]]
