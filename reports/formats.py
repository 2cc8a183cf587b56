"""How values read on a page: numbers, percentages, clock times and durations, relative links,
nested settings as key/value rows. Plain strings in, plain strings out; escaping is the
templates' job (autoescape)."""
from __future__ import annotations

import json
import math
import os
from urllib.parse import quote


def number(value) -> float | None:
    """A finite int or float as float; None for anything else (bools, strings, NaN, missing)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def fmt_time(seconds) -> str:
    """0:04.20 / 1:02:03.50"""
    s = number(seconds)
    if s is None:
        return "–"
    s = max(0.0, s)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{int(h)}:{int(m):02d}:{sec:05.2f}" if h >= 1 else f"{int(m)}:{sec:05.2f}"


def fmt_duration(seconds) -> str:
    s = number(seconds)
    if s is None:
        return "–"
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(round(s), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m {sec:02d}s" if h else f"{m}m {sec:02d}s"


def fmt_num(value, digits: int = 4) -> str:
    v = number(value)
    if v is None:
        return "–"
    return f"{v:.{digits}g}"


def fmt_pct(value) -> str:
    v = number(value)
    return "–" if v is None else f"{100 * v:.1f}"


def href(rel) -> str:
    """A relative URL for a '/'-separated path (spaces, '#', '?' and non-ASCII percent-encoded)."""
    return quote(str(rel).replace(os.sep, "/"), safe="/")


def flatten(value, prefix: str = "") -> list[tuple[str, str]]:
    """Nested settings as (dotted key, text) rows: lists of scalars joined by commas, lists holding
    lists or dicts as JSON, None as "null"."""
    if isinstance(value, dict):
        rows = []
        for k, v in value.items():
            rows += flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return rows
    if isinstance(value, (list, tuple)) and not any(isinstance(x, (dict, list)) for x in value):
        return [(prefix, ", ".join(map(str, value)))]
    if isinstance(value, (list, tuple)):
        return [(prefix, json.dumps(value, ensure_ascii=False))]
    return [(prefix, "null" if value is None else str(value))]
