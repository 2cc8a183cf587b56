"""Evaluation: AutoDQ (event extraction + entailment), judges, DREAM-1K loading, reports.

    from tarsier.evaluation import make_judge, score_file
    result = score_file("descriptions.jsonl", "DREAM-1k.jsonl", make_judge("embed"), "eval-out")

Nothing here imports torch at import time."""
from __future__ import annotations


def make_judge(spec: str, **opts):
    from tarsier.evaluation.judges import make_judge as _make

    return _make(spec, **opts)


def score_file(*args, **kwargs):
    from tarsier.evaluation.score_descriptions import score_file as _score

    return _score(*args, **kwargs)


__all__ = ["make_judge", "score_file"]
