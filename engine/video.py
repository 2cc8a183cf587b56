"""One decode pass per video: probe, scene detection, clips and their sampled frames.

    with VideoReader(path, ClipOptions()) as reader:
        for clip in reader.clips():      # clips come out in time order as each one closes
            ...
    info, clips = read_clips(path, ClipOptions())

Design (see also engine/scenes.py and engine/sampling.py):

- Decoding: PyAV, `thread_type = "AUTO"`, `codec_context.thread_count` set explicitly (0 = all
  cores). Every frame is decoded exactly once; nothing seeks, nothing re-opens the file.
  Per frame, at most two cheap conversions happen: a small BGR image for the scene detector
  (about `detect_width` wide, 128 px by default: DetectionImages samples it from the decoded yuv420p
  planes with numpy strides and cv2's I420 -> BGR, or swscale makes it for other formats), and — only
  for candidate frames that a clip picks (resized lazily, engine.sampling) — an RGB image of the size
  the model's frame spec asks for
  (engine/interface.py: a square, stretched with no crop and the AREA filter, for Tarsier1 and nano;
  the aspect-kept size, BICUBIC, for Tarsier2), in swscale with a persistent context
  (`frame.reformat()` would rebuild one per call, 4x slower at 1080p) and one swscale thread (the
  decoder already has the cores). Full-resolution RGB is never made. Cut times agree exactly with
  `scenedetect.detect(..., backend="pyav")` on the sample videos and the generated test videos
  (tests/test_video.py), though the detector sees other pixels than PySceneDetect's own pipeline
  (BENCHMARKS.md "Decode": on hard synthetic video a few percent of the cuts differ).
- Time origin: times are seconds from the container's start time (what a player shows as 0:00),
  falling back to the stream's start time, then to the first frame. Negative times (pre-roll) are
  clamped to 0. Clips tile [0, duration) with no gaps or overlaps; the first clip starts at 0 even
  when the first frame is later (a stream that starts after the container start); `duration` is
  the end of the last decoded frame (its pts + its duration).
- Rotation: the display matrix of the decoded frames (`frame.rotation`, counter-clockwise degrees)
  is applied to the sampled frames with np.rot90; `info.width/height` are the display size and
  `info.rotation` is the clockwise rotation applied. Detection frames are not rotated (the
  detectors' scores do not depend on orientation).
- One-frame video: valid. It yields one clip [0, 1/fps) whose N frames repeat the single frame.
- Decode errors: if the decoder fails mid-stream after at least one frame was decoded, decoding
  stops there and the clips up to the last decoded frame are emitted (the problem is kept in
  `reader.warnings`); with no frame decoded at all it is a VideoError("decode", ...).
- Candidate buffer: candidates are kept every `min_clip / (frames * 1.25)` seconds (by timestamp,
  at most every frame), so every clip of min_clip seconds has >= `frames` candidates. The buffer
  only holds candidates of clips not yet emitted, and the planner emits clips after at most
  ~2*max_clip + detector delay + min_clip seconds, so memory is bounded by max_clip. On top of
  that, while a scene stays open its old candidates (older than the detector's reporting delay)
  are thinned on a nested power-of-two grid: every clip that can still contain them is at least
  min(open length, max_clip/2) long, so 1.25*frames per that length suffice. In practice a few
  dozen to ~110 candidates are held whatever the video length. A candidate holds its decoded frame
  until a clip picks it (then it is resized) or thinning drops it (never resized); at most
  PENDING_BYTES of decoded frames are held (beyond that the oldest are resized on the spot,
  the same pixels either way). Thinning starts at 4*frames candidates and comes again every
  2*frames, before a 1080p scene fills that budget (about 40 frames): at 1080p, 42 of the 600
  candidates of bench/decode.py are resized (32 picked), where thinning at 8*frames resized 135.
  A hard cap (`reader.stats["buffer_cap"]`, from the max_clip bound, or max(256, 8*frames) with
  max_clip=None, or `max_candidates`) is enforced by dropping every other candidate and doubling
  the keep interval. `reader.stats["max_buffer"]` reports the most candidates ever held.
- Sampling: N frames uniform in time over the clip's candidates, including the first and the last
  (engine.sampling.pick_frames; Tarsier's index rule when candidates are evenly spaced). A frame spec
  with `all_frames_if_fewer` (Tarsier2) gives a clip with fewer than N frames each of them once: a
  clip of at least min_clip seconds with T < N frames has every frame as a candidate (candidates are
  kept every min_clip / (1.25 N) seconds), and a whole video shorter than min_clip keeps every frame.
- Options are checked up front: a bad ClipOptions raises ValueError (a usage error), not VideoError.
"""
from __future__ import annotations

