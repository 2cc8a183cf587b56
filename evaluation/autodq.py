"""AutoDQ (Tarsier, arXiv 2407.00634): scoring descriptions by their events.

1. events: reference events are `extra_info.events` when the row has them, else the judge extracts
   them from the reference description; predicted events are always extracted by the judge (at
   most 10 atomic action events).
2. recall    = entailed reference events / reference events, each judged against the prediction;
   precision = entailed predicted events / predicted events, each judged against the reference.
3. per category: mean recall and mean precision over samples; overall R and P = unweighted means of
   the category means; F1 = 2PR/(P+R) of those means (never a mean of per-sample F1).

Sample policy (also written into every report under "policy"):
* failed  - the judge's output could not be parsed (or the call failed) after its bounded retries:
            the sample is EXCLUDED from the means and counted as "failed" in its category;
* missing - no prediction for the video, or the video failed to describe (`error` record): recall
            counts as 0 (every reference event is missed); precision is undefined and excluded;
* a sample with no reference events has no recall, one with no predicted events no precision:
  those values are left out of the respective means (counted as n_recall / n_precision).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tarsier.common.dream import CATEGORIES, Reference
from tarsier.evaluation.predictions import Prediction

ENTAILED = "entailment"

POLICY = {
    "failed": "samples whose judge output could not be parsed after retries are excluded from the means "
              "and counted as 'failed'",
    "missing": "videos with no prediction (or a failed description) score recall 0 and are excluded "
               "from precision; counted as 'missing'",
    "empty": "a sample with no reference events has no recall, one with no predicted events no precision; "
             "such values are left out of the means",
    "aggregate": "per category: mean recall / precision over samples; overall: unweighted mean of the "
                 "category means; F1 = 2PR/(P+R) of those means",
    "buckets": "within a bucket, R and P are plain means over its samples (not category-weighted)",
}


@dataclass
class SampleResult:
    idx: str
    category: str
    status: str                         # ok | failed | missing
    reference: str
    prediction: str | None
    video: str | None = None
    ref_events: list[str] | None = None
    ref_events_source: str = "annotation"   # annotation | extracted
    pred_events: list[str] | None = None
    recall_labels: list[str] | None = None       # one per reference event, judged against the prediction
    precision_labels: list[str] | None = None    # one per predicted event, judged against the reference
    recall: float | None = None
    precision: float | None = None
    note: str | None = None
    extra: dict = field(default_factory=dict)

    def to_record(self, judge: str) -> dict:
        record = asdict(self)
        record["judge"] = judge
        record["recall_judgements"] = [
            {"event": e, "label": lab} for e, lab in zip(self.ref_events or [], self.recall_labels or [])]
        record["precision_judgements"] = [
            {"event": e, "label": lab} for e, lab in zip(self.pred_events or [], self.precision_labels or [])]
        del record["recall_labels"], record["precision_labels"]
        return record


def _fraction(labels: list[str]) -> float:
    return sum(label == ENTAILED for label in labels) / len(labels)


def _valid(labels, n) -> bool:
    return isinstance(labels, list) and len(labels) == n


def evaluate(references: list[Reference], matched: dict[str, Prediction | None], judge, *,
             chunk_size: int = 64, progress=None) -> list[SampleResult]:
    """Score every reference row; `matched` maps reference idx -> Prediction or None.
    Work is done in chunks of `chunk_size` samples; `progress(done, total)` is called after each."""
    results: list[SampleResult] = []
    total = len(references)
    for start in range(0, total, max(1, chunk_size)):
        results.extend(_evaluate_chunk(references[start : start + chunk_size], matched, judge))
        if progress:
            progress(min(total, start + chunk_size), total)
    return results


def _evaluate_chunk(references, matched, judge) -> list[SampleResult]:
    samples = []
    for ref in references:
        pred = matched.get(ref.idx)
        extra = {k: ref.extra.get(k) for k in ("duration", "n_shots", "n_subjects", "n_events") if k in ref.extra}
        sample = SampleResult(
            idx=ref.idx, category=ref.category, status="ok", reference=ref.description,
            prediction=pred.description if pred else None, video=(pred.video if pred else None) or ref.video_file,
            ref_events=list(ref.events) if ref.events is not None else None,
            ref_events_source="annotation" if ref.events is not None else "extracted", extra=extra)
        if pred is None:
            sample.status, sample.note = "missing", "no prediction for this video"
        elif pred.description is None:
            sample.status, sample.note = "missing", f"description failed: {pred.error}"
        samples.append(sample)

    # 1. event extraction (reference rows without annotated events, and every prediction)
    jobs: list[tuple[SampleResult, str]] = []
    for s in samples:
        if s.ref_events is None:
            jobs.append((s, "ref"))
        if s.status == "ok":
            jobs.append((s, "pred"))
    texts = [s.reference if which == "ref" else (s.prediction or "") for s, which in jobs]
    extracted = judge.extract_events(texts) if texts else []
    for (s, which), events in zip(jobs, extracted):
        if events is None or not isinstance(events, list):
            s.status, s.note = "failed", f"could not extract {'reference' if which == 'ref' else 'predicted'} events"
        elif which == "ref":
            s.ref_events = list(events)
        else:
            s.pred_events = list(events)
    for s in samples:
        if s.ref_events is None and s.status != "failed":
            s.status, s.note = "failed", "could not extract reference events"

    # 2. entailment
    pairs, owners = [], []
    for s in samples:
        if s.status == "failed":
            continue
        if s.status == "ok":
            if s.ref_events:
                pairs.append((s.prediction or "", s.ref_events))
                owners.append((s, "recall"))
            if s.pred_events:
                pairs.append((s.reference, s.pred_events))
                owners.append((s, "precision"))
    labels = judge.entail(pairs) if pairs else []
    for (s, which), lab in zip(owners, labels):
        n = len(s.ref_events if which == "recall" else s.pred_events)
        if not _valid(lab, n):
            s.status, s.note = "failed", f"could not judge {'reference' if which == 'recall' else 'predicted'} events"
            continue
        if which == "recall":
            s.recall_labels = list(lab)
        else:
            s.precision_labels = list(lab)

    # 3. per-sample scores
    for s in samples:
        if s.status == "failed":
            s.recall = s.precision = None
        elif s.status == "missing":
            s.recall = 0.0 if s.ref_events else None
            s.precision = None
        else:
            s.recall = _fraction(s.recall_labels) if s.ref_events else None
            s.precision = _fraction(s.precision_labels) if s.pred_events else None
    return samples


# ----------------------------------------------------------------------------------------------
def f1(p: float | None, r: float | None) -> float | None:
    if p is None or r is None:
        return None
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _stats(samples: list[SampleResult]) -> dict:
    used = [s for s in samples if s.status != "failed"]
    recall = [s.recall for s in used if s.recall is not None]
    precision = [s.precision for s in used if s.precision is not None]
    r, p = _mean(recall), _mean(precision)
    return {
        "recall": r, "precision": p, "f1": f1(p, r),
        "n": len(samples), "scored": sum(s.status == "ok" for s in samples),
        "failed": sum(s.status == "failed" for s in samples),
        "missing": sum(s.status == "missing" for s in samples),
        "n_recall": len(recall), "n_precision": len(precision),
    }


def _bucket(value, edges: list[tuple[float, str]], last: str) -> str:
    if value is None:
        return "unknown"
    for upper, label in edges:
        if value < upper:
            return label
    return last


BUCKETS = {
    "events": (lambda s: len(s.ref_events) if s.ref_events is not None else s.extra.get("n_events"),
               [(1, "0"), (4, "1-3"), (7, "4-6"), (10, "7-9")], "10+"),
    "shots": (lambda s: s.extra.get("n_shots"), [(2, "1"), (3, "2")], "3+"),
    "subjects": (lambda s: s.extra.get("n_subjects"), [(2, "1"), (3, "2"), (5, "3-4")], "5+"),
    "duration": (lambda s: s.extra.get("duration"), [(5, "<5s"), (10, "5-10s"), (20, "10-20s")], "20s+"),
}


def category_order(names) -> list[str]:
    names = set(names)
    return [c for c in CATEGORIES if c in names] + sorted(n for n in names if n not in CATEGORIES)


def aggregate(samples: list[SampleResult]) -> dict:
    by_cat: dict[str, list[SampleResult]] = {}
    for s in samples:
        by_cat.setdefault(s.category, []).append(s)
    categories = {c: _stats(by_cat[c]) for c in category_order(by_cat)}
    r = _mean(c["recall"] for c in categories.values())
    p = _mean(c["precision"] for c in categories.values())
    overall = {
        "recall": r, "precision": p, "f1": f1(p, r),
        "n": len(samples),
        **{k: sum(c[k] for c in categories.values()) for k in ("scored", "failed", "missing", "n_recall", "n_precision")},
        "categories": len(categories),
    }
    buckets = {}
    for dim, (value_of, edges, last) in BUCKETS.items():
        groups: dict[str, list[SampleResult]] = {}
        for s in samples:
            try:
                value = value_of(s)
                value = float(value) if value is not None else None
            except (TypeError, ValueError):
                value = None
            groups.setdefault(_bucket(value, edges, last), []).append(s)
        labels = [lab for _, lab in edges] + [last, "unknown"]
        buckets[dim] = {lab: _stats(groups[lab]) for lab in labels if lab in groups}
    return {"overall": overall, "categories": categories, "buckets": buckets}


# ---------------------------------------------------------------------------------------------
# Candidates of one clip, for DPO preference pairs (tarsier train dpo-pairs)
# ---------------------------------------------------------------------------------------------
def score_candidates(judge, reference: str, texts: list[str]) -> list[dict | None]:
    """AutoDQ of every candidate against the reference: {"precision", "recall", "f1"}, or None when the
    judge could not score it (unparsed output, or a reference without events). A candidate without
    events has precision 0."""
    events = judge.extract_events([reference])[0]
    if not events:
        return [None] * len(texts)
    refs = [Reference(idx=str(i), category="pairs", dataset="pairs", description=reference, events=list(events),
                      video_file=None) for i in range(len(texts))]
    matched = {str(i): Prediction(key=str(i), description=t, idx=str(i)) for i, t in enumerate(texts)}
    out: list[dict | None] = []
    for s in evaluate(refs, matched, judge):
        if s.status != "ok" or s.recall is None:
            out.append(None)
            continue
        p = s.precision if s.precision is not None else 0.0
        out.append({"precision": round(p, 6), "recall": round(s.recall, 6), "f1": round(f1(p, s.recall) or 0.0, 6)})
    return out


class CandidateScorer:
    """The scorer trainers.pairs.build_pairs takes (training never imports evaluation: the CLI wires
    this in): scorer(reference, texts) is score_candidates with a judge, given, or built from a
    `--judge` spec on first use (so a rerun with every clip done never builds one). `name` is the
    judge's, recorded in the pairs; close() closes a judge built here."""

    def __init__(self, judge=None, *, spec: str | None = None, options: dict | None = None):
        if judge is None and spec is None:
            raise ValueError("a judge or a judge spec is needed")
        self._judge, self._spec, self._options = judge, spec, dict(options or {})
        self._built = False

    @property
    def judge(self):
        if self._judge is None:
            from tarsier.evaluation.judges import make_judge

            self._judge = make_judge(self._spec, **self._options)
            self._built = True
        return self._judge

    @property
    def name(self) -> str:
        return getattr(self.judge, "name", self._spec)

    def __call__(self, reference: str, texts: list[str]) -> list[dict | None]:
        return score_candidates(self.judge, reference, texts)

    def close(self) -> None:
        close = getattr(self._judge, "close", None)
        if self._built and callable(close):
            close()
