"""The decode pool: decode + scenes + sample, one pass per video, in worker processes (or one thread)
while the model generates in the main process.

Decoding is the bottleneck of video captioning, so it runs in `workers` worker processes (default: one
per core but one, see `default_workers`; 0 = one background thread in this process). Each worker takes
the next video, decodes it once and sends its clips (frames are pickled numpy arrays: one memcpy per
clip, see bench/describe_pipeline.py) through its own bounded pipe, so memory stays flat however many
videos there are: at most `queue_size` clips wait, plus what each worker holds for its video. A worker
process that dies (a decoder crash, the OOM killer) fails its current video only; a fresh worker takes
over the videos queued on it.

    produce_clips(videos, clip_options, workers, queue_size) yields, for every video, in clip order:
      ("clip", rel, (Clip, decode_s, meta)) ... then ("end", rel, (n_clips, decode_s, meta))
      or ("error", rel, VideoError)
"""
from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from tarsier.common.types import VideoError, VideoInput


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


def share_cpu_with_workers(model, workers: int) -> Callable[[], None]:
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


START_FAILURES = 3   # workers that die before any worker spoke: spawned processes cannot start here


def _produce_processes(videos: list[VideoInput], options, workers: int, queue_size: int, ready: list | None,
                       curate=None):
    """Decode in `workers` spawned processes. Every worker has its own task pipe and result pipe,
    so a worker that dies (even by SIGKILL, in the middle of a send) can poison nothing shared: its
    pipes close, the video it was on fails, the videos queued on it go to a fresh worker. Each
    worker holds at most `window` videos and decodes at most `buffered` items ahead of the parent,
    so memory stays bounded.
    Every video ends with exactly one "end" or "error". Workers that cannot start at all (a parent whose
    main module a spawned process cannot import, such as a script read from standard input) would be
    replaced for ever: after `START_FAILURES` of them die before any worker has said a word, the videos
    are decoded in this process instead (`_produce_thread`)."""
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
    heard = False          # some worker has sent something: workers can start here
    silent_deaths = 0
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
        nonlocal silent_deaths
        w = live.pop(wid)
        w.process.join(timeout=2)
        silent_deaths += not heard
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
            if silent_deaths >= START_FAILURES:
                break
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
                heard = True
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
    if len(finished) < len(videos):   # no worker could start: nothing was decoded or reported yet
        import warnings

        warnings.warn(f"{START_FAILURES} decode worker processes died on start; decoding in this process instead",
                      RuntimeWarning, stacklevel=2)
        if ready is not None:
            ready.clear()   # the workers' poll would never see the thread's items
        yield from _produce_thread(videos, options, queue_size, ready, curate)


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

