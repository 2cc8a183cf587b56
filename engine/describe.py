"""The one library call: `describe(inputs, options)` turns videos into per-clip descriptions.

    engine.prepare       usage errors, the videos (engine.discover), the instruction and the record key
    engine.resume_plan   what earlier runs finished (a rerun with nothing left answers before the model loads)
    engine.decode_pool   decode + scenes + sample, one pass per video, in worker processes
      -> bounded queue -> engine.batching: batches of clips -> engine.records: model.generate (this process)
    engine.tracker       per video: records written in clip order (OUT/descriptions.jsonl, appended as
                         clips finish), SRT/VTT when the video is complete, the run's counts
    engine.writers       the output formats; trainer manifests are rebuilt from the JSONL at the end

Memory stays flat however many videos there are: at most `queue_size` decoded clips wait, plus one
batch, plus what each worker holds for its video.
Resume: every record carries the key (video, clip, model, grain, prompt, settings) and the video's
clip count, so a rerun skips finished videos without decoding them and skips finished clips of
the others. Bad inputs become one error record each; the batch goes on. A worker process that dies
(a decoder crash, the OOM killer) fails its current video only; a fresh worker takes over.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tarsier.common.types import Clip, VideoError
from tarsier.engine.batching import batch_is_due, default_queue_size
from tarsier.engine.curate import Curation, check_curation
from tarsier.engine.decode_pool import default_workers, produce_clips, share_cpu_with_workers
from tarsier.engine.lock import output_lock
from tarsier.engine.options import DescribeOptions
from tarsier.engine.prepare import PreparedRun, check_usage, model_id, prepare_run
from tarsier.engine.records import describe_clips
from tarsier.engine.resume_plan import expand_stdin, finished_early, finished_records, manifests, remember, request_key
from tarsier.engine.tracker import DescribeSummary, VideoState, VideoTracker, left_to_do
from tarsier.engine.writers import SUBTITLE_WRITERS, JsonlWriter


def describe(inputs: list[str], options: DescribeOptions | None = None, *,
             progress: Callable[..., None] | None = None, **keywords) -> DescribeSummary:
    """Describe every video found in `inputs` (files, folders, globs, '-' for paths on stdin): writes
    the records and the asked formats, returns the counts and errors (DescribeSummary).

    `options`: engine.options.DescribeOptions; its fields can also be given by name, alone or over
    `options`: `describe(["videos/"], model="tiny-random", output_dir="out", workers=0)`. `model` is a
    preset name, a checkpoint folder or an already loaded model. `progress(event, **info)` gets
    "start", "clips", "video", "error" and "warning" events (the CLI draws its progress bar from them)."""
    options = (options or DescribeOptions()).replace(**keywords)
    # one writer per output folder: two runs into one folder would describe every clip twice
    with output_lock(options.output.output_dir):
        return _describe(list(inputs), options, progress)


def _describe(inputs: list[str], options: DescribeOptions, progress) -> DescribeSummary:
    t0 = time.perf_counter()
    notify = progress or (lambda *a, **k: None)
    out = options.output
    check_usage(options)   # usage errors before the slow model load
    check_curation(out.curate, out.formats)
    inputs = expand_stdin(inputs, options.inputs.stdin)   # read once: the inputs may be discovered twice
    plan_key = request_key(options)
    early = finished_early(plan_key, inputs, options, notify)   # nothing left to do: no model load
    if early is not None:
        early.seconds = time.perf_counter() - t0
        return early
    if out.thumbnails and out.output_dir is None:
        raise ValueError("thumbnails need an output folder")
    model = load_model(options.what.model, options.speed.device)
    run = prepare_run(inputs, options, model_id(model), model.processor)
    remember(run.out, plan_key, run.record_key)
    summary = DescribeSummary(videos=len(run.videos), jsonl=run.jsonl_path)
    summary.errors.extend(run.problems)

    def clip_error(rel: str, message: str) -> None:
        summary.errors.append((rel, message))
        notify("error", video=rel, message=f"{rel}: {message}")

    curation = Curation(out.curate, run.record_key, run.stems, clip_error)
    done = {} if out.overwrite or run.jsonl_path is None else finished_records([run.jsonl_path], run.record_key)
    done = curation.usable(done)
    todo, summary.videos_skipped, summary.clips_skipped = left_to_do(run.videos, done, curation.complete)
    notify("start", videos=len(run.videos), todo=len(todo), skipped=summary.videos_skipped)
    run.warn(notify, progress)

    sinks = [JsonlWriter(run.jsonl_path)] if run.jsonl_path is not None else []
    if out.stdout is not None:
        sinks.append(JsonlWriter(stream=out.stdout))

    def emit(record: dict) -> None:
        for sink in sinks:
            sink.write(record)

    try:
        tracker = VideoTracker(
            todo, record_key=run.record_key, stems=run.stems, summary=summary, emit=emit, notify=notify,
            subtitle_writers=[SUBTITLE_WRITERS[f](run.out) for f in out.formats if f in SUBTITLE_WRITERS],
            resumed=done, decorate=curation.add_clip_file)
        tracker.input_problems(run.problems)
        _describe_videos(model, run, options, todo, tracker, curation, notify)
    finally:
        for sink in sinks:
            sink.close()
    if run.jsonl_path is not None:
        manifests(summary, notify, out, run.out, run.jsonl_path, run.record_key, videos=run.videos,
                  clips_dir=curation.o.clips_path, stems=run.stems)
    summary.seconds = time.perf_counter() - t0
    return summary


def load_model(model, device: str):
    """A model given by name (preset, hub id, checkpoint folder) is loaded; a loaded one is kept."""
    if isinstance(model, str | Path):
        from tarsier.engine.checkpoint import load

        return load(model, device=device)
    return model


def _describe_videos(model, run: PreparedRun, options: DescribeOptions, todo: list, tracker: VideoTracker,
                     curation: Curation, notify) -> None:
    """The loop: decoded clips in (engine.decode_pool), batches to the model, records to the tracker."""
    speed = options.speed
    workers = min(default_workers() if speed.workers is None else speed.workers, len(todo))
    queue_size = default_queue_size(speed.batch_size, workers) if speed.queue_size is None else speed.queue_size
    batch = _Batch(model, run, options, tracker, notify)
    ready: list[Callable[[], bool]] = []   # the decode pool's "is a decoded item waiting?"
    restore_threads = share_cpu_with_workers(model, workers)
    try:
        for kind, rel, payload in produce_clips(todo, run.clip_options, workers=workers, queue_size=queue_size,
                                                ready=ready, curate=options.output.curate):
            st = tracker.get(rel)
            if st is None:   # a failed video's late clips
                continue
            if kind == "clip":
                clip, st.decode_s = payload[0], payload[1]
                st.meta = payload[2] if len(payload) > 2 else st.meta
                st.spans[clip.index] = (clip.start, clip.end)
                if clip.index in st.records:   # described by an earlier run
                    tracker.summary.clips_skipped += 1
                elif not curation.skip(st, clip):   # a filtered clip gets a record with the reason, no model call
                    batch.add(st, clip)
            elif kind == "error":
                batch.drop(st)
                tracker.fail(st, payload)
            elif tracker.decode_ended(st, payload[0], payload[2] if len(payload) > 2 else {}):   # "end"
                st.decode_s = payload[1]
                curation.cut(st)
                in_batch = batch.holds(st)
                batch.video_ended(st, decoded_waiting=bool(ready) and ready[0]())
                if not in_batch:   # else its records are written when the batch has run
                    tracker.flush(st)
        batch.run()
    finally:
        restore_threads()


class _Batch:
    """Clips of any videos waiting for the model; engine.batching says when they go."""

    def __init__(self, model, run: PreparedRun, options: DescribeOptions, tracker: VideoTracker, notify):
        self.model, self.prepared, self.tracker, self.notify = model, run, tracker, notify
        self.size = options.speed.batch_size
        self.max_new_tokens = options.what.max_new_tokens
        self.thumbs_dir = run.out if options.output.thumbnails else None
        self.clips: list[tuple[VideoState, Clip]] = []

    def ends(self) -> list[int | None]:
        return [st.end_order for st, _ in self.clips]

    def holds(self, st: VideoState) -> bool:
        return any(s is st for s, _ in self.clips)

    def add(self, st: VideoState, clip: Clip) -> None:
        self.clips.append((st, clip))
        if batch_is_due(self.ends(), self.size):
            self.run()

    def drop(self, st: VideoState) -> None:
        self.clips = [(s, c) for s, c in self.clips if s is not st]

    def video_ended(self, st: VideoState, decoded_waiting: bool) -> None:
        if batch_is_due(self.ends(), self.size, ended=st.end_order, decoded_waiting=decoded_waiting):
            self.run()

    def run(self) -> None:
        """One model call for the live clips; their videos are flushed (written as far as they can be)."""
        live = [(st, c) for st, c in self.clips if not st.failed]
        self.clips = []
        if not live:
            return
        try:
            records = describe_clips(self.model, [(st.video.rel, c, st.decode_s) for st, c in live],
                                     instruction=self.prepared.instruction, record_key=self.prepared.record_key,
                                     max_new_tokens=self.max_new_tokens, thumbs_dir=self.thumbs_dir)
        except VideoError as err:   # the model failed: its videos fail, not the run
            for st, _ in live:
                if not st.failed:
                    self.tracker.fail(st, err)
            return
        self.tracker.summary.batches += 1
        for (st, _), rec in zip(live, records):
            self.tracker.described(st, rec)
        self.notify("clips", n=len(live))
        for st in {id(st): st for st, _ in live}.values():
            if st.n_clips is not None and not st.failed:
                self.tracker.flush(st)
