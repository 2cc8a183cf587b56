"""Cut described clips out of their video as files of their own (`describe --clips DIR`).

    cut_clips(src, [ClipSpan(0, 0.0, 4.2), ...], codec="copy") -> {index: CutResult}

Two codecs:

- `copy` (default): the packets are copied, nothing is re-encoded, so it runs at demux speed. A
  copied clip has to start on a keyframe, so every cut point moves to the nearest keyframe (the same
  rule for the end of one clip and the start of the next: copied clips still tile the video, no gap
  and no overlap) and the result states where the clip really starts and ends. A clip with no
  keyframe of its own (both ends snap to the same one: a clip shorter than the GOP) cannot be
  copied; it is an error for that clip only (`--clip-codec h264` cuts it).
  Video packets go with the GOP they belong to (by decode order, so B-frames stay with the frames
  they refer to); audio packets by their own time.
- `h264`: frame-accurate. The video is decoded once and every frame whose time falls in [start, end)
  is re-encoded with libx264 at `crf` into that clip's file; audio packets are copied by time.

Times are seconds from the same origin engine.video uses (the container's start time, else the
stream's, else the first frame), so the spans of the JSONL records cut where they say. Files are
written under a temporary name and renamed when complete: a kill never leaves a torn clip under
its final name, and a clip whose file exists is not cut again.
"""
from __future__ import annotations

import bisect
import contextlib
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

CLIP_CODECS = ("copy", "h264")
_EPS = 1e-6


@dataclass
class ClipSpan:
    index: int
    start: float
    end: float


@dataclass
class CutResult:
    path: Path | None
    start: float = 0.0           # where the file's content really starts / ends in the source (seconds)
    end: float = 0.0
    frames: int = 0              # video frames in the file
    error: str | None = None     # the clip could not be cut (the rest can)
    existed: bool = False        # already there from an earlier run; not cut again


def clip_file(clips_dir: Path, rel: str, index: int, ext: str, unique_name: bool = False) -> Path:
    """a/x.mp4, clip 3 -> DIR/a/x/0003.mp4 (DIR/a/x.mp4/0003.mp4 when x.mov sits beside it)."""
    p = Path(rel)
    folder = p.name if unique_name else p.stem
    return Path(clips_dir) / p.parent / folder / f"{index:04d}{ext}"


def clip_extension(src: Path, codec: str) -> str:
    """A copied clip keeps its container (the codec fits it); a re-encoded one is MP4."""
    ext = src.suffix.lower()
    if codec == "copy" and ext in (".mp4", ".mov", ".mkv", ".webm", ".m4v"):
        return ext
    return ".mp4"


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _remove_stale(path: Path) -> None:
    """Temporary files of this clip left by a killed run (their process is gone)."""
    try:
        leftovers = list(path.parent.glob(f".{path.name}.*.tmp"))
    except OSError:
        return
    for tmp in leftovers:
        pid = tmp.name[len(path.name) + 2: -len(".tmp")]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:   # it exists, owned by someone else
        return True
    return True


def _origin(container, stream) -> float | None:
    if container.start_time is not None:
        return container.start_time / 1_000_000
    if stream.start_time is not None:
        return float(stream.start_time * stream.time_base)
    return None


def _one_line(e: BaseException) -> str:
    msg = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return " ".join(str(msg).split())


class _Out:
    """One clip file being written (temp name until finish())."""

    def __init__(self, path: Path, fmt: str | None):
        import av

        self.path = path
        self.tmp = _tmp(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(self.tmp), "w", format=fmt)
        self.video = None
        self.audio = None
        self.frames = 0
        self.first_t: float | None = None
        self.last_t: float | None = None

    def finish(self) -> None:
        self.container.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.container.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink()


def _format_for(ext: str) -> str | None:
    return {".mkv": "matroska", ".webm": "webm", ".mov": "mov", ".m4v": "mp4", ".mp4": "mp4"}.get(ext)


