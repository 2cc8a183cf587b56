"""`tarsier synth`: render a whole world (videos, truth, manifests) with a pool of worker processes.

Every video is planned and told from its own random streams (`{seed}:{index}`, `{seed}:{index}:text`)
and encoded with one encoder thread, so the same seed gives the same files, byte for byte, whatever
the number of worker processes.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tarsier.world.manifests import write_manifests
from tarsier.world.plan import CUTS_PROB, PAN_PROB
from tarsier.world.render import render_video
from tarsier.world.truth import make_truth


@dataclass
class SynthSummary:
    out: Path
    videos: int
    seconds: float
    clips_per_min: float
    files: dict[str, int]


@dataclass(frozen=True)
class VideoJob:
    """One video for a worker: which one, its geometry and world settings, and where it goes."""
    seed: int
    index: int
    size: int
    fps: int
    cuts_prob: float
    pan_prob: float
    out: str
    render: bool


def _run_job(job: VideoJob) -> dict[str, Any]:
    truth = make_truth(job.seed, job.index, job.cuts_prob, job.pan_prob, fps=job.fps, size=job.size)
    if job.render:
        render_video(truth, Path(job.out) / truth["video_file"])
    return truth


def generate(out: str | Path, videos: int, seed: int = 0, size: int = 128, fps: int = 12,
             cuts_prob: float = CUTS_PROB, pan_prob: float = PAN_PROB, workers: int | None = None,
             render: bool = True, progress: Callable[[int], None] | None = None) -> SynthSummary:
    """Render `videos` clips and write all ground truth and manifests into `out`."""
    import time

    if videos < 1:
        raise ValueError("videos must be >= 1")
    if size < 32 or size % 2:
        raise ValueError("size must be an even number >= 32")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    jobs = [VideoJob(seed, i, size, fps, cuts_prob, pan_prob, str(out), render) for i in range(videos)]
    workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
    truths: list[dict[str, Any]] = []
    if workers <= 1 or videos < 4:
        for j in jobs:
            truths.append(_run_job(j))
            if progress:
                progress(1)
    else:
        import multiprocessing as mp

        ctx = mp.get_context("fork") if hasattr(os, "fork") else mp.get_context()
        with ctx.Pool(workers) as pool:
            for t in pool.imap(_run_job, jobs, chunksize=4):
                truths.append(t)
                if progress:
                    progress(1)
    counts = write_manifests(out, truths, seed)
    dt = time.perf_counter() - t0
    return SynthSummary(out=out, videos=videos, seconds=dt, clips_per_min=videos / dt * 60 if dt else 0.0,
                        files=counts)
