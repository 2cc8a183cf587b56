"""Curating a training set with `describe`: clip files, captions beside them, trainer manifests, filters.

Every manifest is read back with its consumer's reader (csv, json, pyarrow, tarfile as webdataset
reads it) and compared with the JSONL; clip files are decoded with PyAV and compared with the
source's own frame times and keyframes, found independently of engine.clips.
"""
from __future__ import annotations

import csv
import json
import tarfile
from collections import defaultdict
from pathlib import Path

import av
import pytest
import videogen
from typer.testing import CliRunner

import tarsier
from tarsier.cli.app import app
from tarsier.engine.curate import CurateOptions
from tarsier.engine.describe import describe

FAST = ["-m", "tiny-random", "--max-new-tokens", "4", "-q", "--device", "cpu"]
# Open-Sora's CSV header (tools/datasets in hpcaitech/Open-Sora): path,text,num_frames,fps,height,width
OPEN_SORA_COLUMNS = ["path", "text", "num_frames", "fps", "height", "width"]


@pytest.fixture(scope="module")
def tiny():
    return tarsier.load("tiny-random", device="cpu")


@pytest.fixture(scope="module")
def av_video(tmp_path_factory):
    """6 s, cuts at 2.0 and 3.5, a keyframe every 0.4 s (so 3.5 is not on one), with an AAC track."""
    d = tmp_path_factory.mktemp("curate")
    return videogen.make_video_with_audio(d / "scene.mp4", [(2.0, 0), (1.5, 1), (2.5, 2)], fps=25, gop=10)


def jsonl(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "descriptions.jsonl").read_text().splitlines()]


def source_keyframes(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return sorted(float(p.pts * s.time_base) for p in c.demux(s) if p.is_keyframe and p.pts is not None)


def decoded(path: Path) -> tuple[list[float], bool]:
    """Frame times of the clip file's video stream (PyAV decode) and whether it has audio."""
    with av.open(str(path)) as c:
        has_audio = bool(c.streams.audio)
        times = [float(f.pts * f.time_base) for f in c.decode(video=0)]
    return times, has_audio


def test_clip_files_copy_snap_to_keyframes(tmp_path, av_video, tiny):
    out = tmp_path / "out"
    s = describe([str(av_video.path)], model=tiny, output_dir=out, max_new_tokens=2, workers=0,
                 curate=CurateOptions(clips_dir=str(out / "clips")))
    assert s.exit_code == 0
    recs = jsonl(out)
    keys = source_keyframes(av_video.path)
    frame = 1 / av_video.fps
    assert [r["clip_file"] for r in recs] == ["scene/0000.mp4", "scene/0001.mp4", "scene/0002.mp4"]
    for r in recs:
        assert min(abs(r["clip_start"] - k) for k in keys) < 1e-6      # starts on a keyframe of the source
        times, has_audio = decoded(out / "clips" / r["clip_file"])
        assert has_audio
        assert len(times) == r["clip_frames"]
        # the file holds exactly the source frames in [clip_start, clip_end)
        expect = [t for t in av_video.frame_times if r["clip_start"] - 1e-6 <= t < r["clip_end"] - 1e-6]
        assert len(times) == len(expect)
        assert times[-1] - times[0] + frame == pytest.approx(r["clip_end"] - r["clip_start"], abs=1e-3)
    assert recs[1]["start"] == pytest.approx(2.0, abs=0.08) and recs[1]["clip_end"] == pytest.approx(3.6)
    assert recs[-1]["clip_end"] == pytest.approx(av_video.duration)
    # copied clips tile the video: every snapped end is the next clip's start
    assert all(a["clip_end"] == b["clip_start"] for a, b in zip(recs, recs[1:]))


def test_clip_files_h264_frame_accurate_without_audio(tmp_path, av_video):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["describe", str(av_video.path), "-o", str(out), "--clips", str(out / "c"),
                                      "--clip-codec", "h264", "--crf", "30", "--no-audio", "--workers", "0", *FAST])
    assert result.exit_code == 0, result.output
    frame = 1 / av_video.fps
    for r in jsonl(out):
        times, has_audio = decoded(out / "c" / r["clip_file"])
        assert not has_audio
        expect = [t for t in av_video.frame_times if r["start"] - 1e-6 <= t < r["end"] - 1e-6]
        assert len(times) == len(expect) == r["clip_frames"]
        duration = times[-1] - times[0] + frame
        assert duration == pytest.approx(r["end"] - r["start"], abs=frame + 1e-6)   # within one frame


