"""Dataset curation on top of `describe`: which clips to keep, and clip files cut beside the captions.

- Filters, each leaving a record with the reason (`"skipped": "..."`) instead of a description, so
  the curator sees what was dropped and why, and a rerun with the same filters skips it again:
  `min_size` (width, height: the video's display size must reach both), `max_aspect` (long side /
  short side), `min_motion` (near-static clips). Size and aspect are known when the video is opened,
  so such a video is never decoded: it becomes one skipped clip spanning the whole video.
- The motion score is in every clip record: the mean absolute luma difference between consecutive
  sampled frames (0 = a still image, 1 = black to white everywhere), computed from the frames the
  model gets anyway, on a 4x subsampled grid: no decode of its own and well under a millisecond per clip.
- `clips_dir`: every described clip is also written as a file (engine.clips); the record names it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tarsier.engine.clips import CLIP_CODECS


def motion_score(frames) -> float | None:
    """Mean absolute luma difference between consecutive frames of (N, H, W, 3) uint8 RGB, in [0, 1];
    0.0 for one frame, None when there are no frames."""
    if frames is None or len(frames) == 0:
        return None
    if len(frames) < 2:
        return 0.0
    small = np.asarray(frames[:, ::4, ::4], dtype=np.uint16)
    luma = (77 * small[..., 0] + 150 * small[..., 1] + 29 * small[..., 2]) >> 8   # BT.601, integer
    diff = np.abs(np.diff(luma.astype(np.int16), axis=0))
    return round(float(diff.mean()) / 255.0, 5)


def parse_size(text: str) -> tuple[int, int]:
    """'640x360' -> (640, 360); ValueError with a clear message otherwise."""
    try:
        w, h = (int(x) for x in text.lower().replace("*", "x").split("x"))
    except ValueError:
        raise ValueError(f"size must look like WIDTHxHEIGHT (e.g. 640x360), not {text!r}") from None
    if w < 0 or h < 0:
        raise ValueError(f"size must not be negative: {text!r}")
    return w, h


@dataclass(frozen=True)
class CurateOptions:
    clips_dir: str | None = None
    clip_codec: str = "copy"
    crf: int = 23
    audio: bool = True
    min_size: tuple[int, int] | None = None
    max_aspect: float | None = None
    min_motion: float | None = None

    def validate(self) -> None:
        if self.clip_codec not in CLIP_CODECS:
            raise ValueError(f"clip codec must be one of {', '.join(CLIP_CODECS)}, not {self.clip_codec!r}")
        if not 0 <= self.crf <= 51:
            raise ValueError("crf must be between 0 and 51")
        if self.max_aspect is not None and self.max_aspect < 1:
            raise ValueError("max aspect must be >= 1 (long side / short side)")
        if self.min_motion is not None and not 0 <= self.min_motion <= 1:
            raise ValueError("min motion must be between 0 and 1")

    @property
    def filtering(self) -> bool:
        return self.min_size is not None or self.max_aspect is not None or self.min_motion is not None

    def filters_key(self) -> str:
        """Identifies the filters: a skipped clip counts as done only under the same filters."""
        keep = {k: v for k, v in asdict(self).items() if k in ("min_size", "max_aspect", "min_motion")}
        return hashlib.sha1(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:8]

    def size_reason(self, width: int, height: int) -> str | None:
        if self.min_size is not None:
            mw, mh = self.min_size
            if width < mw or height < mh:
                return f"size {width}x{height} is below --min-size {mw}x{mh}"
        if self.max_aspect is not None and min(width, height) > 0:
            aspect = max(width, height) / min(width, height)
            if aspect > self.max_aspect + 1e-9:
                return f"aspect {aspect:.2f} is above --max-aspect {self.max_aspect:g}"
        return None

    def motion_reason(self, motion: float | None) -> str | None:
        if self.min_motion is not None and motion is not None and motion < self.min_motion:
            return f"motion {motion:.4f} is below --min-motion {self.min_motion:g}"
        return None

    @property
    def clips_path(self) -> Path | None:
        return Path(self.clips_dir) if self.clips_dir is not None else None


def skip_record(rel: str, index: int, start: float, end: float, record_key: dict, reason: str, motion,
                filters: str) -> dict:
    return {"video": rel, "clip": index, "start": round(start, 3), "end": round(end, 3), **record_key,
            "skipped": reason, "filters": filters, "motion": motion}


def video_meta(info) -> dict:
    """What the records and manifests need to know about the source video."""
    return {"width": int(info.width), "height": int(info.height), "fps": round(float(info.fps or 0.0), 3)}


def reader_clips(reader, curate: CurateOptions | None):
    """The clips of an open VideoReader and the video's meta; a video the size filters drop is
    never decoded: it becomes one clip spanning the whole video, with the reason in its meta."""
    from tarsier.common.types import Clip

    meta = video_meta(reader.info)
    reason = curate.size_reason(reader.info.width, reader.info.height) if curate is not None else None
    if reason is None:
        return reader.clips(), meta
    meta["skip"] = reason
    return iter([Clip(0, 0.0, float(reader.info.duration or 0.0), np.zeros((0, 1, 1, 3), np.uint8))]), meta


class Curation:
    """What describe does for curation, kept out of its loop: filtered clips become skip records
    (no model call), clip files are cut when a video's decode ends (in a thread, while the model
    describes the video's last clips; its records are written once its files are), and every record
    names its clip file. `error(rel, message)` reports a clip that could not be cut. `st` is the
    video's engine.tracker.VideoState."""

    def __init__(self, curate: CurateOptions | None, record_key: dict, stems: set[str], error):
        self.o = curate or CurateOptions()
        self.record_key = record_key
        self.stems = stems
        self.error = error
        self.filters = self.o.filters_key()
        self._pool = None   # one cutting thread: PyAV cuts without the GIL while the model runs

    # -- resume ------------------------------------------------------------------------------
    def usable(self, done: dict[str, dict[int, dict]]) -> dict[str, dict[int, dict]]:
        """Drop the skip records of other filters: under these filters those clips are judged again."""
        out = {}
        for rel, recs in done.items():
            keep = {i: r for i, r in recs.items() if not r.get("skipped") or r.get("filters") == self.filters}
            if keep:
                out[rel] = keep
        return out

    def complete(self, records: dict[int, dict]) -> bool:
        """With --clips, a described video is finished only when every described clip's file is there."""
        clips = self.o.clips_path
        if clips is None:
            return True
        return all(r.get("skipped") or (r.get("clip_file") and (clips / r["clip_file"]).is_file())
                   for r in records.values())

    # -- during the run ----------------------------------------------------------------------
    def skip(self, st, clip) -> bool:
        """True when the clip is filtered out (its skip record goes to st.pending)."""
        reason = st.meta.get("skip")
        motion = None
        if reason is None and self.o.min_motion is not None:
            motion = motion_score(clip.frames)
            reason = self.o.motion_reason(motion)
        if reason is None:
            return False
        st.pending.append(skip_record(st.video.rel, clip.index, clip.start, clip.end, self.record_key, reason, motion,
                                      self.filters))
        return True

    def cut(self, st) -> None:
        """Cut the clip files of a video whose decode just ended (spans known, skipped clips left out)."""
        clips = self.o.clips_path
        if clips is None:
            return
        from tarsier.engine.clips import ClipSpan, clip_extension, clip_file, cut_clips

        skipped = {r["clip"] for r in [*st.pending, *st.records.values()] if r.get("skipped")}
        spans = [ClipSpan(i, a, b) for i, (a, b) in sorted(st.spans.items()) if i not in skipped]
        if not spans:
            return
        ext = clip_extension(st.video.path, self.o.clip_codec)
        unique = st.video.rel in self.stems
        dest = {sp.index: clip_file(clips, st.video.rel, sp.index, ext, unique) for sp in spans}
        end = st.meta.get("duration") or max(b for _, b in st.spans.values())
        kwargs = dict(codec=self.o.clip_codec, crf=self.o.crf, audio=self.o.audio, video_end=end)
        if all(i in st.records or i in skipped for i in st.spans):   # no record of it left to write: now
            st.cuts = cut_clips(st.video.path, spans, dest, **kwargs)
            return
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tarsier-cut")
        # the video's records wait for it (add_clip_file), its clips meanwhile go through the model
        st.cuts = self._pool.submit(cut_clips, st.video.path, spans, dest, **kwargs)

    def add_clip_file(self, st, rec: dict) -> None:
        """Name the clip file (and where it really starts and ends) in a record about to be written;
        a clip that could not be cut gets the error instead."""
        if hasattr(st.cuts, "result"):   # still cutting: wait for this video's files
            st.cuts = st.cuts.result()
        cut = st.cuts.get(rec["clip"]) if st.cuts else None
        if cut is None or rec.get("skipped"):
            return
        if cut.error is not None:
            rec.update(error=cut.error, stage="clip")
            self.error(st.video.rel, f"clip {rec['clip']}: {cut.error}")
            return
        rec.update(clip_file=cut.path.relative_to(self.o.clips_path).as_posix(), clip_start=cut.start,
                   clip_end=cut.end, clip_frames=cut.frames)


def check_curation(curate: CurateOptions | None, formats) -> None:
    """Usage errors (ValueError) of the curation options, before the model loads."""
    if curate is not None:
        curate.validate()
    if "webdataset" in formats and (curate is None or curate.clips_dir is None):
        raise ValueError("-f webdataset needs --clips DIR (its shards hold the clip files)")
    if "parquet" in formats:
        import importlib.util

        if importlib.util.find_spec("pyarrow") is None:
            raise ValueError("-f parquet needs pyarrow: pip install pyarrow")
