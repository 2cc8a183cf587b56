"""The pipelined describe: decode worker processes vs the in-process thread, batching, a dying worker,
thumbnails and the report, and the CLI options that drive them."""
from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tarsier
from tarsier.cli.app import app
from tarsier.engine.decode_pool import produce_clips
from tarsier.engine.describe import describe
from tarsier.engine.discover import discover
from tarsier.engine.video import ClipOptions


@pytest.fixture(scope="module")
def tiny():
    return tarsier.load("tiny-random", device="cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory, videos) -> Path:
    src = tmp_path_factory.mktemp("pipeline_in")
    (src / "sub").mkdir()
    shutil.copy(videos["cuts"].path, src / "cuts.mp4")
    shutil.copy(videos["long"].path, src / "sub" / "long.mp4")
    shutil.copy(videos["short_scene"].path, src / "short.mp4")
    shutil.copy(videos["late"].path, src / "late.mp4")
    shutil.copy(videos["random"], src / "broken.mp4")
    return src


def clip_records(out: Path) -> list[dict]:
    recs = [json.loads(line) for line in (out / "descriptions.jsonl").read_text().splitlines()]
    for r in recs:
        r.pop("timings", None)
    return recs


def by_video(recs: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for r in recs:
        groups.setdefault(r["video"], []).append(r)
    return groups


def test_workers_give_the_same_records_as_the_thread(tmp_path, folder, tiny):
    runs = {}
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        s = describe([str(folder)], model=tiny, output_dir=out, max_new_tokens=4, max_clip=4.0,
                     batch_size=3, workers=workers)
        assert s.videos_ok == 4 and s.videos_failed == 1 and s.exit_code == 1
        runs[workers] = by_video(clip_records(out))
    assert runs[0] == runs[2]   # same records, each video's in clip order; only the order of videos may differ
    for recs in runs[2].values():
        if "error" not in recs[0]:
            assert [r["clip"] for r in recs] == list(range(recs[0]["n_clips"]))
    assert runs[2]["broken.mp4"][0]["stage"] in ("open", "probe", "decode")


def test_producer_streams_every_video_once_with_bounded_queue(folder):
    videos, _ = discover([str(folder)])
    options = ClipOptions(frames=4, frame_size=32, max_clip=4.0)
    for workers in (0, 2):
        ends, clips = {}, {}
        for kind, rel, payload in produce_clips(videos, options, workers=workers, queue_size=2):
            if kind == "clip":
                assert payload[0].frames.shape == (4, 32, 32, 3)
                assert payload[0].index == clips.get(rel, 0)   # in order within a video
                clips[rel] = clips.get(rel, 0) + 1
            elif kind in ("end", "error"):
                assert rel not in ends
                ends[rel] = payload
        assert sorted(ends) == sorted(v.rel for v in videos)
        assert all(ends[rel][0] == n for rel, n in clips.items() if not isinstance(ends[rel], Exception))


def test_stopping_early_leaves_no_worker_behind(folder):
    import multiprocessing as mp

    videos, _ = discover([str(folder)])
    gen = produce_clips(videos, ClipOptions(frames=2, frame_size=16), workers=2, queue_size=1)
    assert next(k for k, _, _ in gen if k == "clip") == "clip"
    gen.close()
    assert not [p for p in mp.active_children() if p.name.startswith("tarsier-decode")]


def test_workers_that_cannot_start_fall_back_to_decoding_here(folder, monkeypatch):
    """As when the parent's main module is a script read from standard input: every spawned worker dies
    before saying a word. The videos are decoded in this process instead of replacing workers for ever."""
    import tarsier.engine.decode_pool as pool

    monkeypatch.setattr(pool, "_decode_worker", os._exit)   # the child calls os._exit with 9 arguments: it dies
    videos, _ = discover([str(folder)])
    options = ClipOptions(frames=2, frame_size=16, max_clip=4.0)
    expected = {rel: payload for kind, rel, payload in produce_clips(videos, options, workers=0) if kind == "end"}
    ready: list = []
    with pytest.warns(RuntimeWarning, match="decoding in this process instead"):
        ends = {}
        for kind, rel, _ in produce_clips(videos, options, workers=2, queue_size=2, ready=ready):
            if kind in ("end", "error"):
                assert rel not in ends
                ends[rel] = kind
    assert sorted(ends) == sorted(v.rel for v in videos)
    assert {rel for rel, kind in ends.items() if kind == "end"} == set(expected)
    assert len(ready) == 1   # the in-process decoder's readiness, not the dead workers'


def test_a_dying_worker_fails_only_its_video(tmp_path, videos, tiny):
    import multiprocessing as mp

    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        shutil.copy(videos["long"].path, src / f"v{i}.mp4")
    killed = []

    def progress(event, **info):   # kill the worker once, after the first batch
        if event == "clips" and not killed:
            for p in mp.active_children():
                if p.name.startswith("tarsier-decode"):
                    os.kill(p.pid, signal.SIGKILL)
                    killed.append(p.pid)

    s = describe([str(src)], model=tiny, output_dir=tmp_path / "out", max_new_tokens=2, max_clip=1.0,
                 batch_size=1, workers=1, queue_size=1, progress=progress)
    assert killed
    assert s.videos_ok + s.videos_failed == 4 and 1 <= s.videos_failed <= 2 and s.videos_ok >= 2
    errors = [r for r in clip_records(tmp_path / "out") if "error" in r]
    assert errors and all("worker died" in r["error"] for r in errors)
    # the rerun finishes the failed videos
    again = describe([str(src)], model=tiny, output_dir=tmp_path / "out", max_new_tokens=2, max_clip=1.0, workers=1)
    assert again.videos_skipped == s.videos_ok and again.videos_ok == s.videos_failed


def test_batches_stay_within_batch_size_and_cover_every_clip(tmp_path, videos, tiny):
    calls = []
    real = tiny.generate

    def spy(frames, *a, **k):
        calls.append(len(frames))
        return real(frames, *a, **k)

    tiny.generate = spy
    try:
        s = describe([str(videos["cuts"].path)], model=tiny, output_dir=tmp_path, max_new_tokens=2,
                     batch_size=8, workers=1)
    finally:
        del tiny.generate
    assert s.videos_ok == 1 and sum(calls) == s.clips_done and max(calls) <= 8


def test_thumbnails_and_report(tmp_path, videos):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["describe", str(videos["cuts"].path), "-o", str(out), "-m", "tiny-random",
                                      "--max-new-tokens", "2", "-q", "--workers", "1", "--report"])
    assert result.exit_code == 0, result.output
    recs = clip_records(out)
    thumbs = sorted((out / "thumbs").rglob("*.jpg"))
    assert len(thumbs) == sum(len(r["frame_times"]) for r in recs)
    assert (out / "report.html").is_file() and "report.html" in result.output


def test_engine_option_usage_errors(tmp_path, videos, monkeypatch):
    runner = CliRunner()
    path = str(videos["cuts"].path)
    assert runner.invoke(app, ["describe", path, "--engine", "spark", "-o", str(tmp_path)]).exit_code == 2
    assert runner.invoke(app, ["describe", path, "--ray-address", "auto", "-o", str(tmp_path)]).exit_code == 2
    assert runner.invoke(app, ["describe", path, "--report", "--stdout"]).exit_code == 2
    # without Ray installed: exit 2 and one line naming the extra
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    result = runner.invoke(app, ["describe", path, "--engine", "ray", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "tarsier-cli[ray]" in result.output


def test_thread_producer_is_still_there(tmp_path, videos, tiny):
    before = threading.active_count()
    s = describe([str(videos["cuts"].path)], model=tiny, output_dir=tmp_path, max_new_tokens=2, workers=0)
    assert s.videos_ok == 1 and threading.active_count() <= before + 1
