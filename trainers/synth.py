"""The synthetic world: short rendered videos of coloured shapes with exact ground truth.

Every video is planned from `random.Random(f"{seed}:{index}")` (events, timing, layout) and
described from a second stream `random.Random(f"{seed}:{index}:text")`, then rendered with numpy
masks and encoded with PyAV (libx264, one thread per encoder). The same seed gives the same files,
byte for byte, whatever the number of worker processes.

Grammar (canonical event sentences; the fine/brief descriptions use small variations of them):
    The {colour} {shape} moves to the left. / moves to the right. / moves up. / moves down.
    The {colour} {shape} grows. / shrinks. / rotates. / appears. / disappears.
    The {colour} {shape} changes colour from {colour} to {colour}.
    The {colour} {shape} collides with the {colour} {shape} and bounces back.
Scene cuts and camera pans are mentioned in the descriptions but are not events (as in DREAM-1K).

OUT layout:
    videos/s{seed}_{index:05d}.mp4     the clips
    truth.jsonl                         one record of ground truth per video
    stage1/{caption,qa,action,mcq,order}.jsonl + stage1/mixture.json
    stage2/describe.jsonl + stage2/mixture.json
    benchmark.jsonl                     DREAM-1K "messages" format with reference events
    bench/{mcq,qa,caption}.jsonl        the other benchmark types in the messages format upstream publishes
                                        (evaluation/benchdata.py): `tarsier eval bench --videos OUT`
"""
from __future__ import annotations

import itertools
import json
import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATASET = "synthetic/shapes"

SHAPES = ["circle", "square", "triangle", "star", "hexagon"]
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "blue": (50, 90, 240),
    "green": (40, 190, 70),
    "yellow": (245, 225, 40),
    "purple": (160, 70, 210),
    "orange": (250, 140, 20),
    "white": (245, 245, 245),
}
# Background names never overlap shape colour names, so "a gray background" is never a subject.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "gray": (120, 120, 120),
    "black": (22, 22, 26),
    "brown": (105, 70, 40),
    "teal": (20, 105, 110),
    "navy": (20, 30, 80),
}
VERBS = ["move", "grow", "shrink", "rotate", "appear", "disappear", "change_colour", "collide"]
DIRECTIONS = ["left", "right", "up", "down"]
_VERB_WEIGHTS = {"move": 3.0, "grow": 1.0, "shrink": 1.0, "rotate": 1.0, "appear": 0.7,
                 "disappear": 0.5, "change_colour": 0.8, "collide": 0.8}
_DIR_VEC = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
CUTS_PROB = 0.3   # default chance that a video has a scene cut
PAN_PROB = 0.3    # default chance that a shot pans
_NUMBERS = ["zero", "one", "two", "three", "four", "five", "six"]

BRIEF_PROMPTS = [
    "Describe the video in one short sentence.",
    "Summarize the video in one sentence.",
    "Give a brief description of the video.",
    "In one sentence, what happens in the video?",
]
FINE_PROMPTS = [
    "Describe the video in detail.",
    "Give a detailed description of the video, event by event.",
    "Describe everything that happens in the video, in order.",
    "Write a fine-grained description of the video.",
]
CAPTION_PROMPTS = [
    "Describe the video.",
    "What happens in the video?",
    "Write a caption for this video.",
    "Caption the video.",
]
ACTION_PROMPT = "What actions happen in the video?"
MCQ_SUFFIX = "Answer with the option's letter from the given choices directly."


# --------------------------------------------------------------------------- canonical language

def canonical_verb_phrase(verb: str, args: dict[str, Any]) -> str:
    if verb == "move":
        d = args["direction"]
        return f"moves to the {d}" if d in ("left", "right") else f"moves {d}"
    if verb == "change_colour":
        return f"changes colour from {args['from']} to {args['to']}"
    if verb == "collide":
        return f"collides with the {args['object_colour']} {args['object_shape']} and bounces back"
    return {"grow": "grows", "shrink": "shrinks", "rotate": "rotates", "appear": "appears",
            "disappear": "disappears"}[verb]


def canonical_sentence(colour: str, shape: str, verb: str, args: dict[str, Any]) -> str:
    """The one canonical sentence of an event, e.g. "The red circle moves to the left."."""
    return f"The {colour} {shape} {canonical_verb_phrase(verb, args)}."


