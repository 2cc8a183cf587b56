"""`tarsier describe` end to end on the tiny random model: records, subtitles, bad inputs, resume."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tarsier
from tarsier.cli.app import app
from tarsier.engine.describe import describe

REPO = Path(__file__).resolve().parents[1]
FAST = ["-m", "tiny-random", "--max-new-tokens", "4", "-q"]


@pytest.fixture(scope="module")
def tiny():
    return tarsier.load("tiny-random", device="cpu")


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "descriptions.jsonl").read_text().splitlines()]


def test_folder_to_jsonl_srt_vtt(tmp_path, videos):
    src = tmp_path / "in"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    shutil.copy(videos["cuts"].path, src / "a" / "x.mp4")
    shutil.copy(videos["late"].path, src / "b" / "x.mp4")
    shutil.copy(videos["vfr"].path, src / "b" / "x.mkv")  # same stem in one folder
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["describe", str(src), "-o", str(out), "-f", "all", *FAST])
    assert result.exit_code == 0, result.output
    recs = records(out)
    by_video = {}
    for r in recs:
        by_video.setdefault(r["video"], []).append(r)
    assert sorted(by_video) == ["a/x.mp4", "b/x.mkv", "b/x.mp4"]
    cuts = by_video["a/x.mp4"]
    assert [r["clip"] for r in cuts] == list(range(len(cuts)))
    starts = [r["start"] for r in cuts]
    for t in videos["cuts"].cuts:  # every true cut starts a clip (within two frames)
        assert min(abs(s - t) for s in starts) <= 0.08
    first = cuts[0]
    for key in ("video", "clip", "n_clips", "start", "end", "frame_times", "grain", "prompt", "model",
                "description", "tokens", "timings"):
        assert key in first
    assert first["model"] == "tiny-random" and first["grain"] == "fine"
    assert first["prompt"] == "Describe the video in detail."
    assert len(first["frame_times"]) == 8 and first["n_clips"] == len(cuts)
    assert all(r["start"] <= t < r["end"] for r in cuts for t in r["frame_times"])
    # subtitles mirror the tree; a/x and b/x do not collide, b/x.mp4 and b/x.mkv keep extensions
    assert (out / "a" / "x.srt").is_file() and (out / "a" / "x.vtt").is_file()
    assert (out / "b" / "x.mp4.srt").is_file() and (out / "b" / "x.mkv.srt").is_file()
    srt = (out / "a" / "x.srt").read_text()
    assert srt.count(" --> ") == len(cuts) and srt.startswith("1\n00:00:00,000 --> ")


def test_bad_inputs_fail_alone(tmp_path, videos):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(videos["cuts"].path, src / "good.mp4")
    for name in ("empty", "random", "truncated"):
        shutil.copy(videos[name], src / videos[name].name)
    shutil.copy(videos["audio_only"], src / "audio_only.mp4")
    shutil.copy(videos["single"].path, src / "single.mp4")
    text = videos["text"]
    gone = tmp_path / "vanished_dir"
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["describe", str(src), str(text), str(gone), "-o", str(out), *FAST])
    assert result.exit_code == 1, result.output
    recs = records(out)
    errors = {r["video"]: r for r in recs if "error" in r}
    ok = {r["video"] for r in recs if "error" not in r}
    # two roots (the folder "in" and the text file's folder): keys start at their own root's name;
    # a one-frame video is a (very short) video
    assert {"in/good.mp4", "in/single.mp4"} <= ok
    for bad in ("empty.mp4", "random.mp4", "truncated.mp4", "audio_only.mp4", "notes.txt"):
        match = [k for k in errors if k.endswith(bad)]
        assert match, (bad, sorted(errors))
        rec = errors[match[0]]
        assert rec["stage"] and rec["error"] and "\n" not in rec["error"]
    assert "no video stream" in errors[[k for k in errors if k.endswith("audio_only.mp4")][0]]["error"]
    # the vanished input is reported (one line) but has no video to put in a record
    assert "vanished_dir" in result.output


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file(tmp_path, videos, tiny):
    src = tmp_path / "locked.mp4"
    shutil.copy(videos["cuts"].path, src)
    src.chmod(0)
    summary = describe([str(src)], model=tiny, output_dir=tmp_path / "out", max_new_tokens=2)
    assert summary.videos_failed == 1 and summary.exit_code == 1


def test_resume_skips_done_and_overwrite_redoes(tmp_path, videos, tiny):
    src = [str(videos["cuts"].path), str(videos["long"].path)]
    out = tmp_path / "out"
    first = describe(src, model=tiny, output_dir=out, max_new_tokens=3, max_clip=4.0)
    assert first.videos_ok == 2 and first.clips_done > 2
    second = describe(src, model=tiny, output_dir=out, max_new_tokens=3, max_clip=4.0)
    assert second.clips_done == 0 and second.videos_skipped == 2
    # other settings are other work
    third = describe(src, model=tiny, output_dir=out, max_new_tokens=3, max_clip=4.0, grain="brief")
    assert third.clips_done == first.clips_done
    fourth = describe(src, model=tiny, output_dir=out, max_new_tokens=3, max_clip=4.0, overwrite=True)
    assert fourth.clips_done == first.clips_done


def test_resume_after_sigkill_gives_every_clip_once(tmp_path, videos):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(6):
        shutil.copy(videos["cuts"].path, src / f"v{i}.mp4")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tarsier.cli.app", "describe", str(src), "-o", str(out), "-m", "tiny-random",
           "--max-new-tokens", "48", "-b", "1", "-q", "--device", "cpu"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    jsonl = out / "descriptions.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if jsonl.exists() and jsonl.read_text().count("\n") >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed: make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = jsonl.read_text()
    assert 3 <= partial.count("\n") < 6 * 4
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    recs = [json.loads(line) for line in jsonl.read_text().splitlines()]
    counts = Counter((r["video"], r["clip"]) for r in recs)
    assert set(counts.values()) == {1}
    assert sorted({v for v, _ in counts}) == [f"v{i}.mp4" for i in range(6)]
    assert all(sum(1 for v, _ in counts if v == f"v{i}.mp4") == recs[0]["n_clips"] for i in range(6))


def test_stdin_list_and_stdout_stream(tmp_path, videos):
    listing = f"{videos['cuts'].path}\n\n{videos['late'].path}\n"
    result = CliRunner().invoke(app, ["describe", "-", "--stdout", *FAST], input=listing)
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    assert {r["video"] for r in lines} == {videos["cuts"].path.name, videos["late"].path.name}
    assert not (tmp_path / "tarsier-out").exists()


def test_usage_errors_exit_2(tmp_path, videos):
    runner = CliRunner()
    assert runner.invoke(app, ["describe", str(videos["cuts"].path), "--grain", "medium"]).exit_code == 2
    assert runner.invoke(app, ["describe", str(videos["cuts"].path), "-f", "docx"]).exit_code == 2
    assert runner.invoke(app, ["describe", str(videos["cuts"].path), "--stdout", "-f", "srt"]).exit_code == 2
    result = runner.invoke(app, ["describe", str(videos["cuts"].path), "-m", "no-such-model", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "no-such-model" in result.output


def test_shared_sample_videos_all_described(tmp_path, shared_videos, tiny):
    summary = describe([str(shared_videos)], model=tiny, output_dir=tmp_path, max_new_tokens=2, formats=("jsonl", "srt"))
    assert summary.exit_code == 0 and summary.videos_ok == len(list(shared_videos.glob("*.mp4")))
    assert (tmp_path / "goldeneye-vfr-drop3.srt").is_file()


def test_help_does_not_import_torch():
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom tarsier.cli.app import app\n"
            "r = CliRunner().invoke(app, ['--help'])\nassert r.exit_code == 0, r.output\n"
            "for cmd in ['describe', 'scenes', 'models', 'train', 'eval', 'synth']:\n"
            "    assert CliRunner().invoke(app, [cmd, '--help']).exit_code == 0, cmd\n"
            "heavy = [m for m in ('torch', 'transformers', 'open_clip', 'av', 'cv2') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)
