"""The one library call: `describe(inputs, ...)` turns videos into per-clip descriptions.

    discover -> decode + scenes + sample (one pass per video, in `workers` worker processes)
             -> bounded queue -> batches of clips -> model.generate (main process)
             -> JSONL records (per video, in clip order) -> SRT/VTT per video

Pipelining: decoding is the bottleneck of video captioning, so it runs in worker processes
(`workers`, default: one per core but one, see `default_workers`; 0 = one background thread in this
process) while the model generates in the main process. Each worker takes the next video, decodes it
once and sends its clips (frames are pickled numpy arrays: one memcpy per clip, see
bench/describe_pipeline.py) through one bounded queue, so memory stays flat however many videos there
are: at most `queue_size` clips wait, plus one batch, plus what each worker holds for its video.
Batching: clips are batched in arrival order (with the project's VideoLLM every clip of a run has the
same visual token count and prompt, so there is no padding to cut by sorting). A batch is run as soon
as it is full, or, partial, when another video's decode ends while it holds a clip of a video that had
already ended and no decoded clip is waiting: a batch never waits for more than one more video's worth
of decoding when the decoders are the bottleneck (the model would idle anyway), and stays full when
they are not (short videos of one clip each still make full batches).

Resume: every record carries the key (video, clip, model, grain, prompt, settings) and the video's
clip count, so a rerun skips finished videos without decoding them and skips finished clips of
the others. Bad inputs become one error record each; the batch goes on. A worker process that dies
(a decoder crash, the OOM killer) fails its current video only; a fresh worker takes over.
"""
from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tarsier.common.types import Clip, VideoError, VideoInput
from tarsier.engine.curate import Curation, check_curation, motion_score
from tarsier.engine.lock import holding_output_lock
from tarsier.engine.resume_plan import expand_stdin, finished_early, remember, request_key
from tarsier.engine.writers import FORMATS, MANIFEST_WRITERS, SUBTITLE_WRITERS, JsonlWriter, read_records

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
    batches: int = 0             # model calls (clips_done / batches = mean batch size)
    manifests: dict = field(default_factory=dict)   # format -> (clips listed, clips left out)

    @property
    def exit_code(self) -> int:
        return 1 if self.errors else 0


def instruction_for(grain: str, prompt: str | None, processor=None) -> str:
    """The instruction for `grain` in the model's own words (engine.interface.instruction_for); without a
    processor (usage checks before the model loads), the project's template."""
    from tarsier import prompts
    if processor is not None:
        from tarsier.engine.interface import instruction_for as model_instruction

        return model_instruction(processor, grain, prompt)
    if prompt:
        return prompt.strip()
    if grain not in GRAINS:
        raise ValueError(f"unknown grain {grain!r}; choose from {', '.join(GRAINS)}")
    return prompts.read(grain)


