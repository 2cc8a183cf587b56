"""`describe --engine ray` on a local Ray instance (127.0.0.1 only): the same records as the local
engine, shards, subtitles, resume by shard."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tarsier.engine.describe import describe
from tarsier.engine.ray_engine import describe_ray  # imports Ray only when it runs

ray = pytest.importorskip("ray", reason="the ray extra is not installed")

OPTS = {"model": "tiny-random", "device": "cpu", "max_new_tokens": 5, "max_clip": 4.0, "batch_size": 3,
        "formats": ("jsonl", "srt", "vtt")}


@pytest.fixture(scope="module")
def local_ray():
    from tarsier.engine.ray_local import init_ray

    init_ray(ray, None, quiet=True, num_cpus=2)   # what describe_ray starts: loopback only, no dashboard
    yield
    ray.shutdown()


def test_local_ray_listens_on_loopback_only(local_ray):
    node = ray._private.worker.global_worker.node
    assert node.node_ip_address == "127.0.0.1"
    assert node.gcs_address.startswith("127.0.0.1:")
    assert all(n["NodeManagerAddress"] == "127.0.0.1" for n in ray.nodes())


@pytest.fixture(scope="module")
def folder(tmp_path_factory, videos) -> Path:
    src = tmp_path_factory.mktemp("ray_in")
    (src / "sub").mkdir()
    shutil.copy(videos["cuts"].path, src / "cuts.mp4")
    shutil.copy(videos["long"].path, src / "sub" / "long.mp4")
    shutil.copy(videos["late"].path, src / "late.mp4")
    shutil.copy(videos["random"], src / "broken.mp4")
    return src


def normalised(out: Path) -> list[dict]:
    recs = [json.loads(line) for line in (out / "descriptions.jsonl").read_text().splitlines()]
    for r in recs:
        r.pop("timings", None)
    return sorted(recs, key=lambda r: (r["video"], r.get("clip", -1)))


def test_ray_engine_matches_local_and_resumes_by_shard(tmp_path, folder, local_ray):
    local_out, ray_out = tmp_path / "local", tmp_path / "ray"
    local = describe([str(folder)], output_dir=local_out, workers=1, **OPTS)
    remote = describe_ray([str(folder)], output_dir=ray_out, **OPTS)
    assert (remote.videos_ok, remote.videos_failed, remote.clips_done) == \
        (local.videos_ok, local.videos_failed, local.clips_done) == (3, 1, remote.clips_done)
    assert remote.exit_code == 1
    # identical records (same text, times, keys), identical subtitles
    assert normalised(ray_out) == normalised(local_out)
    for sub in ("cuts.srt", "late.vtt", "sub/long.srt"):
        assert (ray_out / sub).read_text() == (local_out / sub).read_text()
    shards = sorted((ray_out / "shards").glob("part-*.jsonl"))
    assert [p.name for p in shards] == ["part-0000.jsonl"]
    # per video, the shard holds its clips in order
    recs = [json.loads(x) for x in shards[0].read_text().splitlines()]
    long = [r["clip"] for r in recs if r["video"] == "sub/long.mp4"]
    assert long == list(range(len(long))) and len(long) >= 3

    # a rerun skips every complete video and retries only the broken one
    again = describe_ray([str(folder)], output_dir=ray_out, **OPTS)
    assert again.videos_skipped == 3 and again.clips_done == 0 and again.videos_failed == 1

    # lose one video from every log: only that video is redone, into a new shard
    for path in [ray_out / "descriptions.jsonl", *sorted((ray_out / "shards").glob("*.jsonl"))]:
        lines = [x for x in path.read_text().splitlines() if json.loads(x)["video"] != "cuts.mp4"]
        path.write_text("".join(x + "\n" for x in lines))
    third = describe_ray([str(folder)], output_dir=ray_out, **OPTS)
    assert third.videos_skipped == 2 and third.videos_ok == 1
    def clips(out):
        return [r for r in normalised(out) if "error" not in r]

    assert clips(ray_out) == clips(local_out)   # every clip exactly once, as the local engine wrote it
    assert len(sorted((ray_out / "shards").glob("part-*.jsonl"))) == 3


def test_local_engine_resumes_a_ray_run(tmp_path, folder, local_ray):
    out = tmp_path / "out"
    first = describe_ray([str(folder)], output_dir=out, **OPTS)
    second = describe([str(folder)], output_dir=out, workers=0, **OPTS)
    assert second.videos_skipped == first.videos_ok and second.clips_done == 0


def test_quiet_ray_run_prints_nothing(tmp_path, videos):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "tarsier.cli.app", "describe", str(videos["late"].path), "-o", str(tmp_path / "out"),
           "--engine", "ray", "-m", "tiny-random", "--device", "cpu", "--max-new-tokens", "3", "-q"]
    done = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and done.stdout == ""
    assert (tmp_path / "out" / "descriptions.jsonl").read_text().count("\n") >= 1
