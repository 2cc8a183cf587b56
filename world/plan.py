"""Planning one video: shots, objects and events with their times. Pure python, deterministic.

Every video is planned from `random.Random(f"{seed}:{index}")`. Planning works on the dataclasses
below (Shot, PlacedObject, PlannedEvent; LiveObject while the events are drawn); the plan it returns
is their JSON-shaped record, `{"duration", "shots", "objects", "events"}` with lists of dicts written
by each dataclass's `record()` in a fixed key order, which the language, the renderer, truth.jsonl
and the tower pretraining read.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from tarsier.world.vocabulary import BACKGROUNDS, COLOURS, DIRECTION_VECTORS, DIRECTIONS, SHAPES, canonical_sentence

CUTS_PROB = 0.3   # default chance that a video has a scene cut
PAN_PROB = 0.3    # default chance that a shot pans
VERB_WEIGHTS = {"move": 3.0, "grow": 1.0, "shrink": 1.0, "rotate": 1.0, "appear": 0.7,
                "disappear": 0.5, "change_colour": 0.8, "collide": 0.8}


@dataclass
class PlacedObject:
    """An object as its shot starts: identity, position, radius and angle in world units [0, 1]."""
    id: int
    shot: int
    shape: str
    colour: str
    x: float
    y: float
    r: float
    angle: float
    visible: bool            # visible at the start of its shot (False: it appears later)

    def record(self) -> dict[str, Any]:
        return {"id": self.id, "shot": self.shot, "shape": self.shape, "colour": self.colour,
                "x": round(self.x, 4), "y": round(self.y, 4), "r": round(self.r, 4),
                "angle": round(self.angle, 4), "visible": self.visible}


@dataclass
class LiveObject:
    """An object's state while the events of its shot are planned, one event after another."""
    x: float
    y: float
    r: float
    colour: str
    on_screen: bool


@dataclass
class PlannedEvent:
    """One event: its subject (id, and colour and shape as the event starts), verb and arguments
    (`object_id` of a collision stays in the plan only), and, once timed, its interval."""
    shot: int
    subject_id: int
    colour: str
    shape: str
    verb: str
    args: dict[str, Any]
    t_start: float = 0.0
    t_end: float = 0.0

    @property
    def sentence(self) -> str:
        return canonical_sentence(self.colour, self.shape, self.verb, self.args)

    def record(self) -> dict[str, Any]:
        return {"shot": self.shot, "subject_id": self.subject_id, "colour": self.colour, "shape": self.shape,
                "verb": self.verb, "args": self.args, "t_start": self.t_start, "t_end": self.t_end,
                "sentence": self.sentence}


@dataclass
class Shot:
    """One shot: its background, the camera pan (a direction, or None) and its interval."""
    index: int
    background: str
    pan: str | None
    t_start: float = 0.0
    t_end: float = 0.0

    def record(self) -> dict[str, Any]:
        return {"index": self.index, "background": self.background, "pan": self.pan,
                "t_start": self.t_start, "t_end": self.t_end}


@dataclass
class ShotContents:
    """What planning one shot produced: its objects, its events and the identities it took."""
    objects: list[PlacedObject]
    events: list[PlannedEvent]
    identities: set[tuple[str, str]] = field(default_factory=set)


def plan_video(seed: int, index: int, cuts_prob: float = CUTS_PROB, pan_prob: float = PAN_PROB) -> dict[str, Any]:
    """Plan one video: shots, objects, events (with times)."""
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
    objects: list[PlacedObject] = []
    events: list[PlannedEvent] = []
    shots: list[Shot] = []
    for s, k in enumerate(per_shot):
        pan = rng.choice(DIRECTIONS) if rng.random() < pan_prob else None
        shots.append(Shot(s, bgs[s], pan))
        for _attempt in range(50):
            sub_rng = random.Random(f"{seed}:{index}:{s}:{_attempt}:{rng.random()}")
            planned = plan_shot(sub_rng, s, k, pan is not None, used, len(objects))
            if planned is not None:
                objects.extend(planned.objects)
                events.extend(planned.events)
                used |= planned.identities
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
        ev.t_start = round(t0, 2)
        ev.t_end = round(t0 + d, 2)
    if n_shots == 2:
        k0 = per_shot[0]
        cut = round((events[k0 - 1].t_end + events[k0].t_start) / 2, 2)
        shots[0].t_start, shots[0].t_end = 0.0, cut
        shots[1].t_start, shots[1].t_end = cut, round(duration, 2)
    else:
        shots[0].t_start, shots[0].t_end = 0.0, round(duration, 2)
    return {"duration": round(duration, 2), "shots": [s.record() for s in shots],
            "objects": [o.record() for o in objects], "events": [e.record() for e in events]}


def plan_shot(rng: random.Random, shot: int, k: int, pan: bool, used_before: set[tuple[str, str]],
              first_id: int) -> ShotContents | None:
    """Place a shot's objects and plan its `k` events, or None when this draw leads nowhere."""
    used = set(used_before)
    margin = 0.03 + (0.09 if pan else 0.0)
    objs: list[PlacedObject] = []
    live: dict[int, LiveObject] = {}

    def fits(x: float, y: float, r: float, ignore: int | None = None) -> bool:
        if not (margin + r <= x <= 1 - margin - r and margin + r <= y <= 1 - margin - r):
            return False
        for oid, st in live.items():
            if oid == ignore or not st.on_screen:
                continue
            if math.hypot(st.x - x, st.y - y) < st.r + r + 0.04:
                return False
        return True

    def new_identity() -> tuple[str, str] | None:
        free = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in used]
        return rng.choice(free) if free else None

    def spawn(visible: bool) -> PlacedObject | None:
        ident = new_identity()
        if ident is None:
            return None
        r = rng.uniform(0.075, 0.105)
        for _ in range(60):
            x, y = rng.uniform(0, 1), rng.uniform(0, 1)
            if fits(x, y, r):
                o = PlacedObject(first_id + len(objs), shot, ident[1], ident[0], x, y, r,
                                 rng.uniform(0, math.pi / 2), visible)
                objs.append(o)
                used.add(ident)
                live[o.id] = LiveObject(x, y, r, o.colour, visible)
                return o
        return None

    n_init = rng.choice([1, 2, 2, 3, 3])
    for _ in range(n_init):
        if spawn(True) is None:
            return None
    events: list[PlannedEvent] = []
    sentences: set[str] = set()
    last_subject: int | None = None
    verbs = list(VERB_WEIGHTS)
    weights = [VERB_WEIGHTS[v] for v in verbs]
    tries = 0
    while len(events) < k:
        tries += 1
        if tries > 200:
            return None
        verb = rng.choices(verbs, weights)[0]
        visible = [o for o in objs if live[o.id].on_screen]
        if verb == "appear":
            if sum(1 for o in objs if not o.visible) >= 1:
                continue
            o = spawn(False)
            if o is None:
                continue
            live[o.id].on_screen = False  # not visible until its event
            subj, args = o, {}
        else:
            if not visible:
                continue
            if last_subject is not None and live[last_subject].on_screen and rng.random() < 0.4:
                subj = next(o for o in objs if o.id == last_subject)
            else:
                subj = rng.choice(visible)
            args = {}
            st = live[subj.id]
            if verb == "move":
                d = rng.choice(DIRECTIONS)
                dist = rng.uniform(0.22, 0.3)
                vx, vy = DIRECTION_VECTORS[d]
                nx, ny = st.x + vx * dist, st.y + vy * dist
                mx, my = (st.x + nx) / 2, (st.y + ny) / 2
                if not (fits(nx, ny, st.r, subj.id) and fits(mx, my, st.r, subj.id)):
                    continue
                args = {"direction": d, "distance": round(dist, 3)}
            elif verb == "grow":
                nr = st.r * 1.5
                if nr > 0.16 or not fits(st.x, st.y, nr, subj.id):
                    continue
                args = {"factor": 1.5}
            elif verb == "shrink":
                if st.r * 0.6 < 0.04:
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
                args = {"from": st.colour, "to": rng.choice(free)}
            elif verb == "collide":
                others = [o for o in visible if o.id != subj.id]
                if not others:
                    continue
                ob = rng.choice(others)
                so = live[ob.id]
                if math.hypot(so.x - st.x, so.y - st.y) < st.r + so.r + 0.08:
                    continue
                args = {"object_colour": so.colour, "object_shape": ob.shape, "object_id": ob.id}
        event = PlannedEvent(shot, subj.id, live[subj.id].colour, subj.shape, verb, args)
        sent = event.sentence
        if sent in sentences:
            continue
        # commit
        st = live[subj.id]
        if verb == "move":
            vx, vy = DIRECTION_VECTORS[args["direction"]]
            st.x += vx * args["distance"]
            st.y += vy * args["distance"]
        elif verb in ("grow", "shrink"):
            st.r *= args["factor"]
        elif verb == "appear":
            st.on_screen = True
        elif verb == "disappear":
            st.on_screen = False
        elif verb == "change_colour":
            st.colour = args["to"]
            used.add((args["to"], subj.shape))
        sentences.add(sent)
        events.append(event)
        last_subject = subj.id
    return ShotContents(objs, events, used - used_before)


def replay_plan(truth: dict[str, Any]) -> dict[str, Any]:
    """The full plan behind a truth record (truth.jsonl leaves out the renderer's internals)."""
    # folders written before the probabilities were recorded used generate()'s defaults
    return truth.get("_plan") or plan_video(truth["seed"], truth["index"], truth.get("cuts_prob", CUTS_PROB),
                                            truth.get("pan_prob", PAN_PROB))
