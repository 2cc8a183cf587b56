"""`describe` on a Ray cluster (`tarsier describe --engine ray`): the same job as engine.describe,
with the same records, spread over many machines with Ray Data.

    ray.data.from_items(videos)                      one row per video still to do
      .flat_map(decode_rows)                         CPU tasks: one decode pass per video (engine.video),
                                                     one row per clip (frames as bytes), then an "end" row
                                                     (or one "error" row)
      .map_batches(ModelActor, concurrency=actors)   actor pool holding the model (num_gpus=1 per actor
                                                     when the cluster has GPUs): batches of clips -> records
      -> driver: groups the records per video; a video is written when all its clips are in:
         OUT/shards/part-XXXX.jsonl (appended, flushed), OUT/<video>.srt/.vtt (atomic), and at the end of
         the run the shards are merged into OUT/descriptions.jsonl.

Resume is by shard: a rerun reads descriptions.jsonl and every shard, and skips the videos that are
complete there (same model/grain/prompt/settings key as the local engine, so the two engines resume
each other's runs); a video is only ever written whole, so a killed run loses only unfinished videos.
Each run appends to a fresh shard (the next free number), rotated every `shard_videos` videos.

Ray is an optional extra (`pip install 'tarsier-cli[ray]'`) and is imported only in here. The
output folder must be reachable from the driver (records travel back to it; frames never do).
On a multi-machine cluster, every node needs the project installed and the videos at the same paths.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from tarsier.common.types import Clip, VideoInput
from tarsier.engine.describe import (
    JSONL_NAME,
    DescribeSummary,
    check_arguments,
    clip_record,
    finished_records,
    plan_job,
    warn_notes,
)
from tarsier.engine.lock import holding_output_lock
from tarsier.engine.writers import SUBTITLE_WRITERS, JsonlWriter, read_records

SHARDS_DIR = "shards"
RAY_EXTRA = "pip install 'tarsier-cli[ray]'"


# ---------------------------------------------------------------------------------------------
# Stage 1: decode (Ray CPU tasks)
# ---------------------------------------------------------------------------------------------
def decode_rows(row: dict, options) -> object:
    """One video -> its clip rows, then one "end" row; or an "error" row. Runs in a Ray task."""
    from tarsier.engine.describe import decode_video

    video = VideoInput(Path(row["path"]), row["video"])
    rows: list[dict] = []

    def put(item) -> bool:
        kind, rel, payload = item
        if kind == "clip":
            clip, decode_s = payload[0], payload[1]
            meta = {"index": clip.index, "start": clip.start, "end": clip.end,
                    "frame_times": list(clip.frame_times), "shape": list(clip.frames.shape),
                    "model_size": clip.model_size, "decode_s": decode_s}
            rows.append(_row("clip", rel, meta, clip.frames.tobytes()))
        elif kind == "end":
            n, decode_s = payload[0], payload[1]
            meta = payload[2] if len(payload) > 2 else {}
            rows.append(_row("end", rel, {"n_clips": n, "decode_s": decode_s,
                                          **{k: meta[k] for k in ("width", "height", "fps") if k in meta}}))
        else:
            rows.append(_row("error", rel, {"stage": payload.stage, "error": payload.message}))
        return True

    decode_video(video, options, put)
    return rows


def _row(kind: str, video: str, meta: dict, frames: bytes = b"") -> dict:
    return {"kind": kind, "video": video, "meta": json.dumps(meta), "frames": frames}


# ---------------------------------------------------------------------------------------------
# Stage 2: the model (a Ray actor pool)
# ---------------------------------------------------------------------------------------------
class ModelActor:
    """Holds one model; turns batches of clip rows into record rows ("end"/"error" rows pass)."""

    def __init__(self, model, device: str, instruction: str, base: dict, max_new_tokens: int | None,
                 out_dir: str | None, thumbnails: bool):
        import ray

        if isinstance(model, ray.ObjectRef):
            model = ray.get(model)
        elif isinstance(model, str | Path):
            from tarsier.engine.checkpoint import load

            model = load(model, device=device)
        self.model = model
        self.instruction, self.base, self.max_new_tokens = instruction, base, max_new_tokens
        self.out_dir = Path(out_dir) if out_dir else None
        self.thumbnails = thumbnails

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        kinds, videos, metas, blobs = batch["kind"], batch["video"], batch["meta"], batch["frames"]
        out = {"kind": [], "video": [], "record": []}

        def add(kind, video, record):
            out["kind"].append(kind)
            out["video"].append(video)
            out["record"].append(json.dumps(record, ensure_ascii=False))

        clips: list[tuple[str, Clip, float]] = []
        for kind, video, meta, blob in zip(kinds, videos, metas, blobs):
            meta = json.loads(meta)
            if kind != "clip":
                add(kind, video, meta)
                continue
            frames = np.frombuffer(blob, dtype=np.uint8).reshape(meta["shape"])
            model_size = tuple(meta["model_size"]) if meta.get("model_size") else None
            clips.append((video, Clip(meta["index"], meta["start"], meta["end"], frames,
                                      meta["frame_times"], model_size), meta["decode_s"]))
        if clips:
            t = time.perf_counter()
            try:
                gens = self.model.generate([c.frames for _, c, _ in clips], [self.instruction] * len(clips),
                                           max_new_tokens=self.max_new_tokens)
            except Exception as exc:  # noqa: BLE001 - a model failure fails its videos, not the run
                for video in dict.fromkeys(v for v, _, _ in clips):
                    add("error", video, {"stage": "model", "error": f"{type(exc).__name__}: {exc}"})
                return out
            per_clip = (time.perf_counter() - t) / len(clips)
            for (video, clip, decode_s), gen in zip(clips, gens):
                if self.thumbnails and self.out_dir is not None:
                    _thumbnails(self.out_dir, video, clip)
                add("record", video, clip_record(video, clip, self.base, gen.text, gen.tokens, decode_s, per_clip))
        return out


def _thumbnails(out_dir: Path, video: str, clip: Clip) -> None:
    try:
        from tarsier.engine.thumbnails import save_clip_thumbnails

        save_clip_thumbnails(out_dir, video, clip.index, clip.frames)
    except Exception:  # noqa: BLE001, S110 - a thumbnail must never fail a describe run
        pass


def _model_meta(model, device: str, num_gpus: float) -> tuple[str, object]:
    """(model id, processor: frame geometry, prompts) without loading the model on the driver: an
    already loaded model answers itself, a name is loaded once in a Ray task."""
    if not isinstance(model, str | Path):
        return getattr(model, "model_id", getattr(model.config, "name", "model")), model.processor
    import ray

    @ray.remote(num_gpus=num_gpus)
    def probe(name):
        from tarsier.engine.checkpoint import load

        m = load(name, device=device)
        return m.model_id, m.processor

    return ray.get(probe.remote(str(model)))


# ---------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------
@holding_output_lock   # one writer per output folder (engine.lock)
def describe_ray(
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
    workers: int | None = None,
    thumbnails: bool = False,
    address: str | None = None,
    actors: int | None = None,
    actor_cpus: float = 1.0,
    decode_cpus: float = 1.0,
    shard_videos: int = 1000,
    quiet: bool = False,
) -> DescribeSummary:
    """engine.describe.describe on Ray Data; the same options and the same records. `address`: the
    cluster to join (None: the one this process is connected to, else a new local one, shut down at
    the end). `actors`: model replicas (default: one per GPU, else 1); `workers`: at most this many
    decode tasks at once (None: as many as the cluster's CPUs allow)."""
    t0 = time.perf_counter()
    notify = progress or (lambda *a, **k: None)
    check_arguments(grain, prompt, formats, output_dir, stdout)
    if output_dir is None:
        raise ValueError("the ray engine needs an output folder (its shards are the resume log)")
    try:
        import ray
    except ImportError:
        raise ValueError(f"the ray engine needs Ray: {RAY_EXTRA}") from None

    started_here = False
    if not ray.is_initialized():
        from tarsier.engine.ray_local import init_ray

        started_here = init_ray(ray, address, quiet=quiet)   # a local instance: loopback only, no dashboard
    try:
        gpus = float(ray.cluster_resources().get("GPU", 0))
        num_gpus = 1.0 if gpus >= 1 and (device == "auto" or device.startswith("cuda")) else 0.0
        model_id, processor = _model_meta(model, device, num_gpus)
        job = plan_job(inputs, model_id=model_id, processor=processor, grain=grain,
                       prompt=prompt, frames=frames, scenes=scenes, threshold=threshold,
                       min_scene_len=min_scene_len, min_clip=min_clip, max_clip=max_clip,
                       max_new_tokens=max_new_tokens, output_dir=output_dir, formats=formats, stdout=stdout,
                       extensions=extensions, recursive=recursive, stdin=stdin, threads=threads)
        warn_notes(job, notify, progress)
        if actors is None:
            actors = max(1, int(gpus)) if num_gpus else 1
        return _run(job, ray, model=model, device=device, batch_size=batch_size, max_new_tokens=max_new_tokens,
                    stdout=stdout, overwrite=overwrite, notify=notify, workers=workers, thumbnails=thumbnails,
                    actors=actors, num_gpus=num_gpus, actor_cpus=actor_cpus, decode_cpus=decode_cpus,
                    shard_videos=shard_videos, t0=t0)
    finally:
        if started_here:
            ray.shutdown()


def _run(job, ray, *, model, device, batch_size, max_new_tokens, stdout, overwrite, notify, workers,
         thumbnails, actors, num_gpus, actor_cpus, decode_cpus, shard_videos, t0) -> DescribeSummary:
    import dataclasses

    base, out = job.base, job.out
    shards = out / SHARDS_DIR
    summary = DescribeSummary(videos=len(job.videos), jsonl=job.jsonl_path)
    summary.errors.extend(job.problems)
    if overwrite:
        done = {}
    else:
        merge_shards(out)   # a killed run's shards first reach descriptions.jsonl
        done = finished_records([job.jsonl_path], base)
    todo: list[VideoInput] = []
    for v in job.videos:
        recs = done.get(v.rel, {})
        prior = next(iter(recs.values()), None)
        if prior is not None and len(recs) == prior.get("n_clips"):
            summary.videos_skipped += 1
            summary.clips_skipped += len(recs)
        else:
            todo.append(v)
    notify("start", videos=len(job.videos), todo=len(todo), skipped=summary.videos_skipped)

    writer = _ShardWriter(shards, shard_videos)
    stream = JsonlWriter(stream=stdout) if stdout is not None else None
    subtitle_writers = [SUBTITLE_WRITERS[f](out) for f in job.formats if f in SUBTITLE_WRITERS]

    def emit(rec: dict) -> None:
        writer.write(rec)
        if stream:
            stream.write(rec)

    for where, message in job.problems:
        emit({"video": where, "error": message, "stage": "discover", **base})
        notify("error", video=None, message=f"{where}: {message}")

    pending: dict[str, dict] = {v.rel: {"records": {}, "n_clips": None} for v in todo}

    def fail(rel: str, stage: str, message: str) -> None:
        pending.pop(rel, None)
        emit({"video": rel, "error": message, "stage": stage, **base})
        summary.videos_failed += 1
        summary.errors.append((rel, f"{stage}: {message}"))
        notify("error", video=rel, message=f"{rel}: {stage}: {message}")

    def maybe_finish(rel: str) -> None:
        st = pending[rel]
        if st["n_clips"] is None or len(st["records"]) < st["n_clips"]:
            return
        records = [st["records"][i] for i in sorted(st["records"])]
        for rec in records:
            rec["n_clips"] = st["n_clips"]
            rec.update(st.get("meta", {}))   # the source's size and rate, as the local engine
            emit(rec)
        writer.video_done()
        for w in subtitle_writers:
            w.write_video(rel, records, unique_name=rel in job.stems)
        summary.videos_ok += 1
        notify("video", video=rel, ok=True, clips=st["n_clips"])
        del pending[rel]

    try:
        if todo:
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False
            options = job.options
            if not options.threads:
                options = dataclasses.replace(options, threads=max(1, int(decode_cpus)))
            model_arg = model if isinstance(model, str | Path) else ray.put(model)
            ds = ray.data.from_items([{"path": str(v.path), "video": v.rel} for v in todo],
                                     override_num_blocks=max(1, min(len(todo), 2000)))
            ds = ds.flat_map(decode_rows, fn_kwargs={"options": options}, num_cpus=decode_cpus,
                             compute=ray.data.TaskPoolStrategy(size=workers or None))
            ds = ds.map_batches(
                ModelActor, batch_size=batch_size, batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_gpus=num_gpus, num_cpus=actor_cpus,
                fn_constructor_kwargs={"model": model_arg, "device": device, "instruction": job.instruction,
                                       "base": base, "max_new_tokens": max_new_tokens,
                                       "out_dir": str(out) if thumbnails else None, "thumbnails": thumbnails},
            )
            for row in ds.iter_rows():
                kind, rel = row["kind"], row["video"]
                if rel not in pending:     # a failed video's late clips
                    continue
                rec = json.loads(row["record"])
                if kind == "record":
                    pending[rel]["records"][rec["clip"]] = rec
                    summary.clips_done += 1
                    summary.tokens += rec["tokens"]
                    notify("clips", n=1)
                    maybe_finish(rel)
                elif kind == "end":
                    if rec["n_clips"] == 0:
                        fail(rel, "decode", "no decodable video frames")
                    else:
                        pending[rel]["n_clips"] = rec["n_clips"]
                        pending[rel]["meta"] = {k: rec[k] for k in ("width", "height", "fps") if k in rec}
                        maybe_finish(rel)
                else:
                    fail(rel, rec["stage"], rec["error"])
    finally:
        writer.close()
        merge_shards(out)
    summary.seconds = time.perf_counter() - t0
    return summary


class _ShardWriter:
    """Appends records to OUT/shards/part-XXXX.jsonl (a new part per run, rotated every n videos)."""

    def __init__(self, folder: Path, videos_per_shard: int):
        self.folder = folder
        self.per_shard = max(1, videos_per_shard)
        self.writer: JsonlWriter | None = None
        self.videos = 0

    def write(self, rec: dict) -> None:
        if self.writer is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            used = [int(p.stem.split("-")[-1]) for p in self.folder.glob("part-*.jsonl")
                    if p.stem.split("-")[-1].isdigit()]
            self.writer = JsonlWriter(self.folder / f"part-{max(used, default=-1) + 1:04d}.jsonl")
        self.writer.write(rec)

    def video_done(self) -> None:
        self.videos += 1
        if self.videos % self.per_shard == 0:
            self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _key(rec: dict) -> str:
    keep = {k: rec.get(k) for k in ("video", "clip", "model", "grain", "prompt", "settings", "error", "stage")}
    return json.dumps(keep, sort_keys=True)


def merge_shards(out: Path) -> Path:
    """Append to OUT/descriptions.jsonl every shard record it does not hold yet (idempotent)."""
    path = Path(out) / JSONL_NAME
    parts = sorted((Path(out) / SHARDS_DIR).glob("part-*.jsonl"))
    if not parts:
        return path
    seen = {_key(r) for r in read_records(path)}
    writer = None
    try:
        for part in parts:
            for rec in read_records(part):
                k = _key(rec)
                if k in seen:
                    continue
                seen.add(k)
                if writer is None:
                    writer = JsonlWriter(path)
                writer.write(rec)
    finally:
        if writer is not None:
            writer.close()
    return path


__all__ = ["RAY_EXTRA", "describe_ray", "merge_shards"]
