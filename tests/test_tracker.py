"""The per-video tracker (engine.tracker) the local and the Ray engine share: what is skipped, when
records are written and in what order, what a finished or failed video leaves behind."""
from __future__ import annotations

from pathlib import Path

from tarsier.common.types import VideoError, VideoInput
from tarsier.engine.tracker import DescribeSummary, VideoTracker, left_to_do
from tarsier.engine.writers import SrtWriter

BASE = {"model": "m", "grain": "fine", "prompt": "p", "settings": "s"}


def video(rel: str) -> VideoInput:
    return VideoInput(Path("/in") / rel, rel)


def rec(rel: str, clip: int, text: str = "x", tokens: int = 2) -> dict:
    return {"video": rel, "clip": clip, "start": float(clip), "end": clip + 1.0, **BASE, "description": text,
            "tokens": tokens}


def tracker(videos, tmp_path=None, **kw):
    written, events, summary = [], [], DescribeSummary(videos=len(videos))
    t = VideoTracker(videos, record_key=BASE, stems=set(), summary=summary, emit=written.append,
                     notify=lambda event, **info: events.append((event, info)),
                     subtitle_writers=[SrtWriter(tmp_path)] if tmp_path is not None else (), **kw)
    return t, written, events, summary


def test_left_to_do_skips_complete_videos_only():
    done = {"a.mp4": {0: {**rec("a.mp4", 0), "n_clips": 2}, 1: {**rec("a.mp4", 1), "n_clips": 2}},
            "b.mp4": {0: {**rec("b.mp4", 0), "n_clips": 3}}}
    videos = [video("a.mp4"), video("b.mp4"), video("c.mp4")]
    todo, skipped, clips = left_to_do(videos, done)
    assert [v.rel for v in todo] == ["b.mp4", "c.mp4"] and (skipped, clips) == (1, 2)
    todo, skipped, _ = left_to_do(videos, done, complete=lambda records: False)   # e.g. a clip file is missing
    assert len(todo) == 3 and skipped == 0


def test_records_wait_for_the_clip_count_then_go_in_clip_order(tmp_path):
    t, written, events, summary = tracker([video("a.mp4")], tmp_path)
    st = t.get("a.mp4")
    t.described(st, rec("a.mp4", 1))
    t.described(st, rec("a.mp4", 0))
    t.flush(st)
    assert written == []                                  # the clip count is not known yet
    assert t.decode_ended(st, 3, {"width": 64, "height": 48, "fps": 25.0, "duration": 3.0})
    t.flush(st)
    assert [r["clip"] for r in written] == [0, 1]         # written as they come (a kill keeps them)
    assert all(r["n_clips"] == 3 and (r["width"], r["height"], r["fps"]) == (64, 48, 25.0) for r in written)
    assert "duration" not in written[0]
    assert t.get("a.mp4") is not None and not (tmp_path / "a.srt").exists()
    t.described(st, rec("a.mp4", 2))
    t.flush(st)
    assert [r["clip"] for r in written] == [0, 1, 2]
    assert t.get("a.mp4") is None and (tmp_path / "a.srt").read_text().count(" --> ") == 3
    assert (summary.videos_ok, summary.clips_done, summary.tokens) == (1, 3, 6)
    assert events == [("video", {"video": "a.mp4", "ok": True, "clips": 3})]


def test_whole_videos_are_written_at_once_and_announced():
    videos_written = []
    t, written, _, _ = tracker([video("a.mp4")], whole_videos=True, on_written=lambda: videos_written.append(1))
    st = t.get("a.mp4")
    t.decode_ended(st, 2, {})
    t.described(st, rec("a.mp4", 1))
    t.flush(st)
    assert written == [] and videos_written == []         # a shard never holds part of a video
    t.described(st, rec("a.mp4", 0))
    t.flush(st)
    assert [r["clip"] for r in written] == [0, 1] and videos_written == [1]


def test_resumed_records_count_towards_the_video():
    earlier = {"a.mp4": {0: {**rec("a.mp4", 0), "n_clips": 2}}}
    t, written, _, summary = tracker([video("a.mp4")], resumed=earlier)
    st = t.get("a.mp4")
    assert 0 in st.records
    t.decode_ended(st, 2, {})
    t.described(st, rec("a.mp4", 1))
    t.flush(st)
    assert [r["clip"] for r in written] == [1] and summary.videos_ok == 1


def test_decorate_adds_fields_before_a_record_is_written():
    t, written, _, _ = tracker([video("a.mp4")], decorate=lambda st, r: r.update(clip_file="a/0000.mp4"))
    st = t.get("a.mp4")
    t.decode_ended(st, 1, {})
    t.described(st, rec("a.mp4", 0))
    t.flush(st)
    assert written[0]["clip_file"] == "a/0000.mp4" and list(written[0])[-2:] == ["n_clips", "clip_file"]


def test_a_failed_video_is_one_error_record_and_leaves_the_run():
    t, written, events, summary = tracker([video("a.mp4"), video("b.mp4")])
    st = t.get("a.mp4")
    t.described(st, rec("a.mp4", 0))
    t.fail(st, VideoError("decode", "broken frame"))
    assert written == [{"video": "a.mp4", "error": "broken frame", "stage": "decode", **BASE}]
    assert st.failed and t.get("a.mp4") is None and t.get("b.mp4") is not None
    assert summary.videos_failed == 1 and summary.errors == [("a.mp4", "decode: broken frame")]
    assert events == [("error", {"video": "a.mp4", "message": "a.mp4: decode: broken frame"})]


def test_a_video_without_clips_fails_at_its_end():
    t, written, _, summary = tracker([video("a.mp4"), video("b.mp4")])
    assert not t.decode_ended(t.get("a.mp4"), 0, {})
    assert written[0]["error"] == "no decodable video frames" and summary.videos_failed == 1
    st = t.get("b.mp4")
    assert t.decode_ended(st, 1, {}) and st.end_order == 1   # the order in which decodes ended


def test_input_problems_are_error_records_without_a_video_event():
    t, written, events, _ = tracker([])
    t.input_problems([("gone/", "no such file or folder")])
    assert written == [{"video": "gone/", "error": "no such file or folder", "stage": "discover", **BASE}]
    assert events == [("error", {"video": None, "message": "gone/: no such file or folder"})]
