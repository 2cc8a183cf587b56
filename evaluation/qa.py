"""Open-ended video QA judged by an LLM (MSVD-QA, MSR-VTT-QA, TGIF-QA, ActivityNet-QA), and
zero-shot captioning scored with CIDEr-D / BLEU-4 (MSVD, MSR-VTT, VATEX).

QA: the judge (any judge with `judge_qa`: openai:, hf:, exact) answers, per question, whether the
predicted answer is correct ("yes"/"no") and a 0-5 score, the Video-ChatGPT protocol the Tarsier
papers follow. Accuracy = yes / judged; score = mean over judged. A question whose judge output
could not be parsed after the bounded retries is FAILED: counted, excluded from the means, never
dropped. A question with no prediction is MISSING: counted, excluded.

Captioning: CIDEr-D and BLEU-4 (evaluation.cider) against all references of each video after PTB-
style tokenisation; per sub-task the metric is computed on that sub-task's rows alone (its idf from
its own references), overall on all rows. A video with no prediction is MISSING: excluded.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tarsier.evaluation.benchdata import BenchRow
from tarsier.evaluation.cider import bleu4, cider_d, ptb_tokenize

QA_POLICY = {
    "verdict": "the judge answers yes/no (correct or not) and a 0-5 score per question",
    "failed": "questions whose judge output could not be parsed after retries are counted as 'failed' and "
              "excluded from the means",
    "missing": "questions with no prediction are counted as 'missing' and excluded from the means",
    "aggregate": "accuracy = yes / judged, score = mean judged score; overall over questions (and the mean over "
                 "sub-tasks, also reported)",
}

CAPTION_POLICY = {
    "tokenisation": "PTB-style (lower-case, clitics split, punctuation dropped; evaluation/cider.py)",
    "cider": "CIDEr-D: n-grams 1-4, tf-idf over the references of the scored set, clipping, Gaussian length "
             "penalty sigma 6, x10; mean over videos",
    "bleu": "corpus BLEU-4 with the closest reference length",
    "missing": "videos with no prediction are counted as 'missing' and excluded",
    "aggregate": "per sub-task computed on its rows alone; overall on all rows",
}


@dataclass
class QAResult:
    idx: str
    subtask: str
    status: str                    # ok | failed | missing
    question: str
    reference: str
    answer: str | None
    verdict: str | None = None     # yes | no
    score: float | None = None
    video: str | None = None
    extra: dict = field(default_factory=dict)

    def to_record(self, judge: str) -> dict:
        rec = asdict(self)
        rec["category"] = self.subtask
        rec["judge"] = judge
        return rec


def judge_rows(rows: list[BenchRow], answers: dict[str, str | None], judge, *, chunk_size: int = 64,
               progress=None) -> list[QAResult]:
    qa = getattr(judge, "judge_qa", None)
    if qa is None:
        raise ValueError(f"judge {judge.name!r} cannot judge open-ended answers: use openai:MODEL, hf:PATH, "
                         "hf:smollm2 or (synthetic world) exact")
    results = [QAResult(idx=r.idx, subtask=r.subtask, status="missing", question=r.prompt,
                        reference=r.reference or "", answer=answers.get(r.idx), video=r.video) for r in rows]
    todo = [(i, res) for i, res in enumerate(results) if res.idx in answers]
    for start in range(0, len(todo), max(1, chunk_size)):
        chunk = todo[start : start + chunk_size]
        verdicts = qa([(res.question, res.reference, res.answer or "") for _, res in chunk])
        for (_, res), verdict in zip(chunk, verdicts):
            if verdict is None:
                res.status = "failed"
            else:
                res.status, res.verdict, res.score = "ok", verdict["pred"], float(verdict["score"])
        if progress:
            progress(min(len(todo), start + chunk_size), len(todo))
    return results


def _qa_stats(results: list[QAResult]) -> dict:
    ok = [r for r in results if r.status == "ok"]
    return {"accuracy": sum(r.verdict == "yes" for r in ok) / len(ok) if ok else None,
            "score": sum(r.score for r in ok) / len(ok) if ok else None,
            "n": len(results), "scored": len(ok), "failed": sum(r.status == "failed" for r in results),
            "missing": sum(r.status == "missing" for r in results)}


def aggregate_qa(results: list[QAResult]) -> dict:
    groups: dict[str, list[QAResult]] = {}
    for r in results:
        groups.setdefault(r.subtask, []).append(r)
    categories = {name: _qa_stats(groups[name]) for name in sorted(groups)}
    overall = _qa_stats(results)
    accs = [c["accuracy"] for c in categories.values() if c["accuracy"] is not None]
    overall["accuracy_subtasks"] = sum(accs) / len(accs) if accs else None
    overall["categories"] = len(categories)
    return {"overall": overall, "categories": categories}


# ---------------------------------------------------------------------------------------------
@dataclass
class CaptionResult:
    idx: str
    subtask: str
    status: str                    # ok | missing
    question: str
    references: list[str]
    answer: str | None
    cider: float | None = None     # this video's CIDEr-D within the whole set
    video: str | None = None
    extra: dict = field(default_factory=dict)

    def to_record(self, judge: str) -> dict:
        rec = asdict(self)
        rec["category"] = self.subtask
        rec["judge"] = judge
        return rec


def _caption_stats(results: list[CaptionResult]) -> tuple[dict, list[float]]:
    ok = [r for r in results if r.status == "ok"]
    stats = {"n": len(results), "scored": len(ok), "missing": len(results) - len(ok), "cider": None, "bleu4": None}
    per: list[float] = []
    if ok:
        cands = [ptb_tokenize(r.answer or "") for r in ok]
        refs = [[ptb_tokenize(x) for x in r.references] for r in ok]
        stats["cider"], per = cider_d(cands, refs)
        stats["bleu4"] = bleu4(cands, refs)
    return stats, per


def score_captions(rows: list[BenchRow], answers: dict[str, str | None]) -> tuple[list[CaptionResult], dict]:
    results = [CaptionResult(idx=r.idx, subtask=r.subtask, status="ok" if r.idx in answers else "missing",
                             question=r.prompt, references=list(r.references), answer=answers.get(r.idx),
                             video=r.video) for r in rows]
    groups: dict[str, list[CaptionResult]] = {}
    for r in results:
        groups.setdefault(r.subtask, []).append(r)
    categories = {name: _caption_stats(groups[name])[0] for name in sorted(groups)}
    overall, per = _caption_stats(results)
    for r, value in zip([r for r in results if r.status == "ok"], per):
        r.cider = value
    overall["categories"] = len(categories)
    return results, {"overall": overall, "categories": categories}
