"""Small JPEG thumbnails of the frames a clip was described from, for the review report.

The describe pipeline already holds the sampled frames of every clip (one decode pass, docs/architecture.md);
`save_clip_thumbnails` writes those same frames, never decoding the video again:

    OUT_DIR/thumbs/<video rel path>/clip0000_f0.jpg ... clip0000_f7.jpg

128 px on the long side (never upscaled), JPEG quality 80 (about 3-5 KB each). The report (tarsier.reports) finds them
by the same naming rule (`thumbnail_relpath`) and shows a placeholder where one is missing.
Pillow is imported inside the function (it ships with matplotlib); the module itself is light.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np

from tarsier.common.files import atomic_file

THUMBS_DIR = "thumbs"
JPEG_QUALITY = 80


def _safe_rel(video_rel: str) -> PurePosixPath:
    """The video's path relative to the input root, as a folder under thumbs/ that cannot escape it:
    '..' parts become '__', a leading '/' is dropped, ':' becomes '_' (never an error: a thumbnail
    must not fail a describe run)."""
    parts = [p for p in str(video_rel).replace("\\", "/").split("/") if p not in ("", ".")]
    parts = ["__" if p == ".." else p.replace(":", "_") for p in parts]
    return PurePosixPath(*(parts or ["_"]))


def thumbnail_relpath(video_rel: str, clip_index: int, frame_index: int) -> str:
    """Where the thumbnail of one frame lives, relative to the output folder (always '/' separated)."""
    return str(PurePosixPath(THUMBS_DIR) / _safe_rel(video_rel) / f"clip{int(clip_index):04d}_f{int(frame_index)}.jpg")


def _to_uint8_hwc(frames) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.ndim == 3:  # a single frame
        arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(f"frames must be (N, H, W, 3), got shape {arr.shape}")
    if arr.shape[-1] not in (1, 3, 4) and arr.shape[1] in (1, 3, 4):  # (N, C, H, W)
        arr = np.transpose(arr, (0, 2, 3, 1))
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.dtype != np.uint8:
        arr = np.asarray(arr, dtype=np.float32)
        if arr.size and float(np.nanmax(arr)) <= 1.0:  # floats in [0, 1]
            arr = arr * 255.0
        arr = np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def thumbnail_size(height: int, width: int, size: int, aspect: float | None = None) -> tuple[int, int]:
    """(width, height) of a thumbnail: `size` px on the long side. `aspect` (display width / height)
    undoes the square stretch of the sampled frames when the caller knows the video's shape."""
    ratio = float(aspect) if aspect and aspect > 0 else width / max(1, height)
    if ratio >= 1:
        return size, max(1, round(size / ratio))
    return max(1, round(size * ratio)), size


def save_clip_thumbnails(out_dir: Path, video_rel: str, clip_index: int, frames: np.ndarray,
                         size: int = 128, *, aspect: float | None = None,
                         quality: int = JPEG_QUALITY) -> list[str]:
    """Save the sampled frames of one clip as JPEG thumbnails under OUT_DIR/thumbs/<video_rel>/.

    frames: (N, S, S, 3) uint8 RGB, as handed to the model (also accepted: (N, 3, S, S), floats in
    [0, 1] or [0, 255]). Returns the paths relative to `out_dir`, '/' separated, in frame order.
    Each file is written to a temporary name and renamed, so a reader never sees half a JPEG."""
    from PIL import Image

    out_dir = Path(out_dir)
    arr = _to_uint8_hwc(frames)
    rels: list[str] = []
    for i, frame in enumerate(arr):
        rel = thumbnail_relpath(video_rel, clip_index, i)
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(frame, "RGB")
        long_side = min(int(size), max(frame.shape[0], frame.shape[1]))  # never upscale small frames
        w, h = thumbnail_size(frame.shape[0], frame.shape[1], long_side, aspect)
        if (w, h) != img.size:
            img = img.resize((w, h), Image.BILINEAR, reducing_gap=2.0)
        with atomic_file(path, fsync=False) as f:   # thumbnails are rebuilt on a rerun: no fsync
            img.save(f, format="JPEG", quality=int(quality), optimize=True)
        rels.append(rel)
    return rels
