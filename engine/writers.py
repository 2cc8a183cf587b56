"""Output writers, one small class per format over plain result records (dicts), registered in one
place (`WRITERS`: format name -> class; the CLI reads its `-f` choices and their help from it).

JSONL gets one line per clip, appended and flushed as it is produced, so a kill loses at most the
clips in flight. SRT and VTT are per video and written atomically (temp file + rename) once all
of that video's clips are known, so a reader never sees half a subtitle file.

Captions and manifests for video-generator trainers (`-f txt,csv,ltx,parquet,webdataset`) are
written at the end of a run from every described clip of the JSONL (so a rerun rebuilds them from
the whole log, earlier runs included), each atomically. They list clips, not videos: with
`--clips DIR` each row names the clip file; without it a row names the source video, and formats
whose consumer reads whole files (txt, ltx, webdataset) keep only the videos that are one clip (txt
then writes the caption beside the source video, never over a caption it did not write).

Every file but the JSONL log is written through tarsier.common.files' atomic writes. The CLI reads
the registry when it starts, so what only a writer needs (csv, tarfile, pyarrow) is imported by it.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import IO, TYPE_CHECKING

from tarsier.common.files import atomic_file, atomic_write, read_jsonl

if TYPE_CHECKING:
    import tarfile

JSONL_NAME = "descriptions.jsonl"   # OUT/descriptions.jsonl: every record, and the resume log


class OutputError(Exception):
    """Writing the output failed (a full disk, a read-only or vanished folder): one line for the user.
    What was written before stays valid (the JSONL keeps every finished record; atomic files are
    either whole or absent, never a leftover temporary file)."""


def output_error(path, e: OSError) -> OutputError:
    return OutputError(f"cannot write {path}: {e.strerror or e}")


def format_timestamp(seconds: float, decimal: str) -> str:
    """Always with hours: 00:01:02,345 (SRT) or 00:01:02.345 (VTT)."""
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


class JsonlWriter:
    """Appends records to a file (or writes them to a stream such as stdout)."""

    format = "jsonl"
    help = ""

    def __init__(self, path: Path | None = None, stream: IO[str] | None = None):
        self.path = path
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                repair_torn_tail(path)
                self.stream = open(path, "a", encoding="utf-8")
            except OSError as e:
                raise output_error(path, e) from None
            self._owns = True
        else:
            self.stream = stream
            self._owns = False

    def write(self, record: dict) -> None:
        # One write call per line: a kill between records never tears one.
        line = json.dumps(record, ensure_ascii=False) + "\n"
        if not self._owns:   # a pipe whose reader left raises BrokenPipeError: the caller's to handle
            self.stream.write(line)
            self.stream.flush()
            return
        try:
            self.stream.write(line)
            self.stream.flush()
        except OSError as e:   # a short write leaves a torn line, which the next run drops
            raise output_error(self.path, e) from None

    def close(self) -> None:
        if self._owns:
            with contextlib.suppress(OSError):   # a failed write was reported already
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

    def write_video(self, video_rel: str, clips: list[dict], unique_name: bool = False) -> Path | None:
        """The video's subtitles: one cue per described clip. Clips a curation filter skipped have no
        text and leave a gap; a video with no described clip gets no subtitle file."""
        described = [r for r in clips if "description" in r]
        if not described:
            return None
        path = self.path_for(video_rel, unique_name)
        try:
            atomic_write(path, self.render(sorted(described, key=lambda r: r["clip"])))
        except OSError as e:
            raise output_error(path, e) from None
        return path

    def render(self, clips: list[dict]) -> str:
        raise NotImplementedError


class SrtWriter(SubtitleWriter):
    format = extension = "srt"
    help = ""

    def render(self, clips: list[dict]) -> str:
        cues = []
        for n, rec in enumerate(clips, start=1):
            start, end = format_timestamp(rec["start"], ","), format_timestamp(rec["end"], ",")
            cues.append(f"{n}\n{start} --> {end}\n{cue_text(rec['description'])}\n")
        return "\n".join(cues)


class VttWriter(SubtitleWriter):
    format = extension = "vtt"
    help = ""

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


# ---------------------------------------------------------------------------------------------
# Captions and manifests for trainers, rebuilt at the end of a run from the described clips
# ---------------------------------------------------------------------------------------------
class ManifestWriter:
    """Base: turns described clip records (JSONL order) into one trainer-facing output.
    `clips_dir`: the --clips folder (records name their clip file relative to it); `sources`: video
    key -> source file, for rows without a clip file; `stems`: videos whose name collides without
    their extension (x.mp4 beside x.mov)."""

    whole_files = False   # the consumer reads whole media files: a row must be one file, not a span of one

    def __init__(self, output_dir: Path, clips_dir: Path | None = None, sources: dict | None = None,
                 stems: set[str] | frozenset = frozenset(), shard_size: int = 1000):
        self.output_dir = Path(output_dir)
        self.clips_dir = Path(clips_dir) if clips_dir is not None else None
        self.sources = sources or {}
        self.stems = stems
        self.shard_size = max(1, int(shard_size))
        self.left_out = 0     # clips with no file of their own (multi-clip videos without --clips)
        self.failed: dict[str, str] = {}   # video key -> why its entry could not be written (txt beside a source)

    def cut(self, rec: dict) -> bool:
        """The clip has a file of its own under --clips (else a row names its source video)."""
        return bool(rec.get("clip_file")) and self.clips_dir is not None

    def media(self, rec: dict) -> Path | None:
        """The file a trainer reads for this clip, absolute (symlinks kept as given)."""
        if self.cut(rec):
            return Path(os.path.abspath(self.clips_dir / rec["clip_file"]))
        if self.clips_dir is None and (not self.whole_files or rec.get("n_clips") == 1):
            src = self.sources.get(rec["video"])
            return Path(os.path.abspath(src)) if src is not None else None
        return None

    def rows(self, records: list[dict]) -> list[tuple[dict, Path]]:
        out = []
        for rec in records:
            path = self.media(rec)
            if path is None:
                self.left_out += 1
                continue
            out.append((rec, path))
        return out

    def write(self, records: list[dict]) -> int:
        """Writes the output; returns how many clips it lists."""
        raise NotImplementedError


def clip_span(rec: dict) -> tuple[float, float]:
    """Where the clip's media really starts and ends (a copied clip snaps to keyframes)."""
    return rec.get("clip_start", rec["start"]), rec.get("clip_end", rec["end"])


