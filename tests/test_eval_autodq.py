"""AutoDQ aggregation (hand-computed), DREAM-1K loading, prediction joining, judge bookkeeping."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tarsier.common.dream import CATEGORIES, Reference, load_references, normalise_category
from tarsier.evaluation.autodq import aggregate, evaluate
from tarsier.evaluation.judges import ChatJudge, JudgeSpecError, make_judge
from tarsier.evaluation.predictions import Prediction, load_predictions, match
from tarsier.evaluation.report import JudgeMismatchError, compare_reports, merge_samples
from tarsier.evaluation.score_descriptions import score_file

DREAM = Path("/work/shared/dream1k")
FLAT = DREAM / "DREAM-1k.sample.jsonl"
MESSAGES = DREAM / "DREAM-1k.messages-format.sample.jsonl"


class ScriptedJudge:
    """Events are '|'-separated in the text; an event's label is fixed by its first letter
    (Y = entailment, N = neutral, C = contradiction); a text containing FAIL cannot be parsed."""

    name = "scripted"

    def extract_events(self, texts):
        return [None if "FAIL" in t else [e.strip() for e in t.split("|") if e.strip()] for t in texts]

    def entail(self, pairs):
        code = {"Y": "entailment", "N": "neutral", "C": "contradiction"}
        return [[code[e[0]] for e in events] for _, events in pairs]


def _ref(idx, dataset, events, **extra):
    return Reference(idx=str(idx), category=normalise_category(dataset), dataset=dataset,
                     description=f"reference {idx}", events=events, video_file=None, extra=extra)


def test_aggregation_matches_hand_computed_example():
    refs = [
        _ref(1, "DREAM/movie_animation", ["Y1", "Y2"], n_shots=1, duration=3.0),
        _ref(2, "DREAM/movie_animation", ["Y1", "N2"], n_shots=2, duration=6.0),
        _ref(3, "DREAM/movie_animation", ["Y1"], n_shots=1, duration=4.0),
        _ref(4, "DREAM/videvo", ["Y1", "N2", "N3", "C4"], n_shots=1, duration=12.0),
        _ref(5, "DREAM/stock", ["Y1", "Y2"], n_shots=3, duration=25.0),
        _ref(6, "DREAM/youtube", ["Y1", "Y2", "N3"], n_shots=1, duration=8.0),
    ]
    preds = {"1": "Y p1|N p2", "2": "Y p1", "3": "FAIL", "4": "N p1", "6": "Y p1|N p2|C p3"}
    matched = {r.idx: (Prediction(key=r.idx, description=preds[r.idx]) if r.idx in preds else None) for r in refs}
    samples = evaluate(refs, matched, ScriptedJudge())
    by = {s.idx: s for s in samples}
    # per sample, by hand
    assert (by["1"].recall, by["1"].precision) == (1.0, 0.5)
    assert (by["2"].recall, by["2"].precision) == (0.5, 1.0)
    assert by["3"].status == "failed" and by["3"].recall is None
    assert (by["4"].recall, by["4"].precision) == (0.25, 0.0)
    assert by["5"].status == "missing" and (by["5"].recall, by["5"].precision) == (0.0, None)
    assert by["6"].recall == pytest.approx(2 / 3) and by["6"].precision == pytest.approx(1 / 3)

    agg = aggregate(samples)
    cats = agg["categories"]
    assert list(cats) == ["animation", "youtube/vlog", "stock"]          # canonical order
    # animation: R = (1 + 0.5)/2 = 0.75, P = (0.5 + 1)/2 = 0.75, sample 3 failed -> excluded
    assert cats["animation"]["recall"] == pytest.approx(0.75)
    assert cats["animation"]["precision"] == pytest.approx(0.75)
    assert cats["animation"]["f1"] == pytest.approx(0.75)
    assert (cats["animation"]["n"], cats["animation"]["failed"], cats["animation"]["scored"]) == (3, 1, 2)
    # stock: R = (0.25 + 0)/2 = 0.125 (missing counts 0), P = 0.0 (missing excluded)
    assert cats["stock"]["recall"] == pytest.approx(0.125)
    assert cats["stock"]["precision"] == pytest.approx(0.0)
    assert cats["stock"]["f1"] == pytest.approx(0.0)
    assert (cats["stock"]["missing"], cats["stock"]["n_precision"]) == (1, 1)
    # youtube: R = 0.666667, P = 0.333333
    assert cats["youtube/vlog"]["recall"] == pytest.approx(0.666667, abs=1e-6)
    assert cats["youtube/vlog"]["precision"] == pytest.approx(0.333333, abs=1e-6)
    # overall: R = (0.75 + 0.125 + 0.666667)/3 = 0.513889 ; P = (0.75 + 0 + 0.333333)/3 = 0.361111
    # F1 = 2 * 0.513889 * 0.361111 / (0.513889 + 0.361111) = 0.424162  (of the means, not a mean of F1s)
    o = agg["overall"]
    assert o["recall"] == pytest.approx(0.513889, abs=1e-6)
    assert o["precision"] == pytest.approx(0.361111, abs=1e-6)
    assert o["f1"] == pytest.approx(0.424162, abs=1e-6)
    assert (o["n"], o["scored"], o["failed"], o["missing"]) == (6, 4, 1, 1)
    # buckets are plain means over their samples: shots=1 -> samples 1, 4, 6 (3 failed)
    shots1 = agg["buckets"]["shots"]["1"]
    assert shots1["recall"] == pytest.approx((1.0 + 0.25 + 2 / 3) / 3)
    assert shots1["precision"] == pytest.approx((0.5 + 0.0 + 1 / 3) / 3)
    assert (shots1["n"], shots1["failed"]) == (4, 1)
    assert agg["buckets"]["duration"]["20s+"]["recall"] == 0.0
    assert agg["buckets"]["events"]["4-6"]["n"] == 1


def test_unknown_category_is_kept_and_empty_events_excluded():
    refs = [_ref(1, "DREAM/brand_new", [], duration=1.0), _ref(2, "DREAM/movie_live_action", ["Y1"])]
    matched = {"1": Prediction(key="1", description="Y a"), "2": Prediction(key="2", description="")}
    samples = evaluate(refs, matched, ScriptedJudge())
    agg = aggregate(samples)
    assert list(agg["categories"]) == ["live-action", "brand_new"]
    assert agg["categories"]["brand_new"]["recall"] is None                 # no reference events
    assert agg["categories"]["brand_new"]["precision"] == 1.0
    assert agg["categories"]["live-action"]["precision"] is None            # empty prediction: no events
    assert agg["overall"]["recall"] == 1.0 and agg["overall"]["precision"] == 1.0


def test_both_reference_formats_load_the_same():
    flat, msgs = load_references(FLAT), load_references(MESSAGES)
    assert len(flat) == len(msgs) == 20
    for a, b in zip(flat, msgs):
        assert (a.idx, a.description, a.events, a.category) == (b.idx, b.description, b.events, b.category)
        assert a.video_file is None                # "<placeholder>"
    assert {r.category for r in flat} == set(CATEGORIES)
    assert [r.category for r in flat][::4] == ["animation", "live-action", "vertical/shorts", "stock", "youtube/vlog"]
    assert flat[0].extra["duration"] == 5.09 and flat[0].extra["n_shots"] == 2


@pytest.mark.parametrize("name,expected", [
    ("DREAM/movie_animation", "animation"), ("DREAM/movie_live_action", "live-action"),
    ("DREAM/shorts", "vertical/shorts"), ("DREAM/vertical_video", "vertical/shorts"),
    ("DREAM/videvo", "stock"), ("DREAM/stock", "stock"), ("DREAM/youtube", "youtube/vlog"),
    ("Live Action", "live-action"), ("DREAM/Something_Else", "Something_Else"), ("", "unknown"),
])
def test_category_names(name, expected):
    assert normalise_category(name) == expected


def test_prediction_formats_and_join(tmp_path):
    describe = tmp_path / "descriptions.jsonl"
    describe.write_text("\n".join(json.dumps(r) for r in [
        {"video": "videos/000001.mp4", "clip": 1, "description": "second part."},
        {"video": "videos/000001.mp4", "clip": 0, "description": "First part."},
        {"video": "videos/000002.mp4", "error": "cannot decode", "stage": "decode"},
        {"video": "videos/999.mp4", "clip": 0, "description": "Not in the reference."},
    ]) + "\n")
    refs = load_references(FLAT)[:3]
    by_video, by_idx = load_predictions(describe)
    matched, unmatched = match(refs, by_video, by_idx)
    assert matched["1"].description == "First part. second part." and matched["1"].clips == 2
    assert matched["2"].description is None and "decode" in matched["2"].error
    assert matched["3"] is None
    assert unmatched == ["videos/999.mp4"]

    upstream = tmp_path / "upstream.json"
    upstream.write_text(json.dumps([{"idx": 1, "prediction": "A."}, {"idx": 2, "response": "B."},
                                    {"idx": 3, "text": {"prompt": "p", "response": "ref", "prediction": "C."}}]))
    matched, unmatched = match(refs, *load_predictions(upstream))
    assert [matched[i].description for i in ("1", "2", "3")] == ["A.", "B.", "C."] and not unmatched

    # references with real file names are matched by basename without extension
    named = [Reference(idx="7", category="stock", dataset="DREAM/stock", description="d", events=["e"],
                       video_file="clips/abc.mp4")]
    by_video, by_idx = load_predictions(_write(tmp_path / "p.jsonl", [{"video": "x/abc.mkv", "clip": 0,
                                                                         "description": "D."}]))
    assert match(named, by_video, by_idx)[0]["7"].description == "D."


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class Stubborn(ChatJudge):
    """Always answers with the wrong number of labels; counts the conversations it gets."""

    name = "stubborn"

    def __init__(self, answers, **kw):
        super().__init__(use_cache=False, **kw)
        self.answers = answers
        self.seen = []

    def _chat_batch(self, conversations, kind=""):
        self.seen.extend(conversations)
        return [self.answers(len(c)) for c in conversations]


def test_chat_judge_reasks_with_a_bound():
    judge = Stubborn(lambda turns: '{"labels": ["entailment"]}', parse_retries=2)
    assert judge.entail([("desc", ["a", "b"])]) == [None]
    assert len(judge.seen) == 3                                   # 1 + 2 re-asks, then gives up
    assert "expected exactly 2" in judge.seen[-1][-1]["content"]
    assert judge.stats["unparsed"] == 1
    ok = Stubborn(lambda turns: "prose" if turns == 1 else '```json\n{"events": ["x"],}\n```')
    assert ok.extract_events(["something happens", ""]) == [["x"], []]
    assert len(ok.seen) == 2


def test_judge_specs(tmp_path):
    assert make_judge("embed").name.startswith("embed:all-MiniLM-L6-v2@")
    assert make_judge("embed@0.7").name == "embed:all-MiniLM-L6-v2@0.7"
    assert make_judge("embed:all-MiniLM-L6-v2@0.6").threshold == 0.6
    assert make_judge("openai:m", url="http://127.0.0.1:9/v1", cache_path=str(tmp_path / "c")).name == "openai:m"
    assert make_judge("hf:smollm2", cache_path=str(tmp_path / "c")).name == "hf:smollm2"
    for bad in ("gpt4", "openai:", "embed@x", "nope:x"):
        with pytest.raises(JudgeSpecError):
            make_judge(bad, cache_path=str(tmp_path / "c"))


def test_judges_are_never_mixed(tmp_path):
    pred = _write(tmp_path / "p.jsonl", [{"idx": 1, "prediction": "Y a"}])
    ref = _write(tmp_path / "r.jsonl", [{"idx": 1, "dataset": "DREAM/stock", "text": {"response": "Y r"},
                                         "extra_info": {"events": ["Y e"]}}])
    first = score_file(pred, ref, ScriptedJudge(), tmp_path / "out")
    other = ScriptedJudge()
    other.name = "other"
    with pytest.raises(JudgeMismatchError):
        score_file(pred, ref, other, tmp_path / "out")
    second = score_file(pred, ref, other, tmp_path / "out2")
    with pytest.raises(JudgeMismatchError):
        compare_reports(first.report, second.report)
    assert compare_reports(first.report, first.report)["overall"]["f1"] == 0.0
    with pytest.raises(JudgeMismatchError):
        merge_samples([tmp_path / "out" / "samples.jsonl", tmp_path / "out2" / "samples.jsonl"])
    record = json.loads((tmp_path / "out" / "samples.jsonl").read_text())
    assert record["judge"] == "scripted"
    assert record["recall_judgements"] == [{"event": "Y e", "label": "entailment"}]
