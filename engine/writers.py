"""Output writers, one small class per format over plain result records (dicts, DESIGN.md §5).

JSONL gets one line per clip, appended and flushed as it is produced, so a kill loses at most the
clips in flight. SRT and VTT are per video and written atomically (temp file + rename) once all
of that video's clips are known, so a reader never sees half a subtitle file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO

FORMATS = ("jsonl", "srt", "vtt")


def format_timestamp(seconds: float, decimal: str) -> str:
    """Always with hours: 00:01:02,345 (SRT) or 00:01:02.345 (VTT)."""
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class JsonlWriter:
    """Appends records to a file (or writes them to a stream such as stdout)."""

    def __init__(self, path: Path | None = None, stream: IO[str] | None = None):
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            repair_torn_tail(path)
            self.stream = open(path, "a", encoding="utf-8")
            self._owns = True
        else:
            self.stream = stream
            self._owns = False

    def write(self, record: dict) -> None:
        # One write call per line: a kill between records never tears one.
        self.stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._owns:
            self.stream.close()


class SubtitleWriter:
    extension = ""

    def __init__(self, output_dir: Path):
        self.output_dir = output_dir

    def path_for(self, video_rel: str, unique_name: bool = False) -> Path:
        """Mirror the input tree: a/x.mp4 -> OUT/a/x.srt (OUT/a/x.mp4.srt when x.mov sits beside it)."""
        rel = Path(video_rel)
        name = rel.name if unique_name else rel.stem
        return self.output_dir / rel.parent / f"{name}.{self.extension}"

    def write_video(self, video_rel: str, clips: list[dict], unique_name: bool = False) -> Path:
        path = self.path_for(video_rel, unique_name)
        atomic_write_text(path, self.render(sorted(clips, key=lambda r: r["clip"])))
        return path

    def render(self, clips: list[dict]) -> str:
        raise NotImplementedError


class SrtWriter(SubtitleWriter):
    extension = "srt"

    def render(self, clips: list[dict]) -> str:
        cues = []
        for n, rec in enumerate(clips, start=1):
            start, end = format_timestamp(rec["start"], ","), format_timestamp(rec["end"], ",")
            cues.append(f"{n}\n{start} --> {end}\n{cue_text(rec['description'])}\n")
        return "\n".join(cues)


class VttWriter(SubtitleWriter):
    extension = "vtt"

    def render(self, clips: list[dict]) -> str:
        cues = ["WEBVTT\n"]
        for rec in clips:
            start, end = format_timestamp(rec["start"], "."), format_timestamp(rec["end"], ".")
            cues.append(f"{start} --> {end}\n{cue_text(rec['description'])}\n")
        return "\n".join(cues)


def cue_text(text: str) -> str:
    # A blank line ends a cue in both formats, and "-->" would start a new timing line in VTT.
    lines = [line.strip() for line in text.replace("-->", "->").splitlines() if line.strip()]
    return "\n".join(lines) or "(no description)"


SUBTITLE_WRITERS = {"srt": SrtWriter, "vtt": VttWriter}


def repair_torn_tail(path: Path) -> None:
    """Drop a partial last line left by a kill mid-write (the line never counted as done)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        data = f.seek(0) or f.read()
        cut = data.rfind(b"\n") + 1
        f.truncate(cut)


def read_records(path: Path):
    """Records of a JSONL file, skipping a torn or corrupt line instead of failing the whole rerun."""
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue
