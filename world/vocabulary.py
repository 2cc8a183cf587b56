"""The synthetic world's vocabulary and its canonical grammar: the one source of both.

The planner draws from these words, the renderer from their RGB values, and the exact judge
(tarsier.evaluation.exact) parses descriptions with them.

Grammar (canonical event sentences; the fine/brief descriptions use small variations of them):
    The {colour} {shape} moves to the left. / moves to the right. / moves up. / moves down.
    The {colour} {shape} grows. / shrinks. / rotates. / appears. / disappears.
    The {colour} {shape} changes colour from {colour} to {colour}.
    The {colour} {shape} collides with the {colour} {shape} and bounces back.
Scene cuts and camera pans are mentioned in the descriptions but are not events (as in DREAM-1K).
"""
from __future__ import annotations

from typing import Any

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
COLOUR_NAMES = list(COLOURS)
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
# Screen direction of each word (x to the right, y down), in world units per unit of distance.
DIRECTION_VECTORS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}


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


def base_phrase(verb: str, args: dict[str, Any]) -> str:
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


def action_label(verb: str, args: dict[str, Any]) -> str:
    """The short action name of an event: "move left", "change colour", "grow"."""
    if verb == "move":
        return f"move {args['direction']}"
    return {"change_colour": "change colour"}.get(verb, verb)
