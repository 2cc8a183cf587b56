"""Decode only the frames the sampler needs, when the clips are fixed windows (`--scenes none`).

With scene detection every frame has to be decoded (the detector looks at all of them). Without it
the clips are known from the container's duration alone, and a clip needs only its `frames`
sampled frames: SparseReader works out their times, and whenever the next one lies beyond the next
keyframe it seeks to the last keyframe before it instead of decoding through (the way
Cosmos-Curate decodes sparsely). The keyframes come from one demux pass over the packets (no
decoding). Every clip reports how many frames were decoded for it (`Clip.frames_decoded`, in the
record as `frames_decoded`): with a 1-second GOP, 10-second clips and 2 frames per clip that is
about 2 * 25 frames of the 250 in each clip.

Same clips, same frame format as engine.video.VideoReader (it is one, with another pass): windows
near-equal over the stated duration, at most max_clip each; the last one ends where the stream's
last packet ends (not past the container's stated end). Frame i of N lies at
start + i * (end - start - one frame) / (N - 1): the first frame of the clip, its last frame, evenly
between. The dense pass picks among thinned candidates and may land up to a candidate interval
away; both are uniform in time. Anything the sparse pass cannot plan (no stated duration, frames
not sampled, a clip shorter than `min_clip` that the model wants whole) goes through the dense pass.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from fractions import Fraction

import numpy as np

from tarsier.common.types import Clip
from tarsier.engine.video import VideoReader, one_line_error

_EPS = 1e-6


class SparseReader(VideoReader):
    """A VideoReader that, for fixed windows, decodes only what its clips' sampled frames need."""

    def sparse_plan(self) -> bool:
        o = self.options
        duration = self.info.duration
        if o.scenes != "none" or o.max_clip is None or not o.sample_frames or not duration or duration <= 0:
            return False
        if self.frame_spec.all_frames_if_fewer:   # a clip of fewer frames than N gets all of them: dense
            window = duration / max(1, math.ceil(duration / o.max_clip - 1e-9))
            if duration < o.min_clip or window * (self.info.fps or 25.0) < o.frames + 1:
                return False
        return True

    def _clips(self) -> Iterator[Clip]:
        if not self.sparse_plan():
            yield from super()._clips()
            return
        yield from self._sparse_clips()

    # ---------------------------------------------------------------------------------------
    def _index(self, tb: Fraction) -> tuple[list[float], float | None]:
        """Keyframe times and the end of the last packet (seconds from the origin), from a demux
        pass of the video stream's packets on a second handle of the file (nothing is decoded)."""
        import av

        keys: list[float] = []
        end = None
        origin = self._origin
        with av.open(str(self.path)) as c:
            s = c.streams.video[0]
            for p in c.demux(s):
                if p.pts is None:
                    continue
                t = float(p.pts * tb)
                if origin is None:
                    origin = t
                t -= origin
                if p.is_keyframe:
                    keys.append(t)
                end = max(end or 0.0, t + (float(p.duration * tb) if p.duration else 0.0))
        return sorted(set(keys)), end

    def _sparse_clips(self) -> Iterator[Clip]:
        import bisect

        from av.video.reformatter import VideoReformatter

        o, info = self.options, self.info
        s, c = self._stream, self._container
        tb = Fraction(self._tb)
        frame_iv = 1.0 / float(self._rate)
        stated = info.duration
        keys, last_end = self._index(tb)
        end = stated
        if last_end is not None and last_end < stated:   # a container that says more than it holds
            end = last_end
        n = max(1, math.ceil(end / o.max_clip - 1e-9))
        width = end / n
        spans = [(i * width, (i + 1) * width if i < n - 1 else end) for i in range(n)]

        spec = self.frame_spec
        k = self._k
        W, H = spec.width, spec.height
        scale_w, scale_h = (H, W) if k % 2 else (W, H)
        interpolation = {"area": "AREA", "bicubic": "BICUBIC"}[spec.resample]
        scaler = VideoReformatter()
        origin = self._origin

        def image(frame) -> np.ndarray:
            img = scaler.reformat(frame, width=scale_w, height=scale_h, format="rgb24",
                                  interpolation=interpolation, threads=1).to_ndarray()
            return np.ascontiguousarray(np.rot90(img, k)) if k else img

        def frame_time(frame) -> float | None:
            nonlocal origin
            if frame.pts is None:
                return None
            t = float(frame.pts * tb)
            if origin is None:
                origin = t
            return max(0.0, t - origin)

        frames_iter = self._frames_iter
        current = self._first   # the frame in hand (decoded, not yet passed)
        self._first = None
        info.frames_decoded = 1
        cur_t = frame_time(current) or 0.0
        last_img: tuple[float, np.ndarray] | None = None

        def next_frame():
            nonlocal current, cur_t
            current = next(frames_iter, None)
            if current is not None:
                info.frames_decoded += 1
                t = frame_time(current)
                cur_t = t if t is not None else cur_t + frame_iv
            return current

        try:
            for index, (a, b) in enumerate(spans):
                before = 0 if index == 0 else info.frames_decoded   # clip 0 counts the probed first frame
                last = max(a, b - frame_iv)
                times = [a + i * (last - a) / (o.frames - 1) for i in range(o.frames)] if o.frames > 1 \
                    else [(a + last) / 2]
                images, picked = [], []
                for target in times:
                    if last_img is not None and abs(last_img[0] - target) < frame_iv / 2:
                        images.append(last_img[1])   # the same frame again (a clip shorter than N frames)
                        picked.append(last_img[0])
                        continue
                    j = bisect.bisect_right(keys, target + frame_iv / 2) - 1
                    key = keys[j] if j >= 0 else None
                    if current is not None and key is not None and key > cur_t + frame_iv / 2:
                        # a keyframe lies between here and the target: jump to it, do not decode through
                        c.seek(round((key + (origin or 0.0)) / tb), stream=s, backward=True)
                        next_frame()
                    while current is not None and cur_t < target - frame_iv / 2:
                        next_frame()
                    if current is None:   # the stream ended early: the last frame seen stands in
                        if last_img is None:
                            break
                        images.append(last_img[1])
                        picked.append(last_img[0])
                        continue
                    last_img = (cur_t, image(current))
                    images.append(last_img[1])
                    picked.append(cur_t)
                frames = np.stack(images) if images else np.zeros((0, H, W, 3), np.uint8)
                clip = Clip(index=index, start=a, end=b, frames=frames, frame_times=picked,
                            model_size=spec.model_size)
                clip.frames_decoded = info.frames_decoded - before
                yield clip
            info.duration = end
        except GeneratorExit:
            raise
        except Exception as e:  # noqa: BLE001 - never a traceback for one bad video
            from tarsier.common.types import VideoError

            raise VideoError("decode", f"{type(e).__name__}: {one_line_error(e)}") from None
