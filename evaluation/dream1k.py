"""Loading DREAM-1K references (both upstream formats) and normalising their categories.

Flat format:     {"idx", "dataset": "DREAM/movie_animation", "text": {"prompt", "response"},
                  "video_file", "extra_info": {"duration", "n_subjects", "n_shots", "events", "n_events"}}
Messages format: {"messages": [user: [video {video_file}, text prompt], assistant: [text, reference]],
                  "dataset": "DREAM/vertical_video", "task", "idx", "extra_info": {...}}
Both may be JSONL or a JSON list. The five categories are normalised (see CATEGORY_ALIASES); an
unknown category is kept under its own name, never dropped.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

CATEGORIES = ("live-action", "animation", "youtube/vlog", "vertical/shorts", "stock")

CATEGORY_ALIASES = {
    "movie_live_action": "live-action", "live_action": "live-action", "liveaction": "live-action",
    "live-action": "live-action", "movie": "live-action", "movies": "live-action",
    "movie_animation": "animation", "animation": "animation", "animated": "animation", "cartoon": "animation",
    "youtube": "youtube/vlog", "vlog": "youtube/vlog", "youtube/vlog": "youtube/vlog", "youtube_vlog": "youtube/vlog",
    "shorts": "vertical/shorts", "short": "vertical/shorts", "vertical_video": "vertical/shorts",
    "vertical": "vertical/shorts", "vertical/shorts": "vertical/shorts", "tiktok": "vertical/shorts",
    "short_video": "vertical/shorts", "vertical_shorts": "vertical/shorts",
    "stock": "stock", "videvo": "stock", "stock_footage": "stock", "stock_video": "stock",
}

PLACEHOLDER = "<placeholder>"


class ReferenceError_(ValueError):
    """The reference file cannot be read."""


def normalise_category(dataset: str | None) -> str:
    if not dataset:
        return "unknown"
    name = str(dataset).strip()
    tail = name.split("/", 1)[1] if name.upper().startswith("DREAM/") else name
    key = re.sub(r"[\s-]+", "_", tail.strip().lower())
    if key in CATEGORY_ALIASES:
        return CATEGORY_ALIASES[key]
    if tail.lower() in CATEGORY_ALIASES:
        return CATEGORY_ALIASES[tail.lower()]
    return tail or name


@dataclass
class Reference:
    idx: str
    category: str
    dataset: str
    description: str
    events: list[str] | None          # None: not annotated, extracted by the judge
    video_file: str | None            # None when the file has a placeholder
    extra: dict = field(default_factory=dict)

    @property
    def video_key(self) -> str | None:
        return video_stem(self.video_file) if self.video_file else None


def video_stem(path: str) -> str:
    name = str(path).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


def read_records(path: str | Path) -> list[dict]:
    """Rows of a JSONL file or a JSON list (or {"data": [...]})."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        data = json.loads(text)
        return [r for r in data if isinstance(r, dict)]
    if stripped.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            for key in ("data", "records", "predictions", "results"):
                if isinstance(data.get(key), list):
                    return [r for r in data[key] if isinstance(r, dict)]
            return [data]
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{path}:{n}: not valid JSON ({e})") from None
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _messages_parts(row: dict) -> tuple[str | None, str | None, str | None]:
    """(reference text, prompt, video file) from a messages-format row."""
    reference = prompt = video = None
    for message in row.get("messages") or []:
        content = message.get("content")
        items = content if isinstance(content, list) else [{"type": "text", "text": content}]
        for item in items:
            if not isinstance(item, dict):
                continue
            if item.get("type") == "video" or item.get("video"):
                v = item.get("video")
                if isinstance(v, dict):
                    video = v.get("video_file") or v.get("path") or video
                elif isinstance(v, str):
                    video = v
            elif message.get("role") == "assistant":
                reference = item.get("reference") or item.get("text") or reference
            elif message.get("role") == "user" and item.get("text"):
                prompt = item["text"]
    return reference, prompt, video


def parse_reference(row: dict) -> Reference:
    if "messages" in row:
        description, _prompt, video = _messages_parts(row)
    else:
        text = row.get("text")
        if isinstance(text, dict):
            description = text.get("response") or text.get("reference") or text.get("answer")
        else:
            description = row.get("response") or row.get("reference") or row.get("caption") or text
        video = row.get("video_file") or row.get("video")
    if not isinstance(description, str):
        raise ValueError(f"row idx={row.get('idx')!r} has no reference description")  # noqa: TRY004
    extra = dict(row.get("extra_info") or {})
    events = extra.pop("events", None)
    if events is not None:
        events = [str(e).strip() for e in events if str(e).strip()]
    if isinstance(video, str) and (not video.strip() or video.strip() == PLACEHOLDER):
        video = None
    idx = row.get("idx", row.get("id", row.get("vid")))
    dataset = str(row.get("dataset") or row.get("category") or "")
    return Reference(
        idx=str(idx), category=normalise_category(dataset), dataset=dataset, description=description,
        events=events, video_file=video if isinstance(video, str) else None, extra=extra,
    )


def load_references(path: str | Path) -> list[Reference]:
    refs = []
    for n, row in enumerate(read_records(path), 1):
        try:
            refs.append(parse_reference(row))
        except ValueError as e:
            raise ValueError(f"{path}: row {n}: {e}") from None
    if not refs:
        raise ValueError(f"{path}: no reference rows")
    seen = set()
    for r in refs:
        if r.idx in seen:
            raise ValueError(f"{path}: duplicate idx {r.idx}")
        seen.add(r.idx)
    return refs