def _base_phrase(verb: str, args: dict[str, Any]) -> str:
    """Bare-infinitive phrase for questions: "move to the left", "change colour to blue"."""
    if verb == "move":
        d = args["direction"]
        return f"move to the {d}" if d in ("left", "right") else f"move {d}"
    if verb == "change_colour":
        return f"change colour to {args['to']}"
    if verb == "collide":
        return f"collide with the {args['object_colour']} {args['object_shape']}"
    return {"grow": "grow", "shrink": "shrink", "rotate": "rotate", "appear": "appear",
            "disappear": "disappear"}[verb]


def _action_label(verb: str, args: dict[str, Any]) -> str:
    if verb == "move":
        return f"move {args['direction']}"
    return {"change_colour": "change colour"}.get(verb, verb)


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


# --------------------------------------------------------------------------- planning

@dataclass
class _Obj:
    oid: int
    shot: int
    shape: str
    colour: str
    x: float
    y: float
    r: float
    angle: float
    visible: bool            # visible at the start of its shot (False: it appears later)
    # simulation state while planning
    alive: bool = True


def _plan(seed: int, index: int, cuts_prob: float, pan_prob: float) -> dict[str, Any]:
    """Plan one video: shots, objects, events (with times). Pure python, deterministic."""
    rng = random.Random(f"{seed}:{index}")
    n_events = rng.randint(2, 5)
    n_shots = 2 if (n_events >= 2 and rng.random() < cuts_prob) else 1
    if n_shots == 2:
        k0 = rng.randint(1, n_events - 1)
        per_shot = [k0, n_events - k0]
    else:
        per_shot = [n_events]
    bgs = rng.sample(list(BACKGROUNDS), n_shots)
    used: set[tuple[str, str]] = set()
    objects: list[_Obj] = []
    events: list[dict[str, Any]] = []
    shots = []
    for s, k in enumerate(per_shot):
        pan = rng.choice(DIRECTIONS) if rng.random() < pan_prob else None
        shots.append({"index": s, "background": bgs[s], "pan": pan})
        for _attempt in range(50):
            sub_rng = random.Random(f"{seed}:{index}:{s}:{_attempt}:{rng.random()}")
            res = _plan_shot(sub_rng, s, k, pan is not None, used, len(objects))
            if res is not None:
                objs, evs, new_used = res
                objects.extend(objs)
                events.extend(evs)
                used |= new_used
                break
        else:  # pragma: no cover - never seen; keeps the generator total
            raise RuntimeError(f"could not plan shot {s} of video {index}")
    # ---- timing
    n = len(events)
    duration = rng.uniform(3.0, 6.0)
    duration = min(6.0, max(duration, 0.9 * n + 0.8))
    lead, tail = 0.3, 0.3
    slot = (duration - lead - tail) / n
    for i, ev in enumerate(events):
        d = slot * rng.uniform(0.62, 0.78)
        t0 = lead + i * slot + (slot - d) / 2
        ev["t_start"] = round(t0, 2)
        ev["t_end"] = round(t0 + d, 2)
    if n_shots == 2:
        k0 = per_shot[0]
        cut = round((events[k0 - 1]["t_end"] + events[k0]["t_start"]) / 2, 2)
        shots[0]["t_start"], shots[0]["t_end"] = 0.0, cut
        shots[1]["t_start"], shots[1]["t_end"] = cut, round(duration, 2)
    else:
        shots[0]["t_start"], shots[0]["t_end"] = 0.0, round(duration, 2)
    for ev in events:
        ev["sentence"] = canonical_sentence(ev["colour"], ev["shape"], ev["verb"], ev["args"])
    return {"duration": round(duration, 2), "shots": shots,
            "objects": [_obj_record(o) for o in objects], "events": events}


def _obj_record(o: _Obj) -> dict[str, Any]:
    return {"id": o.oid, "shot": o.shot, "shape": o.shape, "colour": o.colour, "x": round(o.x, 4),
            "y": round(o.y, 4), "r": round(o.r, 4), "angle": round(o.angle, 4), "visible": o.visible}