import contextlib
import math
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tarsier.common.types import Clip, VideoError, VideoInfo
from tarsier.engine.interface import SquareGeometry
from tarsier.engine.sampling import CandidateBuffer, pick_frames
from tarsier.engine.scenes import SCENE_MODES, ClipPlanner, detector_lag_frames, make_detector

if TYPE_CHECKING:
    from typing_extensions import Self


@dataclass
class ClipOptions:
    scenes: str = "adaptive"        # adaptive | content | threshold | none
    threshold: float | None = None  # detector threshold; None = PySceneDetect's default for that detector
    min_scene_len: float = 0.6      # seconds, passed to the detector
    min_clip: float = 1.0           # seconds: shorter scenes are merged into a neighbour
    max_clip: float | None = 30.0   # seconds: longer scenes are split into (near-)equal windows; None = no limit
    frames: int = 8                 # frames per clip
    frame_size: int = 224           # square output size (stretched to square, then resized) when no geometry
    # The model's frame geometry (engine.interface: SquareGeometry, AspectGeometry): decides each video's
    # frame size from its display size. None = a `frame_size` square.
    geometry: object | None = None
    # detection frames take every (frame width // detect_width)-th pixel: detect_width to 2*detect_width-1
    # wide (DetectionImages). PySceneDetect's own pipeline scores frames resized to 256 px; 128 px sampled
    # from the planes cost about a fifth of that here and gave the same cuts on the sample, test and
    # benchmark videos (BENCHMARKS.md "Decode": on hard synthetic video some cuts differ)
    detect_width: int = 128
    threads: int = 0                # decoder threads; 0 = all cores
    sample_frames: bool = True      # False: clip boundaries only (Clip.frames is empty), as `tarsier scenes`
    max_candidates: int | None = None  # candidate buffer cap; None = derived from max_clip (see module doc)

    def validate(self) -> None:
        if self.scenes not in SCENE_MODES:
            raise ValueError(f"scenes must be one of {', '.join(SCENE_MODES)}, not {self.scenes!r}")
        if self.frames < 1:
            raise ValueError("frames must be >= 1")
        if self.frame_size < 1:
            raise ValueError("frame_size must be >= 1")
        if self.detect_width < 16:
            raise ValueError("detect_width must be >= 16")
        if self.min_clip < 0 or self.min_scene_len < 0:
            raise ValueError("min_clip and min_scene_len must be >= 0")
        if self.max_clip is not None and self.max_clip <= 0:
            raise ValueError("max_clip must be > 0 (or None for no limit)")
        if self.max_clip is not None and self.min_clip > self.max_clip:
            raise ValueError("min_clip must not exceed max_clip")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def one_line_error(e: BaseException) -> str:
    """An exception's message on one line (its strerror for an OSError), for a VideoError."""
    msg = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return " ".join(str(msg).split())


def _open_error(path: Path, e: BaseException) -> VideoError:
    import av

    if isinstance(e, FileNotFoundError):
        return VideoError("open", "file not found (it may have been moved or deleted)")
    if isinstance(e, PermissionError):
        return VideoError("open", "permission denied")
    if isinstance(e, IsADirectoryError):
        return VideoError("open", "is a folder, not a video file")
    if isinstance(e, av.error.InvalidDataError):
        return VideoError("open", "not a readable video (invalid data found when processing input)")
    return VideoError("open", f"cannot open: {one_line_error(e)}")


# frame.colorspace values (AVColorSpace) that swscale converts with BT.601 coefficients: unspecified,
# BT470BG, SMPTE170M. cv2's I420 -> BGR is BT.601 on limited range, as swscale on a yuv420p frame.
_BT601_TAGS = frozenset({2, 5, 6})


