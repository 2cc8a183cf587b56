"""Subtitle formats and the JSONL log's crash safety."""
from __future__ import annotations

import json

from tarsier.common.files import read_jsonl as read_records
from tarsier.engine.writers import JsonlWriter, SrtWriter, VttWriter, format_timestamp, repair_torn_tail

CLIPS = [
    {"clip": 1, "start": 4.25, "end": 3723.5, "description": "Then it\n\nstops --> here."},
    {"clip": 0, "start": 0.0, "end": 4.25, "description": "A red circle moves."},
]


def test_timestamps_always_have_hours():
    assert format_timestamp(0, ",") == "00:00:00,000"
    assert format_timestamp(3723.5, ",") == "01:02:03,500"
    assert format_timestamp(59.9996, ".") == "00:01:00.000"


def test_srt(tmp_path):
    path = SrtWriter(tmp_path).write_video("a/x.mp4", CLIPS)
    assert path == tmp_path / "a" / "x.srt"
    assert path.read_text() == (
        "1\n00:00:00,000 --> 00:00:04,250\nA red circle moves.\n\n"
        "2\n00:00:04,250 --> 01:02:03,500\nThen it\nstops -> here.\n"
    )


def test_vtt(tmp_path):
    path = VttWriter(tmp_path).write_video("x.mov", CLIPS, unique_name=True)
    assert path == tmp_path / "x.mov.vtt"
    text = path.read_text()
    assert text.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:04.250\nA red circle moves.\n")
    assert "00:00:04.250 --> 01:02:03.500" in text and "," not in text.split("\n")[2]


def test_jsonl_torn_tail_is_dropped_on_reopen(tmp_path):
    path = tmp_path / "d.jsonl"
    w = JsonlWriter(path)
    w.write({"video": "a.mp4", "clip": 0})
    w.close()
    with open(path, "a") as f:
        f.write('{"video": "a.mp4", "cl')  # a kill mid-write
    repair_torn_tail(path)
    assert [r["clip"] for r in read_records(path)] == [0]
    w = JsonlWriter(path)
    w.write({"video": "a.mp4", "clip": 1})
    w.close()
    assert [json.loads(line)["clip"] for line in path.read_text().splitlines()] == [0, 1]