def _plan_shot(rng: random.Random, shot: int, k: int, pan: bool, used_before: set, oid0: int):
    used = set(used_before)
    margin = 0.03 + (0.09 if pan else 0.0)
    objs: list[_Obj] = []
    # live state per object: [x, y, r, colour, alive(visible)]
    state: dict[int, list] = {}

    def fits(x: float, y: float, r: float, ignore: int | None = None) -> bool:
        if not (margin + r <= x <= 1 - margin - r and margin + r <= y <= 1 - margin - r):
            return False
        for oid, st in state.items():
            if oid == ignore or not st[4]:
                continue
            if math.hypot(st[0] - x, st[1] - y) < st[2] + r + 0.04:
                return False
        return True

    def new_identity() -> tuple[str, str] | None:
        free = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in used]
        return rng.choice(free) if free else None

    def spawn(visible: bool) -> _Obj | None:
        ident = new_identity()
        if ident is None:
            return None
        r = rng.uniform(0.075, 0.105)
        for _ in range(60):
            x, y = rng.uniform(0, 1), rng.uniform(0, 1)
            if fits(x, y, r):
                o = _Obj(oid0 + len(objs), shot, ident[1], ident[0], x, y, r,
                         rng.uniform(0, math.pi / 2), visible)
                objs.append(o)
                used.add(ident)
                state[o.oid] = [x, y, r, o.colour, visible]
                return o
        return None

    n_init = rng.choice([1, 2, 2, 3, 3])
    for _ in range(n_init):
        if spawn(True) is None:
            return None
    events: list[dict[str, Any]] = []
    sentences: set[str] = set()
    last_subject: int | None = None
    verbs = list(_VERB_WEIGHTS)
    weights = [_VERB_WEIGHTS[v] for v in verbs]
    tries = 0
    while len(events) < k:
        tries += 1
        if tries > 200:
            return None
        verb = rng.choices(verbs, weights)[0]
        visible = [o for o in objs if state[o.oid][4]]
        if verb == "appear":
            if sum(1 for o in objs if not o.visible) >= 1:
                continue
            o = spawn(False)
            if o is None:
                continue
            state[o.oid][4] = False  # not visible until its event
            subj, args = o, {}
        else:
            if not visible:
                continue
            if last_subject is not None and state[last_subject][4] and rng.random() < 0.4:
                subj = next(o for o in objs if o.oid == last_subject)
            else:
                subj = rng.choice(visible)
            args = {}
            st = state[subj.oid]
            if verb == "move":
                d = rng.choice(DIRECTIONS)
                dist = rng.uniform(0.22, 0.3)
                vx, vy = _DIR_VEC[d]
                nx, ny = st[0] + vx * dist, st[1] + vy * dist
                mx, my = (st[0] + nx) / 2, (st[1] + ny) / 2
                if not (fits(nx, ny, st[2], subj.oid) and fits(mx, my, st[2], subj.oid)):
                    continue
                args = {"direction": d, "distance": round(dist, 3)}
            elif verb == "grow":
                nr = st[2] * 1.5
                if nr > 0.16 or not fits(st[0], st[1], nr, subj.oid):
                    continue
                args = {"factor": 1.5}
            elif verb == "shrink":
                if st[2] * 0.6 < 0.04:
                    continue
                args = {"factor": 0.6}
            elif verb == "rotate":
                if subj.shape == "circle":
                    continue
                args = {"degrees": rng.choice([90, 180, -90, -180])}
            elif verb == "disappear":
                if len(visible) < 2:
                    continue
            elif verb == "change_colour":
                free = [c for c in COLOURS if (c, subj.shape) not in used]
                if not free:
                    continue
                args = {"from": st[3], "to": rng.choice(free)}
            elif verb == "collide":
                others = [o for o in visible if o.oid != subj.oid]
                if not others:
                    continue
                ob = rng.choice(others)
                so = state[ob.oid]
                if math.hypot(so[0] - st[0], so[1] - st[1]) < st[2] + so[2] + 0.08:
                    continue
                args = {"object_colour": so[3], "object_shape": ob.shape, "object_id": ob.oid}
        sent_args = {k2: v for k2, v in args.items() if k2 not in ("object_id",)}
        colour = state[subj.oid][3]
        sent = canonical_sentence(colour, subj.shape, verb, sent_args)
        if sent in sentences:
            continue
        # commit
        st = state[subj.oid]
        if verb == "move":
            vx, vy = _DIR_VEC[args["direction"]]
            st[0] += vx * args["distance"]
            st[1] += vy * args["distance"]
        elif verb in ("grow", "shrink"):
            st[2] *= args["factor"]
        elif verb == "appear":
            st[4] = True
        elif verb == "disappear":
            st[4] = False
        elif verb == "change_colour":
            st[3] = args["to"]
            used.add((args["to"], subj.shape))
        sentences.add(sent)
        events.append({"shot": shot, "subject_id": subj.oid, "colour": colour, "shape": subj.shape,
                       "verb": verb, "args": args})
        last_subject = subj.oid
    return objs, events, used - used_before


