"""`describe` on a Ray cluster (`tarsier describe --engine ray`): the same job as engine.describe,
with the same options (engine.options) and the same records, spread over many machines with Ray Data.

    ray.data.from_items(videos)                      one row per video still to do
      .flat_map(decode_rows)                         CPU tasks: one decode pass per video (engine.video),
                                                     one row per clip (frames as bytes), then an "end" row
                                                     (or one "error" row)
      .map_batches(ModelActor, concurrency=actors)   actor pool holding the model (num_gpus=1 per actor
                                                     when the cluster has GPUs): batches of clips -> records
      -> driver: groups the records per video (engine.tracker, as the local engine does); a video is
         written when all its clips are in:
         OUT/shards/part-XXXX.jsonl (appended, flushed), OUT/<video>.srt/.vtt (atomic), and at the end of
         the run the shards are merged into OUT/descriptions.jsonl.

Resume is by shard: a rerun reads descriptions.jsonl and every shard, and skips the videos that are
complete there (same model/grain/prompt/settings key as the local engine, so the two engines resume
each other's runs); a video is only ever written whole, so a killed run loses only unfinished videos.
Each run appends to a fresh shard (the next free number), rotated every `shard_videos` videos
(RayOptions: the cluster's address, the actor pool, the shard size).

Ray is an optional extra (`pip install 'tarsier-cli[ray]'`) and is imported only in here. The
output folder must be reachable from the driver (records travel back to it; frames never do).
On a multi-machine cluster, every node needs the project installed and the videos at the same paths.
"""
from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tarsier.common.files import read_jsonl
from tarsier.common.types import Clip, VideoError, VideoInput
from tarsier.engine.decode_pool import decode_video
from tarsier.engine.lock import output_lock
from tarsier.engine.options import DescribeOptions
from tarsier.engine.prepare import PreparedRun, check_usage, model_id, prepare_run
from tarsier.engine.records import describe_clips
from tarsier.engine.resume_plan import finished_records
from tarsier.engine.tracker import SOURCE_META, DescribeSummary, VideoTracker, left_to_do
from tarsier.engine.writers import JSONL_NAME, MANIFEST_WRITERS, SUBTITLE_WRITERS, JsonlWriter

SHARDS_DIR = "shards"
RAY_EXTRA = "pip install 'tarsier-cli[ray]'"


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the Ray engine runs; everything else is the local engine's DescribeOptions."""
    address: str | None = None   # the cluster to join (None: the one this process is connected to, else a
                                 # new local one, loopback only, shut down at the end)
    actors: int | None = None    # model replicas (None: one per GPU, else 1)
    actor_cpus: float = 1.0      # CPUs each model actor holds
    decode_cpus: float = 1.0     # CPUs each decode task holds (and its decoder threads)
    shard_videos: int = 1000     # videos per OUT/shards/part-XXXX.jsonl
    quiet: bool = False          # keep Ray's own log lines off the terminal (engine.ray_local)


# ---------------------------------------------------------------------------------------------
# Stage 1: decode (Ray CPU tasks)
# ---------------------------------------------------------------------------------------------
def decode_rows(row: dict, options) -> object:
    """One video -> its clip rows, then one "end" row; or an "error" row. Runs in a Ray task."""
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
                                          **{k: meta[k] for k in SOURCE_META if k in meta}}))
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

    def __init__(self, model, device: str, instruction: str, record_key: dict, max_new_tokens: int | None,
                 thumbs_dir: str | None):
        import ray

        if isinstance(model, ray.ObjectRef):
            model = ray.get(model)
        elif isinstance(model, str | Path):
            from tarsier.engine.checkpoint import load

            model = load(model, device=device)
        self.model = model
        self.instruction, self.record_key, self.max_new_tokens = instruction, record_key, max_new_tokens
        self.thumbs_dir = Path(thumbs_dir) if thumbs_dir else None

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
            try:
                records = describe_clips(self.model, clips, instruction=self.instruction, record_key=self.record_key,
                                         max_new_tokens=self.max_new_tokens, thumbs_dir=self.thumbs_dir)
            except VideoError as err:   # a model failure fails its videos, not the run
                for video in dict.fromkeys(v for v, _, _ in clips):
                    add("error", video, {"stage": err.stage, "error": err.message})
                return out
            for (video, _, _), record in zip(clips, records):
                add("record", video, record)
        return out


def _model_meta(model, device: str, num_gpus: float) -> tuple[str, object]:
    """(model id, processor: frame geometry, prompts) without loading the model on the driver: an
    already loaded model answers itself, a name is loaded once in a Ray task."""
    if not isinstance(model, str | Path):
        return model_id(model), model.processor
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
def describe_ray(inputs: list[str], options: DescribeOptions | None = None, cluster: RayOptions | None = None, *,
                 progress: Callable[..., None] | None = None, **keywords) -> DescribeSummary:
    """engine.describe.describe on Ray Data: the same options and the same records. `cluster`:
    RayOptions. The fields of both can also be given by name, as for `describe`; `workers` is at most
    this many decode tasks at once (None: as many as the cluster's CPUs allow)."""
    ray_names = {f.name for f in dataclasses.fields(RayOptions)}
    cluster = dataclasses.replace(cluster or RayOptions(),
                                  **{k: keywords.pop(k) for k in list(keywords) if k in ray_names})
    options = (options or DescribeOptions()).replace(**keywords)
    with output_lock(options.output.output_dir):   # one writer per output folder (engine.lock)
        return _describe_ray(list(inputs), options, cluster, progress)


