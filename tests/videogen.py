"""Small synthetic videos with known ground truth, written with PyAV (no ffmpeg binary needed).

Every generator returns a `GenVideo` that records what was written (cut times, frame count,
frame times), so tests can compare what the pipeline finds against the truth.

Content: each segment has its own solid colour plus a fixed, seeded noise texture and a square
that moves across it, so consecutive frames inside a segment differ a little (motion) while the
boundary between two segments is an abrupt cut that every detector finds.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# A few well-separated colours (RGB) so consecutive segments always differ strongly.
PALETTE = [
    (220, 40, 40), (40, 200, 60), (40, 60, 220), (230, 220, 50),
    (200, 50, 210), (40, 210, 220), (250, 250, 250), (20, 20, 20),
]


@dataclass
class GenVideo:
    path: Path
    cuts: list[float]              # seconds where a new segment starts (excluding 0)
    duration: float                # seconds (end of the last frame)
    frames: int                    # frames written
    fps: float
    size: tuple[int, int]          # (width, height) as stored (before rotation)
    frame_times: list[float] = field(default_factory=list)


def _segment_image(color, size, seed: int) -> np.ndarray:
    w, h = size
    rng = np.random.default_rng(seed)
    base = np.empty((h, w, 3), np.int16)
    base[:] = color
    # low-amplitude texture at a coarse scale (cheap to make at any size, compresses well)
    th, tw = max(1, h // 8), max(1, w // 8)
    tex = rng.integers(-25, 26, size=(th, tw, 1), dtype=np.int16)
    tex = np.repeat(np.repeat(tex, 8, axis=0), 8, axis=1)[:h, :w]
    if tex.shape[0] < h or tex.shape[1] < w:
        tex = np.pad(tex, ((0, h - tex.shape[0]), (0, w - tex.shape[1]), (0, 0)), mode="edge")
    return np.clip(base + tex, 0, 255).astype(np.uint8)


def _draw_square(img: np.ndarray, k: int, nframes: int) -> np.ndarray:
    h, w = img.shape[:2]
    side = max(2, min(h, w) // 5)
    span = max(1, w - side)
    x = int((k / max(1, nframes - 1)) * span) if nframes > 1 else 0
    y = (h - side) // 2
    out = img.copy()
    inv = 255 - out[y:y + side, x:x + side]
    out[y:y + side, x:x + side] = inv
    return out


def make_video(
    path: str | os.PathLike,
    segments: list[tuple[float, tuple[int, int, int] | int]] | None = None,
    fps: float = 25,
    size: tuple[int, int] = (160, 96),
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    rotation: int | None = None,
    frame_durations: list[float] | None = None,
    start_offset: float = 0.0,
    preset: str = "ultrafast",
    gop: int | None = None,
    moving: bool = True,
    seed: int = 0,
) -> GenVideo:
    """Write a video made of `segments` = [(seconds, colour or palette index), ...].

    fps: nominal rate (CFR frame spacing unless `frame_durations` is given).
    frame_durations: per-frame durations in seconds (variable frame rate; overrides fps spacing,
        segments are then cut by time). Written with a 1/1000 s time base.
    rotation: display rotation (degrees counter-clockwise, PyAV's `set_display_rotation` sense).
    start_offset: the first frame's pts in seconds (a stream that starts late).
    """
    path = Path(path)
    if segments is None:
        segments = [(2.0, 0)]
    segs = [(float(d), PALETTE[c % len(PALETTE)] if isinstance(c, int) else tuple(c)) for d, c in segments]
    bounds = np.cumsum([0.0] + [d for d, _ in segs])
    total = float(bounds[-1])

    # frame times
    if frame_durations is None:
        n = max(1, round(total * fps))
        times = [i / fps for i in range(n)]
        durs = [1.0 / fps] * n
    else:
        times, durs, t = [], [], 0.0
        for d in frame_durations:
            if t >= total - 1e-9:
                break
            times.append(t)
            durs.append(d)
            t += d
        n = len(times)

    container = av.open(str(path), "w")
    if frame_durations is None:
        rate = Fraction(fps).limit_denominator(1001)
        stream = container.add_stream(codec, rate=rate)
        time_base = 1 / rate
    else:
        stream = container.add_stream(codec, rate=round(fps))
        time_base = Fraction(1, 1000)
    stream.width, stream.height = size
    stream.pix_fmt = pix_fmt
    stream.time_base = time_base
    stream.codec_context.time_base = time_base
    if codec == "libx264":
        stream.options = {"preset": preset, "tune": "zerolatency" if gop == 1 else "fastdecode"}
        if gop:
            stream.codec_context.gop_size = gop
    if rotation:
        stream.set_display_rotation(rotation)

    seg_imgs = [_segment_image(col, size, seed + i) for i, (_, col) in enumerate(segs)]
    seg_counts = [0] * len(segs)
    seg_index = np.searchsorted(bounds, np.asarray(times) + 1e-9, side="right") - 1
    seg_index = np.clip(seg_index, 0, len(segs) - 1)
    for k in seg_index:
        seg_counts[k] += 1
    seg_pos = [0] * len(segs)
    written: list[float] = []
    for i, t in enumerate(times):
        s = int(seg_index[i])
        img = seg_imgs[s]
        if moving:
            img = _draw_square(img, seg_pos[s], seg_counts[s])
        seg_pos[s] += 1
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        if frame_durations is None:   # CFR: exact integer pts, frame index plus the offset
            frame.pts = i + round(start_offset * float(rate))
        else:
            frame.pts = round((t + start_offset) / float(time_base))
        frame.time_base = time_base
        written.append(float(frame.pts * time_base))
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    duration = written[-1] + durs[-1] if written else 0.0
    return GenVideo(path=path, cuts=[float(b) for b in bounds[1:-1]], duration=duration, frames=n,
                    fps=float(fps), size=size, frame_times=written)


def make_vfr_video(path, segments=None, size=(160, 96), seed: int = 0) -> GenVideo:
    """Variable frame rate: alternating runs at 10, 30 and 20 fps (pts not evenly spaced)."""
    if segments is None:
        segments = [(2.0, 0), (2.0, 1), (2.0, 2)]
    durs: list[float] = []
    pattern = [(0.1, 10), (1 / 30, 30), (0.05, 20)]
    while sum(durs) < sum(d for d, _ in segments) + 1:
        for d, k in pattern:
            durs.extend([d] * k)
    return make_video(path, segments, fps=25, size=size, frame_durations=durs, seed=seed)


def make_audio_only(path: str | os.PathLike, seconds: float = 1.0, rate: int = 16000) -> Path:
    """An .mp4 holding one AAC audio stream and no video."""
    path = Path(path)
    container = av.open(str(path), "w")
    stream = container.add_stream("aac", rate=rate)
    stream.layout = "mono"
    samples = int(seconds * rate)
    t = np.arange(samples) / rate
    data = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
    step = 1024
    for i in range(0, samples, step):
        chunk = np.ascontiguousarray(data[:, i:i + step])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.pts = i
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def make_single_frame(path: str | os.PathLike, fps: float = 25, size=(64, 48)) -> GenVideo:
    return make_video(path, [(1.0 / fps, 3)], fps=fps, size=size)


def make_bad_files(folder: str | os.PathLike, good: str | os.PathLike) -> dict[str, Path]:
    """Broken inputs: zero-byte, random bytes, text, truncated and mid-stream corrupt copies of `good`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = Path(good).read_bytes()
    out = {
        "empty": folder / "empty.mp4",
        "random": folder / "random.mp4",
        "text": folder / "notes.txt",
        "truncated": folder / "truncated.mp4",
    }
    out["empty"].write_bytes(b"")
    out["random"].write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    out["text"].write_text("this is not a video\n" * 20)
    # mp4 with moov at the end: cutting it loses the index -> unreadable
    out["truncated"].write_bytes(data[: len(data) // 2])
    return out


def make_corrupt_mid(path: str | os.PathLike, seconds: float = 4.0, fps: float = 25) -> GenVideo:
    """A Matroska file whose second half is overwritten with garbage (decoding stops/skips there)."""
    path = Path(path)
    gv = make_video(path, [(seconds / 2, 0), (seconds / 2, 1)], fps=fps, size=(96, 64), gop=10)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(7)
    start = len(data) // 2
    data[start:] = rng.integers(0, 256, len(data) - start, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return gv


def count_frames(path: str | os.PathLike) -> int:
    """Frames in the file, counted by an independent plain PyAV decode."""
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def make_video_with_audio(path: str | os.PathLike, segments=None, fps: float = 25, size=(160, 96), gop: int = 10,
                          rate: int = 16000) -> GenVideo:
    """`make_video`'s picture (h264, a keyframe every `gop` frames) plus a mono AAC sine track of the
    same length, in one MP4."""
    path = Path(path)
    tmp = path.with_name(f"{path.stem}.video-only{path.suffix}")
    gv = make_video(tmp, segments, fps=fps, size=size, gop=gop)
    with av.open(str(tmp)) as src, av.open(str(path), "w") as out:
        vin = src.streams.video[0]
        vout = out.add_stream_from_template(vin)
        aout = out.add_stream("aac", rate=rate)
        aout.layout = "mono"
        for packet in src.demux(vin):
            if packet.dts is None:
                continue
            packet.stream = vout
            out.mux(packet)
        samples = int(gv.duration * rate)
        t = np.arange(samples) / rate
        data = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
        for i in range(0, samples, 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, i:i + 1024]), format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = i
            for packet in aout.encode(frame):
                out.mux(packet)
        for packet in aout.encode():
            out.mux(packet)
    tmp.unlink()
    gv.path = path
    return gv
