"""The records a describe run writes, and the model step that makes them; shared by the local and the
Ray engine, so both write the same records.

    {"video", "clip", "start", "end", "frame_times", "frames", "frame_size", "model", "grain", "prompt",
     "settings", "description", "tokens", "timings", "motion", ["frames_decoded"]}
      + "n_clips", "width", "height", "fps" (and the clip file) when the video's decode has ended
    {"video", "error", "stage", "model", "grain", "prompt", "settings"} for a video that failed
"""
from __future__ import annotations

import time
from pathlib import Path

from tarsier.common.types import Clip, VideoError
from tarsier.engine.curate import motion_score


def clip_record(rel: str, clip: Clip, record_key: dict, text: str, tokens: int, decode_s: float,
                generate_s: float) -> dict:
    """The JSONL record of one described clip (n_clips is added when the video's decode has ended)."""
    return {
        "video": rel, "clip": clip.index, "start": round(clip.start, 3), "end": round(clip.end, 3),
        "frame_times": [round(x, 3) for x in clip.frame_times], "frames": len(clip.frame_times),
        "frame_size": list(clip.frame_size), **record_key, "description": text,
        "tokens": tokens, "timings": {"decode_s": round(decode_s, 3), "generate_s": round(generate_s, 3)},
        "motion": motion_score(clip.frames),
        **({"frames_decoded": clip.frames_decoded} if hasattr(clip, "frames_decoded") else {}),
    }


def error_record(rel: str, stage: str, message: str, record_key: dict) -> dict:
    """The one record of a video (or an input) that failed."""
    return {"video": rel, "error": message, "stage": stage, **record_key}


def describe_clips(model, clips: list[tuple[str, Clip, float]], *, instruction: str, record_key: dict,
                   max_new_tokens: int | None, thumbs_dir: Path | None = None) -> list[dict]:
    """One model call for a batch of (video, clip, decode seconds): their records, in order (with
    `thumbs_dir`, each clip's frames are also saved as thumbnails there). A failing model call raises
    VideoError("model", ...): it fails the batch's videos, never the run."""
    t = time.perf_counter()
    try:
        gens = model.generate([c.frames for _, c, _ in clips], [instruction] * len(clips),
                              max_new_tokens=max_new_tokens)
    except Exception as exc:  # noqa: BLE001 - a model failure fails its videos, not the whole run
        raise VideoError("model", f"{type(exc).__name__}: {exc}") from exc
    per_clip = (time.perf_counter() - t) / len(clips)
    records = []
    for (rel, clip, decode_s), gen in zip(clips, gens):
        if thumbs_dir is not None:
            save_thumbnails(thumbs_dir, rel, clip)
        records.append(clip_record(rel, clip, record_key, gen.text, gen.tokens, decode_s, per_clip))
    return records


def save_thumbnails(out: Path, rel: str, clip: Clip) -> None:
    """The clip's frames as JPEGs under OUT/thumbs/ (engine.thumbnails), for the report."""
    try:
        from tarsier.engine.thumbnails import save_clip_thumbnails

        save_clip_thumbnails(out, rel, clip.index, clip.frames)
    except Exception:  # noqa: BLE001, S110 - a thumbnail must never fail a describe run
        pass
