"""Frames for one training sample, decoded with the same code and sampler as `tarsier describe`.

No torch import here: this runs in decode worker processes."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tarsier.common.types import VideoError
from tarsier.engine.sampling import sample_indices


def sample_frames(video: str | Path, frames: int, size: int, start: float | None = None,
                  end: float | None = None, frame_times: list[float] | None = None,
                  geometry=None) -> np.ndarray:
    """(frames, size, size, 3) uint8, or with a model's `geometry` (engine.interface: Tarsier2's
    AspectGeometry) (n, H, W, 3) in the size and count it asks for. Whole video: the describe pipeline
    with scenes=none, so training sees exactly what inference sees. A [start, end) window or explicit
    frame times: one decode pass keeping the frames in range, then Tarsier's uniform sampler."""
    if start is None and end is None and not frame_times:
        from tarsier.engine.video import ClipOptions, read_clips

        opts = ClipOptions(scenes="none", max_clip=None, frames=frames, frame_size=size, geometry=geometry,
                           threads=1)
        _, clips = read_clips(video, opts)
        if not clips:
            raise VideoError("decode", f"{video}: no frames")
        return clips[0].frames
    return _window_frames(Path(video), frames, size, start, end, frame_times, geometry)


def decode_job(args: tuple) -> np.ndarray:
    """Process-pool entry point: (video, frames, size, start, end, frame_times[, geometry]) -> frames."""
    video, frames, size, start, end, times, *geometry = args
    return sample_frames(video, frames, size, start, end, times, geometry[0] if geometry else None)


def _window_frames(path: Path, frames: int, size: int, start, end, frame_times, geometry=None) -> np.ndarray:
    import av

    lo = start or 0.0
    hi = end if end is not None else float("inf")
    if frame_times:
        lo, hi = min(frame_times), max(frame_times) + 1e-6
    kept: list[tuple[float, np.ndarray]] = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = 1
            width = height = size
            interpolation = None
            repeat = True
            if geometry is not None:   # the model's frame size for this video (coded size; rotation not applied)
                spec = geometry.frame_spec(stream.codec_context.width, stream.codec_context.height, frames)
                width, height = spec.width, spec.height
                interpolation = {"area": "AREA", "bicubic": "BICUBIC"}.get(spec.resample)
                repeat = not spec.all_frames_if_fewer
            for frame in container.decode(stream):
                t = float(frame.time or 0.0)
                if t > hi:
                    break
                if t >= lo - 1e-6:
                    kept.append((t, frame.reformat(width=width, height=height, format="rgb24",
                                                   interpolation=interpolation).to_ndarray()))
    except (av.error.FFmpegError, IndexError) as exc:
        raise VideoError("decode", f"{path}: {exc}") from None
    if not kept:
        raise VideoError("decode", f"{path}: no frames in [{lo}, {hi})")
    if frame_times:
        times = np.array([t for t, _ in kept])
        picks = [int(np.abs(times - t).argmin()) for t in frame_times]
    elif not repeat and len(kept) < frames:   # Tarsier2: a short window gives each frame once
        picks = list(range(len(kept)))
    else:
        picks = sample_indices(len(kept), frames)
    return np.stack([kept[i][1] for i in picks])
