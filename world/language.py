"""The world's language: descriptions (fine and brief) and questions about a planned video.

All of it reads the plan record (tarsier.world.plan) and a text stream of its own, so the words
never change what is rendered. Events are told in the canonical grammar of tarsier.world.vocabulary
with small variations (pronouns, connectives, synonyms) that the exact judge understands.
"""
from __future__ import annotations

import itertools
import random
from typing import Any

from tarsier.world.vocabulary import (
    COLOURS,
    DIRECTIONS,
    SHAPES,
    base_phrase,
    canonical_sentence,
    canonical_verb_phrase,
)

NUMBERS = ["zero", "one", "two", "three", "four", "five", "six"]
MCQ_SUFFIX = "Answer with the option's letter from the given choices directly."


def cap(s: str) -> str:
    """`s` with its first letter in upper case."""
    return s[:1].upper() + s[1:]


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _np(colour: str, shape: str, mentioned: set, definite_ok: bool = True) -> str:
    if (colour, shape) in mentioned and definite_ok:
        return f"the {colour} {shape}"
    return _indef(colour, shape)


def _indef(colour: str, shape: str) -> str:
    return f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {shape}"


def _surface_vp(ev: dict[str, Any], rng: random.Random, mentioned: set, brief: bool = False) -> str:
    verb, args = ev["verb"], ev["args"]
    if verb == "move":
        d = args["direction"]
        if d in ("left", "right"):
            return rng.choice([f"moves to the {d}", f"moves {d}", f"slides to the {d}"])
        return rng.choice([f"moves {d}", f"moves {d}ward"])
    if verb == "grow":
        return rng.choice(["grows", "grows bigger", "gets bigger"])
    if verb == "shrink":
        return rng.choice(["shrinks", "gets smaller"])
    if verb == "rotate":
        return rng.choice(["rotates", "spins"])
    if verb == "appear":
        return rng.choice(["appears", "comes into view"])
    if verb == "disappear":
        return rng.choice(["disappears", "vanishes", "fades away"])
    if verb == "change_colour":
        a, b = args["from"], args["to"]
        return rng.choice([f"changes colour from {a} to {b}", f"turns from {a} to {b}", f"turns {b}",
                           f"changes colour to {b}"])
    if verb == "collide":
        obj = _np(args["object_colour"], args["object_shape"], mentioned)
        if brief:
            return f"collides with {obj}"
        return rng.choice([f"collides with {obj} and bounces back", f"hits {obj} and bounces off",
                           f"bumps into {obj} and bounces back"])
    raise ValueError(verb)


def _mark(ev: dict[str, Any], mentioned: set) -> None:
    mentioned.add((ev["colour"], ev["shape"]))
    if ev["verb"] == "change_colour":
        mentioned.add((ev["args"]["to"], ev["shape"]))
    if ev["verb"] == "collide":
        mentioned.add((ev["args"]["object_colour"], ev["args"]["object_shape"]))


def _pan_sentence(direction: str, rng: random.Random) -> str:
    if direction in ("left", "right"):
        return rng.choice([f"The camera pans to the {direction}.", f"The camera slowly pans {direction}."])
    return rng.choice([f"The camera tilts {direction}.", f"The camera slowly pans {direction}."])