# --------------------------------------------------------------------------- language

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


def _describe_fine(plan: dict[str, Any], rng: random.Random) -> str:
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
                out.append(_cap(f"{_join(nps)} {'is' if len(nps) == 1 else 'are'} on a {bg} background."))
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
                out.append(conn + (subj if conn else _cap(subj)) + f" {vp}.")
                merged_last = False
            _mark(e, mentioned)
            prev = e
            i += 1
        done += len(evs)
    return " ".join(out)


def _describe_brief(plan: dict[str, Any], rng: random.Random) -> str:
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
        text = f"{_cap(clause)} on a {bg} background"
    if len(plan["shots"]) > 1:
        text += rng.choice([", then the shot changes", " before a scene cut"])
    return text + "."


def _qa(plan: dict[str, Any], rng: random.Random) -> list[dict[str, str]]:
    events, shots, objects = plan["events"], plan["shots"], plan["objects"]
    qa: list[dict[str, str]] = []
    bg_q = "What colour is the background?" if len(shots) == 1 else \
        "What colour is the background at the start?"
    qa.append({"type": "background", "question": bg_q, "answer": _cap(shots[0]["background"]) + "."})
    n0 = sum(1 for o in objects if o["shot"] == 0 and o["visible"])
    qa.append({"type": "count", "question": "How many shapes are there at the start?",
               "answer": _cap(_NUMBERS[n0]) + "."})
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
                       "answer": _cap(e["colour"]) + "."})
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
               f"{_base_phrase(e['verb'], e['args'])}?", "answer": "Yes."})
    for cand in _perturb(e, rng):
        if cand["sentence"] not in truth:
            qa.append({"type": "yesno", "question": f"Does the {cand['colour']} {cand['shape']} "
                       f"{_base_phrase(cand['verb'], cand['args'])}?", "answer": "No."})
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


def _mcq(plan: dict[str, Any], rng: random.Random) -> tuple[str, str]:
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
    return q, f"{letters[k]}. {right['sentence']}"


def _order(plan: dict[str, Any], rng: random.Random) -> tuple[str, str]:
    events = plan["events"]
    i, j = sorted(rng.sample(range(len(events)), 2))
    a, b = events[i], events[j]
    first = a
    if rng.random() < 0.5:
        a, b = b, a
    q = (f"Which happens first: the {a['colour']} {a['shape']} {canonical_verb_phrase(a['verb'], a['args'])}, "
         f"or the {b['colour']} {b['shape']} {canonical_verb_phrase(b['verb'], b['args'])}?")
    return q, first["sentence"]


def make_truth(seed: int, index: int, cuts_prob: float = CUTS_PROB, pan_prob: float = PAN_PROB,
               fps: int = 12, size: int = 128) -> dict[str, Any]:
    """Complete ground truth of one video (no rendering)."""
    plan = _plan(seed, index, cuts_prob, pan_prob)
    trng = random.Random(f"{seed}:{index}:text")
    vid = f"s{seed}_{index:05d}"
    n_frames = max(2, round(plan["duration"] * fps))
    events_out = []
    for e in plan["events"]:
        args = {k: v for k, v in e["args"].items() if k != "object_id"}
        events_out.append({"colour": e["colour"], "shape": e["shape"], "verb": e["verb"], "args": args,
                           "t_start": e["t_start"], "t_end": e["t_end"], "shot": e["shot"],
                           "subject_id": e["subject_id"], "sentence": e["sentence"]})
    idents = {(o["colour"], o["shape"]) for o in plan["objects"]}
    truth = {
        "video_id": vid, "index": index, "seed": seed, "cuts_prob": cuts_prob, "pan_prob": pan_prob,
        "video_file": f"videos/{vid}.mp4",
        "duration": round(n_frames / fps, 3), "fps": fps, "size": size, "n_frames": n_frames,
        "shots": plan["shots"], "objects": plan["objects"],
        "events": events_out, "event_sentences": [e["sentence"] for e in plan["events"]],
        "n_events": len(events_out), "n_shots": len(plan["shots"]), "n_subjects": len(idents),
        "brief": _describe_brief(plan, trng), "fine": _describe_fine(plan, trng),
    }
    truth["qa"] = _qa(plan, trng)
    truth["mcq"] = [dict(zip(("question", "answer"), _mcq(plan, trng)))]
    truth["order"] = [dict(zip(("question", "answer"), _order(plan, trng)))]
    actions: list[str] = []
    for e in plan["events"]:
        a = _action_label(e["verb"], e["args"])
        if a not in actions:
            actions.append(a)
    truth["actions"] = actions
    truth["_plan"] = plan
    return truth


