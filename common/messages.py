"""The "messages" row format (Tarsier2 training data, DREAM-1K, upstream benchmarks), read and
written here only; what a row means to a task (a DREAM-1K reference, a benchmark question, a
training sample, a DPO pair) is decided by its reader on top of these functions.

    {"messages": [
        {"role": "user", "content": [
            {"type": "video", "video": {"video_file": "videos/a.mp4", "start": 1.0, "end": 4.0,
                                        "frames": [1.0, 2.0, 3.0]}},
            {"type": "text", "text": "Describe the video in detail."}]},
        {"role": "assistant", "content": [{"type": "text", "text": " Answer: ("},        # a forced prefix
                                          {"type": "text", "text": "", "reference": "A"}]}],
     "dataset": "TVBench/Action Antonym", "task": "video/QA", "idx": 0, "vid": "action_antonym/x.avi"}

A message's `content` may also be a plain string (one text item). A video item is
{"type": "video", "video": {...}} or {"video": "path"}; "<placeholder>" stands for a video the file
does not name. The flat DREAM-1K format {"video_file", "text": {"prompt", "response"}} is read here
too (parse_flat_sample; common/dream.py for references).

Files of rows: JSONL, or a JSON list (read_records, read_lines); JSONL only (numbered_rows, offset_rows)."""
from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PLACEHOLDER = "<placeholder>"
VIDEO_TOKEN = re.compile(r"<video>\s*|<image>\s*")   # upstream's placeholders in prompt texts


# ---------------------------------------------------------------------------------------------
# Files of rows
# ---------------------------------------------------------------------------------------------
def read_records(path: str | Path) -> list[dict]:
    """Rows of a JSONL file or a JSON list (or {"data": [...]}); a bad JSONL line raises
    ValueError naming file:line."""
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


def read_lines(path: Path) -> list[tuple[int, dict | None, str | None]]:
    """(line number, row or None, JSON error) of a JSONL file, or of a JSON list (line = position):
    for readers that report every bad row at once."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except ValueError as e:
            return [(1, None, f"not valid JSON ({e})")]
        return [(n, r if isinstance(r, dict) else None, None if isinstance(r, dict) else "not an object")
                for n, r in enumerate(data, 1)]
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            out.append((n, None, f"not valid JSON ({e.msg})"))
            continue
        out.append((n, row if isinstance(row, dict) else None, None if isinstance(row, dict) else "not an object"))
    return out


def numbered_rows(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line number, row, None), or (line number, None, the reason) for a line that is not a JSON
    object, for every non-blank line of a JSONL file of rows (training manifests, pairs files)."""
    for number, _, row, err in offset_rows(path):
        yield number, row, err


def offset_rows(path: Path) -> Iterator[tuple[int, int, dict | None, str | None]]:
    """numbered_rows with each line's byte offset, so that a reader can come back to one row alone."""
    with open(path, "rb") as f:
        offset = 0
        for number, raw in enumerate(f, 1):
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            row, err = row_at_line(raw)
            yield number, start, row, err


def row_at_line(raw: bytes) -> tuple[dict | None, str | None]:
    """One JSONL line -> (row, None) or (None, why it is not a JSON object)."""
    try:
        row = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except json.JSONDecodeError as e:
        return None, f"invalid JSON ({e.msg} at column {e.colno})"
    if not isinstance(row, dict):
        return None, "row is not a JSON object"
    return row, None


def video_stem(path: str) -> str:
    """The file name without folder and extension: what joins a prediction to its row."""
    name = str(path).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


# ---------------------------------------------------------------------------------------------
# Reading a row's turns, leniently (references and benchmark questions)
# ---------------------------------------------------------------------------------------------
def content_items(message: dict) -> list[dict]:
    """The items of a message's content (a string content is one text item)."""
    content = message.get("content")
    items = content if isinstance(content, list) else [{"type": "text", "text": content}]
    return [item for item in items if isinstance(item, dict)]


def is_video_item(item: dict) -> bool:
    return item.get("type") == "video" or bool(item.get("video"))


def item_video(item: dict, current: str | None = None) -> str | None:
    """The video a video item names (video_file, else path, else a plain string), else `current`."""
    v = item.get("video")
    if isinstance(v, dict):
        return v.get("video_file") or v.get("path") or current
    if isinstance(v, str):
        return v
    return current


@dataclass
class Turns:
    prompt: str | None                 # the user turn's texts joined by newlines (None: no text)
    prefix: str = ""                   # the assistant's texts before its first reference: a forced start
    references: list = field(default_factory=list)   # every non-empty `reference` (lists spread)
    video: str | None = None           # the last video item's file, as written


def read_turns(row: dict) -> Turns:
    """A messages row's prompt, answer prefix, references and video (benchmark rows)."""
    prompt_parts: list[str] = []
    prefix_parts: list[str] = []
    references: list = []
    video = None
    for message in row.get("messages") or []:
        if not isinstance(message, dict):
            continue
        for item in content_items(message):
            if is_video_item(item):
                video = item_video(item, video)
                continue
            if message.get("role") == "user" and isinstance(item.get("text"), str):
                prompt_parts.append(item["text"])
            elif message.get("role") == "assistant":
                ref = item.get("reference")
                if ref is not None and ref != "":
                    references.extend(ref if isinstance(ref, list) else [ref])
                elif not references and isinstance(item.get("text"), str):
                    prefix_parts.append(item["text"])
    prompt = "\n".join(prompt_parts) if prompt_parts else None
    return Turns(prompt=prompt, prefix="".join(prefix_parts), references=references, video=video)


def is_placeholder(video) -> bool:
    """True for a video field that names no file (empty, or "<placeholder>")."""
    return isinstance(video, str) and (not video.strip() or video.strip() == PLACEHOLDER)