def describe_fine(plan: dict[str, Any], rng: random.Random) -> str:
    """The fine description: every shot (background, first shapes, pan) and every event, in order."""
    shots, events, objects = plan["shots"], plan["events"], plan["objects"]
    out: list[str] = []
    mentioned: set = set()
    n_total = len(events)
    done = 0
    last_conn = ""
    for shot in shots:
        s = shot["index"]
        evs = [e for e in events if e["shot"] == s]
        init = [o for o in objects if o["shot"] == s and o["visible"]]
        bg = shot["background"]
        i = 0
        if s == 0:
            form = rng.choice(["list", "on", "shows"])
        else:
            form = rng.choice(["where", "cut_list", "cut_plain"])
        if form in ("list", "shows", "cut_list"):
            nps = [_indef(o["colour"], o["shape"]) for o in init]
            for o in init:
                mentioned.add((o["colour"], o["shape"]))
            if form == "list":
                out.append(cap(f"{_join(nps)} {'is' if len(nps) == 1 else 'are'} on a {bg} background."))
            elif form == "shows":
                out.append(f"The video shows {_join(nps)} on a {bg} background.")
            else:
                out.append(f"Then the scene cuts to a {bg} background with {_join(nps)}.")
        elif form == "on":
            e = evs[0]
            subj = _np(e["colour"], e["shape"], mentioned)
            vp = _surface_vp(e, rng, mentioned)
            _mark(e, mentioned)
            out.append(f"On a {bg} background, {subj} {vp}.")
            i = 1
        elif form == "where":
            e = evs[0]
            subj = _np(e["colour"], e["shape"], mentioned)
            vp = _surface_vp(e, rng, mentioned)
            _mark(e, mentioned)
            out.append(f"The shot changes to a {bg} background, where {subj} {vp}.")
            i = 1
        else:
            out.append(f"The video cuts to a new shot on a {bg} background.")
        if shot["pan"]:
            out.append(_pan_sentence(shot["pan"], rng))
        merged_last = False
        prev = evs[i - 1] if i > 0 else None
        while i < len(evs):
            e = evs[i]
            same = prev is not None and prev["subject_id"] == e["subject_id"]
            is_last = done + i == n_total - 1
            vp = _surface_vp(e, rng, mentioned)
            if same and not merged_last and out and out[-1].endswith(".") and rng.random() < 0.4 \
                    and not out[-1].startswith("The camera"):
                out[-1] = out[-1][:-1] + f" and then {vp}."
                merged_last = True
            else:
                if same:
                    subj = rng.choice(["it", "it", "the shape"])
                else:
                    subj = _np(e["colour"], e["shape"], mentioned)
                if i == 0:
                    conn = ""
                elif is_last and n_total >= 3 and rng.random() < 0.5:
                    conn = "Finally, "
                else:
                    conn = rng.choice([c for c in ("", "Then ", "After that, ", "Next, ")
                                       if c != last_conn or c == ""])
                last_conn = conn
                out.append(conn + (subj if conn else cap(subj)) + f" {vp}.")
                merged_last = False
            _mark(e, mentioned)
            prev = e
            i += 1
        done += len(evs)
    return " ".join(out)


def describe_brief(plan: dict[str, Any], rng: random.Random) -> str:
    """The brief description: one sentence on the first shot's first one or two events."""
    events = plan["events"]
    first_shot = [e for e in events if e["shot"] == 0]
    mentioned: set = set()
    e1 = first_shot[0]
    clause = f"{_indef(e1['colour'], e1['shape'])} {_surface_vp(e1, rng, mentioned, brief=True)}"
    _mark(e1, mentioned)
    other = [e for e in first_shot[1:] if e["subject_id"] != e1["subject_id"]
             and (e["colour"], e["shape"]) not in mentioned]
    if other and rng.random() < 0.5:
        e2 = other[0]
        clause += f" and {_indef(e2['colour'], e2['shape'])} {_surface_vp(e2, rng, mentioned, brief=True)}"
    bg = plan["shots"][0]["background"]
    if rng.random() < 0.5:
        text = f"On a {bg} background, {clause}"
    else:
        text = f"{cap(clause)} on a {bg} background"
    if len(plan["shots"]) > 1:
        text += rng.choice([", then the shot changes", " before a scene cut"])
    return text + "."