def replay_plan(truth: dict[str, Any]) -> dict[str, Any]:
    """The full plan behind a truth record (truth.jsonl leaves out the renderer's internals)."""
    # folders written before the probabilities were recorded used generate()'s defaults
    return truth.get("_plan") or _plan(truth["seed"], truth["index"], truth.get("cuts_prob", CUTS_PROB),
                                       truth.get("pan_prob", PAN_PROB))


# --------------------------------------------------------------------------- rendering

def _ease(f: float) -> float:
    f = min(1.0, max(0.0, f))
    return f * f * (3 - 2 * f)


def _obj_state(obj: dict, evs: list[dict], t: float, objects_state_at) -> tuple | None:
    x, y, r, ang = obj["x"], obj["y"], obj["r"], obj["angle"]
    col = [float(v) for v in COLOURS[obj["colour"]]]
    alpha = 1.0 if obj["visible"] else 0.0
    for e in evs:
        t0, t1 = e["t_start"], e["t_end"]
        if t < t0:
            break
        f = _ease((t - t0) / max(1e-6, t1 - t0))
        v, a = e["verb"], e["args"]
        if v == "move":
            dx, dy = _DIR_VEC[a["direction"]]
            x += dx * a["distance"] * f
            y += dy * a["distance"] * f
        elif v in ("grow", "shrink"):
            r *= 1 + (a["factor"] - 1) * f
        elif v == "rotate":
            ang += math.radians(a["degrees"]) * f
        elif v == "appear":
            alpha = f
        elif v == "disappear":
            alpha = 1 - f
        elif v == "change_colour":
            c2 = COLOURS[a["to"]]
            col = [col[i] * (1 - f) + c2[i] * f for i in range(3)]
        elif v == "collide":
            ox, oy, orr = objects_state_at(a["object_id"], t0)
            dist = math.hypot(ox - x, oy - y)
            travel = max(0.0, dist - r - orr)
            g = (t - t0) / max(1e-6, t1 - t0)
            g = min(1.0, max(0.0, g))
            p = (g / 0.55) ** 2 if g < 0.55 else 1 - _ease((g - 0.55) / 0.45)
            x += (ox - x) / max(dist, 1e-6) * travel * p
            y += (oy - y) / max(dist, 1e-6) * travel * p
        if t < t1:
            break
    return x, y, r, ang, col, alpha


@dataclass
class FrameState:
    """What is on screen at one instant: the shot, the camera offset (world units) and, for every
    object of the shot still visible, (object record, x, y, r, angle, rgb, alpha) in world units."""
    shot: dict[str, Any]
    camera: tuple[float, float]
    objects: list[tuple[dict, float, float, float, float, list[float], float]]


def frame_state(plan: dict[str, Any], t: float) -> FrameState:
    """The exact scene at time t. The renderer draws it and the tower pretraining reads its labels
    from it, so the pixels and the labels can never disagree."""
    objects = {o["id"]: o for o in plan["objects"]}
    evs_by_obj: dict[int, list] = {oid: [] for oid in objects}
    for e in plan["events"]:
        evs_by_obj[e["subject_id"]].append(e)

    def state_at(oid: int, tt: float):
        st = _obj_state(objects[oid], evs_by_obj[oid], tt, state_at)
        return st[0], st[1], st[2]

    shot = plan["shots"][-1]
    for sh in plan["shots"]:
        if sh["t_start"] <= t < sh["t_end"]:
            shot = sh
            break
    cx = cy = 0.0
    if shot["pan"]:  # content moves opposite to the pan
        pf = (t - shot["t_start"]) / max(1e-6, shot["t_end"] - shot["t_start"])
        dx, dy = _DIR_VEC[shot["pan"]]
        cx, cy = dx * 0.09 * pf, dy * 0.09 * pf
    visible = []
    for oid, o in objects.items():
        if o["shot"] != shot["index"]:
            continue
        x, y, r, ang, col, alpha = _obj_state(o, evs_by_obj[oid], t, state_at)
        if alpha > 0.01:
            visible.append((o, x, y, r, ang, col, alpha))
    return FrameState(shot=shot, camera=(cx, cy), objects=visible)