def settings_key(options) -> str:
    """Short hash of everything besides model/grain/prompt that changes which clips exist or what
    the model sees; a rerun with other settings does not count earlier clips as done."""
    fields_ = {k: getattr(options, k) for k in sorted(vars(options)) if k not in ("threads", "geometry")}
    if not _plain_square(options):   # the square of `frame_size` keeps the keys of runs made before geometries
        fields_["geometry"] = options.geometry
    return hashlib.sha1(json.dumps(fields_, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _plain_square(options) -> bool:
    from tarsier.engine.interface import SquareGeometry

    g = options.geometry
    return g is None or g == SquareGeometry(options.frame_size)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_workers() -> int:
    """Decode worker processes when the caller does not say: all cores but one (the model's process
    needs one), at most 16; on a one-core machine the in-process thread (0)."""
    n = cores()
    return 0 if n <= 1 else min(n - 1, 16)


def clip_record(rel: str, clip: Clip, base: dict, text: str, tokens: int, decode_s: float,
                generate_s: float) -> dict:
    """The JSONL record of one described clip (n_clips is added when the video's decode has ended).
    Shared by the local and the Ray engine so both write the same records."""
    return {
        "video": rel, "clip": clip.index, "start": round(clip.start, 3), "end": round(clip.end, 3),
        "frame_times": [round(x, 3) for x in clip.frame_times], "frames": len(clip.frame_times),
        "frame_size": list(clip.frame_size), **base, "description": text,
        "tokens": tokens, "timings": {"decode_s": round(decode_s, 3), "generate_s": round(generate_s, 3)},
        "motion": motion_score(clip.frames),
        **({"frames_decoded": clip.frames_decoded} if hasattr(clip, "frames_decoded") else {}),
    }


@dataclass
class _VideoState:
    video: VideoInput
    n_clips: int | None = None            # known once its decode pass ends
    records: dict[int, dict] = field(default_factory=dict)   # clip index -> finished record
    pending: list[dict] = field(default_factory=list)        # generated, not yet written
    decode_s: float = 0.0
    failed: bool = False
    ended: int = -1                       # how many decodes had ended when this one did
    meta: dict = field(default_factory=dict)    # the source's size and rate (engine.curate.video_meta)
    spans: dict = field(default_factory=dict)   # clip index -> (start, end), for cutting clip files
    cuts: dict = field(default_factory=dict)    # clip index -> engine.clips.CutResult


@dataclass
class Job:
    """What both engines work out before the first decode: the videos, the model's identity, the
    clip options, the record key and what an earlier run already finished."""
    videos: list[VideoInput]
    problems: list[tuple[str, str]]
    instruction: str
    options: object                      # engine.video.ClipOptions
    base: dict                           # model, grain, prompt, settings: the resume key
    out: Path | None
    jsonl_path: Path | None
    formats: tuple[str, ...]
    stems: set[str]
    notes: list[str] = field(default_factory=list)   # warnings for the user (a grain the model lacks)


def warn_notes(job: Job, notify, progress) -> None:
    """The job's warnings: to the progress callback (the CLI prints one line each), else as Python warnings."""
    from tarsier.engine.interface import GrainWarning

    for note in job.notes:
        if progress is not None:
            notify("warning", message=note)
        else:
            warnings.warn(note, GrainWarning, stacklevel=3)


def check_arguments(grain: str, prompt: str | None, formats, output_dir, stdout) -> str:
    """Usage errors (ValueError) before anything slow happens; returns the instruction."""
    instruction = instruction_for(grain, prompt)
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown output format(s): {', '.join(sorted(unknown))}")
    if output_dir is None and stdout is None:
        raise ValueError("nowhere to write: give an output folder or a stdout stream")
    if output_dir is None and set(formats) - {"jsonl"}:
        raise ValueError(f"{', '.join(sorted(set(formats) - {'jsonl'}))} output needs an output folder")
    return instruction


def plan_job(inputs, *, model_id: str, processor, grain: str, prompt: str | None,
             frames: int | None, scenes: str, threshold: float | None, min_scene_len: float, min_clip: float,
             max_clip: float | None, max_new_tokens: int | None, output_dir, formats, stdout,
             extensions, recursive: bool, stdin, threads: int) -> Job:
    from tarsier.engine.discover import DEFAULT_EXTENSIONS, discover
    from tarsier.engine.video import ClipOptions

    check_arguments(grain, prompt, formats, output_dir, stdout)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        instruction = instruction_for(grain, prompt, processor)
    geometry = processor.geometry
    videos, problems = discover(list(inputs), extensions=extensions or DEFAULT_EXTENSIONS,
                                recursive=recursive, stdin=stdin)
    options = ClipOptions(
        scenes=scenes, threshold=threshold, min_scene_len=min_scene_len, min_clip=min_clip,
        max_clip=max_clip, frames=frames or processor.frames, threads=threads,
        frame_size=getattr(geometry, "size", 224), geometry=geometry,
    )
    options.validate()  # a bad option is a usage error, not one decode error per video
    settings = settings_key(options) + (f"-t{max_new_tokens}" if max_new_tokens else "")
    base = {"model": model_id, "grain": grain if not prompt else "custom", "prompt": instruction,
            "settings": settings}
    out = Path(output_dir) if output_dir is not None else None
    # the JSONL is the resume log even when only SRT/VTT are asked for
    jsonl_path = out / JSONL_NAME if out is not None else None
    return Job(videos, problems, instruction, options, base, out, jsonl_path, tuple(formats),
               _stem_collisions(v.rel for v in videos), notes=[str(w.message) for w in caught])


@holding_output_lock   # one writer per output folder: two runs into one folder would describe every clip twice
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
    workers: int | None = None,
    queue_size: int | None = None,
    thumbnails: bool = False,
    curate=None,
    shard_size: int = 1000,
) -> DescribeSummary:
    """Describe every video found in `inputs`; returns counts and errors. `model` is a preset name,
    a checkpoint folder or an already loaded model. `progress(event, **info)` gets "start",
    "clips", "video" and "error" events (the CLI draws its progress bar from them).
    `workers`: decode worker processes (None = `default_workers()`, 0 = a thread in this process);
    `queue_size`: clips decoded ahead of the model (default 2 batches + 2 per worker);
    `thumbnails`: also save each described clip's frames as JPEGs under OUTPUT_DIR/thumbs/;
    `curate`: engine.curate.CurateOptions (clip files, filters); `shard_size`: clips per webdataset shard."""
    t0 = time.perf_counter()
    notify = progress or (lambda *a, **k: None)
    check_arguments(grain, prompt, formats, output_dir, stdout)   # usage errors before the slow model load
    check_curation(curate, formats)
    # a rerun with nothing left to do answers before the model loads (engine.resume_plan)
    inputs = expand_stdin(list(inputs), stdin)   # read once: the inputs may be discovered twice
    plan_key = None if overwrite else request_key(
        model, grain=grain, prompt=prompt, frames=frames, scenes=scenes, threshold=threshold,
        min_scene_len=min_scene_len, min_clip=min_clip, max_clip=max_clip, max_new_tokens=max_new_tokens)
    early = finished_early(plan_key, inputs, output_dir, formats=formats, curate=curate, extensions=extensions,
                           recursive=recursive, shard_size=shard_size, notify=notify)
    if early is not None:
        early.seconds = time.perf_counter() - t0
        return early
    if thumbnails and output_dir is None:
        raise ValueError("thumbnails need an output folder")
    if isinstance(model, str | Path):
        from tarsier.engine.checkpoint import load

        model = load(model, device=device)
    model_id = getattr(model, "model_id", getattr(model.config, "name", "model"))
    job = plan_job(inputs, model_id=model_id, processor=model.processor, grain=grain, prompt=prompt, frames=frames, scenes=scenes, threshold=threshold,
                   min_scene_len=min_scene_len, min_clip=min_clip, max_clip=max_clip,
                   max_new_tokens=max_new_tokens, output_dir=output_dir, formats=formats, stdout=stdout,
                   extensions=extensions, recursive=recursive, stdin=stdin, threads=threads)
    base, instruction, options = job.base, job.instruction, job.options
    remember(job.out, plan_key, base)
    summary = DescribeSummary(videos=len(job.videos), jsonl=job.jsonl_path)
    summary.errors.extend(job.problems)

    done = {} if overwrite or job.jsonl_path is None else finished_records([job.jsonl_path], base)
    curation = Curation(curate, base, job.stems, lambda rel, msg: summary.errors.append((rel, msg)) or
                        notify("error", video=rel, message=f"{rel}: {msg}"))
    done = curation.usable(done)
    subtitle_writers = [SUBTITLE_WRITERS[f](job.out) for f in formats if f in SUBTITLE_WRITERS]
    save_thumbs = None
    if thumbnails:
        from tarsier.engine.thumbnails import save_clip_thumbnails as save_thumbs

    states: dict[str, _VideoState] = {}
    todo: list[VideoInput] = []
    for v in job.videos:
        st = _VideoState(v, records=dict(done.get(v.rel, {})))
        prior = next(iter(st.records.values()), None)
        if prior is not None and len(st.records) == prior.get("n_clips") and curation.complete(st.records):
            summary.videos_skipped += 1
            summary.clips_skipped += len(st.records)
            continue
        states[v.rel] = st
        todo.append(v)
    notify("start", videos=len(job.videos), todo=len(todo), skipped=summary.videos_skipped)
    warn_notes(job, notify, progress)

    file_writer = JsonlWriter(job.jsonl_path) if job.jsonl_path is not None else None
    stream_writer = JsonlWriter(stream=stdout) if stdout is not None else None

    def emit(rec: dict) -> None:
        if file_writer:
            file_writer.write(rec)
        if stream_writer:
            stream_writer.write(rec)

    for where, message in job.problems:  # inputs that led to no file at all
        emit({"video": where, "error": message, "stage": "discover", **base})
        notify("error", video=None, message=f"{where}: {message}")

    def finish_video(st: _VideoState) -> None:
        for rec in sorted(st.pending, key=lambda r: r["clip"]):
            rec["n_clips"] = st.n_clips
            curation.decorate(st, rec)
            emit(rec)
            st.records[rec["clip"]] = rec
        st.pending.clear()
        if len(st.records) < (st.n_clips or 0):
            return
        for w in subtitle_writers:
            w.write_video(st.video.rel, list(st.records.values()), unique_name=st.video.rel in job.stems)
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
        live = [(st, c) for st, c in batch if not st.failed]
        if not live:
            return
        t = time.perf_counter()
        try:
            gens = model.generate([c.frames for _, c in live], [instruction] * len(live),
                                  max_new_tokens=max_new_tokens)
        except Exception as exc:  # noqa: BLE001 - a model failure fails its videos, not the whole run
            for st, _ in live:
                if not st.failed:
                    fail_video(st, VideoError("model", f"{type(exc).__name__}: {exc}"))
            return
        per_clip = (time.perf_counter() - t) / len(live)
        summary.batches += 1
        for (st, clip), gen in zip(live, gens):
            if save_thumbs is not None:
                _save_thumbnails(save_thumbs, job.out, st.video.rel, clip)
            st.pending.append(clip_record(st.video.rel, clip, base, gen.text, gen.tokens, st.decode_s, per_clip))
            summary.clips_done += 1
            summary.tokens += gen.tokens
        notify("clips", n=len(live))
        for st in {id(st): st for st, _ in live}.values():
            if st.n_clips is not None and not st.failed:
                finish_video(st)

    if workers is None:
        workers = default_workers()
    workers = min(workers, len(todo))
    if queue_size is None:
        queue_size = 2 * batch_size + 2 * workers
    batch: list[tuple[_VideoState, Clip]] = []
    ends = 0
    ready: list[Callable[[], bool]] = []   # the producer's "is a decoded item waiting?"
    restore_threads = _share_cpu_with_workers(model, workers)
    try:
        for kind, rel, payload in produce_clips(todo, options, workers=workers, queue_size=queue_size,
                                                ready=ready, curate=curate):
            st = states.get(rel)
            if st is None:
                continue
            if kind == "clip":
                clip, st.decode_s = payload[0], payload[1]
                st.meta = payload[2] if len(payload) > 2 else st.meta
                st.spans[clip.index] = (clip.start, clip.end)
                if clip.index in st.records:
                    summary.clips_skipped += 1
                    continue
                if curation.skip(st, clip):   # filtered out: a record with the reason, no model call
                    continue
                batch.append((st, clip))
                if len(batch) >= batch_size:
                    run_batch(batch)
                    batch = []
            elif kind == "error":
                batch = [(s, c) for s, c in batch if s is not st]
                fail_video(st, payload)
            else:  # "end": the decode pass is over, the clip count is known
                st.n_clips, st.decode_s, st.ended = payload[0], payload[1], ends
                st.meta = {**st.meta, **(payload[2] if len(payload) > 2 else {})}
                ends += 1
                if st.n_clips == 0:
                    fail_video(st, VideoError("decode", "no decodable video frames"))
                    continue
                curation.cut(st)
                in_batch = any(s is st for s, _ in batch)
                waited = any(s.ended < st.ended for s, _ in batch if s.n_clips is not None)
                if waited and not (ready and ready[0]()):
                    run_batch(batch)   # waited one more video's worth, and nothing is ready: run it partial
                    batch = []
                if not in_batch:
                    finish_video(st)
        run_batch(batch)
    finally:
        restore_threads()
        if file_writer:
            file_writer.close()
    if job.jsonl_path is not None and set(formats) & set(MANIFEST_WRITERS):
        from tarsier.engine.writers import described_clips, write_manifests

        summary.manifests = write_manifests(
            formats, job.out, described_clips([job.jsonl_path], base), clips_dir=curation.o.clips_path,
            sources={v.rel: v.path for v in job.videos}, stems=job.stems, shard_size=shard_size)
    summary.seconds = time.perf_counter() - t0
    return summary


def _share_cpu_with_workers(model, workers: int) -> Callable[[], None]:
    """A model on the CPU leaves the decode workers their cores: torch's intra-op threads default to
    every core, and oversubscribed they spin (tiny-random ran 20x slower with 2 threads than with 1 on
    a busy 2-core machine, bench/describe_pipeline.py). Returns the function that restores the setting."""
    import torch

    device = getattr(model, "device", None)
    if workers <= 0 or getattr(device, "type", "cpu") != "cpu":
        return lambda: None
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(before, cores() - workers)))
    return lambda: torch.set_num_threads(before)


