"""The `exact` judge: a deterministic event matcher for the synthetic world's grammar.

It parses descriptions written in the synthetic grammar (tarsier.world.vocabulary), possibly by a weak
model, into canonical event sentences ("The red circle moves to the left."), resolving pronouns
("it", "the shape") and elided subjects ("... and then grows") to the last named subject, and
ignoring what AutoDQ ignores (backgrounds, scene cuts, camera motion, static facts). Junk text is
tolerated: whatever does not match the grammar is skipped.

Protocol (shared with the LLM judges of the evaluation package):
    extract_events(texts) -> list[list[str] | None]
    entail(pairs)         -> list[list[str] | None]    labels: entailment / contradiction / neutral
No model, no network: it only knows the synthetic world, so scores on real video mean nothing.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from tarsier.evaluation.parsing import MAX_EVENTS
from tarsier.world.vocabulary import COLOUR_NAMES as COLOURS
from tarsier.world.vocabulary import SHAPES, canonical_sentence

_C = "(" + "|".join(COLOURS) + ")"
_S = "(" + "|".join(SHAPES) + ")s?"
_NP = rf"(?:an?|the|another)\s+{_C}\s+{_S}\b"
_NP_RE = re.compile(rf"\b{_NP}")
_NP_BARE = rf"(?:(?:an?|the|another)\s+)?{_C}\s+{_S}\b"
_PRONOUN_RE = re.compile(r"\b(?:it|the\s+(?:same\s+)?shape|this\s+shape|that\s+shape)\b")

# Verb patterns, most specific first. Each has a kind and captures what it needs.
_VERB_PATTERNS: list[tuple[str, str]] = [
    ("collide", (rf"(?:collides?|collided)\s+with\s+{_NP_BARE}(?:\s*,?\s*and\s+(?:then\s+)?"
                rf"(?:bounces?|bounced)(?:\s+(?:back|off|away|apart))?)?")),
    ("collide", (rf"(?:hits|hit|bumps?\s+into|bumped\s+into|crashes\s+into|crashed\s+into)\s+{_NP_BARE}"
                rf"(?:\s*,?\s*and\s+(?:then\s+)?(?:bounces?|bounced)(?:\s+(?:back|off|away|apart))?)?")),
    ("change_from", rf"(?:changes?|changed|turns?|turned)\s+(?:its\s+)?(?:colou?r\s+)?from\s+{_C}\s+to\s+{_C}\b"),
    ("change_to", rf"(?:changes?|changed)\s+(?:its\s+)?(?:colou?r\s+)?(?:in)?to\s+{_C}\b"),
    ("change_to", rf"(?:turns?|turned|becomes?|became)\s+{_C}\b"),
    ("move", (r"(?:moves?|moved|moving|slides?|slid|sliding|goes|went|travels?|travelled|traveled)"
             r"\s+(?:to\s+the\s+|towards?\s+the\s+)?(left|right)\b")),
    ("move", r"(?:moves?|moved|moving|goes|went|travels?|slides?|slid)\s+(up|down)(?:wards?)?\b"),
    ("move", r"(rises|rose|falls|fell|drops|dropped)\b"),
    ("grow", (r"(?:grows?|grew|growing)(?:\s+(?:bigger|larger))?\b|(?:gets|got|becomes|became)\s+(?:bigger|larger)\b"
             r"|(?:expands|expanded|enlarges|enlarged)\b")),
    ("shrink", r"(?:shrinks?|shrank|shrunk|shrinking)\b|(?:gets|got|becomes|became)\s+smaller\b"),
    ("rotate", r"(?:rotates?|rotated|rotating|spins?|spun|spinning)\b|turns?\s+around\b"),
    ("disappear", r"(?:disappears?|disappeared|vanishes|vanished)\b|fades?\s+(?:away|out)\b"),
    ("appear", r"(?:appears?|appeared)\b|comes?\s+into\s+view\b|came\s+into\s+view\b"),
]
_VERB_RE = re.compile("|".join(f"(?P<v{i}>\\b{p})" for i, (_, p) in enumerate(_VERB_PATTERNS)))
_SENT_SPLIT = re.compile(r"[.!?;\n]+")
_NEGATION = re.compile(r"\b(?:not|never|doesn't|does not|don't|no longer)\s+$")


@dataclass(frozen=True)
class Event:
    colour: str
    shape: str
    verb: str
    args: tuple = field(default=())   # sorted (key, value) pairs

    @property
    def arg(self) -> dict:
        return dict(self.args)

    def sentence(self) -> str:
        return canonical_sentence(self.colour, self.shape, self.verb, self.arg)


def _normalise(text: str) -> str:
    t = text.lower()
    t = re.sub(r"\bcolor", "colour", t)
    t = re.sub(r"\bgrey\b", "gray", t)
    t = re.sub(r"\bcircular\b", "circle", t)
    t = t.replace("’", "'")
    return t


_MOVE_ALIAS = {"rises": "up", "rose": "up", "falls": "down", "fell": "down", "drops": "down", "dropped": "down"}


def parse_events(text: str) -> list[Event]:
    """All events of a description, in order, subjects resolved; duplicates dropped."""
    if not isinstance(text, str):
        return []
    norm = _normalise(text)
    events: list[Event] = []
    last: tuple[str, str] | None = None
    for sentence in _SENT_SPLIT.split(norm):
        pos = 0
        for m in _VERB_RE.finditer(sentence):
            seg = sentence[pos:m.start()]
            pos = m.end()
            if _NEGATION.search(seg):
                continue
            # subject: the last noun phrase or pronoun before the verb (within this clause)
            subj = None
            best = -1
            for nm in _NP_RE.finditer(seg):
                if nm.start() > best:
                    best, subj = nm.start(), (nm.group(1), nm.group(2))
            for pm in _PRONOUN_RE.finditer(seg):
                if pm.start() > best and last is not None:
                    best, subj = pm.start(), last
            if subj is None:
                subj = last   # elided subject: "... and then grows"
            if subj is None:
                continue
            kind_idx = next(i for i in range(len(_VERB_PATTERNS)) if m.group(f"v{i}") is not None)
            kind = _VERB_PATTERNS[kind_idx][0]
            sub = re.match(_VERB_PATTERNS[kind_idx][1], m.group(f"v{kind_idx}"))
            g = [x for x in sub.groups()] if sub else []
            colour, shape = subj
            ev: Event | None = None
            if kind == "move":
                d = g[0]
                ev = Event(colour, shape, "move", (("direction", _MOVE_ALIAS.get(d, d)),))
            elif kind == "change_from":
                a, b = g[0], g[1]
                if a != colour or a == b:
                    # the subject's colour before the change is the 'from' colour
                    colour = a
                if a != b:
                    ev = Event(colour, shape, "change_colour", (("from", a), ("to", b)))
            elif kind == "change_to":
                b = g[0]
                if b != colour:
                    ev = Event(colour, shape, "change_colour", (("from", colour), ("to", b)))
            elif kind == "collide":
                oc, os_ = g[0], g[1]
                if (oc, os_) != (colour, shape):
                    ev = Event(colour, shape, "collide", (("object_colour", oc), ("object_shape", os_)))
            else:
                ev = Event(colour, shape, kind, ())
            if ev is None:
                continue
            last = (ev.arg["to"], shape) if ev.verb == "change_colour" else (colour, shape)
            if ev not in events:
                events.append(ev)
    return events


def canonical(sentence: str) -> str | None:
    """The canonical form of a one-event sentence, or None when it is not exactly one event."""
    evs = parse_events(sentence)
    return evs[0].sentence() if len(evs) == 1 else None


def _conflicts(h: Event, p: Event) -> bool:
    if (h.colour, h.shape) != (p.colour, p.shape):
        return False
    if h.verb == p.verb == "move":
        return h.arg["direction"] != p.arg["direction"]
    if {h.verb, p.verb} == {"grow", "shrink"}:
        return True
    if h.verb == p.verb == "change_colour":
        return h.arg["to"] != p.arg["to"]
    return False


class ExactJudge:
    """Exact AutoDQ judge for the synthetic grammar (see module docstring)."""

    name = "exact"
    approximate = False
    note = "Exact parser of the synthetic grammar: meaningful only for descriptions of the synthetic world."

    def extract_events(self, texts: list[str]) -> list[list[str] | None]:
        out: list[list[str] | None] = []
        for t in texts:
            if not isinstance(t, str):
                out.append(None)
                continue
            out.append([e.sentence() for e in parse_events(t)][:MAX_EVENTS])
        return out

    def entail(self, pairs: list[tuple[str, list[str]]]) -> list[list[str] | None]:
        out: list[list[str] | None] = []
        for premise, hyps in pairs:
            if not isinstance(premise, str) or hyps is None:
                out.append(None)
                continue
            pev = parse_events(premise)
            pset = set(pev)
            labels = []
            for h in hyps:
                hev = parse_events(h) if isinstance(h, str) else []
                if len(hev) != 1:
                    labels.append("neutral")
                elif hev[0] in pset:
                    labels.append("entailment")
                elif any(_conflicts(hev[0], p) for p in pev):
                    labels.append("contradiction")
                else:
                    labels.append("neutral")
            out.append(labels)
        return out


    def judge_qa(self, items: list[tuple[str, str, str]]) -> list[dict | None]:
        """Open-ended QA on the synthetic world: correct when the normalised answers are equal
        (case, punctuation and articles ignored) or, for answers that are events, when both parse to
        the same events; score 5 or 0."""
        out: list[dict | None] = []
        for _question, answer, prediction in items:
            if not isinstance(prediction, str) or not isinstance(answer, str):
                out.append(None)
                continue
            same = _answer_words(answer) == _answer_words(prediction) and bool(_answer_words(answer))
            if not same:
                ref_events = parse_events(answer)
                same = bool(ref_events) and set(ref_events) == set(parse_events(prediction))
            out.append({"pred": "yes" if same else "no", "score": 5.0 if same else 0.0})
        return out


def _answer_words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in ("a", "an", "the")]


def score(pred_text: str, ref_events: list[str]) -> tuple[float, float]:
    """(precision, recall) of a predicted description against reference event sentences.

    Precision: predicted events found among the reference events; recall: reference events found
    among the predicted events. No predicted events gives precision 0.
    """
    pred = parse_events(pred_text)
    ref: list[Event] = []
    for s in ref_events:
        ref.extend(parse_events(s)[:1])
    rset, pset = set(ref), set(pred)
    precision = sum(1 for e in pred if e in rset) / len(pred) if pred else 0.0
    recall = sum(1 for e in ref if e in pset) / len(ref_events) if ref_events else 0.0
    return precision, recall
