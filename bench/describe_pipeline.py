"""Pipelined describe benchmark: how close `describe` gets to its slowest stage, batching, transfer, memory.

    python bench/describe_pipeline.py [--videos 16] [--seconds 4] [--repeat 2] [--tokens auto]
                                      [--memory 50,500] [--skip overlap,batch,transfer,memory]

All ratios are measured side by side in one run (stages interleaved in each repeat round, best of
--repeat), because the machine may be shared; absolute times are printed but mean little.

1. overlap: on a folder of generated videos (h264, 160x96, 25 fps, a cut every second),
     decode  = the producer alone (decode + scenes + sample in the worker processes, model a no-op)
     model   = model.generate alone on the same clips (decoded beforehand), same batch size
     describe= the whole `describe` (decode workers || model in this process, records, SRT)
   reports describe / max(decode, model) (target <= 1.15). The model is tiny-random with
   max_new_tokens tuned (--tokens auto) so that model time ~ decode time, torch on one thread (the
   other core(s) decode).
2. batch: clips/s and generated tokens/s of model.generate at batch 1, 8 and 32 (nano if it is
   trained on this machine, else tiny-random with a fixed max_new_tokens; the table says which).
3. transfer: moving clips of 8x224x224x3 uint8 from a worker process to this one, pickled numpy
   through a multiprocessing.Queue vs a shared-memory ring (index through the queue, one copy out).
4. memory: peak RSS (VmHWM) of the main process and of the largest worker for folders of 50 and 500
   tiny videos (0.5 s, 64x64), describe with tiny-random and 1 token.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tarsier

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def make_folder(folder: Path, n: int, seconds: float, size=(160, 96), fps: int = 25) -> Path:
    import videogen

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = folder / f"v{i:04d}.mp4"
        if not path.exists():
            segs = [(1.0, (i + k) % 8) for k in range(max(1, int(seconds)))] if seconds >= 1 else [(seconds, i % 8)]
            videogen.make_video(path, segs, fps=fps, size=size, seed=i)
    return folder


def table(title: str, header: list[str], rows: list[list]) -> None:
    print(f"\n## {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")


# -- 1. overlap ---------------------------------------------------------------------------------
def bench_overlap(args, tmp: Path) -> None:
    import numpy as np
    import torch

    import tarsier
    from tarsier.engine.decode_pool import default_workers, produce_clips
    from tarsier.engine.describe import describe
    from tarsier.engine.discover import discover
    from tarsier.engine.video import ClipOptions

    torch.set_num_threads(1)
    folder = make_folder(tmp / "overlap", args.videos, args.seconds)
    model = tarsier.load("tiny-random", device="cpu")
    workers = args.workers if args.workers is not None else default_workers()
    videos, _ = discover([str(folder)])
    options = ClipOptions(frames=model.config.frames, frame_size=model.frame_size, max_clip=30.0)
    bs = args.batch

    def run_decode(w=workers):
        clips = []
        t = time.perf_counter()
        for kind, _, payload in produce_clips(videos, options, workers=w, queue_size=2 * bs + 2 * w):
            if kind == "clip":
                clips.append(payload[0].frames)
        return time.perf_counter() - t, clips

    def run_model(clips, tokens):
        t = time.perf_counter()
        for i in range(0, len(clips), bs):
            model.generate(torch.from_numpy(np.stack(clips[i:i + bs])), ["Describe the video in detail."] * len(clips[i:i + bs]),
                           max_new_tokens=tokens)
        return time.perf_counter() - t

    class NoModel:   # the same model's geometry; generate() a no-op, or a sleep (an accelerator: no host CPU)
        def __init__(self, m, seconds_per_call=0.0):
            self.config, self.frame_size, self.model_id = m.config, m.frame_size, "tiny-random"
            self.seconds = seconds_per_call

        def generate(self, frames, instructions, max_new_tokens=None):
            from tarsier.engine.model import Generation

            if self.seconds:
                time.sleep(self.seconds)
            return [Generation("", 0) for _ in instructions]

    def run_describe(tokens, w, n, m=model):
        t = time.perf_counter()
        s = describe([str(folder)], model=m, output_dir=tmp / f"out{n}", max_new_tokens=tokens, batch_size=bs,
                     workers=w, formats=("jsonl", "srt"), overwrite=True)
        assert s.exit_code == 0
        return time.perf_counter() - t, s

    dec_t, clips = run_decode()
    tokens = args.tokens
    if tokens == "auto":  # match the model's time to the decoder's
        probe = run_model(clips, 8)
        tokens = max(1, round(8 * dec_t / probe))
    tokens = int(tokens)
    best = {"decode": 1e9, "decode_thread": 1e9, "model": 1e9, "describe": 1e9, "describe_thread": 1e9,
            "noop": 1e9, "sleep": 1e9}
    calls = -(-len(clips) // bs)
    for n in range(args.repeat):
        best["decode"] = min(best["decode"], run_decode()[0])
        best["decode_thread"] = min(best["decode_thread"], run_decode(0)[0])
        best["model"] = min(best["model"], run_model(clips, tokens))
        t, s = run_describe(tokens, workers, n)
        best["describe"] = min(best["describe"], t)
        print(f"  (describe: {s.clips_done} clips in {s.batches} model calls)", file=sys.stderr)
        t, _ = run_describe(tokens, 0, n)
        best["describe_thread"] = min(best["describe_thread"], t)
        t, _ = run_describe(tokens, workers, n, NoModel(model))
        best["noop"] = min(best["noop"], t)
        t, _ = run_describe(tokens, workers, n, NoModel(model, best["decode"] / calls))
        best["sleep"] = min(best["sleep"], t)
    slow = max(best["decode"], best["model"])
    slow_t = max(best["decode_thread"], best["model"])
    table(f"describe vs its slowest stage ({len(videos)} videos x {args.seconds:g} s, {len(clips)} clips, "
          f"tiny-random, {tokens} new tokens, batch {bs}, torch 1 thread, {workers} decode worker(s), "
          f"{os.cpu_count()} cores, best of {args.repeat})",
          ["stage", "wall s", "ratio to max(decode, model)"],
          [["decode + scenes + sample alone", f"{best['decode']:.2f}", f"{best['decode'] / slow:.2f}"],
           ["model alone (same clips)", f"{best['model']:.2f}", f"{best['model'] / slow:.2f}"],
           [f"describe, --workers {workers} (processes)", f"{best['describe']:.2f}", f"**{best['describe'] / slow:.2f}**"],
           [f"describe, --workers {workers}, model a no-op", f"{best['noop']:.2f}", f"{best['noop'] / slow:.2f}"],
           [(f"describe, --workers {workers}, model = sleep of (decode alone / {calls}) per batch (an "
             "accelerator: no host CPU)"), f"{best['sleep']:.2f}", f"**{best['sleep'] / best['decode']:.2f}**"],
           ["decode alone, in-process thread", f"{best['decode_thread']:.2f}",
            f"{best['decode_thread'] / slow_t:.2f} (to max(thread decode, model))"],
           ["describe, --workers 0 (thread)", f"{best['describe_thread']:.2f}",
            f"{best['describe_thread'] / slow_t:.2f} (to max(thread decode, model))"],
           ["sum decode + model (no overlap)", f"{best['decode'] + best['model']:.2f}",
            f"{(best['decode'] + best['model']) / slow:.2f}"]])


# -- 2. batch -------------------------------------------------------------------------------------
def bench_batch(args) -> None:
    import torch

    torch.set_num_threads(args.torch_threads)
    try:
        model = tarsier.load("nano", device="cpu")
        name, tokens = "nano", None
    except Exception as exc:  # noqa: BLE001 - not trained here
        print(f"(nano not available: {str(exc).splitlines()[0][:120]}; using tiny-random)")
        model = tarsier.load("tiny-random", device="cpu")
        name, tokens = "tiny-random", args.batch_tokens
    n = model.config.frames
    s = model.frame_size
    gen = torch.Generator().manual_seed(0)
    clips = torch.randint(0, 256, (32, n, s, s, 3), dtype=torch.uint8, generator=gen)
    rows = []
    res = {}
    for bs in (1, 8, 32):
        dt = 1e9
        for _ in range(args.repeat):
            t = time.perf_counter()
            toks = 0
            for i in range(0, 32, bs):
                outs = model.generate(clips[i:i + bs], ["Describe the video in detail."] * bs, max_new_tokens=tokens)
                toks += sum(o.tokens for o in outs)
            dt = min(dt, time.perf_counter() - t)
        res[bs] = (32 / dt, toks / dt)
    for bs in (1, 8, 32):
        rows.append([bs, f"{res[bs][0]:.1f}", f"{res[bs][1]:.0f}", f"{res[bs][0] / res[1][0]:.2f}",
                     f"{res[bs][1] / res[1][1]:.2f}"])
    table(f"batched generation, {name} on CPU, torch {args.torch_threads} thread(s) "
          f"({'max_new_tokens ' + str(tokens) if tokens else 'its own stop'}, 32 clips of {n} frames, best of {args.repeat})",
          ["batch", "clips/s", "tokens/s", "clips/s vs batch 1", "tokens/s vs batch 1"], rows)


# -- 3. transfer --------------------------------------------------------------------------------
def _send_pickled(q, n, shape):
    import numpy as np

    a = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    for _ in range(n):
        q.put(a.copy())
    q.put(None)


def _send_shm(q, free, name, n, shape, slots):
    from multiprocessing import shared_memory

    import numpy as np

    shm = shared_memory.SharedMemory(name=name)
    ring = np.ndarray((slots, *shape), np.uint8, buffer=shm.buf)
    a = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    for _ in range(n):
        slot = free.get()
        ring[slot] = a
        q.put(slot)
    q.put(None)
    del ring
    shm.close()


def bench_transfer(args) -> None:
    import multiprocessing as mp
    from multiprocessing import shared_memory

    import numpy as np

    ctx = mp.get_context("spawn")
    shape, n, slots = (8, 224, 224, 3), args.transfer_clips, 8
    res = {}
    for _ in range(args.repeat):
        q = ctx.Queue(maxsize=slots)
        p = ctx.Process(target=_send_pickled, args=(q, n, shape))
        p.start()
        first = q.get()
        t = time.perf_counter()
        got = 1
        while q.get() is not None:
            got += 1
        res["pickle"] = min(res.get("pickle", 1e9), (time.perf_counter() - t) / (got - 1))
        p.join()
        assert first.shape == shape

        shm = shared_memory.SharedMemory(create=True, size=slots * int(np.prod(shape)))
        ring = np.ndarray((slots, *shape), np.uint8, buffer=shm.buf)
        q, free = ctx.Queue(), ctx.Queue()
        for i in range(slots):
            free.put(i)
        p = ctx.Process(target=_send_shm, args=(q, free, shm.name, n, shape, slots))
        p.start()
        slot = q.get()
        out = ring[slot].copy()
        free.put(slot)
        t = time.perf_counter()
        got = 1
        while (slot := q.get()) is not None:
            out = ring[slot].copy()   # the batch stack needs its own copy either way
            free.put(slot)
            got += 1
        res["shm"] = min(res.get("shm", 1e9), (time.perf_counter() - t) / (got - 1))
        p.join()
        del ring, out
        shm.close()
        shm.unlink()
    mb = np.prod(shape) / 1e6
    table(f"moving one clip ({mb:.1f} MB, 8x224x224x3 uint8) from a worker process, {n} clips, best of {args.repeat}",
          ["method", "ms per clip", "GB/s"],
          [["pickled numpy through multiprocessing.Queue (what describe does)", f"{res['pickle'] * 1e3:.2f}",
            f"{mb / 1e3 / res['pickle']:.2f}"],
           ["shared-memory ring + slot index through a Queue", f"{res['shm'] * 1e3:.2f}",
            f"{mb / 1e3 / res['shm']:.2f}"]])


# -- 4. memory ----------------------------------------------------------------------------------
def _hwm_kb(pid: int | str = "self") -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory_child(folder: str, workers: int) -> None:
    """Runs in a fresh process: describe the folder, print peak RSS of this process and of the workers."""
    import threading

    from tarsier.engine.describe import describe


    peaks: dict[int, int] = {}
    stop = threading.Event()

    def watch():  # VmHWM of each live worker (children are reaped before RUSAGE_CHILDREN sees them all)
        import multiprocessing as mp

        while not stop.is_set():
            for p in mp.active_children():
                peaks[p.pid] = max(peaks.get(p.pid, 0), _hwm_kb(p.pid))
            time.sleep(0.05)

    model = tarsier.load("tiny-random", device="cpu")
    before = _hwm_kb()
    w = threading.Thread(target=watch, daemon=True)
    w.start()
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        s = describe([folder], model=model, output_dir=out, max_new_tokens=1, batch_size=8, workers=workers)
    stop.set()
    w.join()
    # (not RUSAGE_CHILDREN: on Linux a spawned child's ru_maxrss counts the parent's pages at fork time)
    print(json.dumps({"videos": s.videos, "ok": s.videos_ok, "clips": s.clips_done, "main_kb": _hwm_kb(),
                      "after_load_kb": before, "worker_kb": max(peaks.values(), default=0),
                      "seconds": time.perf_counter() - t}))


def bench_memory(args, tmp: Path) -> None:
    sizes = [int(x) for x in args.memory.split(",")]
    folder = make_folder(tmp / "memory", max(sizes), 0.5, size=(64, 64), fps=10)
    rows = []
    for n in sizes:
        sub = tmp / f"mem{n}"
        sub.mkdir(exist_ok=True)
        for i in range(n):
            link = sub / f"v{i:04d}.mp4"
            if not link.exists():
                link.symlink_to(folder / f"v{i:04d}.mp4")
        for workers in (1, 0):
            cmd = [sys.executable, __file__, "--memory-child", str(sub), "--workers", str(workers)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO).stdout
            r = json.loads(out.strip().splitlines()[-1])
            rows.append([n, workers, r["clips"], f"{r['after_load_kb'] / 1024:.0f}", f"{r['main_kb'] / 1024:.0f}",
                         f"{r['worker_kb'] / 1024:.0f}" if workers else "-", f"{r['seconds']:.1f}"])
    table("peak memory vs folder size (tiny videos 0.5 s 64x64, tiny-random, 1 token, batch 8)",
          ["videos", "workers", "clips", "main RSS after model load, MB", "main peak RSS, MB",
           "largest worker peak RSS, MB", "wall s"], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", default="auto")
    ap.add_argument("--batch-tokens", type=int, default=32)
    ap.add_argument("--torch-threads", type=int, default=1, help="torch threads for the batch bench")
    ap.add_argument("--transfer-clips", type=int, default=200)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--memory", default="50,500")
    ap.add_argument("--skip", default="")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.workers if args.workers is not None else 1)
        return
    skip = set(args.skip.split(","))
    print(f"# bench/describe_pipeline.py  ({os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M')})")
    print("GPU rows: not measured (no GPU in this environment)")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if "overlap" not in skip:
            bench_overlap(args, tmp)
        if "batch" not in skip:
            bench_batch(args)
        if "transfer" not in skip:
            bench_transfer(args)
        if "memory" not in skip:
            bench_memory(args, tmp)


if __name__ == "__main__":
    main()
