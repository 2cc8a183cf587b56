"""Robust parsing of judge (LLM) output.

LLMs wrap JSON in code fences, add prose before and after it, leave trailing commas, or answer with
Python literals (single quotes, True/None). `extract_json` finds the first value that parses after
a few conservative repairs; `parse_events` / `parse_labels` turn it into the shapes AutoDQ needs and
raise `ParseError` (with a short reason that is shown to the model when it is asked again) otherwise.
"""
from __future__ import annotations

import ast
import json
import re

LABELS = ("entailment", "neutral", "contradiction")
# AutoDQ extracts at most this many events from a description (prompts/autodq/extract.txt says
# "at most 10"); every judge - LLM, embed, exact - keeps the first MAX_EVENTS.
MAX_EVENTS = 10

_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_PY_WORDS = {"true": "True", "false": "False", "null": "None"}


class ParseError(ValueError):
    """The judge's text could not be turned into the expected value."""


def _balanced_spans(text: str):
    """Yield substrings that start at '{' or '[' and end at the matching bracket (quote-aware)."""
    for start, ch in enumerate(text):
        if ch not in "{[":
            continue
        stack: list[str] = []
        quote = ""
        escaped = False
        for i in range(start, len(text)):
            c = text[i]
            if quote:
                if escaped:
                    escaped = False
                elif c == "\\":
                    escaped = True
                elif c == quote:
                    quote = ""
                continue
            if c in "\"'":
                # an apostrophe inside a word ("man's") is not a quote
                if c == "'" and i > 0 and text[i - 1].isalnum() and i + 1 < len(text) and text[i + 1].isalnum():
                    continue
                quote = c
            elif c in "{[":
                stack.append("}" if c == "{" else "]")
            elif c in "}]":
                if not stack or stack[-1] != c:
                    break
                stack.pop()
                if not stack:
                    yield text[start : i + 1]
                    break


def _loads(candidate: str):
    """json.loads with repairs: trailing commas, then Python literal syntax."""
    try:
        return json.loads(candidate)
    except ValueError:
        pass
    fixed = _TRAILING_COMMA.sub(r"\1", candidate)
    try:
        return json.loads(fixed)
    except ValueError:
        pass
    for text in (candidate, re.sub(r"\b(true|false|null)\b", lambda m: _PY_WORDS[m.group(1)], candidate)):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, (dict, list, tuple)):
            return list(value) if isinstance(value, tuple) else value
    raise ValueError("not JSON")


def extract_json(text: str):
    """The first JSON object/array in `text` (fenced or not, surrounded by prose or not)."""
    if text is None:
        raise ParseError("empty answer")
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for block in candidates:
        stripped = block.strip()
        if stripped[:1] in "{[":
            try:
                return _loads(stripped)
            except ValueError:
                pass
        for span in _balanced_spans(block):
            try:
                return _loads(span)
            except ValueError:
                continue
    raise ParseError("no JSON object found in the answer")


def _event_text(item) -> str | None:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        for key in ("event", "description", "text", "action"):
            if isinstance(item.get(key), str):
                return item[key]
    return None


def parse_events(text: str, max_events: int = MAX_EVENTS) -> list[str]:
    """A list of event sentences from {"events": [...]} or a bare list; at most `max_events`."""
    value = extract_json(text)
    if isinstance(value, dict):
        for key in ("events", "Events", "event_list", "actions"):
            if key in value:
                value = value[key]
                break
        else:
            lists = [v for v in value.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise ParseError('expected an object with an "events" list')
            value = lists[0]
    if not isinstance(value, list):
        raise ParseError('"events" must be a list of strings')
    events = []
    for item in value:
        event = _event_text(item)
        if event is None:
            raise ParseError('"events" must be a list of strings')
        event = " ".join(event.split())
        if event:
            events.append(event)
    return events[:max_events]


def normalise_label(value) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    word = str(value).strip().strip(".\"'").lower()
    if word.startswith("entail"):
        return "entailment"
    if word.startswith("contradict") or word == "contradiction":
        return "contradiction"
    if word.startswith("neutral"):
        return "neutral"
    return None


def _label_of(item) -> str | None:
    if isinstance(item, dict):
        for key in ("label", "relationship", "relation", "result", "judgement", "judgment", "answer"):
            if key in item:
                return normalise_label(item[key])
        return None
    return normalise_label(item)


def parse_labels(text: str, n: int) -> list[str]:
    """Exactly `n` labels (entailment / neutral / contradiction) in event order."""
    value = extract_json(text)
    if isinstance(value, dict):
        for key in ("results", "labels", "judgements", "judgments", "events", "answers"):
            if key in value and isinstance(value[key], list):
                value = value[key]
                break
        else:
            # {"1": "entailment", "2": "neutral"}
            if value and all(str(k).strip().isdigit() for k in value):
                value = [value[k] for k in sorted(value, key=lambda k: int(str(k).strip()))]
            elif n == 1 and any(k in value for k in ("label", "relationship", "result")):
                value = [value]
            else:
                raise ParseError('expected an object with a "results" list')
    if not isinstance(value, list):
        raise ParseError('"results" must be a list')
    items = list(value)
    if items and all(isinstance(it, dict) and str(it.get("id", "")).strip().isdigit() for it in items):
        items.sort(key=lambda it: int(str(it["id"]).strip()))
    labels = [_label_of(it) for it in items]
    if any(label is None for label in labels):
        raise ParseError('every label must be one of "entailment", "neutral", "contradiction"')
    if len(labels) != n:
        raise ParseError(f"expected exactly {n} results (one per event), got {len(labels)}")
    return labels  # type: ignore[return-value]


def parse_qa_verdict(text: str) -> dict:
    """{"pred": "yes" | "no", "score": float in [0, 5]} from a QA judge's answer (the Video-ChatGPT
    protocol's {"pred": ..., "score": ...}); ParseError when either is missing or out of range."""
    value = extract_json(text)
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0]
    if not isinstance(value, dict):
        raise ParseError('expected an object {"pred": "yes" or "no", "score": 0-5}')
    pred = next((value[k] for k in ("pred", "correct", "answer", "verdict") if k in value), None)
    if isinstance(pred, bool):
        pred = "yes" if pred else "no"
    word = str(pred).strip().strip(".\"'").lower() if pred is not None else ""
    if word not in ("yes", "no", "true", "false", "correct", "incorrect"):
        raise ParseError('"pred" must be "yes" or "no"')
    score = value.get("score")
    if isinstance(score, str):
        try:
            score = float(score.strip().split("/")[0])
        except ValueError:
            score = None
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 5:
        raise ParseError('"score" must be a number from 0 to 5')
    return {"pred": "yes" if word in ("yes", "true", "correct") else "no", "score": float(score)}