class TxtWriter(ManifestWriter):
    """diffusion-pipe / musubi-tuner: the caption in `<media>.txt` beside each clip file (with
    --clips), else beside each source video that is one clip (`a/x.mp4` -> `a/x.txt`; `x.mp4` beside
    `x.mov` -> `x.mp4.txt`), where those trainers look for it.

    Beside the sources the input tree is not ours: a caption file already there is replaced only when
    this output folder wrote it (its ledger, `ledger_name`, lists every caption it wrote there), so a
    user's own captions are never overwritten. Such a caption, or one that cannot be written (a
    read-only folder), is a failure of that video (`failed`: video key -> one-line reason)."""

    format, help = "txt", "caption beside each clip file, or each one-clip video"
    whole_files = True
    ledger_name = "txt-captions-written.json"   # in the output folder: the captions written beside sources

    def path_for(self, rec: dict, media: Path) -> Path:
        if self.cut(rec):
            return media.with_suffix(".txt")
        name = media.name if rec["video"] in self.stems else media.stem
        return media.with_name(f"{name}.txt")

    def write(self, records: list[dict]) -> int:
        ledger_path = self.output_dir / self.ledger_name
        try:
            ours = set(json.loads(ledger_path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            ours = set()
        written = set(ours)
        listed = 0
        for rec, media in self.rows(records):
            path = self.path_for(rec, media)
            beside_source = not self.cut(rec)
            text = rec["description"].strip() + "\n"
            try:
                current = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                current = None
            except (OSError, UnicodeDecodeError):
                current = ""
            if current == text:
                listed += 1
                continue   # a rerun rewrites only what changed
            if beside_source and current is not None and str(path) not in ours:
                self.failed[rec["video"]] = f"caption not written: {path} is there and was not written by tarsier"
                continue
            try:
                atomic_write(path, text)
            except OSError as e:
                if not beside_source:
                    raise   # the output folder itself: a full disk is the run's error
                self.failed[rec["video"]] = f"caption not written: {path}: {e.strerror or e}"
                continue
            listed += 1
            if beside_source:
                written.add(str(path))
        if written != ours:
            atomic_write(ledger_path, json.dumps(sorted(written), indent=1) + "\n")
        return listed


class CsvWriter(ManifestWriter):
    """Open-Sora's CSV (path, text, num_frames, fps, height, width) plus start, end, grain, model."""

    format, help = "csv", "Open-Sora"
    name = "dataset.csv"
    columns = ("path", "text", "num_frames", "fps", "height", "width", "start", "end", "grain", "model")

    def write(self, records: list[dict]) -> int:
        import csv

        rows = self.rows(records)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.columns)
        for rec, media in rows:
            start, end = clip_span(rec)
            fps = rec.get("fps") or 0.0
            frames = rec.get("clip_frames") or max(1, round((end - start) * fps))
            w.writerow([str(media), rec["description"], frames, round(fps, 3), rec.get("height", ""),
                        rec.get("width", ""), start, end, rec["grain"], rec["model"]])
        atomic_write(self.output_dir / self.name, buf.getvalue())
        return len(rows)


class LtxWriter(ManifestWriter):
    """LTX-Video-Trainer's JSON list of {"caption", "media_path"}, paths relative to the manifest."""

    format, help = "ltx", "LTX-Video-Trainer JSON"
    name = "dataset.json"
    whole_files = True

    def write(self, records: list[dict]) -> int:
        rows = self.rows(records)
        base = os.path.abspath(self.output_dir)
        items = [{"caption": rec["description"], "media_path": Path(os.path.relpath(media, base)).as_posix()}
                 for rec, media in rows]
        atomic_write(self.output_dir / self.name, json.dumps(items, ensure_ascii=False, indent=1) + "\n")
        return len(rows)


class ParquetWriter(ManifestWriter):
    """Every record field, one row per clip, plus `path` (the media file); read with pyarrow/pandas."""

    format, help = "parquet", ""
    name = "dataset.parquet"

    def write(self, records: list[dict]) -> int:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = self.rows(records)
        keys: dict[str, None] = {"path": None}
        for rec, _ in rows:
            keys.update(dict.fromkeys(rec))
        columns = {k: [] for k in keys}
        for rec, media in rows:
            for k in keys:
                columns[k].append(str(media) if k == "path" else rec.get(k))
        table = pa.table(columns) if rows else pa.table({"path": pa.array([], pa.string())})
        with atomic_file(self.output_dir / self.name) as f:
            pq.write_table(table, f)
        return len(rows)


class WebDatasetWriter(ManifestWriter):
    """webdataset tar shards OUT/webdataset/shard-NNNNNN.tar of `<key>.<ext>` (the clip file) +
    `<key>.txt` (the caption) + `<key>.json` (the record); `shard_size` clips per shard, in JSONL
    order, so clips added by a later run only touch the last shards. Each shard is written whole
    under a temporary name and renamed (a kill never leaves a torn shard; its leftover temporary file
    is removed by the next run), and a shard whose content is unchanged is not rewritten."""

    format, help = "webdataset", "tar shards, needs --clips"
    folder = "webdataset"
    whole_files = True

    def media(self, rec: dict) -> Path | None:   # a shard holds clip files: never a whole source video
        if self.cut(rec):
            path = Path(os.path.abspath(self.clips_dir / rec["clip_file"]))
            return path if path.is_file() else None
        return None

    def write(self, records: list[dict]) -> int:
        import hashlib
        import tarfile

        rows = self.rows(records)
        folder = self.output_dir / self.folder
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(".shard-*.tmp"):
            stale.unlink(missing_ok=True)
        index_path = folder / ".index.json"
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            index = {}
        keys = webdataset_keys([rec for rec, _ in rows])
        shards = [rows[i:i + self.shard_size] for i in range(0, len(rows), self.shard_size)]
        new_index = {}
        for n, shard in enumerate(shards):
            name = f"shard-{n:06d}.tar"
            members = []
            for rec, media in shard:
                st = media.stat()
                record = json.dumps(rec, ensure_ascii=False, sort_keys=True)
                members.append((keys[id(rec)], media, rec["description"], record, st.st_size, st.st_mtime_ns))
            digest = hashlib.sha1(json.dumps([[str(m[1]), *m[2:]] + [m[0]] for m in members]).encode()).hexdigest()
            new_index[name] = digest
            if index.get(name) == digest and (folder / name).is_file():
                continue
            with atomic_file(folder / name) as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for key, media, caption, record, _, _ in members:
                    tar.add(str(media), arcname=f"{key}{media.suffix.lower()}", filter=_plain_member)
                    _add_bytes(tar, f"{key}.txt", caption.strip().encode("utf-8") + b"\n")
                    _add_bytes(tar, f"{key}.json", record.encode("utf-8"))
        for old in folder.glob("shard-*.tar"):
            if old.name not in new_index:
                old.unlink()
        atomic_write(index_path, json.dumps(new_index, sort_keys=True))
        return len(rows)


def webdataset_keys(records: list[dict]) -> dict[int, str]:
    """One key per record (id(record) -> key): the video path and clip number with every character a
    webdataset reader could split on ('.', '/') made '_', e.g. a/x.mp4 clip 3 -> a_x_mp4_0003."""
    import hashlib

    out: dict[int, str] = {}
    used: set[str] = set()
    for rec in records:
        stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in rec["video"])
        key = f"{stem}_{rec['clip']:04d}"
        if key in used:   # two paths that differ only in punctuation
            key = f"{key}_{hashlib.sha1(rec['video'].encode()).hexdigest()[:8]}"
        used.add(key)
        out[id(rec)] = key
    return out