def _pixel_grids(S: int):
    import numpy as np

    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
    return yy, xx, np.arange(S, dtype=np.float32)


def render_frame(state: FrameState, S: int, grids=None):
    """(S, S, 3) uint8 RGB picture of one scene state."""
    import numpy as np

    yy, xx, axis = grids if grids is not None else _pixel_grids(S)
    shot = state.shot
    bg = np.array(BACKGROUNDS[shot["background"]], np.float32)
    cx, cy = state.camera
    frame = np.empty((S, S, 3), np.float32)
    frame[:] = bg
    # background texture (a faint grid fixed in the world) makes camera pans visible
    step = S / 8
    line = bg * 0.7 + 20
    frame[:, ((axis + cx * S) % step) < 1.0] = line
    frame[((axis + cy * S) % step) < 1.0, :] = line
    for o, x, y, r, ang, col, alpha in state.objects:
        px, py, pr = (x - cx) * S, (y - cy) * S, r * S
        x0, x1 = max(0, int(px - pr - 2)), min(S, int(px + pr + 3))
        y0, y1 = max(0, int(py - pr - 2)), min(S, int(py + pr + 3))
        if x0 >= x1 or y0 >= y1:
            continue
        u = xx[y0:y1, x0:x1] - px
        v = yy[y0:y1, x0:x1] - py
        mask = _shape_mask(o["shape"], u, v, pr, ang, np)
        region = frame[y0:y1, x0:x1]
        region[mask] = region[mask] * (1 - alpha) + np.array(col, np.float32) * alpha
    return (frame + 0.5).astype(np.uint8)  # every value is a blend of colours in [0, 255]


def _render_video(truth: dict[str, Any], path: Path) -> None:
    import av

    plan = truth["_plan"]
    S, fps = truth["size"], truth["fps"]
    grids = _pixel_grids(S)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mp4")
    container = av.open(str(tmp), "w", format="mp4")
    stream = container.add_stream("libx264", rate=fps)
    stream.width = S
    stream.height = S
    stream.pix_fmt = "yuv420p"
    stream.options = {"crf": "20", "preset": "veryfast"}
    stream.codec_context.thread_count = 1
    for fi in range(truth["n_frames"]):
        img = render_frame(frame_state(plan, fi / fps), S, grids)
        for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    os.replace(tmp, path)


def _shape_mask(shape: str, u, v, R: float, ang: float, np):
    if shape == "circle":
        return u * u + v * v <= R * R
    if shape == "star":
        rho = np.sqrt(u * u + v * v)
        th = np.arctan2(v, u) - ang + math.pi / 2
        m = np.mod(th, 2 * math.pi / 5) / (2 * math.pi / 5)
        ri = 0.45 * R
        rb = ri + (R - ri) * np.abs(1 - 2 * m)
        return rho <= rb
    n, off = {"triangle": (3, -math.pi / 2), "square": (4, -math.pi / 4), "hexagon": (6, 0.0)}[shape]
    apothem = R * math.cos(math.pi / n)
    inside = np.ones(u.shape, bool)
    for k in range(n):
        phi = ang + off + (2 * k + 1) * math.pi / n
        inside &= (u * math.cos(phi) + v * math.sin(phi)) <= apothem
    return inside


# --------------------------------------------------------------------------- manifests

def _item_video(video_file: str) -> dict[str, Any]:
    return {"reference": None, "text": None, "type": "video", "video": {"video_file": video_file}}


def _item_text(text: str) -> dict[str, Any]:
    return {"reference": None, "text": text, "type": "text", "video": None}


