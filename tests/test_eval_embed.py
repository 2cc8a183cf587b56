"""The offline `embed` judge on the DREAM-1K samples: own events are recalled, other videos' are not."""
from __future__ import annotations

from pathlib import Path

import pytest

from tarsier.common.dream import load_references
from tarsier.evaluation.autodq import aggregate, evaluate
from tarsier.evaluation.embed import DEFAULT_THRESHOLD, EmbedJudge, calibrate, extract_clause_events, split_clauses
from tarsier.evaluation.predictions import Prediction

FLAT = Path("/work/shared/dream1k/DREAM-1k.sample.jsonl")


@pytest.fixture(scope="module")
def refs():
    return load_references(FLAT)


@pytest.fixture(scope="module")
def judge():
    return EmbedJudge()


def _recall(refs, judge, shift):
    """Mean per-sample recall of each row's reference events against the description of row i+shift."""
    matched = {r.idx: Prediction(key=r.idx, description=refs[(i + shift) % len(refs)].description)
               for i, r in enumerate(refs)}
    samples = evaluate(refs, matched, judge)
    values = [s.recall for s in samples if s.recall is not None]
    return sum(values) / len(values), samples


def test_own_events_recalled_other_videos_not(refs, judge):
    own, samples = _recall(refs, judge, 0)
    assert own >= 0.9, own
    assert all(s.status == "ok" for s in samples)
    cross = [_recall(refs, judge, shift)[0] for shift in (1, 5, 10)]
    assert max(cross) <= 0.1, cross
    report = aggregate(samples)
    assert report["overall"]["recall"] >= 0.9


def test_calibration_picks_the_default_threshold(refs):
    result = calibrate(refs)
    assert result["best"] == DEFAULT_THRESHOLD
    row = next(r for r in result["table"] if r["threshold"] == DEFAULT_THRESHOLD)
    assert row["own_recall"] >= 0.9 and row["cross_recall"] <= 0.1
    assert result["rows"] == 19 and result["pairs"] == 19 * 18


def test_clause_splitting():
    assert split_clauses("A man opens a door, then walks in and then sits down") == [
        "A man opens a door", "walks in", "sits down"]
    assert split_clauses("A silver car drives on a road, makes a left turn, and proceeds along a driveway") == [
        "A silver car drives on a road", "makes a left turn", "proceeds along a driveway"]
    assert split_clauses("A woman in a red coat, a hat and gloves waves") == ["A woman in a red coat, a hat and gloves waves"]
    events = extract_clause_events("The camera remains fixed. A dog runs; a cat jumps while a bird sings. "
                                   "The scene cuts to a street.")
    assert events == ["A dog runs", "a cat jumps", "a bird sings"]
    assert len(extract_clause_events(". ".join(f"Person {i} waves" for i in range(15)))) == 10


def test_embed_labels_and_name(judge):
    assert judge.name == f"embed:all-MiniLM-L6-v2@{DEFAULT_THRESHOLD:g}" and judge.approximate
    labels = judge.entail([("A man opens a door and walks into the kitchen.", ["A man opens a door.",
                                                                              "A rocket launches into space."]),
                           ("", ["A dog barks."]), ("Something.", [])])
    assert labels == [["entailment", "neutral"], ["neutral"], []]