def test_clip_rerun_skips_existing_and_uncuttable_clip_is_its_own_error(tmp_path, videos, tiny):
    # cuts.mp4 has one keyframe (at 0): only the last clip can be copied; the others fail alone
    out = tmp_path / "out"
    curate = CurateOptions(clips_dir=str(out / "clips"))
    s = describe([str(videos["cuts"].path)], model=tiny, output_dir=out, max_new_tokens=2, workers=0, curate=curate)
    assert s.exit_code == 1 and len(s.errors) == 3
    recs = jsonl(out)
    bad = [r for r in recs if r.get("stage") == "clip"]
    assert [r["clip"] for r in bad] == [0, 1, 2] and all("keyframe" in r["error"] for r in bad)
    good = [r for r in recs if "error" not in r]
    assert len(good) == 1 and (out / "clips" / good[0]["clip_file"]).is_file()
    # the rerun with h264 cuts the three that failed and leaves the existing file alone
    kept = out / "clips" / good[0]["clip_file"]
    mtime = kept.stat().st_mtime_ns
    again = describe([str(videos["cuts"].path)], model=tiny, output_dir=out, max_new_tokens=2, workers=0,
                     curate=CurateOptions(clips_dir=str(out / "clips"), clip_codec="h264"))
    assert again.exit_code == 0 and again.clips_done == 3
    assert kept.stat().st_mtime_ns == mtime
    third = describe([str(videos["cuts"].path)], model=tiny, output_dir=out, max_new_tokens=2, workers=0,
                     curate=CurateOptions(clips_dir=str(out / "clips"), clip_codec="h264"))
    assert third.videos_skipped == 1 and third.clips_done == 0


def _webdataset_samples(folder: Path) -> dict[str, dict[str, bytes]]:
    """Group tar members the way webdataset does: key = the path up to the first '.' of the file name."""
    samples: dict[str, dict[str, bytes]] = defaultdict(dict)
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                base = m.name.rsplit("/", 1)[-1]
                key, ext = m.name[: len(m.name) - len(base)] + base.split(".", 1)[0], base.split(".", 1)[1]
                samples[key][ext] = tar.extractfile(m).read()
    return samples


