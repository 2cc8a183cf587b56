"""Multiple-choice video QA: reading the chosen letter and scoring accuracy.

Reading an answer (`parse_choice`; the answer is what the model wrote AFTER the forced prefix,
e.g. after " Answer: ("):
1. leading spaces and opening brackets are skipped; if what follows is one letter or a number
   standing alone (followed by a non-alphanumeric character or the end: "B", "B)", "b.", "(2)"),
   that is the choice: a number k means the k-th option (1 -> A), a letter is taken case-blind;
2. otherwise the first "(X)" in the text, then the first "answer is X" / "option X";
3. a choice outside the row's options (E of four, 0, 5 of four) or no choice at all is INVALID:
   it counts as wrong and is reported as invalid.
The upstream evaluator reads the first character after " Answer: ("; rule 1 is the same for every
answer of that shape.

Scoring: per sub-task, accuracy = correct / answered (invalid answers count as answered and wrong);
overall, BOTH the mean over sub-tasks (what MVBench / TVBench tables print) and the mean over
questions are reported. A reference row with no prediction is "missing": excluded from the
accuracies and counted (the CLI says so and exits 1).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from tarsier.evaluation.benchdata import BenchRow

_LEAD = re.compile(r"^[\s(\[{<*\"']*([A-Za-z]|\d{1,2})(?![A-Za-z0-9])")
_PAREN = re.compile(r"\(([A-Za-z]|\d{1,2})\)")
_SAID = re.compile(r"\b(?:answer|option|choice)\s*(?:is|:)?\s*\(?([A-Za-z]|\d{1,2})(?![A-Za-z0-9])", re.IGNORECASE)

POLICY = {
    "parse": "the first option letter of the answer after the forced prefix (digits 1.. map to A..; "
             "brackets ignored; case-blind); else the first '(X)'; else 'answer is X'",
    "invalid": "an answer with no valid option letter counts as wrong and is reported as invalid",
    "missing": "a question with no prediction is excluded from the accuracies and counted as missing",
    "aggregate": "per sub-task accuracy = correct / answered; overall: mean over sub-tasks AND mean over "
                 "questions, both reported",
}


def _letter(token: str, n_options: int) -> str | None:
    if token.isdigit():
        k = int(token)
        return chr(ord("A") + k - 1) if 1 <= k <= n_options else None
    k = ord(token.upper()) - ord("A")
    return token.upper() if 0 <= k < n_options else None


def parse_choice(text: str | None, n_options: int) -> str | None:
    """The option letter an answer chose, or None (invalid). See the module docstring."""
    if not text or not text.strip():
        return None
    m = _LEAD.match(text)
    if m and (letter := _letter(m.group(1), n_options)) is not None:
        return letter
    for pattern in (_PAREN, _SAID):
        for m in pattern.finditer(text):
            if (letter := _letter(m.group(1), n_options)) is not None:
                return letter
    return None


@dataclass
class MCQResult:
    idx: str
    subtask: str
    status: str                  # correct | wrong | invalid | missing
    question: str
    options: list
    reference: str
    answer: str | None           # the model's text after the prefix
    choice: str | None           # parsed letter (or the option picked by likelihood)
    video: str | None = None
    scores: dict | None = None   # likelihood mode: letter -> log-probability
    extra: dict = field(default_factory=dict)

    @property
    def category(self) -> str:
        return self.subtask

    def to_record(self, judge: str) -> dict:
        rec = asdict(self)
        rec["category"] = self.subtask
        rec["judge"] = judge
        rec["options"] = [{"letter": a, "text": b} for a, b in self.options]
        return rec


def score_rows(rows: list[BenchRow], answers: dict[str, str | None], *, choices: dict[str, str] | None = None,
               scores: dict[str, dict] | None = None) -> list[MCQResult]:
    """One MCQResult per row. `answers`: idx -> text after the prefix (absent: missing); `choices`
    (likelihood mode): idx -> letter picked without parsing."""
    out = []
    for r in rows:
        res = MCQResult(idx=r.idx, subtask=r.subtask, status="missing", question=r.prompt, options=r.options,
                        reference=r.reference or "", answer=None, choice=None, video=r.video)
        if choices is not None and r.idx in choices:
            res.choice = choices[r.idx]
            res.answer = answers.get(r.idx, res.choice)
            res.scores = (scores or {}).get(r.idx)
        elif r.idx in answers:
            res.answer = answers[r.idx]
            res.choice = parse_choice(res.answer, len(r.options))
        else:
            out.append(res)
            continue
        if res.choice is None:
            res.status = "invalid"
        else:
            res.status = "correct" if res.choice == r.reference else "wrong"
        out.append(res)
    return out


def _stats(results: list[MCQResult]) -> dict:
    answered = [r for r in results if r.status != "missing"]
    correct = sum(r.status == "correct" for r in answered)
    return {"accuracy": correct / len(answered) if answered else None, "n": len(results),
            "answered": len(answered), "correct": correct,
            "wrong": sum(r.status == "wrong" for r in answered),
            "invalid": sum(r.status == "invalid" for r in answered),
            "missing": sum(r.status == "missing" for r in results)}


def aggregate(results: list[MCQResult]) -> dict:
    groups: dict[str, list[MCQResult]] = {}
    for r in results:
        groups.setdefault(r.subtask, []).append(r)
    categories = {name: _stats(groups[name]) for name in sorted(groups)}
    overall = _stats(results)
    accs = [c["accuracy"] for c in categories.values() if c["accuracy"] is not None]
    overall["accuracy_questions"] = overall.pop("accuracy")
    overall["accuracy_subtasks"] = sum(accs) / len(accs) if accs else None
    overall["accuracy"] = overall["accuracy_subtasks"]
    overall["categories"] = len(categories)
    return {"overall": overall, "categories": categories}