def _describe_ray(inputs: list[str], options: DescribeOptions, cluster: RayOptions, progress) -> DescribeSummary:
    t0 = time.perf_counter()
    notify = progress or (lambda *a, **k: None)
    out = options.output
    check_usage(options)
    if out.output_dir is None:
        raise ValueError("the ray engine needs an output folder (its shards are the resume log)")
    curate = out.curate
    if (curate is not None and (curate.clips_dir is not None or curate.filtering)) or \
            set(out.formats) & set(MANIFEST_WRITERS):
        raise ValueError("clip files, the curation filters and trainer manifests run with the local engine")
    try:
        import ray
    except ImportError:
        raise ValueError(f"the ray engine needs Ray: {RAY_EXTRA}") from None

    started_here = False
    if not ray.is_initialized():
        from tarsier.engine.ray_local import init_ray

        # a local instance: loopback only, no dashboard
        started_here = init_ray(ray, cluster.address, quiet=cluster.quiet)
    try:
        device = options.speed.device
        gpus = float(ray.cluster_resources().get("GPU", 0))
        num_gpus = 1.0 if gpus >= 1 and (device == "auto" or device.startswith("cuda")) else 0.0
        model_name, processor = _model_meta(options.what.model, device, num_gpus)
        run = prepare_run(inputs, options, model_name, processor)
        run.warn(notify, progress)
        if cluster.actors is None:
            cluster = dataclasses.replace(cluster, actors=max(1, int(gpus)) if num_gpus else 1)
        summary = _run(run, ray, options, cluster, num_gpus=num_gpus, notify=notify)
        summary.seconds = time.perf_counter() - t0
        return summary
    finally:
        if started_here:
            ray.shutdown()


def _run(run: PreparedRun, ray, options: DescribeOptions, cluster: RayOptions, *, num_gpus: float,
         notify) -> DescribeSummary:
    out = run.out
    summary = DescribeSummary(videos=len(run.videos), jsonl=run.jsonl_path)
    summary.errors.extend(run.problems)
    if options.output.overwrite:
        done = {}
    else:
        merge_shards(out)   # a killed run's shards first reach descriptions.jsonl
        done = finished_records([run.jsonl_path], run.record_key)
    todo, summary.videos_skipped, summary.clips_skipped = left_to_do(run.videos, done)
    notify("start", videos=len(run.videos), todo=len(todo), skipped=summary.videos_skipped)

    shards = _ShardWriter(out / SHARDS_DIR, cluster.shard_videos)
    stdout = options.output.stdout
    stream = JsonlWriter(stream=stdout) if stdout is not None else None

    def emit(rec: dict) -> None:
        shards.write(rec)
        if stream:
            stream.write(rec)

    tracker = VideoTracker(
        todo, record_key=run.record_key, stems=run.stems, summary=summary, emit=emit, notify=notify,
        subtitle_writers=[SUBTITLE_WRITERS[f](out) for f in run.formats if f in SUBTITLE_WRITERS],
        whole_videos=True, on_written=shards.video_done)
    tracker.input_problems(run.problems)
    try:
        for row in (_record_rows(ray, todo, run, options, cluster, num_gpus) if todo else ()):
            st = tracker.get(row["video"])
            if st is None:     # a failed video's late clips
                continue
            kind, rec = row["kind"], json.loads(row["record"])
            if kind == "record":
                tracker.described(st, rec)
                notify("clips", n=1)
                tracker.flush(st)
            elif kind == "end":
                if tracker.decode_ended(st, rec["n_clips"], {k: rec[k] for k in SOURCE_META if k in rec}):
                    tracker.flush(st)
            else:
                tracker.fail(st, VideoError(rec["stage"], rec["error"]))
    finally:
        shards.close()
        merge_shards(out)
    return summary


def _record_rows(ray, todo: list[VideoInput], run: PreparedRun, options: DescribeOptions, cluster: RayOptions,
                 num_gpus: float):
    """The Ray Data pipeline: decode tasks -> model actors; yields record, "end" and "error" rows."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    clip_options = run.clip_options
    if not clip_options.threads:
        clip_options = dataclasses.replace(clip_options, threads=max(1, int(cluster.decode_cpus)))
    model = options.what.model
    model_arg = model if isinstance(model, str | Path) else ray.put(model)
    ds = ray.data.from_items([{"path": str(v.path), "video": v.rel} for v in todo],
                             override_num_blocks=max(1, min(len(todo), 2000)))
    ds = ds.flat_map(decode_rows, fn_kwargs={"options": clip_options}, num_cpus=cluster.decode_cpus,
                     compute=ray.data.TaskPoolStrategy(size=options.speed.workers or None))
    ds = ds.map_batches(
        ModelActor, batch_size=options.speed.batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=cluster.actors),
        num_gpus=num_gpus, num_cpus=cluster.actor_cpus,
        fn_constructor_kwargs={"model": model_arg, "device": options.speed.device, "instruction": run.instruction,
                               "record_key": run.record_key, "max_new_tokens": options.what.max_new_tokens,
                               "thumbs_dir": str(run.out) if options.output.thumbnails else None},
    )
    yield from ds.iter_rows()


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
    seen = {_key(r) for r in read_jsonl(path)}
    writer = None
    try:
        for part in parts:
            for rec in read_jsonl(part):
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


__all__ = ["RAY_EXTRA", "RayOptions", "describe_ray", "merge_shards"]
