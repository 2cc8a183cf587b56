"""The per-video bookkeeping of a describe run, one copy for the local and the Ray engine.

A video's clips are described in batches that mix videos, and come back in any order; the tracker
holds each video's records until they can be written in clip order, then finishes the video:

    left_to_do(videos, done)          the videos an earlier run did not finish (engine.resume_plan
                                      reads its records), and how many it did
    tracker.described(state, record) a clip's record, held until the video's clip count is known
    tracker.decode_ended(state, ...)  the clip count is known (0 clips: the video failed)
    tracker.flush(state)              write what is held, in clip order, with n_clips and the source's
                                      size and rate; all clips written: subtitles, "video" event, done
    tracker.fail(state, error)        one error record; the video's later clips are dropped

The local engine writes a video's records as they come (a killed run keeps its finished clips; the
rerun describes only the others); the Ray engine writes a video whole (`whole_videos`: its shards
never hold part of a video). Both count into one DescribeSummary.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tarsier.common.types import VideoError, VideoInput
from tarsier.engine.records import error_record

SOURCE_META = ("width", "height", "fps")   # what every record says about its source video


@dataclass
class DescribeSummary:
    videos: int = 0
    videos_ok: int = 0
    videos_failed: int = 0
    videos_skipped: int = 0      # already complete from an earlier run
    clips_done: int = 0
    clips_skipped: int = 0
    tokens: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)   # (input, one-line message)
    jsonl: Path | None = None
    seconds: float = 0.0
    batches: int = 0             # model calls (clips_done / batches = mean batch size)
    manifests: dict = field(default_factory=dict)   # format -> (clips listed, clips left out)

    @property
    def exit_code(self) -> int:
        return 1 if self.errors else 0


@dataclass
class VideoState:
    video: VideoInput
    n_clips: int | None = None            # known once its decode pass ends
    records: dict[int, dict] = field(default_factory=dict)   # clip index -> written record
    pending: list[dict] = field(default_factory=list)        # described, not yet written
    decode_s: float = 0.0
    failed: bool = False
    end_order: int | None = None          # how many decodes had ended before this one (None: decoding)
    meta: dict = field(default_factory=dict)    # the source's size and rate (engine.curate.video_meta)
    spans: dict = field(default_factory=dict)   # clip index -> (start, end), for cutting clip files
    cuts: dict = field(default_factory=dict)    # clip index -> engine.clips.CutResult


def left_to_do(videos: list[VideoInput], done: dict[str, dict[int, dict]],
               complete: Callable[[dict], bool] = lambda records: True) -> tuple[list[VideoInput], int, int]:
    """(videos still to describe, videos already complete, their clips): a video is complete when an
    earlier run wrote all of its clips under the same key (and `complete` says its records are)."""
    todo: list[VideoInput] = []
    skipped = clips = 0
    for v in videos:
        records = done.get(v.rel, {})
        prior = next(iter(records.values()), None)
        if prior is not None and len(records) == prior.get("n_clips") and complete(records):
            skipped += 1
            clips += len(records)
        else:
            todo.append(v)
    return todo, skipped, clips


class VideoTracker:
    """`record_key`: what every record carries (model, grain, prompt, settings; engine.prepare);
    `emit(record)` writes one record (to the JSONL log, the stream); `notify(event, **info)` is the
    progress callback; `resumed`: records of unfinished videos an earlier run wrote (their clips are not
    described again); `decorate(state, record)`: more fields for a record about to be written (the clip
    file); `on_written()`: a video's records are all written."""

    def __init__(self, videos: list[VideoInput], *, record_key: dict, stems: set[str], summary: DescribeSummary,
                 emit: Callable[[dict], None], notify: Callable[..., None], subtitle_writers=(),
                 resumed: dict[str, dict[int, dict]] | None = None, whole_videos: bool = False,
                 decorate: Callable[[VideoState, dict], None] | None = None,
                 on_written: Callable[[], None] | None = None):
        resumed = resumed or {}
        self.active = {v.rel: VideoState(v, records=dict(resumed.get(v.rel, {}))) for v in videos}
        self.record_key, self.stems, self.summary = record_key, stems, summary
        self.emit, self.notify = emit, notify
        self.subtitle_writers = list(subtitle_writers)
        self.whole_videos = whole_videos
        self.decorate = decorate
        self.on_written = on_written
        self.decodes_ended = 0

    def get(self, rel: str) -> VideoState | None:
        """The video's state while it is neither finished nor failed."""
        return self.active.get(rel)

    def input_problems(self, problems: list[tuple[str, str]]) -> None:
        """Inputs that led to no video file at all: one error record each."""
        for where, message in problems:
            self.emit(error_record(where, "discover", message, self.record_key))
            self.notify("error", video=None, message=f"{where}: {message}")

    def described(self, st: VideoState, record: dict) -> None:
        st.pending.append(record)
        self.summary.clips_done += 1
        self.summary.tokens += record["tokens"]

    def decode_ended(self, st: VideoState, n_clips: int, meta: dict) -> bool:
        """The video's clip count is known; False (and the video failed) when it has none."""
        st.n_clips, st.end_order = n_clips, self.decodes_ended
        st.meta = {**st.meta, **meta}
        self.decodes_ended += 1
        if n_clips == 0:
            self.fail(st, VideoError("decode", "no decodable video frames"))
            return False
        return True

    def flush(self, st: VideoState) -> None:
        """Write the video's held records in clip order (once its clip count is known; with
        `whole_videos` only all of them at once); when every clip is written, finish the video."""
        if st.n_clips is None or (self.whole_videos and len(st.records) + len(st.pending) < st.n_clips):
            return
        for rec in sorted(st.pending, key=lambda r: r["clip"]):
            rec["n_clips"] = st.n_clips
            for k in SOURCE_META:
                if k in st.meta:
                    rec.setdefault(k, st.meta[k])
            if self.decorate is not None:
                self.decorate(st, rec)
            self.emit(rec)
            st.records[rec["clip"]] = rec
        st.pending.clear()
        if len(st.records) < st.n_clips:
            return
        if self.on_written is not None:
            self.on_written()
        rel = st.video.rel
        for w in self.subtitle_writers:
            w.write_video(rel, list(st.records.values()), unique_name=rel in self.stems)
        self.summary.videos_ok += 1
        self.notify("video", video=rel, ok=True, clips=st.n_clips)
        del self.active[rel]

    def fail(self, st: VideoState, err: VideoError) -> None:
        """One error record for the video; whatever of it is still in flight is dropped."""
        rel = st.video.rel
        st.failed = True
        self.emit(error_record(rel, err.stage, err.message, self.record_key))
        self.summary.videos_failed += 1
        self.summary.errors.append((rel, f"{err}"))
        self.notify("error", video=rel, message=f"{rel}: {err}")
        self.active.pop(rel, None)
