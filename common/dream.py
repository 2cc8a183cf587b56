"""DREAM-1K reference rows (both upstream formats) read as References, their categories normalised.

Flat format:     {"idx", "dataset": "DREAM/movie_animation", "text": {"prompt", "response"},
                  "video_file", "extra_info": {"duration", "n_subjects", "n_shots", "events", "n_events"}}
Messages format: {"messages": [user: [video {video_file}, text prompt], assistant: [text, reference]],
                  "dataset": "DREAM/vertical_video", "task", "idx", "extra_info": {...}}
Both may be JSONL or a JSON list (read through common/messages.py, the one reader of the formats). The five categories are normalised (see CATEGORY_ALIASES); an
unknown category is kept under its own name, never dropped.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from tarsier.common.messages import content_items, is_placeholder, is_video_item, item_video, read_records, video_stem

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


def _messages_parts(row: dict) -> tuple[str | None, str | None, str | None]:
    """(reference text, prompt, video file) from a messages-format row: the last non-empty
    `reference` (or `text`) of the assistant turn, the last user text."""
    reference = prompt = video = None
    for message in row.get("messages") or []:
        if not isinstance(message, dict):
            continue
        for item in content_items(message):
            if is_video_item(item):
                video = item_video(item, video)
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
    if is_placeholder(video):
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
