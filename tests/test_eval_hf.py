"""The `hf` judge with the real (tiny, weak) SmolLM2-135M-Instruct GGUF, offline. Checks the plumbing,
not the quality: lists of events / labels or None for unparseable answers, and the run completes."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tarsier.evaluation.judges import make_judge
from tarsier.evaluation.parsing import LABELS
from tarsier.evaluation.score_descriptions import score_file

FLAT = Path("/work/shared/dream1k/DREAM-1k.sample.jsonl")


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_hf_smollm2_judge_runs_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    judge = make_judge("hf:smollm2", cache_path=str(tmp_path / "cache.sqlite"), batch_size=4, max_new_tokens=64,
                       device="cpu", parse_retries=1)
    events = judge.extract_events(["A man opens a door, then walks in and sits down.", ""])
    assert events[1] == []
    assert events[0] is None or (isinstance(events[0], list) and all(isinstance(e, str) for e in events[0]))
    labels = judge.entail([("A man opens a door.", ["A man opens a door.", "A cat sleeps."])])
    assert labels[0] is None or (len(labels[0]) == 2 and set(labels[0]) <= set(LABELS))

    rows = [json.loads(line) for line in FLAT.read_text().splitlines()][:1]
    pred = tmp_path / "pred.jsonl"
    pred.write_text("".join(json.dumps({"idx": r["idx"], "prediction": r["text"]["response"]}) + "\n" for r in rows))
    t0 = time.time()
    result = score_file(pred, FLAT, judge, tmp_path / "out", limit=1)
    first = time.time() - t0
    report = result.report
    assert report["judge"]["name"] == "hf:smollm2" and report["counts"]["references"] == 1
    assert report["counts"]["scored"] + report["counts"]["failed"] == 1
    for s in result.samples:
        assert s.status in ("ok", "failed")
        if s.status == "ok":
            assert all(lab in LABELS for lab in (s.recall_labels or []) + (s.precision_labels or []))
    assert (tmp_path / "out" / "samples.jsonl").is_file()
    # the cache replays the whole run without generating
    t0 = time.time()
    again = score_file(pred, FLAT, make_judge("hf:smollm2", cache_path=str(tmp_path / "cache.sqlite"),
                                              max_new_tokens=64, parse_retries=1),
                       tmp_path / "out2", limit=1)
    assert again.report["overall"] == report["overall"]
    print(f"hf:smollm2 1 sample: {first:.1f}s, cached rerun {time.time() - t0:.1f}s, stats {judge.stats}")
