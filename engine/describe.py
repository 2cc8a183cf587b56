"""The one library call: `describe(inputs, ...)` turns videos into per-clip descriptions.

    discover -> (decode + scenes + sample: one pass per video, in a producer) -> batches of clips
             -> model.generate -> JSONL records (as each batch finishes) -> SRT/VTT per video

Resume: every record carries the key (video, clip, model, grain, prompt, settings) and the video's
clip count, so a rerun skips finished videos without decoding them and skips finished clips of
the others. Bad inputs become one error record each; the batch goes on.
"""
from __future__ import annotations

import hashlib
import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from engine.types import Clip, VideoError, VideoInput
from engine.writers import SUBTITLE_WRITERS, JsonlWriter, read_records

JSONL_NAME = "descriptions.jsonl"
GRAINS = ("brief", "fine")


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

    @property
    def exit_code(self) -> int:
        return 1 if self.errors else 0


def instruction_for(grain: str, prompt: str | None) -> str:
    import prompts

    if prompt:
        return prompt.strip()
    if grain not in GRAINS:
        raise ValueError(f"unknown grain {grain!r}; choose from {', '.join(GRAINS)}")
    return prompts.read(grain)


def settings_key(options) -> str:
    """Short hash of everything besides model/grain/prompt that changes which clips exist or what
    the model sees; a rerun with other settings does not count earlier clips as done."""
    fields_ = {k: getattr(options, k) for k in sorted(vars(options)) if k not in ("threads",)}
    return hashlib.sha1(json.dumps(fields_, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass
class _VideoState:
    video: VideoInput
    n_clips: int | None = None            # known once its decode pass ends
    records: dict[int, dict] = field(default_factory=dict)   # clip index -> finished record
    pending: list[dict] = field(default_factory=list)        # generated, not yet written
    decode_s: float = 0.0
    failed: bool = False


def describe(
    inputs: list[str],
    *,
    model="tarsier2-recap-7b",
    grain: str = "fine",
    prompt: str | None = None,
    frames: int | None = None,
    scenes: str = "adaptive",
    threshold: float | None = None,
    min_scene_len: float = 0.6,
    min_clip: float = 1.0,
    max_clip: float | None = 30.0,
    batch_size: int = 4,
    max_new_tokens: int | None = None,
    device: str = "auto",
    output_dir: str | Path | None = "tarsier-out",
    formats: tuple[str, ...] = ("jsonl",),
    stdout: IO[str] | None = None,
    overwrite: bool = False,
    extensions: tuple[str, ...] | None = None,
    recursive: bool = True,
    stdin: IO[str] | None = None,
    threads: int = 0,
    progress: Callable[..., None] | None = None,
) -> DescribeSummary:
    """Describe every video found in `inputs`; returns counts and errors. `model` is a preset name,
    a checkpoint folder or an already loaded model. `progress(event, **info)` gets "start",
    "clips", "video" and "error" events (the CLI draws its progress bar from them)."""
    from engine.discover import DEFAULT_EXTENSIONS, discover
    from engine.video import ClipOptions

    t0 = time.perf_counter()
    notify = progress or (lambda *a, **k: None)
    instruction = instruction_for(grain, prompt)
    unknown = set(formats) - {"jsonl", *SUBTITLE_WRITERS}
    if unknown:
        raise ValueError(f"unknown output format(s): {', '.join(sorted(unknown))}")
    if output_dir is None and stdout is None:
        raise ValueError("nowhere to write: give an output folder or a stdout stream")
    if output_dir is None and set(formats) - {"jsonl"}:
        raise ValueError("SRT/VTT output needs an output folder")

    videos, problems = discover(list(inputs), extensions=extensions or DEFAULT_EXTENSIONS,
                                recursive=recursive, stdin=stdin)
    summary = DescribeSummary(videos=len(videos))
    summary.errors.extend(problems)

    if isinstance(model, str | Path):
        from engine.checkpoint import load

        model = load(model, device=device)
    model_id = getattr(model, "model_id", getattr(model.config, "name", "model"))
    options = ClipOptions(
        scenes=scenes, threshold=threshold, min_scene_len=min_scene_len, min_clip=min_clip,
        max_clip=max_clip, frames=frames or model.config.frames, frame_size=model.frame_size, threads=threads,
    )
    settings = settings_key(options) + (f"-t{max_new_tokens}" if max_new_tokens else "")
    base = {"model": model_id, "grain": grain if not prompt else "custom", "prompt": instruction,
            "settings": settings}

    out = Path(output_dir) if output_dir is not None else None
    jsonl_path = out / JSONL_NAME if out is not None and "jsonl" in formats else None
    if out is not None and jsonl_path is None:
        jsonl_path = out / JSONL_NAME  # the JSONL is the resume log even when only SRT/VTT are asked for
    summary.jsonl = jsonl_path

    done = {} if overwrite or jsonl_path is None else _finished_records(jsonl_path, base)
    subtitle_writers = [SUBTITLE_WRITERS[f](out) for f in formats if f in SUBTITLE_WRITERS]
    stems = _stem_collisions(v.rel for v in videos)

    states: dict[str, _VideoState] = {}
    todo: list[VideoInput] = []
    for v in videos:
        st = _VideoState(v, records=dict(done.get(v.rel, {})))
        prior = next(iter(st.records.values()), None)
        if prior is not None and len(st.records) == prior.get("n_clips"):
            summary.videos_skipped += 1
            summary.clips_skipped += len(st.records)
            continue
        states[v.rel] = st
        todo.append(v)
    notify("start", videos=len(videos), todo=len(todo), skipped=summary.videos_skipped)

    file_writer = JsonlWriter(jsonl_path) if jsonl_path is not None else None
    stream_writer = JsonlWriter(stream=stdout) if stdout is not None else None

    def emit(rec: dict) -> None:
        if file_writer:
            file_writer.write(rec)
        if stream_writer:
            stream_writer.write(rec)

    for where, message in problems:  # inputs that led to no file at all
        emit({"video": where, "error": message, "stage": "discover", **base})
        notify("error", video=None, message=f"{where}: {message}")

    def finish_video(st: _VideoState) -> None:
        for rec in sorted(st.pending, key=lambda r: r["clip"]):
            rec["n_clips"] = st.n_clips
            emit(rec)
            st.records[rec["clip"]] = rec
        st.pending.clear()
        if len(st.records) < (st.n_clips or 0):
            return
        for w in subtitle_writers:
            w.write_video(st.video.rel, list(st.records.values()), unique_name=st.video.rel in stems)
        summary.videos_ok += 1
        notify("video", video=st.video.rel, ok=True, clips=st.n_clips)
        del states[st.video.rel]

    def fail_video(st: _VideoState, err: VideoError) -> None:
        st.failed = True
        message = f"{st.video.rel}: {err}"
        emit({"video": st.video.rel, "error": err.message, "stage": err.stage, **base})
        summary.videos_failed += 1
        summary.errors.append((st.video.rel, f"{err}"))
        notify("error", video=st.video.rel, message=message)
        states.pop(st.video.rel, None)

    def run_batch(batch: list[tuple[_VideoState, Clip]]) -> None:
        import numpy as np
        import torch

        live = [(st, c) for st, c in batch if not st.failed]
        if not live:
            return
        t = time.perf_counter()
        try:
            frames = torch.from_numpy(np.stack([c.frames for _, c in live]))
            gens = model.generate(frames, [instruction] * len(live), max_new_tokens=max_new_tokens)
        except Exception as exc:  # a model failure fails its videos, not the whole run
            for st, _ in live:
                if not st.failed:
                    fail_video(st, VideoError("model", f"{type(exc).__name__}: {exc}"))
            return
        per_clip = (time.perf_counter() - t) / len(live)
        for (st, clip), gen in zip(live, gens):
            st.pending.append({
                "video": st.video.rel, "clip": clip.index, "start": round(clip.start, 3),
                "end": round(clip.end, 3), "frame_times": [round(x, 3) for x in clip.frame_times],
                **base, "description": gen.text, "tokens": gen.tokens,
                "timings": {"decode_s": round(st.decode_s, 3), "generate_s": round(per_clip, 3)},
            })
            summary.clips_done += 1
            summary.tokens += gen.tokens
        notify("clips", n=len(live))
        for st in {id(st): st for st, _ in live}.values():
            if st.n_clips is not None and not st.failed:
                finish_video(st)

    batch: list[tuple[_VideoState, Clip]] = []
    try:
        for kind, rel, payload in _produce(todo, options):
            st = states.get(rel)
            if st is None:
                continue
            if kind == "clip":
                clip, st.decode_s = payload
                if clip.index in st.records:
                    summary.clips_skipped += 1
                    continue
                batch.append((st, clip))
                if len(batch) >= batch_size:
                    run_batch(batch)
                    batch = []
            elif kind == "error":
                batch = [(s, c) for s, c in batch if s is not st]
                fail_video(st, payload)
            else:  # "end": the decode pass is over, the clip count is known
                st.n_clips, st.decode_s = payload
                if st.n_clips == 0:
                    fail_video(st, VideoError("decode", "no decodable video frames"))
                elif not any(s is st for s, _ in batch):
                    finish_video(st)
        run_batch(batch)
    finally:
        if file_writer:
            file_writer.close()
    summary.seconds = time.perf_counter() - t0
    return summary


def _produce(videos: list[VideoInput], options, queue_size: int = 16):
    """Decode in a background thread (PyAV releases the GIL) so decoding overlaps generation.
    Yields ("clip", rel, (Clip, decode_s)), ("end", rel, (n_clips, decode_s)), ("error", rel, VideoError)."""
    from engine.video import VideoReader

    q: queue.Queue = queue.Queue(maxsize=queue_size)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        for v in videos:
            t = time.perf_counter()
            n = 0
            try:
                with VideoReader(v.path, options) as reader:
                    for clip in reader.clips():
                        n += 1
                        if not put(("clip", v.rel, (clip, time.perf_counter() - t))):
                            return
                end = ("end", v.rel, (n, time.perf_counter() - t))
            except VideoError as err:
                end = ("error", v.rel, err)
            except Exception as exc:  # never let one odd file stop the batch
                end = ("error", v.rel, VideoError("decode", f"{type(exc).__name__}: {exc}"))
            if not put(end):
                return
        put(None)

    worker = threading.Thread(target=work, name="tarsier-decode", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)


def _finished_records(path: Path, base: dict) -> dict[str, dict[int, dict]]:
    """Clip records from an earlier run with the same model/grain/prompt/settings."""
    done: dict[str, dict[int, dict]] = {}
    for rec in read_records(path):
        if "error" in rec or "clip" not in rec:
            continue
        if any(rec.get(k) != v for k, v in base.items()):
            continue
        done.setdefault(rec["video"], {})[rec["clip"]] = rec
    return done


def _stem_collisions(rels) -> set[str]:
    """Videos whose subtitle name would collide (x.mp4 and x.mov in one folder) keep their extension."""
    seen: dict[str, list[str]] = {}
    for rel in rels:
        seen.setdefault(str(Path(rel).with_suffix("")), []).append(rel)
    return {r for group in seen.values() if len(group) > 1 for r in group}