def test_every_manifest_parses_with_its_readers(tmp_path, av_video, videos):
    import pyarrow.parquet as pq

    src = tmp_path / "in"
    (src / "a").mkdir(parents=True)
    (src / "a" / "scene.mp4").symlink_to(av_video.path)
    (src / "one.mp4").symlink_to(videos["late"].path)   # 2.5 s: one clip with --min-clip 3
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "describe", str(src), "-o", str(out), "--clips", str(out / "clips"), "--min-clip", "1.4",
        "-f", "jsonl,txt,csv,ltx,parquet,webdataset", "--shard-size", "2", "--workers", "0", *FAST])
    assert result.exit_code == 0, result.output
    recs = jsonl(out)
    captions = {(out / "clips" / r["clip_file"]).resolve(): r["description"] for r in recs}
    assert len(captions) == len(recs) >= 3

    # txt: the caption file beside each clip file, same base name (diffusion-pipe, musubi-tuner)
    for media, caption in captions.items():
        assert media.with_suffix(".txt").read_text().strip() == caption.strip()

    # Open-Sora CSV
    with open(out / "dataset.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:6] == OPEN_SORA_COLUMNS and {"start", "end", "grain", "model"} <= set(rows[0])
    assert {Path(r["path"]).resolve(): r["text"] for r in rows} == captions
    for r in rows:
        with av.open(r["path"]) as c:
            assert int(r["num_frames"]) == sum(1 for _ in c.decode(video=0))
            assert (int(r["width"]), int(r["height"])) == (c.streams.video[0].width, c.streams.video[0].height)

    # LTX-Video-Trainer: a JSON list of {caption, media_path}, paths relative to the manifest
    items = json.loads((out / "dataset.json").read_text())
    assert {(out / i["media_path"]).resolve(): i["caption"] for i in items} == captions
    assert all(not Path(i["media_path"]).is_absolute() for i in items)

    # parquet: every record field, one row per clip
    table = pq.read_table(out / "dataset.parquet").to_pylist()
    assert len(table) == len(recs)
    for row, rec in zip(sorted(table, key=lambda r: (r["video"], r["clip"])),
                        sorted(recs, key=lambda r: (r["video"], r["clip"]))):
        assert {k: row[k] for k in rec} == rec

    # webdataset: shards of <key>.mp4 + .txt + .json, 2 clips per shard
    shards = sorted((out / "webdataset").glob("*.tar"))
    assert len(shards) == -(-len(recs) // 2)
    samples = _webdataset_samples(out / "webdataset")
    assert len(samples) == len(recs)
    for sample in samples.values():
        assert set(sample) == {"mp4", "txt", "json"}
        rec = json.loads(sample["json"])
        assert sample["txt"].decode().strip() == rec["description"].strip()
        assert sample["mp4"] == (out / "clips" / rec["clip_file"]).read_bytes()


def test_manifests_without_clips_list_whole_videos_only(tmp_path, videos, tiny):
    out, data = tmp_path / "out", tmp_path / "data"
    data.mkdir()
    for name in ("cuts", "late"):   # copies: the captions go beside the sources
        (data / f"{name}.mp4").write_bytes(videos[name].path.read_bytes())
    s = describe([str(data / "cuts.mp4"), str(data / "late.mp4")], model=tiny, output_dir=out,
                 max_new_tokens=2, workers=0, min_clip=3.0, formats=("jsonl", "txt", "ltx", "csv"))
    assert s.exit_code == 0
    recs = jsonl(out)
    one = [r for r in recs if r["n_clips"] == 1]
    assert [r["video"] for r in one] == ["late.mp4"]
    items = json.loads((out / "dataset.json").read_text())
    assert [(out / i["media_path"]).resolve() for i in items] == [(data / "late.mp4").resolve()]
    # diffusion-pipe's layout: the caption beside the video, same base name; none for a video of several clips
    assert (data / "late.txt").read_text() == one[0]["description"].strip() + "\n"
    assert not (data / "cuts.txt").exists() and not list(out.glob("*.txt"))
    assert s.manifests["ltx"] == (1, len(recs) - 1)
    with open(out / "dataset.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(recs)   # the CSV states start and end: a span of a video is a row


def test_webdataset_interrupted_shard_is_rewritten(tmp_path, av_video, tiny):
    out = tmp_path / "out"
    kw = dict(model=tiny, output_dir=out, max_new_tokens=2, workers=0, formats=("webdataset",),
              curate=CurateOptions(clips_dir=str(out / "clips")), shard_size=2)
    describe([str(av_video.path)], **kw)
    folder = out / "webdataset"
    whole = {p.name: p.read_bytes() for p in folder.glob("*.tar")}
    assert sorted(whole) == ["shard-000000.tar", "shard-000001.tar"]
    # what a kill while writing shard 1 leaves: its temporary file, half written; the shard not renamed
    (folder / "shard-000001.tar").unlink()
    (folder / ".shard-000001.tar.4242.tmp").write_bytes(whole["shard-000001.tar"][:700])
    again = describe([str(av_video.path)], **kw)
    assert again.clips_done == 0 and again.videos_skipped == 1
    assert {p.name: p.read_bytes() for p in folder.glob("*.tar")} == whole
    assert not list(folder.glob(".*.tmp"))
    assert len(_webdataset_samples(folder)) == 3


def test_filters_record_the_reason(tmp_path, videos, tiny):
    d = tmp_path / "v"
    d.mkdir()
    still = videogen.make_video(d / "still.mp4", [(2.0, 0)], fps=10, moving=False)
    moving = videogen.make_video(d / "moving.mp4", [(2.0, 1)], fps=10)
    narrow = videogen.make_video(d / "narrow.mp4", [(2.0, 2)], fps=10, size=(320, 64))
    out = tmp_path / "out"
    curate = CurateOptions(min_size=(100, 60), max_aspect=3.0, min_motion=0.001)
    inputs = [str(p) for p in (still.path, moving.path, narrow.path, videos["rotated"].path)]
    s = describe(inputs, model=tiny, output_dir=out, max_new_tokens=2, workers=0, curate=curate)
    assert s.exit_code == 0 and s.clips_done == 1
    by = {Path(r["video"]).name: r for r in jsonl(out)}
    assert "description" in by["moving.mp4"] and by["moving.mp4"]["motion"] > 0.001
    assert by["still.mp4"]["motion"] < 0.001    # a still picture: codec noise only
    assert by["still.mp4"]["skipped"].startswith("motion 0.000") and "is below --min-motion 0.001" in \
        by["still.mp4"]["skipped"]
    assert by["narrow.mp4"]["skipped"] == "aspect 5.00 is above --max-aspect 3"
    assert by["rotated.mp4"]["skipped"] == "size 64x96 is below --min-size 100x60"   # display size, rotated
    assert all("description" not in by[v] for v in ("still.mp4", "narrow.mp4", "rotated.mp4"))
    # the same filters: nothing to redo; other filters: the skipped clips are judged again
    assert describe(inputs, model=tiny, output_dir=out, max_new_tokens=2, workers=0,
                    curate=curate).videos_skipped == 4
    looser = describe(inputs, model=tiny, output_dir=out, max_new_tokens=2, workers=0)
    assert looser.videos_skipped == 1 and looser.clips_done == 3


def test_subtitles_leave_out_the_clips_a_filter_skipped(tmp_path, tiny):
    d = tmp_path / "v"
    d.mkdir()
    moving = videogen.make_video(d / "moving.mp4", [(2.0, 1)], fps=10)
    narrow = videogen.make_video(d / "narrow.mp4", [(2.0, 2)], fps=10, size=(320, 64))
    out = tmp_path / "out"
    s = describe([str(moving.path), str(narrow.path)], model=tiny, output_dir=out, max_new_tokens=2, workers=0,
                 formats=("jsonl", "srt", "vtt"), curate=CurateOptions(max_aspect=3.0))
    assert s.exit_code == 0 and s.clips_done == 1
    described = next(r for r in jsonl(out) if Path(r["video"]).name == "moving.mp4")
    srt = (out / "moving.srt").read_text(encoding="utf-8")
    assert srt.startswith("1\n00:00:00,000 --> ") and described["description"] in srt
    assert described["description"] in (out / "moving.vtt").read_text(encoding="utf-8")
    assert not (out / "narrow.srt").exists() and not (out / "narrow.vtt").exists()


def test_curation_usage_errors(tmp_path, videos):
    runner = CliRunner()
    v = str(videos["cuts"].path)
    for args in (["-f", "webdataset"], ["--min-size", "big"], ["--clip-codec", "vp9"], ["--max-aspect", "0.5"]):
        result = runner.invoke(app, ["describe", v, "-o", str(tmp_path), *args, *FAST])
        assert result.exit_code == 2, (args, result.output)
    assert runner.invoke(app, ["describe", v, "--stdout", "-f", "csv", *FAST]).exit_code == 2


def test_killed_webdataset_run_resumes_to_complete_shards(tmp_path, av_video):
    import os
    import signal
    import subprocess
    import sys
    import time

    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):   # copies: one file linked three times is one video
        (src / f"v{i}.mp4").write_bytes(av_video.path.read_bytes())
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tarsier.cli.app", "describe", str(src), "-o", str(out), "--clips", str(out / "clips"),
           "-f", "webdataset", "--shard-size", "2", "-b", "1", "-m", "tiny-random", "--device", "cpu",
           "--max-new-tokens", "48", "-q"]
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    jsonl = out / "descriptions.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if jsonl.exists() and jsonl.read_text().count("\n") >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "finished before it could be killed: make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    shards = sorted((out / "webdataset").glob("*.tar"))
    assert len(shards) == 5
    for shard in shards:   # every shard whole: two complete samples each, the last one one
        with tarfile.open(shard) as tar:
            assert len(tar.getmembers()) == (3 if shard == shards[-1] else 6)
    samples = _webdataset_samples(out / "webdataset")
    assert len(samples) == 9 and all(set(s) == {"mp4", "txt", "json"} for s in samples.values())
    assert not list((out / "webdataset").glob(".*.tmp")) and not list((out / "clips").rglob(".*.tmp"))


def test_a_killed_cut_leaves_nothing_the_next_run_keeps(tmp_path, av_video):
    from tarsier.engine.clips import ClipSpan, clip_file, cut_clips

    dest = {0: clip_file(tmp_path, "scene.mp4", 0, ".mp4")}
    dest[0].parent.mkdir(parents=True)
    dead = subprocess_pid_that_ended()
    leftover = dest[0].with_name(f".{dest[0].name}.{dead}.tmp")
    leftover.write_bytes(b"half a clip")
    result = cut_clips(av_video.path, [ClipSpan(0, 0.0, 2.0)], dest, video_end=av_video.duration)
    assert result[0].error is None and dest[0].is_file() and not leftover.exists()


def subprocess_pid_that_ended() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_copied_last_clip_ends_with_the_video(tmp_path, shared_videos):
    from tarsier.engine.clips import ClipSpan, cut_clips
    from tarsier.engine.video import ClipOptions, read_clips

    src = shared_videos / "goldeneye-vfr-drop3.mp4"   # its last packet says 2002/24000 s, the video 1001/24000
    info, clips = read_clips(src, ClipOptions(sample_frames=False))
    spans = [ClipSpan(c.index, c.start, c.end) for c in clips]
    dest = {sp.index: tmp_path / f"{sp.index}.mp4" for sp in spans}
    results = cut_clips(src, spans, dest, video_end=info.duration)
    assert results[len(spans) - 1].end == pytest.approx(info.duration) == pytest.approx(239239 / 24000)


def test_txt_beside_sources_never_replaces_a_caption_tarsier_did_not_write(tmp_path, videos, tiny):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    for name in ("late", "cuts"):
        (data / f"{name}.mp4").write_bytes(videos["late"].path.read_bytes())   # two one-clip videos
    (data / "cuts.txt").write_text("my own caption\n")
    args = ["describe", str(data), "-o", str(out), "-m", "tiny-random", "-f", "jsonl,txt", "--max-new-tokens", "2",
            "--workers", "0", "--min-clip", "3", "-q"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 1, first.output           # that video's caption did not reach its trainer
    assert "cuts.mp4: caption not written" in first.output and "was not written by tarsier" in first.output
    assert (data / "cuts.txt").read_text() == "my own caption\n"
    late = (data / "late.txt").read_text()
    assert late.strip() and late != "my own caption\n"
    # the caption it wrote is its own to rewrite: a changed record replaces it on the next run
    (data / "late.txt").write_text("stale\n")
    (data / "cuts.txt").unlink()                          # the user moved theirs away: now it is written
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert (data / "late.txt").read_text() == late and (data / "cuts.txt").read_text().strip()


def test_txt_beside_a_read_only_source_is_an_error_of_that_video(tmp_path, videos, tiny, monkeypatch):
    import errno

    import tarsier.engine.writers as writers

    data = tmp_path / "data"
    data.mkdir()
    (data / "late.mp4").write_bytes(videos["late"].path.read_bytes())
    real_write = writers.atomic_write

    def read_only_sources(path, data_, **kw):   # what a read-only folder answers (root ignores chmod)
        if Path(path).parent == data:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_write(path, data_, **kw)

    monkeypatch.setattr(writers, "atomic_write", read_only_sources)
    s = describe([str(data)], model=tiny, output_dir=tmp_path / "out", max_new_tokens=2, workers=0,
                 min_clip=3.0, formats=("jsonl", "txt"))
    assert s.exit_code == 1 and [rel for rel, _ in s.errors] == ["late.mp4"]
    assert s.errors[0][1] == f"caption not written: {data / 'late.txt'}: Permission denied"
    assert not list(data.glob("*.txt"))