class DetectionImages:
    """The small BGR image each decoded frame is scored on by the scene detector: every `step`-th
    pixel of every `step`-th row, step = max(1, frame width // width), so `width` to 2*width - 1
    pixels wide (the whole frame below `width`), both sides even.

    A BT.601 yuv420p frame (what most decoders give) is sampled straight from its planes with numpy
    strides (Y, U and V, into one I420 buffer), then converted by cv2's I420 -> BGR at that small size:
    about 40 us a 360p frame at 128 px, where swscale's bgr24 output at 256 px cost 170-300 us (half
    a decode). The pixels differ from PySceneDetect's own pipeline (a full-size BGR frame resized to
    256 px by cv2.resize INTER_LINEAR) by sampling and rounding, as swscale's did; the cuts are the same
    on the sample and test videos (tests/test_video.py compares with scenedetect.detect()). Other
    frames (other pixel formats, BT.709 and other colour tags, a size change mid-stream), or every
    frame with `planes=False` (then exactly `width` wide), go through swscale to bgr24 of that size
    (FAST_BILINEAR, a persistent context, one thread)."""

    def __init__(self, src_width: int, src_height: int, width: int, planes: bool = True):
        import cv2
        from av.video.reformatter import VideoReformatter

        self._src = (src_width, src_height)
        step = self.step = max(1, src_width // max(1, width))
        if planes:
            w, h = max(2, src_width // step), max(2, src_height // step)
        else:   # swscale alone: exactly `width` wide (at most the frame's), as before the planes
            w = min(width, src_width) or src_width
            h = max(2, round(src_height * w / max(1, src_width)))
        self.width, self.height = max(2, w - w % 2), h - h % 2
        w, h = self.width, self.height
        self._i420 = np.empty((h * 3 // 2, w), np.uint8)
        flat = self._i420.reshape(-1)
        self._y = flat[: w * h].reshape(h, w)
        self._u = flat[w * h: w * h * 5 // 4].reshape(h // 2, w // 2)
        self._v = flat[w * h * 5 // 4:].reshape(h // 2, w // 2)
        # the sampled rows and columns of each plane (chroma planes are half size: the same step)
        self._luma_rows, self._luma_cols = slice(0, h * step, step), slice(0, w * step, step)
        self._chroma_rows, self._chroma_cols = slice(0, h // 2 * step, step), slice(0, w // 2 * step, step)
        self._cv2 = cv2
        self._planes = planes
        self._scaler = VideoReformatter()
        self.sampled = self.scaled = 0   # frames taken each way (reader.stats)

    def __call__(self, frame) -> np.ndarray:
        if self._planes and frame.format.name == "yuv420p" and frame.colorspace in _BT601_TAGS \
                and (frame.width, frame.height) == self._src:
            py, pu, pv = frame.planes
            frombuffer, copyto, u8 = np.frombuffer, np.copyto, np.uint8
            rows, cols = self._chroma_rows, self._chroma_cols
            copyto(self._y, frombuffer(py, u8).reshape(py.height, py.line_size)[self._luma_rows, self._luma_cols])
            copyto(self._u, frombuffer(pu, u8).reshape(pu.height, pu.line_size)[rows, cols])
            copyto(self._v, frombuffer(pv, u8).reshape(pv.height, pv.line_size)[rows, cols])
            self.sampled += 1
            return self._cv2.cvtColor(self._i420, self._cv2.COLOR_YUV2BGR_I420)
        self.scaled += 1
        return self._scaler.reformat(frame, width=self.width, height=self.height, format="bgr24",
                                     interpolation="FAST_BILINEAR", threads=1).to_ndarray()


# Decoded frames held by candidates not resized yet (engine.sampling): 40 frames at 1080p, 10 at 4K.
PENDING_BYTES = 128 << 20


class VideoReader:
    """Opens a video, and decodes it once in `clips()`. A context manager."""

    def __init__(self, path: str | os.PathLike, options: ClipOptions | None = None):
        import av

        self.path = Path(path)
        self.options = options or ClipOptions()
        self.options.validate()   # ValueError: a usage error, not a bad video
        self.warnings: list[str] = []
        self.stats: dict = {"detect_size": None, "max_buffer": 0, "buffer_cap": 0, "candidates": 0,
                            "decimations": 0, "cuts": [], "cuts_dropped": 0, "resized": 0, "max_pending": 0,
                            "detect_from_planes": 0, "detect_scaled": 0}
        self._container = None
        self._used = False

        try:
            st = os.stat(self.path)
        except OSError as e:
            raise _open_error(self.path, e) from None
        if os.path.isdir(self.path):
            raise VideoError("open", "is a folder, not a video file")
        if st.st_size == 0:
            raise VideoError("open", "empty file (0 bytes)")
        try:
            self._container = av.open(str(self.path), "r")
        except Exception as e:  # noqa: BLE001 - av.error.* and OSError: one clear line, never a traceback
            raise _open_error(self.path, e) from None

        try:
            c = self._container
            if not c.streams.video:
                kinds = sorted({s.type for s in c.streams})
                what = f" (only {', '.join(kinds)})" if kinds else ""
                raise VideoError("probe", f"no video stream{what}")
            s = c.streams.video[0]
            self._stream = s
            s.thread_type = "AUTO"
            s.codec_context.thread_count = int(self.options.threads or _cores())
            self._tb = s.time_base or Fraction(1, 1000000)
            rate = s.average_rate or s.guessed_rate or s.base_rate
            fps = float(rate) if rate else 0.0
            if not (fps > 0 and math.isfinite(fps)):
                fps = 0.0
            self._rate = Fraction(rate) if fps else Fraction(25, 1)
            if c.start_time is not None:
                self._origin = c.start_time / 1_000_000
            elif s.start_time is not None:
                self._origin = float(s.start_time * self._tb)
            else:
                self._origin = None  # first frame
            if c.duration:
                duration = c.duration / 1_000_000
            elif s.duration:
                duration = float(s.duration * self._tb)
            else:
                duration = 0.0
            w = s.codec_context.width or 0
            h = s.codec_context.height or 0
            self.info = VideoInfo(duration=duration, fps=fps, width=w, height=h)
            self._frames_iter = self._decode()
            # Peek the first frame (kept and processed first in clips()): gives rotation and size.
            self._first = next(self._frames_iter, None)
            if self._first is None:
                raise VideoError("decode", "no decodable video frames")
            self._set_geometry(self._first)
        except VideoError:
            self.close()
            raise
        except Exception as e:  # noqa: BLE001 - a broken stream is a per-video error
            self.close()
            raise VideoError("probe", f"cannot read stream: {one_line_error(e)}") from None

    # -- plumbing -------------------------------------------------------------------------
    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None

    def __del__(self):
        self.close()

    def _set_geometry(self, frame) -> None:
        try:
            rot = int(frame.rotation or 0)
        except (AttributeError, TypeError, ValueError):
            rot = 0
        self._k = round(rot / 90.0) % 4          # np.rot90 turns counter-clockwise
        w, h = frame.width, frame.height
        self._src_w, self._src_h = w, h
        self.info.rotation = (-self._k * 90) % 360    # clockwise degrees applied
        if self._k % 2:
            w, h = h, w
        self.info.width, self.info.height = w, h

    def _decode(self):
        """Yield decoded frames; a decoder error after >= 1 frame stops decoding (warning)."""
        import av

        c, s = self._container, self._stream
        n = 0
        try:
            for packet in c.demux(s):
                for frame in packet.decode():
                    n += 1
                    yield frame
        except (av.error.FFmpegError, OSError, ValueError) as e:
            if n == 0:
                raise VideoError("decode", f"cannot decode video: {one_line_error(e)}") from None
            self.warnings.append(f"decoding stopped after {n} frames: {one_line_error(e)}")

    @property
    def frame_spec(self):
        """What this video's clips deliver (engine.interface.FrameSpec), from its display size."""
        o = self.options
        geometry = o.geometry or SquareGeometry(o.frame_size)
        return geometry.frame_spec(self.info.width, self.info.height, o.frames)

    # -- the pass -------------------------------------------------------------------------
    def clips(self) -> Iterator[Clip]:
        if self._used:
            raise VideoError("decode", "clips() can be called only once per VideoReader")
        self._used = True
        if self._container is None:
            raise VideoError("decode", "reader is closed")
        try:
            yield from self._clips()
        finally:
            self.close()

    def _clips(self) -> Iterator[Clip]:
        o = self.options
        info = self.info
        tb = Fraction(self._tb)
        tb_num, tb_den = tb.numerator, tb.denominator
        tb_float = float(tb)
        rate = self._rate
        detector = make_detector(o.scenes, o.threshold, o.min_scene_len, tb, rate)
        stated_end = info.duration   # the container's (or stream's) own duration, 0 when it has none
        planner = ClipPlanner(o.min_clip, o.max_clip, expected_end=info.duration or None,
                              detecting=detector is not None)
        lag_frames = detector_lag_frames(detector)
        recent: deque[float] = deque(maxlen=max(1, lag_frames + 1))

        detect_image = DetectionImages(self._src_w, self._src_h, o.detect_width) if detector is not None else None
        self.stats["detect_size"] = (detect_image.width, detect_image.height) if detect_image else None

        spec = self.frame_spec
        # candidate buffer
        frame_iv = 1.0 / float(rate)
        base_iv = (o.min_clip / (o.frames * 1.25)) if o.min_clip > 0 else 0.0
        if spec.all_frames_if_fewer and 0 < info.duration < o.min_clip:
            base_iv = 0.0   # one short clip: every frame is a candidate, so "all T frames" is exact
        if o.max_candidates:
            cap = int(o.max_candidates)
        elif o.max_clip is not None:
            horizon = 2 * o.max_clip + o.min_clip + o.min_scene_len + 2.0
            cap = math.ceil(horizon / max(base_iv, frame_iv * 0.5)) + 2 * o.frames
        else:
            cap = max(256, 8 * o.frames)
        k = self._k
        W, H = spec.width, spec.height
        # swscale scales before np.rot90 turns the frame: a quarter turn swaps the scaled sides
        scale_w, scale_h = (H, W) if k % 2 else (W, H)
        interpolation = {"area": "AREA", "bicubic": "BICUBIC"}[spec.resample]
        # Persistent swscale contexts: frame.reformat() builds a new one per call (4x slower at 1080p).
        from av.video.reformatter import VideoReformatter

        cand_scaler = VideoReformatter()

        def resize(frame) -> np.ndarray:
            img = cand_scaler.reformat(frame, width=scale_w, height=scale_h, format="rgb24",
                                       interpolation=interpolation, threads=1).to_ndarray()
            return np.ascontiguousarray(np.rot90(img, k)) if k else img

        # Candidates keep their decoded frame and are resized when a clip picks them (engine.sampling);
        # the decoded frames held stay within PENDING_BYTES.
        frame_bytes = max(1, sum(p.buffer_size for p in self._first.planes))
        buf = CandidateBuffer(base_interval=base_iv, cap=cap, resize=resize,
                              max_pending=max(2 * o.frames, PENDING_BYTES // frame_bytes))
        self.stats["buffer_cap"] = buf.cap
        thin_at = 4 * o.frames

        origin = self._origin
        prev_t = 0.0
        last_dur = 0.0
        index = 0
        last_pts = None

        def frame_time(frame) -> float:
            nonlocal origin
            if frame.pts is None:
                return prev_t + (last_dur or frame_iv)
            # int / int is correctly rounded: float(frame.pts * tb) without Fraction arithmetic
            t = frame.pts * tb_num / tb_den
            if origin is None:
                origin = t
            return t - origin

        def emit(spans) -> Iterator[Clip]:
            nonlocal index
            for a, b in spans:
                cands = popped = buf.pop_until(b)
                if not cands:
                    # sparse candidates: borrow the nearest one (previous, else next)
                    near = buf.last_popped or buf.nearest_after()
                    cands = [near] if near is not None else []
                chosen = pick_frames(cands, o.frames, repeat=not spec.all_frames_if_fewer) if cands else []
                if o.sample_frames and chosen:
                    frames = np.stack([buf.image(c) for c in chosen])
                else:
                    frames = np.zeros((0, H, W, 3), np.uint8)
                for c in popped:   # not picked: their decoded frames go back to the decoder, unresized
                    if c is not buf.last_popped:   # (the last one may still be borrowed by the next clip)
                        c.source = None
                yield Clip(index=index, start=a, end=b, frames=frames, frame_times=[c.time for c in chosen],
                           model_size=spec.model_size)
                index += 1

        frames_iter = self._frames_iter
        first = self._first
        self._first = None
        try:
            frame = first
            while frame is not None:
                info.frames_decoded += 1
                t = max(0.0, frame_time(frame))
                t = max(t, prev_t)   # broken (non-monotonic) timestamps: keep time moving forward
                if frame.duration:
                    last_dur = frame.duration * tb_num / tb_den
                elif info.frames_decoded > 1 and t > prev_t:
                    last_dur = t - prev_t
                prev_t = t

                if detector is not None:
                    last_pts = round(t / tb_float)   # (t / tb would divide by float(tb) too)
                    for cut in detector.push(last_pts, detect_image(frame)):
                        planner.add_cut(cut)
                    recent.append(t)

                if buf.wants(t):
                    buf.add(t, None, frame if o.sample_frames else None)

                now_end = t + (last_dur or frame_iv)
                if detector is not None:
                    safe = min(recent[0], t - o.min_scene_len) - 1e-6
                else:
                    safe = t
                spans = planner.ready(now_end, safe)
                if spans:
                    yield from emit(spans)
                    thin_at = min(thin_at, len(buf.items) + 4 * o.frames)
                # Thin old candidates of a long open region: every clip that will hold a candidate
                # older than `safe` is at least lmin = min(open length, max_clip/2) long, so one
                # candidate per lmin / (1.25 * frames) seconds is enough there (memory small, not
                # just bounded). The gap is a power-of-two multiple of the base interval so that
                # successive thinnings nest and the spacing stays regular.
                if len(buf.items) >= thin_at and not planner.cuts:
                    span = safe - planner.seg_start
                    lmin = span if o.max_clip is None else min(span, o.max_clip / 2)
                    unit = base_iv or frame_iv
                    ratio = lmin / (1.25 * o.frames * unit)
                    if ratio >= 2:
                        gap = unit * 2 ** math.floor(math.log2(ratio))
                        buf.thin_before(safe, planner.seg_start, gap)
                    thin_at = len(buf.items) + 2 * o.frames
                frame = next(frames_iter, None)

            if detector is not None and last_pts is not None:
                try:
                    for cut in detector.finish():
                        planner.add_cut(cut)
                except Exception as e:  # noqa: BLE001 - a detector bug must not lose the video
                    self.warnings.append(f"scene detector post-processing failed: {one_line_error(e)}")
            end = prev_t + (last_dur or frame_iv)
            # The last frame's duration is a guess (a VFR stream with dropped frames stores twice the
            # frame interval there); where the container says the video ends between the last frame
            # and that guess, it ends there: a cut clip or a subtitle cue must not run past the video.
            if prev_t < stated_end < end:
                end = stated_end
            info.duration = end
            if not info.fps and info.frames_decoded > 1:
                info.fps = (info.frames_decoded - 1) / max(prev_t, 1e-9)
            yield from emit(planner.finish(end))
        except VideoError:
            raise
        except MemoryError:
            raise VideoError("decode", "out of memory while decoding") from None
        except GeneratorExit:
            raise
        except Exception as e:  # noqa: BLE001 - never a traceback for one bad video
            raise VideoError("decode", f"{type(e).__name__}: {one_line_error(e)}") from None
        finally:
            self.stats.update(max_buffer=buf.max_len, candidates=buf.kept, decimations=buf.decimations,
                              cuts=list(planner.cuts_seen), cuts_dropped=planner.cuts_dropped,
                              resized=buf.resized, max_pending=buf.max_pending_seen)
            if detect_image is not None:
                self.stats.update(detect_from_planes=detect_image.sampled, detect_scaled=detect_image.scaled)


def read_clips(path: str | os.PathLike, options: ClipOptions | None = None) -> tuple[VideoInfo, list[Clip]]:
    """Open, decode once, return (info, clips)."""
    with VideoReader(path, options) as reader:
        clips = list(reader.clips())
        return reader.info, clips