# ---------------------------------------------------------------------------------------------
# Reading a training sample, strictly: (fields, None) or (None, the reason)
# ---------------------------------------------------------------------------------------------
def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parse_video_spec(spec: Any) -> tuple[str | None, float | None, float | None, list[float] | None, str | None]:
    """(video_file, start, end, frames, error) of a video item's `video` object."""
    if isinstance(spec, str):
        spec = {"video_file": spec}
    if not isinstance(spec, dict):
        return None, None, None, None, "video item has no 'video' object"
    vf = spec.get("video_file", spec.get("path"))
    if not isinstance(vf, str) or not vf.strip():
        return None, None, None, None, "video item has no video_file"
    start, end, frames = spec.get("start"), spec.get("end"), spec.get("frames")
    if start is not None and (not is_number(start) or start < 0):
        return None, None, None, None, f"bad start {start!r} (need a number >= 0)"
    if end is not None and (not is_number(end) or end <= 0):
        return None, None, None, None, f"bad end {end!r} (need a number > 0)"
    if start is not None and end is not None and start >= end:
        return None, None, None, None, f"start {start} >= end {end}"
    if frames is not None:
        if not isinstance(frames, list) or not frames or not all(is_number(t) and t >= 0 for t in frames):
            return None, None, None, None, "frames must be a non-empty list of times >= 0"
        if any(b < a for a, b in itertools.pairwise(frames)):
            return None, None, None, None, "frames must be in increasing order"
        lo = start if start is not None else 0.0
        if frames[0] < lo or (end is not None and frames[-1] > end):
            return None, None, None, None, "frames lie outside [start, end]"
        frames = [float(t) for t in frames]
    return (vf, float(start) if start is not None else None, float(end) if end is not None else None,
            frames, None)


def _item_text(item: dict) -> str:
    for key in ("text", "reference"):
        v = item.get(key)
        if isinstance(v, str) and v.strip():
            return v.strip()
    return ""


def parse_messages_sample(row: dict) -> tuple[dict | None, str | None]:
    """A training sample from a messages row: the first user turn (exactly one video item, its
    texts the prompt, upstream's <video> tokens removed) and the assistant turn after it (the answer).
    Fields: video_file, start, end, frames, prompt, answer."""
    msgs = row.get("messages")
    if not isinstance(msgs, list):
        return None, "'messages' is not a list"
    user = next((m for m in msgs if isinstance(m, dict) and m.get("role") == "user"), None)
    if user is None:
        return None, "missing user turn"
    ui = msgs.index(user)
    asst = next((m for m in msgs[ui + 1:] if isinstance(m, dict) and m.get("role") == "assistant"), None)
    if asst is None:
        return None, "missing assistant turn"
    content = user.get("content")
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    if not isinstance(content, list):
        return None, "user turn has no content list"
    videos = [c for c in content if isinstance(c, dict) and c.get("type") == "video"]
    if not videos:
        return None, "no video item in the user turn"
    if len(videos) > 1:
        return None, "more than one video item in the user turn"
    vf, start, end, frames, err = parse_video_spec(videos[0].get("video"))
    if err:
        return None, err
    prompt = "\n".join(_item_text(c) for c in content
                       if isinstance(c, dict) and c.get("type") == "text" and _item_text(c))
    prompt = VIDEO_TOKEN.sub("", prompt).strip()
    if not prompt:
        return None, "empty prompt (no text item in the user turn)"
    acontent = asst.get("content")
    if isinstance(acontent, str):
        answer = acontent.strip()
    elif isinstance(acontent, list):
        answer = "\n".join(_item_text(c) for c in acontent if isinstance(c, dict) and _item_text(c))
    else:
        answer = ""
    if not answer:
        return None, "empty answer in the assistant turn"
    return {"video_file": vf, "start": start, "end": end, "frames": frames, "prompt": prompt,
            "answer": answer}, None


def parse_flat_sample(row: dict) -> tuple[dict | None, str | None]:
    """A training sample from a flat DREAM-1K row {"video_file", "text": {"prompt", "response"}}."""
    text = row.get("text")
    if not isinstance(text, dict):
        return None, "no 'messages' and no 'text' object"
    vf = row.get("video_file")
    if not isinstance(vf, str) or not vf.strip():
        return None, "no video_file"
    spec = {"video_file": vf, **{k: row[k] for k in ("start", "end", "frames") if k in row}}
    vf, start, end, frames, err = parse_video_spec(spec)
    if err:
        return None, err
    prompt = VIDEO_TOKEN.sub("", str(text.get("prompt") or "")).strip()
    if not prompt:
        return None, "empty prompt"
    answer = text.get("response")
    if not isinstance(answer, str) or not answer.strip():
        return None, "empty answer"
    return {"video_file": vf, "start": start, "end": end, "frames": frames, "prompt": prompt,
            "answer": answer.strip()}, None


def parse_sample(row: dict) -> tuple[dict | None, str | None]:
    """A training sample from a row of either format."""
    return parse_messages_sample(row) if "messages" in row else parse_flat_sample(row)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def video_spec(video_file: str, start: float | None = None, end: float | None = None,
               frames: list[float] | None = None) -> dict:
    """A video item's `video` object: start, end and frame times only when given."""
    spec: dict[str, Any] = {"video_file": video_file}
    if start is not None:
        spec["start"] = start
    if end is not None:
        spec["end"] = end
    if frames:
        spec["frames"] = list(frames)
    return spec


def user_turn(video: dict, prompt: str) -> dict:
    """A user message: the video item, then the prompt."""
    return {"role": "user", "content": [{"type": "video", "video": video}, {"type": "text", "text": prompt}]}


def assistant_turn(text: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}