def _plain_member(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o644
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    import tarfile

    info = _plain_member(tarfile.TarInfo(name))
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


# ---------------------------------------------------------------------------------------------
# The registry: every output format, in the order `--help` lists them
# ---------------------------------------------------------------------------------------------
WRITERS: dict[str, type] = {cls.format: cls for cls in (
    JsonlWriter, SrtWriter, VttWriter, TxtWriter, CsvWriter, LtxWriter, ParquetWriter, WebDatasetWriter)}
SUBTITLE_WRITERS = {name: cls for name, cls in WRITERS.items() if issubclass(cls, SubtitleWriter)}
MANIFEST_WRITERS = {name: cls for name, cls in WRITERS.items() if issubclass(cls, ManifestWriter)}
ALL_FORMATS = ("jsonl", *SUBTITLE_WRITERS)   # what `-f all` means
DEFAULT_FORMATS = ("jsonl",)


def formats_help() -> str:
    """The formats for a `--help` text: 'jsonl, srt, vtt, txt (caption beside each clip file), ...'."""
    return ", ".join(f"{name} ({cls.help})" if cls.help else name for name, cls in WRITERS.items())


def described_clips(paths, record_key: dict) -> list[dict]:
    """The described clips of JSONL logs with this resume key, in order of first appearance, each
    clip once (a later record of the same clip, from --overwrite, replaces the earlier one)."""
    by_key: dict[tuple, dict] = {}
    for path in paths:
        for rec in read_jsonl(path):
            if "error" in rec or "clip" not in rec or "description" not in rec or rec.get("skipped"):
                continue
            if any(rec.get(k) != v for k, v in record_key.items()):
                continue
            by_key[(rec["video"], rec["clip"])] = rec
    return list(by_key.values())


def rebuild_manifests(formats, output_dir: Path, jsonl: Path, record_key: dict, *, videos, clips_dir: Path | None,
                      stems: set[str], shard_size: int, failed: dict | None = None) -> dict[str, tuple[int, int]]:
    """The manifest formats of `formats`, from every described clip of the JSONL log with this key
    (earlier runs included); `videos`: the run's engine VideoInputs (rows without a clip file name
    their source)."""
    if not set(formats) & set(MANIFEST_WRITERS):
        return {}
    return write_manifests(formats, output_dir, described_clips([jsonl], record_key), failed, clips_dir=clips_dir,
                           sources={v.rel: v.path for v in videos}, stems=stems, shard_size=shard_size)


def write_manifests(formats, output_dir: Path, records: list[dict], failed: dict | None = None,
                    **kw) -> dict[str, tuple[int, int]]:
    """Every manifest format of `formats`; returns format -> (clips listed, clips left out). `failed`
    gets video key -> one-line reason for the videos a writer could not serve (txt beside a source)."""
    done = {}
    for fmt in formats:
        if fmt in MANIFEST_WRITERS:
            writer = MANIFEST_WRITERS[fmt](output_dir, **kw)
            try:
                done[fmt] = (writer.write(records), writer.left_out)
            except OSError as e:
                raise output_error(e.filename or output_dir, e) from None
            if failed is not None:
                failed.update(writer.failed)
    return done


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