def keyframe_times(path: str | os.PathLike) -> list[float]:
    """Times (seconds from the video's origin) of the video stream's keyframes, from a demux pass
    (no decoding)."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        tb = s.time_base
        origin = _origin(c, s)
        out = []
        for packet in c.demux(s):
            if packet.is_keyframe and packet.pts is not None:
                t = float(packet.pts * tb)
                if origin is None:
                    origin = t
                out.append(max(0.0, t - origin))
        return sorted(set(out))


def snap(t: float, keys: list[float]) -> float:
    """The keyframe time nearest to t (the earlier one on a tie)."""
    j = bisect.bisect_left(keys, t)
    if j == 0:
        return keys[0]
    if j == len(keys):
        return keys[-1]
    before, after = keys[j - 1], keys[j]
    return before if t - before <= after - t else after


def cut_clips(src: str | os.PathLike, spans: list[ClipSpan], dest: dict[int, Path], *, codec: str = "copy",
              crf: int = 23, audio: bool = True, video_end: float | None = None) -> dict[int, CutResult]:
    """Write each span's clip to dest[index]; returns a CutResult per span. Spans whose destination
    exists are reported as `existed` and not cut. `video_end`: where the last span ends when it is
    the end of the video (a copied last clip then runs to the end of the stream)."""
    if codec not in CLIP_CODECS:
        raise ValueError(f"clip codec must be one of {', '.join(CLIP_CODECS)}, not {codec!r}")
    results: dict[int, CutResult] = {}
    todo = []
    for sp in spans:
        path = Path(dest[sp.index])
        _remove_stale(path)
        if path.exists():
            results[sp.index] = _existing(src, sp, path, codec, video_end)
        else:
            todo.append(sp)
    if not todo:
        return results
    try:
        if codec == "copy":
            results.update(_cut_copy(Path(src), todo, dest, audio, video_end))
        else:
            results.update(_cut_h264(Path(src), todo, dest, crf, audio))
    except Exception as e:  # noqa: BLE001 - a source that cannot be cut fails its clips, not the run
        for sp in todo:
            if sp.index not in results:
                results[sp.index] = CutResult(None, sp.start, sp.end, error=f"cannot cut: {_one_line(e)}")
    return results


def _existing(src, sp: ClipSpan, path: Path, codec: str, video_end: float | None) -> CutResult:
    """A clip file from an earlier run: what it holds, without cutting it again (the snapping rule is
    deterministic, so a copied clip's real span is worked out again from the keyframes)."""
    import av

    start, end = sp.start, sp.end
    try:
        with av.open(str(path)) as c:
            frames = sum(1 for p in c.demux(c.streams.video[0]) if p.size)
        if codec == "copy":
            keys = keyframe_times(src)
            start = snap(sp.start, keys)
            if video_end is None or sp.end < video_end - _EPS:
                end = snap(sp.end, keys)
    except Exception as e:  # noqa: BLE001 - an unreadable leftover is cut again
        with contextlib.suppress(OSError):
            path.unlink()
        return CutResult(None, sp.start, sp.end, error=f"the earlier clip file was unreadable ({_one_line(e)}); "
                         "it was removed, a rerun cuts it again")
    return CutResult(path, round(start, 6), round(end, 6), frames, existed=True)


def _copy_stream(out: _Out, template, kind: str):
    stream = out.container.add_stream_from_template(template)
    setattr(out, kind, stream)
    return stream


def _cut_copy(src: Path, spans: list[ClipSpan], dest: dict[int, Path], audio: bool,
              video_end: float | None) -> dict[int, CutResult]:
    import av

    keys = keyframe_times(src)
    if not keys:
        raise ValueError("no keyframes in the video stream")
    results: dict[int, CutResult] = {}
    plan = []   # (span, real start, real end or inf)
    for sp in spans:
        a = snap(sp.start, keys)
        last = video_end is not None and sp.end >= video_end - _EPS
        b = float("inf") if last else snap(sp.end, keys)
        if b <= a + _EPS:
            results[sp.index] = CutResult(None, sp.start, sp.end, error=(
                f"no keyframe of its own between {sp.start:.3f}s and {sp.end:.3f}s to copy from "
                "(use --clip-codec h264)"))
            continue
        plan.append((sp, a, b))
    if not plan:
        return results
    ext = Path(dest[plan[0][0].index]).suffix
    with av.open(str(src)) as c:
        vs = c.streams.video[0]
        streams = [vs]
        a_s = c.streams.audio[0] if audio and c.streams.audio else None
        if a_s is not None:
            streams.append(a_s)
        origin = _origin(c, vs)
        outs: dict[int, _Out] = {}
        gop_t = None
        try:
            for packet in c.demux(*streams):
                if packet.pts is None and packet.dts is None:
                    continue   # the demuxer's flush packet
                s = packet.stream
                ts = packet.pts if packet.pts is not None else packet.dts
                t = float(ts * s.time_base)
                if origin is None:
                    origin = t
                t -= origin
                if s is vs:
                    if packet.is_keyframe:
                        gop_t = t
                    if gop_t is None:
                        continue   # leading packets that no keyframe opens cannot be decoded
                    where = gop_t
                else:
                    where = t
                for sp, a, b in plan:
                    if not (a - _EPS <= where < b - _EPS):
                        continue
                    out = outs.get(sp.index)
                    if out is None:
                        out = outs[sp.index] = _Out(Path(dest[sp.index]), _format_for(ext))
                        _copy_stream(out, vs, "video")
                        if a_s is not None:
                            _copy_stream(out, a_s, "audio")
                    target = out.video if s is vs else out.audio
                    shift = round((a + (origin or 0.0)) / s.time_base)
                    if packet.pts is not None:
                        packet.pts -= shift
                    if packet.dts is not None:
                        packet.dts -= shift
                    if s is not vs and (packet.pts or 0) < 0:
                        break   # audio before the clip's first frame
                    packet.stream = target
                    out.container.mux(packet)
                    if s is vs:
                        out.frames += 1
                        out.last_t = max(out.last_t or 0.0, t + (float(packet.duration * s.time_base) if packet.duration else 0.0))
                    break
            for sp, a, b in plan:
                out = outs.pop(sp.index, None)
                if out is None:
                    results[sp.index] = CutResult(None, sp.start, sp.end, error="no packets in this span")
                    continue
                out.finish()
                end = b if b != float("inf") else (out.last_t if out.last_t is not None else sp.end)
                if video_end is not None and b == float("inf"):
                    end = min(end, video_end)   # the video's own end (engine.video), not a padded last packet
                results[sp.index] = CutResult(out.path, round(a, 6), round(end, 6), out.frames)
        finally:
            for out in outs.values():
                out.abort()
    return results


def _cut_h264(src: Path, spans: list[ClipSpan], dest: dict[int, Path], crf: int,
              audio: bool) -> dict[int, CutResult]:
    import av

    results: dict[int, CutResult] = {}
    spans = sorted(spans, key=lambda sp: sp.start)
    starts = [sp.start for sp in spans]
    with av.open(str(src)) as c:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        a_s = c.streams.audio[0] if audio and c.streams.audio else None
        origin = _origin(c, vs)
        tb = vs.time_base or Fraction(1, 1000000)
        rate = vs.average_rate or vs.guessed_rate or Fraction(25, 1)
        outs: dict[int, _Out] = {}
        done: set[int] = set()
        rotation = 0

        def open_out(sp: ClipSpan, frame) -> _Out:
            out = _Out(Path(dest[sp.index]), "mp4")
            st = out.container.add_stream("libx264", rate=rate)
            st.width, st.height = frame.width - frame.width % 2, frame.height - frame.height % 2
            st.pix_fmt = "yuv420p"
            st.time_base = tb
            st.codec_context.time_base = tb
            st.options = {"crf": str(crf), "preset": "veryfast"}
            if rotation:
                st.set_display_rotation(rotation)
            out.video = st
            if a_s is not None:
                _copy_stream(out, a_s, "audio")
            return out

        def close(index: int) -> None:
            out = outs.pop(index)
            for packet in out.video.encode():
                out.container.mux(packet)
            out.finish()
            done.add(index)
            sp = next(s for s in spans if s.index == index)
            results[index] = CutResult(out.path, sp.start, sp.end, out.frames)

        def span_at(t: float) -> ClipSpan | None:
            j = bisect.bisect_right(starts, t + _EPS) - 1
            if j < 0:
                return None
            sp = spans[j]
            return sp if t < sp.end - _EPS else None

        audio_buf: list = []   # audio packets not yet placed: their clip may not be open yet

        def flush_audio(upto: float) -> None:
            keep = []
            for p in audio_buf:
                t = float(p.pts * p.stream.time_base) - (origin or 0.0)
                if t < upto:
                    _mux_audio(p, t, outs, spans, origin)
                else:
                    keep.append(p)
            audio_buf[:] = keep

        try:
            streams = [vs] + ([a_s] if a_s is not None else [])
            for packet in c.demux(*streams):
                if packet.stream is not vs:
                    if packet.pts is not None:
                        audio_buf.append(packet)
                    continue
                for frame in packet.decode():
                    if frame.pts is None:
                        continue
                    t = float(frame.pts * tb)
                    if origin is None:
                        origin = t
                    t -= origin
                    if not rotation:
                        with contextlib.suppress(AttributeError, TypeError, ValueError):
                            rotation = int(frame.rotation or 0)
                    flush_audio(t)
                    for index in [i for i, o in outs.items() if t >= o.last_t]:
                        close(index)
                    sp = span_at(t)
                    if sp is None or sp.index in done:
                        continue
                    out = outs.get(sp.index)
                    if out is None:
                        out = outs[sp.index] = open_out(sp, frame)
                        out.last_t = sp.end - _EPS
                    shift = round((sp.start + origin) / tb)
                    vf = frame.reformat(width=out.video.width, height=out.video.height, format="yuv420p")
                    vf.pts = frame.pts - shift
                    vf.time_base = tb
                    for p in out.video.encode(vf):
                        out.container.mux(p)
                    out.frames += 1
            flush_audio(float("inf"))
            for index in list(outs):
                close(index)
            for sp in spans:
                if sp.index not in results:
                    results[sp.index] = CutResult(None, sp.start, sp.end, error="no video frames in this span")
        finally:
            for out in outs.values():
                out.abort()
    return results


def _mux_audio(packet, t: float, outs: dict[int, _Out], spans: list[ClipSpan], origin: float | None) -> None:
    s = packet.stream
    for sp in spans:
        out = outs.get(sp.index)
        if out is None or out.audio is None or not (sp.start - _EPS <= t < sp.end - _EPS):
            continue
        shift = round((sp.start + (origin or 0.0)) / s.time_base)
        packet.pts -= shift
        if packet.dts is not None:
            packet.dts -= shift
        packet.stream = out.audio
        out.container.mux(packet)
        return
