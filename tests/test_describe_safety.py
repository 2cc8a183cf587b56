"""`describe` as a well-behaved Unix tool: a reader that leaves early, two runs into one folder, a full disk."""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from typer.testing import CliRunner

from tarsier.cli.app import app
from tarsier.common import files as common_files
from tarsier.common.files import read_jsonl as read_records
from tarsier.engine import writers as engine_writers

REPO = Path(__file__).resolve().parents[1]
FAST = ["-m", "tiny-random", "--max-new-tokens", "4", "-q", "--device", "cpu"]


def test_reader_closing_the_pipe_early_is_not_a_failure(tmp_path, videos):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        shutil.copy(videos["cuts"].path, src / f"v{i}.mp4")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tarsier.cli.app", "describe", str(src), "--stdout", "-o", str(out), "-b", "1",
           "--workers", "0", *FAST]
    # what `tarsier describe ... --stdout | head -1` does: read one line, close the pipe
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = json.loads(proc.stdout.readline())
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert err == ""
    kept = list(read_records(out / "descriptions.jsonl"))
    assert first in kept and len(kept) < 16   # it stopped, and kept what it had finished


def test_second_writer_is_refused_and_the_lock_goes_with_a_kill(tmp_path, videos):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom tarsier.engine.lock import OutputLock\n"
         "lock = OutputLock(sys.argv[1]).acquire()\nprint('locked', flush=True)\ntime.sleep(120)\n", str(out)],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        busy = CliRunner().invoke(app, ["describe", str(videos["cuts"].path), "-o", str(out), *FAST])
        assert busy.exit_code == 2
        assert f"pid {holder.pid}" in busy.output and "in use by another describe run" in busy.output
        assert not (out / "descriptions.jsonl").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    done = CliRunner().invoke(app, ["describe", str(videos["cuts"].path), "-o", str(out), *FAST])
    assert done.exit_code == 0, done.output


class _FullDisk:
    """`open` of engine.writers (the JSONL log) and of tarsier.common.files (atomic writes), on a disk with `left` bytes free: the write that crosses it writes what
    fits and raises ENOSPC, as write(2) does."""

    def __init__(self, left: int):
        self.left = left

    def __call__(self, path, mode="r", *args, **kwargs):
        f = open(path, mode, *args, **kwargs)  # noqa: SIM115 - handed to the caller
        return f if "r" in mode and "+" not in mode else _Capped(f, self)


class _Capped:
    def __init__(self, f, disk: _FullDisk):
        self._f, self._disk = f, disk

    def write(self, data):
        if len(data) > self._disk.left:
            self._f.write(data[: self._disk.left])
            self._disk.left = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._disk.left -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def test_full_disk_is_one_line_and_leaves_no_temporary_files(tmp_path, videos, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        shutil.copy(videos["cuts"].path, src / f"v{i}.mp4")
    out = tmp_path / "out"
    args = ["describe", str(src), "-o", str(out), "-f", "jsonl,srt,csv", "--workers", "0", *FAST]
    disk = _FullDisk(6000)
    monkeypatch.setattr(engine_writers, "open", disk, raising=False)
    monkeypatch.setattr(common_files, "open", disk, raising=False)
    full = CliRunner().invoke(app, args)
    monkeypatch.undo()
    assert full.exit_code == 1, full.output
    lines = full.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write ") and "No space left on device" in lines[0]
    assert "Traceback" not in full.output and full.exception is None or isinstance(full.exception, SystemExit)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    kept = list(read_records(out / "descriptions.jsonl"))
    assert kept and all("description" in r for r in kept)
    # the rerun repairs the torn line and finishes: every clip once
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    counts = Counter((r["video"], r["clip"]) for r in read_records(out / "descriptions.jsonl"))
    assert set(counts.values()) == {1} and len({v for v, _ in counts}) == 3
    assert (out / "dataset.csv").is_file() and (out / "v0.srt").is_file()