def message_row(video_file: str, prompt: str, answer: str, task: str, video_id: str, idx: int) -> dict[str, Any]:
    """One training row in the Tarsier2/DREAM-1K "messages" format (answer in `text`)."""
    return {
        "messages": [
            {"content": [_item_video(video_file), _item_text(prompt)], "role": "user"},
            {"content": [{"reference": None, "text": answer, "type": "text", "video": None}],
             "role": "assistant"},
        ],
        "dataset": DATASET, "task": task, "idx": idx, "video_id": video_id,
    }


def benchmark_row(truth: dict[str, Any], idx: int) -> dict[str, Any]:
    """One row shaped exactly like DREAM-1k.messages-format (reference = fine description)."""
    return {
        "messages": [
            {"content": [_item_video(truth["video_file"]), _item_text("Describe the video in detail.")],
             "role": "user"},
            {"content": [{"reference": truth["fine"], "text": "", "type": "text", "video": None}],
             "role": "assistant"},
        ],
        "dataset": DATASET,
        "task": "video/caption",
        "idx": idx,
        "extra_info": {"duration": truth["duration"], "events": truth["event_sentences"],
                       "n_events": truth["n_events"], "n_shots": truth["n_shots"],
                       "n_subjects": truth["n_subjects"]},
        "vid": idx,
    }


def _bench_row(video_file: str, prompt: str, prefix: str, reference, dataset: str, task: str, idx) -> dict[str, Any]:
    """A benchmark row as upstream writes them (TVBench, MSVD-QA...): the assistant turn's text is the
    forced answer prefix, the reference sits in its own item."""
    answer = ([{"reference": None, "text": prefix, "type": "text", "video": None}] if prefix else []) + [
        {"reference": reference, "text": "", "type": "text", "video": None}]
    return {"messages": [{"content": [_item_video(video_file), _item_text(prompt)], "role": "user"},
                         {"content": answer, "role": "assistant"}],
            "dataset": dataset, "task": task, "idx": idx, "vid": video_file}


CAPTION_REFERENCES = 3   # brief captions per video, told in different words (as MSVD / MSR-VTT have several)
QA_PER_VIDEO = 2


def bench_rows(truths: list[dict[str, Any]], seed: int) -> dict[str, list[dict]]:
    """The held-out benchmark files of a world: multiple choice (the question format of stage 1's
    mcq rows, which nano learns; reference = the letter), open-ended QA (reference = the exact
    synthetic answer; sub-task = the question type) and captioning (several brief captions of the
    same events, each from its own text stream)."""
    rng = random.Random(f"{seed}:bench")
    out: dict[str, list[dict]] = {"mcq": [], "qa": [], "caption": []}
    for i, t in enumerate(truths):
        vf = t["video_file"]
        for m in t["mcq"]:
            letter = m["answer"].split(".", 1)[0].strip()
            out["mcq"].append(_bench_row(vf, m["question"], "", letter, "synthetic/events", "mcq",
                                         len(out["mcq"])))
        qas = list(t["qa"])
        rng.shuffle(qas)
        for qa in qas[:QA_PER_VIDEO]:
            out["qa"].append(_bench_row(vf, qa["question"], "", qa["answer"], f"synthetic/{qa['type']}", "qa",
                                        len(out["qa"])))
        plan = replay_plan(t)
        refs = [t["brief"]] + [_describe_brief(plan, random.Random(f"{t['seed']}:{t['index']}:caption{k}"))
                               for k in range(1, CAPTION_REFERENCES)]
        out["caption"].append(_bench_row(vf, BRIEF_PROMPTS[0], "", refs, "synthetic/captions", "caption", i))
    return out


