"""Robust parsing of judge output."""
from __future__ import annotations

import pytest

from tarsier.evaluation.parsing import ParseError, extract_json, parse_events, parse_labels


@pytest.mark.parametrize("text", [
    '{"events": ["A man opens a door.", "The man sits down."]}',
    'Sure! Here are the events:\n```json\n{"events": ["A man opens a door.", "The man sits down."]}\n```\nHope it helps.',
    '```\n{"events": ["A man opens a door.", "The man sits down.",],}\n```',
    "{'events': ['A man opens a door.', 'The man sits down.']}",
    'The events are {"events": ["A man opens a door.", "The man sits down."]} as requested.',
    '["A man opens a door.", "The man sits down."]',
    '{"events": [{"event": "A man opens a door."}, {"event": "The man sits down."}]}',
    "Output: {'events': [\"A man opens a door.\", 'The man sits down.'], 'done': True, 'note': None}",
])
def test_parse_events_variants(text):
    assert parse_events(text) == ["A man opens a door.", "The man sits down."]


def test_parse_events_apostrophes_and_limits():
    assert parse_events('{"events": ["The man\'s dog runs."]}') == ["The man's dog runs."]
    many = '{"events": [' + ", ".join(f'"Event {i}."' for i in range(15)) + "]}"
    assert len(parse_events(many)) == 10
    assert parse_events('{"events": []}') == []


@pytest.mark.parametrize("text", ["no json at all", "{\"events\": \"just a string\"}", "", "{broken"])
def test_parse_events_failures(text):
    with pytest.raises(ParseError):
        parse_events(text)


@pytest.mark.parametrize("text", [
    '{"results": [{"id": 1, "label": "entailment"}, {"id": 2, "label": "Neutral"}, {"id": 3, "label": "contradiction"}]}',
    '```json\n{"labels": ["entailment", "neutral", "contradiction",]}\n```',
    "{'results': [{'id': 2, 'label': 'neutral'}, {'id': 1, 'label': 'entailment'}, {'id': 3, 'label': 'contradiction'}]}",
    'Answer: ["Entailment.", "neutral", "CONTRADICTION"] -- done',
    '{"1": "entailment", "2": "neutral", "3": "contradiction"}',
    ('{"results": [{"event": "x", "relationship": "entailed"}, {"event": "y", "relationship": "neutral"}, '
    '{"event": "z", "relationship": "contradicts"}]}'),
])
def test_parse_labels_variants(text):
    assert parse_labels(text, 3) == ["entailment", "neutral", "contradiction"]


def test_parse_labels_wrong_count_and_bad_label():
    with pytest.raises(ParseError, match="expected exactly 3"):
        parse_labels('{"labels": ["entailment", "neutral"]}', 3)
    with pytest.raises(ParseError, match="one of"):
        parse_labels('{"labels": ["yes", "no"]}', 2)


def test_extract_json_prefers_first_valid_block():
    assert extract_json('text [not json] then {"a": 1}') == {"a": 1}
    assert extract_json('{"a": true, "b": null}') == {"a": True, "b": None}
