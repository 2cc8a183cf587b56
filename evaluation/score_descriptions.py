"""`tarsier eval autodq` as one call: score a file of descriptions against DREAM-1K references with
AutoDQ (load, join, judge, aggregate, write the report)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tarsier.common.dream import load_references
from tarsier.evaluation.autodq import SampleResult, evaluate
from tarsier.evaluation.predictions import load_predictions, match
from tarsier.evaluation.report import JudgeMismatchError, build_report, existing_judge, write_outputs


@dataclass
class AutoDQResult:
    report: dict
    samples: list[SampleResult]
    paths: dict

    @property
    def failed(self) -> int:
        return self.report["counts"]["failed"]


def score_file(predictions: str | Path, reference: str | Path, judge, out_dir: str | Path, *,
               limit: int | None = None, progress=None, replace_other_judge: bool = False,
               chunk_size: int = 64) -> AutoDQResult:
    """Score a prediction file against a DREAM-1K-format reference with `judge`; write report.json,
    report.md and samples.jsonl into `out_dir`. Refuses to overwrite a report made by another judge
    unless `replace_other_judge`."""
    previous = existing_judge(out_dir)
    if previous and previous != judge.name and not replace_other_judge:
        raise JudgeMismatchError(
            f"{out_dir} holds a report by judge {previous!r}; refusing to mix it with {judge.name!r} "
            "(use another output folder)")
    references = load_references(reference)
    if limit:
        references = references[: int(limit)]
    by_video, by_idx = load_predictions(predictions)
    matched, unmatched = match(references, by_video, by_idx)
    n_predictions = len(by_video) + len(by_idx)
    if n_predictions and not any(p is not None for p in matched.values()):
        from tarsier.evaluation.tasks import MatchError, no_match_message

        ref = references[0]
        raise MatchError(no_match_message(predictions, n_predictions, len(references), unmatched[0] if unmatched
                                          else None, f"idx={ref.idx}" + (f" / video={ref.video_file}"
                                                                         if ref.video_file else "")))
    samples = evaluate(references, matched, judge, progress=progress, chunk_size=chunk_size)
    counts = {
        "predictions": len(by_video) + len(by_idx),
        "matched": sum(p is not None for p in matched.values()),
        "no_prediction": sum(p is None for p in matched.values()),
        "prediction_errors": sum(p is not None and p.description is None for p in matched.values()),
        "unmatched_predictions": len(unmatched),
    }
    meta = {"predictions": str(predictions), "reference": str(reference), "limit": limit}
    failure = getattr(judge, "failure_message", None)
    if failure:
        meta["judge_failure"] = failure
    report = build_report(samples, judge, counts=counts, meta=meta)
    if unmatched:
        report["unmatched_predictions"] = unmatched[:50]
    paths = write_outputs(out_dir, report, samples)
    return AutoDQResult(report=report, samples=samples, paths=paths)
