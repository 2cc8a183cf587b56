"""The exact event matcher against the synthetic world's ground truth."""
from __future__ import annotations

import itertools

import pytest

from tarsier.evaluation import exact
from tarsier.evaluation.exact import ExactJudge, canonical, parse_events, score
from tarsier.world import vocabulary
from tarsier.world.truth import make_truth

N = 200


@pytest.fixture(scope="module")
def truths() -> list[dict]:
    return [make_truth(123, i, cuts_prob=0.4, pan_prob=0.4) for i in range(N)]


def test_vocabulary_in_sync():
    assert exact.SHAPES == vocabulary.SHAPES
    assert exact.COLOURS == list(vocabulary.COLOURS)
    assert not set(vocabulary.BACKGROUNDS) & set(vocabulary.COLOURS)


def test_fine_round_trip(truths):
    judge = ExactJudge()
    got = judge.extract_events([t["fine"] for t in truths])
    for t, evs in zip(truths, got):
        assert evs == t["event_sentences"], t["fine"]
        p, r = score(t["fine"], t["event_sentences"])
        assert (p, r) == (1.0, 1.0)


def test_brief_events_are_correct(truths):
    for t in truths:
        evs = [e.sentence() for e in parse_events(t["brief"])]
        assert evs, t["brief"]
        assert all(e in t["event_sentences"] for e in evs), t["brief"]
        p, r = score(t["brief"], t["event_sentences"])
        assert p == 1.0 and 0 < r <= 1.0


def test_other_video_scores_low(truths):
    ps, rs = [], []
    for a, b in itertools.pairwise(truths):
        p, r = score(b["fine"], a["event_sentences"])
        ps.append(p)
        rs.append(r)
    assert sum(ps) / len(ps) < 0.1 and sum(rs) / len(rs) < 0.1


def test_canonical_sentences_are_fixed_points(truths):
    for t in truths[:50]:
        for s in t["event_sentences"]:
            assert canonical(s) == s


def test_pronouns_ellipsis_and_variants():
    text = ("A red circle and a blue square are on a gray background. The camera pans to the left. "
            "The red circle slides to the left and then gets bigger. Then it turns green. "
            "After that, the shape bumps into the blue square and bounces off. "
            "The shot changes to a teal background, where a yellow star spins. Finally, it vanishes.")
    assert [e.sentence() for e in parse_events(text)] == [
        "The red circle moves to the left.",
        "The red circle grows.",
        "The red circle changes colour from red to green.",
        "The green circle collides with the blue square and bounces back.",
        "The yellow star rotates.",
        "The yellow star disappears.",
    ]


def test_tolerates_junk_and_variants():
    judge = ExactJudge()
    assert judge.extract_events(["", "asdf qwerty the the circle", None]) == [[], [], None]
    assert judge.extract_events(["The Red Circle moved Left. the blue square grew larger!!"]) == [
        ["The red circle moves to the left.", "The blue square grows."]]
    assert judge.extract_events(["The red circle does not grow."]) == [[]]
    # repeated events are counted once; at most 10 events
    assert judge.extract_events(["The red circle grows. The red circle grows."]) == [["The red circle grows."]]
    many = " ".join(f"The {c} {s} spins." for c in exact.COLOURS[:3] for s in exact.SHAPES[:4])
    assert len(judge.extract_events([many])[0]) == 10


def test_entail_labels():
    judge = ExactJudge()
    premise = "A red circle moves to the left. Then it grows. A blue star turns yellow."
    hyps = ["The red circle moves to the left.", "The red circle moves to the right.",
            "The red circle shrinks.", "The red circle grows.", "The green square rotates.",
            "The blue star changes colour from blue to purple.", "The yellow star rotates.", "Nonsense."]
    assert judge.entail([(premise, hyps)]) == [[
        "entailment", "contradiction", "contradiction", "entailment", "neutral",
        "contradiction", "neutral", "neutral"]]
    assert judge.entail([(premise, [])]) == [[]]


def test_judge_protocol_and_factory():
    from tarsier.evaluation.judges import Judge, make_judge

    judge = make_judge("exact")
    assert isinstance(judge, Judge) and judge.name == "exact"


def test_benchmark_scores_perfectly_against_itself(truths):
    """AutoDQ's recall judges reference events against the prediction; precision the reverse."""
    judge = ExactJudge()
    t = truths[0]
    pred_events = judge.extract_events([t["fine"]])[0]
    (rec,) = judge.entail([(t["fine"], t["event_sentences"])])
    (prec,) = judge.entail([(t["fine"], pred_events)])
    assert set(rec) == {"entailment"} and set(prec) == {"entailment"}


def test_the_judge_reads_the_worlds_vocabulary_and_grammar(truths):
    assert exact.COLOURS is vocabulary.COLOUR_NAMES and exact.SHAPES is vocabulary.SHAPES
    for t in truths[:20]:
        for e in t["events"]:
            ev = parse_events(e["sentence"])[0]
            assert ev.sentence() == vocabulary.canonical_sentence(e["colour"], e["shape"], e["verb"], e["args"])


def test_every_judge_keeps_the_same_number_of_events():
    """MAX_EVENTS is defined once (evaluation/parsing.py, the number the AutoDQ extraction prompt
    asks for) and imported by the exact and embed judges."""
    import inspect

    from tarsier import prompts
    from tarsier.evaluation import embed, parsing

    assert exact.MAX_EVENTS == embed.MAX_EVENTS == parsing.MAX_EVENTS
    assert "MAX_EVENTS =" not in inspect.getsource(exact) and "MAX_EVENTS =" not in inspect.getsource(embed)
    assert f"at most {parsing.MAX_EVENTS} events" in prompts.read("autodq/extract")