def questions(plan: dict[str, Any], rng: random.Random) -> list[dict[str, str]]:
    """Open questions with their exact answers, each record {"type", "question", "answer"}."""
    events, shots, objects = plan["events"], plan["shots"], plan["objects"]
    qa: list[dict[str, str]] = []
    bg_q = "What colour is the background?" if len(shots) == 1 else \
        "What colour is the background at the start?"
    qa.append({"type": "background", "question": bg_q, "answer": cap(shots[0]["background"]) + "."})
    n0 = sum(1 for o in objects if o["shot"] == 0 and o["visible"])
    qa.append({"type": "count", "question": "How many shapes are there at the start?",
               "answer": cap(NUMBERS[n0]) + "."})
    qa.append({"type": "cut", "question": "Does the shot change?",
               "answer": "Yes." if len(shots) > 1 else "No."})
    vp_count: dict[str, int] = {}
    shape_vp_count: dict[tuple[str, str], int] = {}
    for e in events:
        vp = canonical_verb_phrase(e["verb"], e["args"])
        vp_count[vp] = vp_count.get(vp, 0) + 1
        shape_vp_count[(e["shape"], vp)] = shape_vp_count.get((e["shape"], vp), 0) + 1
    for e in events:
        vp = canonical_verb_phrase(e["verb"], e["args"])
        if shape_vp_count[(e["shape"], vp)] == 1 and e["verb"] != "change_colour":
            qa.append({"type": "colour", "question": f"What colour is the {e['shape']} that {vp}?",
                       "answer": cap(e["colour"]) + "."})
        if vp_count[vp] == 1:
            qa.append({"type": "which", "question": f"Which shape {vp}?",
                       "answer": f"The {e['colour']} {e['shape']}."})
    # what does X do first
    seen: set = set()
    for e in events:
        ident = (e["colour"], e["shape"])
        if ident in seen:
            continue
        seen.add(ident)
        own = [x for x in events if (x["colour"], x["shape"]) == ident]
        q = f"What does the {ident[0]} {ident[1]} do{' first' if len(own) > 1 else ''}?"
        qa.append({"type": "first", "question": q,
                   "answer": f"It {canonical_verb_phrase(e['verb'], e['args'])}."})
    # yes/no
    truth = {e["sentence"] for e in events}
    e = rng.choice(events)
    qa.append({"type": "yesno", "question": f"Does the {e['colour']} {e['shape']} "
               f"{base_phrase(e['verb'], e['args'])}?", "answer": "Yes."})
    for cand in _perturb(e, rng):
        if cand["sentence"] not in truth:
            qa.append({"type": "yesno", "question": f"Does the {cand['colour']} {cand['shape']} "
                       f"{base_phrase(cand['verb'], cand['args'])}?", "answer": "No."})
            break
    for a, b in itertools.pairwise(events):
        qa.append({"type": "after", "question": f"What happens after the {a['colour']} {a['shape']} "
                   f"{canonical_verb_phrase(a['verb'], a['args'])}?", "answer": b["sentence"]})
    return qa


def _perturb(e: dict[str, Any], rng: random.Random) -> list[dict[str, Any]]:
    """False variants of an event (same subject, conflicting verb/arg), in random order."""
    c, s = e["colour"], e["shape"]
    cands: list[tuple[str, dict]] = []
    for d in DIRECTIONS:
        cands.append(("move", {"direction": d}))
    cands += [("grow", {}), ("shrink", {}), ("disappear", {})]
    if s != "circle":
        cands.append(("rotate", {}))
    for col in COLOURS:
        if col != c:
            cands.append(("change_colour", {"from": c, "to": col}))
    rng.shuffle(cands)
    out = []
    for verb, args in cands:
        out.append({"colour": c, "shape": s, "verb": verb, "args": args,
                    "sentence": canonical_sentence(c, s, verb, args)})
    return out


def multiple_choice(plan: dict[str, Any], rng: random.Random) -> dict[str, str]:
    """The question "Which of the following happens?" with four options, one true: {"question", "answer"}."""
    events = plan["events"]
    truth = {e["sentence"] for e in events}
    right = rng.choice(events)
    wrong: list[str] = []
    pool = [p for e in events for p in _perturb(e, rng)]
    # also shapes that are not in the video at all
    present = {(e["colour"], e["shape"]) for e in events} | \
        {(o["colour"], o["shape"]) for o in plan["objects"]}
    absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
    for c, s in rng.sample(absent, min(3, len(absent))):
        pool.append({"sentence": canonical_sentence(c, s, right["verb"], right["args"])
                     if right["verb"] not in ("change_colour", "collide")
                     else canonical_sentence(c, s, "grow", {})})
    rng.shuffle(pool)
    for p in pool:
        if p["sentence"] not in truth and p["sentence"] not in wrong:
            wrong.append(p["sentence"])
        if len(wrong) == 3:
            break
    options = wrong + [right["sentence"]]
    rng.shuffle(options)
    letters = "ABCD"
    q = "Which of the following happens in the video?\n" + "\n".join(
        f"{letters[i]}. {o}" for i, o in enumerate(options)) + "\n" + MCQ_SUFFIX
    k = options.index(right["sentence"])
    return {"question": q, "answer": f"{letters[k]}. {right['sentence']}"}


def which_first(plan: dict[str, Any], rng: random.Random) -> dict[str, str]:
    """The question "Which happens first: A, or B?" about two of the events: {"question", "answer"}."""
    events = plan["events"]
    i, j = sorted(rng.sample(range(len(events)), 2))
    a, b = events[i], events[j]
    first = a
    if rng.random() < 0.5:
        a, b = b, a
    q = (f"Which happens first: the {a['colour']} {a['shape']} {canonical_verb_phrase(a['verb'], a['args'])}, "
         f"or the {b['colour']} {b['shape']} {canonical_verb_phrase(b['verb'], b['args'])}?")
    return {"question": q, "answer": first["sentence"]}