STAGE1_WEIGHTS = {"caption": 2.0, "qa": 1.5, "action": 0.5, "mcq": 1.0, "order": 1.0}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    os.replace(tmp, path)


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def write_manifests(out: Path, truths: list[dict[str, Any]], seed: int) -> dict[str, int]:
    """Write truth.jsonl, stage1/*, stage2/*, benchmark.jsonl. Returns row counts per file."""
    rng = random.Random(f"{seed}:manifests")
    s1: dict[str, list] = {k: [] for k in STAGE1_WEIGHTS}
    s2: list[dict] = []
    bench: list[dict] = []
    for i, t in enumerate(truths):
        vf1 = "../" + t["video_file"]
        vid = t["video_id"]
        s1["caption"].append(message_row(vf1, rng.choice(CAPTION_PROMPTS), t["fine"], "caption", vid, i))
        qas = list(t["qa"])
        rng.shuffle(qas)
        for qa in qas[:4]:
            s1["qa"].append(message_row(vf1, qa["question"], qa["answer"], "qa", vid, i))
        s1["action"].append(message_row(vf1, ACTION_PROMPT, _cap(", ".join(t["actions"])) + ".",
                                        "action", vid, i))
        for m in t["mcq"]:
            s1["mcq"].append(message_row(vf1, m["question"], m["answer"], "mcq", vid, i))
        for o in t["order"]:
            s1["order"].append(message_row(vf1, o["question"], o["answer"], "order", vid, i))
        bp = BRIEF_PROMPTS[0] if rng.random() < 0.4 else rng.choice(BRIEF_PROMPTS)
        fp = FINE_PROMPTS[0] if rng.random() < 0.4 else rng.choice(FINE_PROMPTS)
        s2.append(message_row(vf1, bp, t["brief"], "describe/brief", vid, i))
        s2.append(message_row(vf1, fp, t["fine"], "describe/fine", vid, i))
        bench.append(benchmark_row(t, i + 1))
    counts = {}
    _write_jsonl(out / "truth.jsonl", [{k: v for k, v in t.items() if k != "_plan"} for t in truths])
    counts["truth.jsonl"] = len(truths)
    for name, rows in s1.items():
        _write_jsonl(out / "stage1" / f"{name}.jsonl", rows)
        counts[f"stage1/{name}.jsonl"] = len(rows)
    _write_json(out / "stage1" / "mixture.json", {"manifests": [
        {"path": f"{name}.jsonl", "weight": w, "task": name} for name, w in STAGE1_WEIGHTS.items()]})
    _write_jsonl(out / "stage2" / "describe.jsonl", s2)
    counts["stage2/describe.jsonl"] = len(s2)
    _write_json(out / "stage2" / "mixture.json", {"manifests": [
        {"path": "describe.jsonl", "weight": 1.0}]})   # rows keep their describe/brief, describe/fine
    _write_jsonl(out / "benchmark.jsonl", bench)
    counts["benchmark.jsonl"] = len(bench)
    for name, rows in bench_rows(truths, seed).items():
        _write_jsonl(out / "bench" / f"{name}.jsonl", rows)
        counts[f"bench/{name}.jsonl"] = len(rows)
    return counts


# --------------------------------------------------------------------------- driver

@dataclass
class SynthSummary:
    out: Path
    videos: int
    seconds: float
    clips_per_min: float
    files: dict[str, int]


def _job(args: tuple) -> dict[str, Any]:
    seed, index, size, fps, cuts_prob, pan_prob, out, render = args
    truth = make_truth(seed, index, cuts_prob, pan_prob, fps=fps, size=size)
    if render:
        _render_video(truth, Path(out) / truth["video_file"])
    return truth


def generate(out: str | Path, videos: int, seed: int = 0, size: int = 128, fps: int = 12,
             cuts_prob: float = CUTS_PROB, pan_prob: float = PAN_PROB, workers: int | None = None,
             render: bool = True, progress: Callable[[int], None] | None = None) -> SynthSummary:
    """Render `videos` clips and write all ground truth and manifests into `out`."""
    import time

    if videos < 1:
        raise ValueError("videos must be >= 1")
    if size < 32 or size % 2:
        raise ValueError("size must be an even number >= 32")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    jobs = [(seed, i, size, fps, cuts_prob, pan_prob, str(out), render) for i in range(videos)]
    workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
    truths: list[dict[str, Any]] = []
    if workers <= 1 or videos < 4:
        for j in jobs:
            truths.append(_job(j))
            if progress:
                progress(1)
    else:
        import multiprocessing as mp

        ctx = mp.get_context("fork") if hasattr(os, "fork") else mp.get_context()
        with ctx.Pool(workers) as pool:
            for t in pool.imap(_job, jobs, chunksize=4):
                truths.append(t)
                if progress:
                    progress(1)
    counts = write_manifests(out, truths, seed)
    dt = time.perf_counter() - t0
    return SynthSummary(out=out, videos=videos, seconds=dt, clips_per_min=videos / dt * 60 if dt else 0.0,
                        files=counts)