def _save_thumbnails(save, out: Path, rel: str, clip: Clip) -> None:
    try:
        save(out, rel, clip.index, clip.frames)
    except Exception:  # noqa: BLE001, S110 - a thumbnail must never fail a describe run
        pass


# ---------------------------------------------------------------------------------------------
# The producer: decode + scenes + sample, in a thread or in worker processes
# ---------------------------------------------------------------------------------------------
def decode_video(video: VideoInput, options, put: Callable[[tuple], bool], curate=None) -> bool:
    """One decode pass over one video: put(("clip", rel, (Clip, decode_s))) per clip, then
    ("end", rel, (n_clips, decode_s)) or ("error", rel, VideoError). False when put() said stop.
    Both payloads end with the source's meta (engine.curate.video_meta); `curate`'s size filters
    drop a video before it is decoded."""
    from tarsier.engine.curate import reader_clips
    from tarsier.engine.sparse import SparseReader as VideoReader  # --scenes none: decode only sampled frames

    t = time.perf_counter()
    n = 0
    try:
        with VideoReader(video.path, options) as reader:
            clips, meta = reader_clips(reader, curate)
            for clip in clips:
                n += 1
                if not put(("clip", video.rel, (clip, time.perf_counter() - t, meta))):
                    return False
            meta = {**meta, "duration": reader.info.duration, "frames_decoded": reader.info.frames_decoded}
        end = ("end", video.rel, (n, time.perf_counter() - t, meta))
    except VideoError as err:
        end = ("error", video.rel, err)
    except Exception as exc:  # noqa: BLE001 - never let one odd file stop the batch
        end = ("error", video.rel, VideoError("decode", f"{type(exc).__name__}: {exc}"))
    return put(end)


