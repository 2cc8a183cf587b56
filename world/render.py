"""Rendering a planned video: the exact scene at any instant, drawn with numpy masks and encoded
with PyAV (libx264, one thread per encoder, so the same plan gives the same bytes)."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tarsier.common.files import atomic_file
from tarsier.world.vocabulary import BACKGROUNDS, COLOURS, DIRECTION_VECTORS

PAN_DISTANCE = 0.09   # how far (world units) the camera travels over a panning shot


@dataclass
class ShapeOnScreen:
    """One object at one instant, in world units: centre, radius, angle (radians), colour (RGB in
    [0, 255], blended while it changes) and opacity (0 to 1 while it appears or disappears)."""
    id: int
    shape: str
    x: float
    y: float
    r: float
    angle: float
    rgb: list[float]
    alpha: float


@dataclass
class FrameState:
    """What is on screen at one instant: the shot, the camera offset (world units) and every object
    of the shot still visible."""
    shot: dict[str, Any]
    camera: tuple[float, float]
    objects: list[ShapeOnScreen]


def _ease(f: float) -> float:
    f = min(1.0, max(0.0, f))
    return f * f * (3 - 2 * f)


def _shape_at(obj: dict, evs: list[dict], t: float, shape_at: Callable[[int, float], ShapeOnScreen]) -> ShapeOnScreen:
    """Object `obj` at time t, its events `evs` (in time order) applied; `shape_at(id, t)` gives any
    other object (a collision runs towards where its object is)."""
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
            dx, dy = DIRECTION_VECTORS[a["direction"]]
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
            other = shape_at(a["object_id"], t0)
            ox, oy, orr = other.x, other.y, other.r
            dist = math.hypot(ox - x, oy - y)
            travel = max(0.0, dist - r - orr)
            g = (t - t0) / max(1e-6, t1 - t0)
            g = min(1.0, max(0.0, g))
            p = (g / 0.55) ** 2 if g < 0.55 else 1 - _ease((g - 0.55) / 0.45)
            x += (ox - x) / max(dist, 1e-6) * travel * p
            y += (oy - y) / max(dist, 1e-6) * travel * p
        if t < t1:
            break
    return ShapeOnScreen(obj["id"], obj["shape"], x, y, r, ang, col, alpha)


def frame_state(plan: dict[str, Any], t: float) -> FrameState:
    """The exact scene at time t. The renderer draws it and the tower pretraining reads its labels
    from it, so the pixels and the labels can never disagree."""
    objects = {o["id"]: o for o in plan["objects"]}
    evs_by_obj: dict[int, list] = {oid: [] for oid in objects}
    for e in plan["events"]:
        evs_by_obj[e["subject_id"]].append(e)

    def shape_at(oid: int, tt: float) -> ShapeOnScreen:
        return _shape_at(objects[oid], evs_by_obj[oid], tt, shape_at)

    shot = plan["shots"][-1]
    for sh in plan["shots"]:
        if sh["t_start"] <= t < sh["t_end"]:
            shot = sh
            break
    cx = cy = 0.0
    if shot["pan"]:  # content moves opposite to the pan
        pf = (t - shot["t_start"]) / max(1e-6, shot["t_end"] - shot["t_start"])
        dx, dy = DIRECTION_VECTORS[shot["pan"]]
        cx, cy = dx * PAN_DISTANCE * pf, dy * PAN_DISTANCE * pf
    visible = []
    for oid, o in objects.items():
        if o["shot"] != shot["index"]:
            continue
        s = shape_at(oid, t)
        if s.alpha > 0.01:
            visible.append(s)
    return FrameState(shot=shot, camera=(cx, cy), objects=visible)


def pixel_grids(S: int):
    """The pixel coordinate grids render_frame needs for S x S frames (computed once per video)."""
    import numpy as np

    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
    return yy, xx, np.arange(S, dtype=np.float32)


def render_frame(state: FrameState, S: int, grids=None):
    """(S, S, 3) uint8 RGB picture of one scene state."""
    import numpy as np

    yy, xx, axis = grids if grids is not None else pixel_grids(S)
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
    for s, (y0, y1, x0, x1), mask in shape_masks(state, S, (yy, xx, axis)):
        region = frame[y0:y1, x0:x1]
        region[mask] = region[mask] * (1 - s.alpha) + np.array(s.rgb, np.float32) * s.alpha
    return (frame + 0.5).astype(np.uint8)  # every value is a blend of colours in [0, 255]


def shape_masks(state: FrameState, S: int, grids=None):
    """Where each visible object lands on an S x S frame, in drawing order: (object, (y0, y1, x0, x1), the
    boolean mask of its pixels within that box). render_frame draws from it; stage-0 labels read it."""
    import numpy as np

    yy, xx, _ = grids if grids is not None else pixel_grids(S)
    cx, cy = state.camera
    for s in state.objects:
        px, py, pr = (s.x - cx) * S, (s.y - cy) * S, s.r * S
        x0, x1 = max(0, int(px - pr - 2)), min(S, int(px + pr + 3))
        y0, y1 = max(0, int(py - pr - 2)), min(S, int(py + pr + 3))
        if x0 >= x1 or y0 >= y1:
            continue
        yield s, (y0, y1, x0, x1), _shape_mask(s.shape, xx[y0:y1, x0:x1] - px, yy[y0:y1, x0:x1] - py, pr, s.angle, np)


def render_video(truth: dict[str, Any], path: Path) -> None:
    """Encode the video of a truth record (made by make_truth: it carries the plan) to `path`."""
    import av

    plan = truth["_plan"]
    S, fps = truth["size"], truth["fps"]
    grids = pixel_grids(S)
    with atomic_file(path, "wb", fsync=False) as f:
        container = av.open(f, "w", format="mp4")
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
