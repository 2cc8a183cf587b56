"""Loading predictions and joining them to reference rows.

Two shapes are understood, record by record:
* `tarsier describe` JSONL: {"video": "videos/000012.mp4", "clip": 0, "description": ...} (one
  record per clip; the clips of one video are joined in clip order with a space; a record with
  "error" marks a failed video);
* upstream-style files (JSONL or JSON): {"idx": 12, "prediction" | "response" | "pred" | ...: text},
  also {"idx", "text": {"prediction": ...}} as written by upstream inference scripts.

Join: a prediction keyed by video file is matched to the reference whose video_file has the same
basename without extension; otherwise a numeric video stem ("000012") is matched to the reference
idx (12). Predictions keyed by idx match the idx.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from tarsier.common.dream import Reference
from tarsier.common.messages import read_records, video_stem

PRED_KEYS = ("prediction", "pred", "predict", "response", "pred_caption", "caption", "output", "answer",
             "generated", "text")


@dataclass
class Prediction:
    key: str                        # what it was matched on (video stem or idx)
    description: str | None         # None for a failed video
    error: str | None = None
    video: str | None = None
    clips: int = 0
    idx: str | None = None
    _parts: list = field(default_factory=list, repr=False)


def _upstream_text(row: dict) -> str | None:
    text = row.get("text")
    if isinstance(text, dict):
        for key in ("prediction", "pred", "predict", "output"):
            if isinstance(text.get(key), str):
                return text[key]
    for key in PRED_KEYS:
        value = row.get(key)
        if isinstance(value, str):
            return value
    return None


def load_predictions(path) -> tuple[dict[str, Prediction], dict[str, Prediction]]:
    """(by video stem, by idx). Raises ValueError when no record is usable."""
    by_video: dict[str, Prediction] = {}
    by_idx: dict[str, Prediction] = {}
    rows = read_records(path)
    for row in rows:
        video = row.get("video") if isinstance(row.get("video"), str) else None
        if video and ("description" in row or "error" in row):
            stem = video_stem(video)
            pred = by_video.setdefault(stem, Prediction(key=stem, description=None, video=video))
            if row.get("error"):
                pred.error = str(row.get("error"))
                stage = row.get("stage")
                if stage:
                    pred.error = f"{stage}: {pred.error}"
                continue
            clip = row.get("clip", row.get("clip_index", 0))
            try:
                clip = int(clip)
            except (TypeError, ValueError):
                clip = 0
            pred._parts.append((clip, str(row.get("description") or "").strip()))
            continue
        idx = row.get("idx", row.get("id", row.get("vid")))
        text = _upstream_text(row)
        if idx is not None and text is not None:
            key = str(idx)
            by_idx[key] = Prediction(key=key, description=text.strip(), idx=key)
        elif idx is not None and row.get("error"):
            key = str(idx)
            by_idx[key] = Prediction(key=key, description=None, error=str(row["error"]), idx=key)
    for pred in by_video.values():
        if pred._parts:
            parts = sorted(dict(pred._parts).items())   # one text per clip index, in clip order
            pred.clips = len(parts)
            pred.description = " ".join(p for _, p in parts if p)
            if pred.error and pred.description:
                pred.error = None      # a later successful run of the same video wins
        pred._parts = []
    if not by_video and not by_idx and rows:
        raise ValueError(f"{path}: no prediction records (expected describe JSONL records with video/"
                         f"description, or records with idx and prediction/response/pred)")
    return by_video, by_idx


def match(references: list[Reference], by_video: dict[str, Prediction], by_idx: dict[str, Prediction]):
    """{reference idx: Prediction | None} and the list of prediction keys that matched nothing."""
    used: set[int] = set()
    numeric: dict[str, Prediction] = {}
    for stem, pred in by_video.items():
        digits = stem.lstrip("0") or "0"
        if stem.isdigit():
            numeric.setdefault(digits, pred)
    out: dict[str, Prediction | None] = {}
    for ref in references:
        pred = None
        if ref.video_key and ref.video_key in by_video:
            pred = by_video[ref.video_key]
        elif ref.idx in by_idx:
            pred = by_idx[ref.idx]
        elif ref.idx.isdigit() and (ref.idx.lstrip("0") or "0") in numeric:
            pred = numeric[ref.idx.lstrip("0") or "0"]
        out[ref.idx] = pred
        if pred is not None:
            used.add(id(pred))
    unmatched = [p.video or p.key for p in list(by_video.values()) + list(by_idx.values()) if id(p) not in used]
    return out, unmatched
