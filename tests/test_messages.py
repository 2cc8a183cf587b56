"""The messages format has one home (tarsier.common.messages): what it writes, its readers read back;
the DREAM-1K references (tarsier.common.dream) read the flat and the messages files alike; the DPO
pair scorer builds its judge only when it is first needed."""
from __future__ import annotations

from pathlib import Path

import pytest

from tarsier.common.dream import load_references
from tarsier.common.messages import (
    assistant_turn,
    parse_messages_sample,
    parse_sample,
    read_turns,
    user_turn,
    video_spec,
)

DREAM = Path("/work/shared/dream1k")


def test_written_rows_read_back():
    row = {"messages": [user_turn(video_spec("videos/a.mp4", 1.0, 4.0, [1.0, 2.0]), "<video>\nDescribe it."),
                        assistant_turn("A red circle moves.")]}
    sample, err = parse_messages_sample(row)
    assert err is None
    assert sample == {"video_file": "videos/a.mp4", "start": 1.0, "end": 4.0, "frames": [1.0, 2.0],
                      "prompt": "Describe it.", "answer": "A red circle moves."}
    assert parse_sample(row) == (sample, None)
    assert video_spec("v.mp4") == {"video_file": "v.mp4"}   # start, end and frames only when given
    turns = read_turns(row)
    assert (turns.prompt, turns.video, turns.references, turns.prefix) == \
        ("<video>\nDescribe it.", "videos/a.mp4", [], "A red circle moves.")


def test_flat_rows_are_samples_too():
    sample, err = parse_sample({"video_file": "b.mp4", "text": {"prompt": "<video>\nQ", "response": " A "}})
    assert err is None and (sample["prompt"], sample["answer"]) == ("Q", "A")
    assert parse_sample({"video_file": "b.mp4", "text": {"prompt": "Q"}}) == (None, "empty answer")


@pytest.mark.skipif(not DREAM.is_dir(), reason="needs the DREAM-1K samples")
def test_dream_references_are_the_same_in_both_formats():
    flat = load_references(DREAM / "DREAM-1k.sample.jsonl")
    messages = load_references(DREAM / "DREAM-1k.messages-format.sample.jsonl")
    assert [(r.idx, r.category, r.description, r.events, r.video_file) for r in flat] == \
        [(r.idx, r.category, r.description, r.events, r.video_file) for r in messages]


def test_candidate_scorer_builds_its_judge_on_first_use():
    from tarsier.evaluation.autodq import CandidateScorer

    scorer = CandidateScorer(spec="exact")
    assert scorer._judge is None
    assert scorer.name == "exact" and scorer._judge is not None
    scorer.close()
    with pytest.raises(ValueError):
        CandidateScorer()