def produce_clips(videos: list[VideoInput], options, workers: int = 0, queue_size: int = 16,
                  ready: list | None = None, curate=None) -> Iterator[tuple]:
    """Yields ("clip", rel, (Clip, decode_s)), ("end", rel, (n_clips, decode_s)) and
    ("error", rel, VideoError) for every video (the clips of one video in order). `ready`, if given,
    gets a function that says whether a decoded item is waiting (the next one comes without a wait)."""
    if not videos:
        return
    if workers <= 0:
        yield from _produce_thread(videos, options, queue_size, ready, curate)
    else:
        yield from _produce_processes(videos, options, workers, queue_size, ready, curate)


def _produce_thread(videos: list[VideoInput], options, queue_size: int, ready: list | None, curate=None):
    """Decode in a background thread (PyAV releases the GIL) so decoding overlaps generation."""
    q: queue.Queue = queue.Queue(maxsize=queue_size)
    if ready is not None:
        ready.append(lambda: not q.empty())
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
            if not decode_video(v, options, put, curate):
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


def _decode_worker(wid: int, tasks, results, stop, parent: int, options, buffered: int, curate=None) -> None:
    """A decode worker process: takes VideoInput tasks from its own pipe until a None, sends what
    decode_video() produces down its own result pipe. A sender thread does the sending, so decoding
    runs up to `buffered` items ahead of a parent busy with the model. Exits on its own when the
    parent process is gone (a kill -9 of the run must not leave orphans decoding), and leaves
    Ctrl-C to the parent."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    outbox: queue.Queue = queue.Queue(maxsize=max(1, buffered))
    broken = threading.Event()

    def send_all() -> None:
        while (item := outbox.get()) is not None:
            try:
                results.send(item)
            except (BrokenPipeError, EOFError, OSError):
                broken.set()
                return

    sender = threading.Thread(target=send_all, name="tarsier-send", daemon=True)
    sender.start()

    def alive() -> bool:
        return not stop.is_set() and not broken.is_set() and os.getppid() == parent

    def put(item) -> bool:
        if item is not None and item[0] == "error":  # a VideoError does not survive pickling
            err = item[2]
            item = ("error", item[1], (err.stage, err.message))
        while alive():
            try:
                outbox.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    while alive():
        try:
            if not tasks.poll(0.5):
                continue
            task = tasks.recv()
        except (EOFError, OSError):
            return
        if task is None:
            if put(("done", None, wid)) and put(None):
                while sender.is_alive() and alive():   # everything out before the process ends
                    sender.join(timeout=0.5)
            return
        if not put(("begin", task.rel, wid)) or not decode_video(task, options, put, curate):
            return


@dataclass
class _Worker:
    process: object
    tasks: object                 # parent's sending end of the worker's task pipe
    results: object               # parent's receiving end of the worker's result pipe
    queued: deque = field(default_factory=deque)   # handed to it, not finished yet (in order)
    current: str | None = None    # the video it said it began
    closing: bool = False         # it has been told there is no more work


def _produce_processes(videos: list[VideoInput], options, workers: int, queue_size: int, ready: list | None,
                       curate=None):
    """Decode in `workers` spawned processes. Every worker has its own task pipe and result pipe,
    so a worker that dies (even by SIGKILL, in the middle of a send) can poison nothing shared: its
    pipes close, the video it was on fails, the videos queued on it go to a fresh worker. Each
    worker holds at most `window` videos and decodes at most `buffered` items ahead of the parent,
    so memory stays bounded.
    Every video ends with exactly one "end" or "error"."""
    import dataclasses
    import multiprocessing as mp
    from multiprocessing.connection import wait

    ctx = mp.get_context("spawn")   # never fork a process that holds a model and its thread pools
    stop = ctx.Event()
    if not options.threads:   # split the cores between the workers' decoders
        options = dataclasses.replace(options, threads=max(1, cores() // workers))
    window = max(2, -(-queue_size // workers))
    buffered = max(1, queue_size // workers)   # items a worker may decode ahead of the parent
    todo: deque = deque(videos)
    live: dict[int, _Worker] = {}
    finished: set[str] = set()
    started = 0
    if ready is not None:
        ready.append(lambda: any(_poll(w.results) for w in list(live.values())))

    def feed(w: _Worker) -> None:
        try:
            while len(w.queued) < window and todo:
                v = todo.popleft()
                w.queued.append(v)
                w.tasks.send(v)
            if not todo and not w.queued and not w.closing:
                w.closing = True
                w.tasks.send(None)
        except (BrokenPipeError, OSError):
            pass   # it died; its results pipe will say so and its queue is handed on

    def start_worker() -> None:
        nonlocal started
        wid, started = started, started + 1
        task_recv, task_send = ctx.Pipe(duplex=False)
        result_recv, result_send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_decode_worker, name=f"tarsier-decode-{wid}", daemon=True,
                        args=(wid, task_recv, result_send, stop, os.getpid(), options, buffered, curate))
        p.start()
        task_recv.close()     # the child's ends: closed here, so the child's death reads as EOF
        result_send.close()
        live[wid] = w = _Worker(p, task_send, result_recv)
        feed(w)

    def bury(wid: int) -> Iterator[tuple]:
        w = live.pop(wid)
        w.process.join(timeout=2)
        for conn in (w.tasks, w.results):
            conn.close()
        if w.current is not None and w.current not in finished:
            finished.add(w.current)
            yield ("error", w.current, VideoError("decode", f"the decode worker died (exit code {w.process.exitcode})"))
        todo.extendleft(reversed([v for v in w.queued if v.rel not in finished and v.rel != w.current]))

    for _ in range(min(workers, len(videos))):
        start_worker()
    try:
        while len(finished) < len(videos):
            if not live:
                start_worker()
            by_conn = {w.results: wid for wid, w in live.items()}
            got = wait(list(by_conn), timeout=1.0)
            if not got:   # nothing for a second: a worker that is gone without an EOF is still gone
                for wid in [wid for wid, w in live.items() if not w.process.is_alive()]:
                    yield from bury(wid)
                continue
            for conn in got:
                wid = by_conn[conn]
                w = live.get(wid)
                if w is None:
                    continue
                try:
                    kind, rel, payload = conn.recv()
                except (EOFError, OSError):
                    yield from bury(wid)
                    continue
                if kind == "begin":
                    w.current = rel
                    continue
                if kind == "done":
                    yield from bury(wid)
                    continue
                if kind in ("end", "error"):
                    finished.add(rel)
                    w.queued = deque(v for v in w.queued if v.rel != rel)
                    w.current = None if w.current == rel else w.current
                    feed(w)
                    if kind == "error":
                        payload = VideoError(*payload)
                yield (kind, rel, payload)
            if todo and len(live) < min(workers, len(todo) + len(live)):
                start_worker()   # a worker was lost or retired early while work remains
    finally:
        stop.set()
        _shutdown(list(live.values()))


def _poll(conn) -> bool:
    try:
        return conn.poll()
    except (EOFError, OSError):
        return True


def _shutdown(workers: list[_Worker]) -> None:
    deadline = time.monotonic() + 3
    while any(w.process.is_alive() for w in workers) and time.monotonic() < deadline:
        for w in workers:   # drain, so a worker blocked in a send can see the stop flag and leave
            try:
                while w.results.poll(0.02):
                    w.results.recv()
            except (EOFError, OSError):
                pass
    for w in workers:
        if w.process.is_alive():
            w.process.terminate()
        w.process.join(timeout=2)
        for conn in (w.tasks, w.results):
            conn.close()


# ---------------------------------------------------------------------------------------------
# Resume
# ---------------------------------------------------------------------------------------------
def finished_records(paths, base: dict) -> dict[str, dict[int, dict]]:
    """Clip records from earlier runs (JSONL files) with the same model/grain/prompt/settings."""
    done: dict[str, dict[int, dict]] = {}
    for path in paths:
        for rec in read_records(Path(path)):
            if "error" in rec or "clip" not in rec:
                continue
            if any(rec.get(k) != v for k, v in base.items()):
                continue
            done.setdefault(rec["video"], {})[rec["clip"]] = rec
    return done


def _finished_records(path: Path, base: dict) -> dict[str, dict[int, dict]]:
    return finished_records([path], base)


def _stem_collisions(rels) -> set[str]:
    """Videos whose subtitle name would collide (x.mp4 and x.mov in one folder) keep their extension."""
    seen: dict[str, list[str]] = {}
    for rel in rels:
        seen.setdefault(str(Path(rel).with_suffix("")), []).append(rel)
    return {r for group in seen.values() if len(group) > 1 for r in group}
