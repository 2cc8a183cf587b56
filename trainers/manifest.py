"""Training data: JSONL manifests and weighted mixtures of them.

A manifest row is either the Tarsier2 / DREAM-1K "messages" format

    {"messages": [
        {"role": "user", "content": [
            {"type": "video", "video": {"video_file": "videos/a.mp4", "start": 1.0, "end": 4.0,
                                        "frames": [1.0, 2.0, 3.0]}},
            {"type": "text", "text": "Describe the video in detail."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A man ..."}]}],   # or "reference"
     "task": "caption"}

or the flat DREAM-1K format {"video_file": ..., "text": {"prompt": "<video>\\n...", "response": ...}}.
Rows are read by common/messages.py (parse_sample), the one reader of both formats.
Relative video paths resolve against the manifest's folder. Every row is validated before any is
used; all problems (up to 20 listed) are raised at once as a ManifestError naming file:line.
Manifests are streamed, never held whole: validation reads the file once and keeps each valid
row's byte offset (12 bytes a row); a sample is parsed again from its line when training draws it
(a 256,000-row stage-1 mixture held as Sample objects took 206 MB).

A mixture (JSON) names manifests with sampling weights, paths relative to the mixture file:
    {"manifests": [{"path": "caption.jsonl", "weight": 2.0, "task": "caption"}, ...]}
`Mixture.sampler(seed)` is an infinite deterministic stream of samples whose position is saved and
restored exactly with state_dict() / load_state_dict().
"""
from __future__ import annotations

import bisect
import itertools
import json
import os
import random
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tarsier.common.messages import is_number, offset_rows, parse_sample, row_at_line

MAX_LISTED = 20


class ManifestError(ValueError):
    """Bad training data. `problems` holds every "file:line: reason" found."""

    def __init__(self, problems: list[str], what: str = "manifest"):
        self.problems = list(problems)
        shown = self.problems[:MAX_LISTED]
        more = len(self.problems) - len(shown)
        msg = f"{len(self.problems)} problem(s) in {what}:\n  " + "\n  ".join(shown)
        if more > 0:
            msg += f"\n  ... and {more} more"
        super().__init__(msg)


@dataclass
class Sample:
    video: Path                    # absolute (resolved against the manifest folder)
    start: float | None
    end: float | None
    frame_times: list[float] | None
    prompt: str
    answer: str
    task: str
    source: str                    # "file:line"


def _row_task(row: dict) -> str | None:
    t = row.get("task")
    return t if isinstance(t, str) and t else None


def checked_rows(path: Path, parse_row, problems: list[str], check_files: bool = True,
                 offsets: list | None = None):
    """(where, row, parsed fields, resolved video path) for every valid row of a JSONL rows file
    (training manifests, pairs files). `parse_row(row)` gives (fields with `video_file`, None) or
    (None, reason); every bad row, and with `check_files` every missing video, is appended to
    `problems` as "file:line: reason" and skipped. `offsets`, when given, gets (line number, byte
    offset) of every row yielded."""
    if not path.is_file():
        raise ManifestError([f"{path}: file not found"])
    folder = path.resolve().parent
    exists: dict[Path, bool] = {}
    for lineno, offset, row, err in offset_rows(path):
        where = f"{path}:{lineno}"
        if row is not None:
            parsed, err = parse_row(row)
        if err:
            problems.append(f"{where}: {err}")
            continue
        vp = resolve_video(folder, parsed["video_file"])
        if check_files:
            if vp not in exists:
                exists[vp] = vp.is_file()
            if not exists[vp]:
                problems.append(f"{where}: video file not found: {parsed['video_file']}")
                continue
        if offsets is not None:
            offsets.append((lineno, offset))
        yield where, row, parsed, vp


def resolve_video(folder: Path, video_file: str) -> Path:
    vp = Path(video_file).expanduser()
    return Path(os.path.normpath(vp if vp.is_absolute() else folder / vp))


def _sample(path: Path, where: str, row: dict, parsed: dict, video: Path, task: str | None) -> Sample:
    return Sample(video=video, start=parsed["start"], end=parsed["end"], frame_times=parsed["frames"],
                  prompt=parsed["prompt"], answer=parsed["answer"], task=task or _row_task(row) or path.stem,
                  source=where)


class ManifestRows(Sequence):
    """A validated manifest's samples, each read from its line of the file when asked for.

    The file must keep the rows it was validated with: its size and modification time are checked
    on every read; when they changed, the file is indexed again, and unless every valid row is
    where it was, reading it is an error naming it, never a silently different sample."""

    def __init__(self, path: Path, task: str | None, lines: list[tuple[int, int]]):
        self.path, self.task = Path(path), task
        self.folder = self.path.resolve().parent
        self.numbers = array("l", (n for n, _ in lines))
        self.offsets = array("q", (o for _, o in lines))
        st = self.path.stat()
        self._stamp = (st.st_size, st.st_mtime_ns)

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self._read([i])[0]

    def __iter__(self) -> Iterator[Sample]:
        for start in range(0, len(self), 4096):   # one open file per block of rows
            yield from self._read(range(start, min(start + 4096, len(self))))

    def _read(self, indices) -> list[Sample]:
        st = self.path.stat()
        if (st.st_size, st.st_mtime_ns) != self._stamp:
            lines: list[tuple[int, int]] = []
            problems: list[str] = []
            for _ in checked_rows(self.path, parse_sample, problems, check_files=False, offsets=lines):
                pass
            if problems or array("q", (o for _, o in lines)) != self.offsets:
                raise ManifestError([f"{self.path}: changed while in use; check it and start again"])
            self._stamp = (st.st_size, st.st_mtime_ns)
        out = []
        with open(self.path, "rb") as f:
            for i in indices:
                if i < 0:
                    i += len(self)
                f.seek(self.offsets[i])
                row, _ = row_at_line(f.readline())
                parsed, _ = parse_sample(row)
                where = f"{self.path}:{self.numbers[i]}"
                out.append(_sample(self.path, where, row, parsed, resolve_video(self.folder, parsed["video_file"]),
                                   self.task))
        return out


def load_manifest(path: str | Path, task: str | None = None, check_files: bool = True) -> ManifestRows:
    """Validate a JSONL manifest (every problem at once, as a ManifestError) and return its samples,
    read back from the file as they are used. `task` overrides the rows' own task names."""
    path = Path(path)
    problems: list[str] = []
    lines: list[tuple[int, int]] = []
    count = sum(1 for _ in checked_rows(path, parse_sample, problems, check_files, offsets=lines))
    if not problems and not count:
        problems.append(f"{path}: no samples")
    if problems:
        raise ManifestError(problems, str(path))
    return ManifestRows(path, task, lines)


@dataclass
class MixtureEntry:
    path: Path
    weight: float
    task: str
    samples: Sequence[Sample]


class Mixture:
    """Manifests with sampling weights."""

    def __init__(self, entries: list[MixtureEntry]):
        if not entries:
            raise ManifestError(["mixture has no manifests"])
        self.entries = entries

    @property
    def weights(self) -> list[float]:
        return [e.weight for e in self.entries]

    @property
    def samples(self) -> Sequence[Sample]:
        """Every sample of every manifest, streamed from the files (a sequence view, not a list)."""
        return _Chain(self.entries)

    def __len__(self) -> int:
        return sum(len(e.samples) for e in self.entries)

    def sampler(self, seed: int = 0) -> MixtureSampler:
        return MixtureSampler(self, seed)


class _Chain(Sequence):
    """The samples of several manifests as one sequence, without copying them into a list."""

    def __init__(self, entries: list[MixtureEntry]):
        self.entries = entries
        self.ends = list(itertools.accumulate(len(e.samples) for e in entries))

    def __iter__(self) -> Iterator[Sample]:
        for e in self.entries:
            yield from e.samples

    def __len__(self) -> int:
        return self.ends[-1] if self.ends else 0

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        m = bisect.bisect_right(self.ends, i)
        return self.entries[m].samples[i - (self.ends[m - 1] if m else 0)]


def _u64(*xs: int) -> int:
    """splitmix64 over a few integers: a stateless, platform-independent hash."""
    h = 0x9E3779B97F4A7C15
    for x in xs:
        h = (h ^ (x & 0xFFFFFFFFFFFFFFFF)) & 0xFFFFFFFFFFFFFFFF
        h = (h + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = h
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        h = z ^ (z >> 31)
    return h


class MixtureSampler(Iterator[Sample]):
    """Infinite stream: pick a manifest by weight (hash of seed and step), then the next sample
    of that manifest's current shuffled epoch. State is a few integers, so restore is exact."""

    def __init__(self, mixture: Mixture, seed: int = 0):
        self.mixture = mixture
        self.seed = int(seed)
        total = sum(mixture.weights)
        acc, self._cum = 0.0, []
        for w in mixture.weights:
            acc += w / total
            self._cum.append(acc)
        self._cum[-1] = 1.0
        n = len(mixture.entries)
        self.step = 0
        self.epochs = [0] * n
        self.positions = [0] * n
        self._perm_cache: dict[int, tuple[int, list[int]]] = {}

    def _perm(self, m: int) -> list[int]:
        epoch = self.epochs[m]
        cached = self._perm_cache.get(m)
        if cached and cached[0] == epoch:
            return cached[1]
        perm = list(range(len(self.mixture.entries[m].samples)))
        random.Random(f"{self.seed}/{m}/{epoch}").shuffle(perm)
        self._perm_cache[m] = (epoch, perm)
        return perm

    def __iter__(self) -> MixtureSampler:
        return self

    def __next__(self) -> Sample:
        u = _u64(self.seed, self.step) / 2.0**64
        m = min(bisect.bisect_right(self._cum, u), len(self._cum) - 1)
        self.step += 1
        perm = self._perm(m)
        sample = self.mixture.entries[m].samples[perm[self.positions[m]]]
        self.positions[m] += 1
        if self.positions[m] >= len(perm):
            self.positions[m] = 0
            self.epochs[m] += 1
        return sample

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "step": self.step, "epochs": list(self.epochs),
                "positions": list(self.positions),
                "sizes": [len(e.samples) for e in self.mixture.entries]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        sizes = [len(e.samples) for e in self.mixture.entries]
        if list(state.get("sizes", sizes)) != sizes:
            raise ValueError(f"sampler state is for manifests of sizes {state.get('sizes')}, "
                             f"this mixture has {sizes}")
        self.seed = int(state["seed"])
        self.step = int(state["step"])
        self.epochs = [int(x) for x in state["epochs"]]
        self.positions = [int(x) for x in state["positions"]]
        self._perm_cache.clear()


class LengthGroupedBatches(Iterator[list[Sample]]):
    """Batches of similar length, as transformers' `group_by_length` makes them.

    A batch is padded to its longest row, so a random batch of short QA answers and long fine
    descriptions spends about a third of its compute on padding. This draws `group` batches' worth
    of samples from the sampler, sorts them by length, cuts them into batches and serves those in a
    seeded random order. The samples seen are the sampler's, in the same number; only their
    grouping into batches changes. State: the sampler's state where the group began and how many of
    its batches were served, so restore is exact. `group` 1 gives the sampler's own order."""

    def __init__(self, sampler: MixtureSampler, batch_size: int, group: int = 16):
        if batch_size < 1 or group < 1:
            raise ValueError("batch_size and group must be >= 1")
        self.sampler, self.batch_size, self.group = sampler, batch_size, group
        self._start: dict[str, Any] = sampler.state_dict()
        self._batches: list[list[Sample]] = []
        self._served = 0

    def _fill(self) -> None:
        self._start = self.sampler.state_dict()
        drawn = [next(self.sampler) for _ in range(self.batch_size * self.group)]
        if self.group > 1:
            drawn.sort(key=lambda s: len(s.prompt) + len(s.answer))   # characters: a tokenizer-free proxy
        batches = [drawn[i:i + self.batch_size] for i in range(0, len(drawn), self.batch_size)]
        if self.group > 1:
            random.Random(f"{self.sampler.seed}/batches/{self._start['step']}").shuffle(batches)
        self._batches, self._served = batches, 0

    def __iter__(self) -> LengthGroupedBatches:
        return self

    def __next__(self) -> list[Sample]:
        if self._served >= len(self._batches):
            self._fill()
        self._served += 1
        return self._batches[self._served - 1]

    def state_dict(self) -> dict[str, Any]:
        if self._served >= len(self._batches):   # between groups: the sampler's position says it all
            return {**self.sampler.state_dict(), "served": 0}
        return {**self._start, "served": self._served}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Also takes a plain MixtureSampler state (checkpoints written before batches were grouped)."""
        state = dict(state)
        served = int(state.pop("served", 0))
        self.sampler.load_state_dict(state)
        self._batches, self._served = [], 0
        if served:
            self._fill()
            self._served = served


def load_mixture(path: str | Path, check_files: bool = True) -> Mixture:
    """A .json mixture file, or a single .jsonl manifest (weight 1)."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        samples = load_manifest(path, check_files=check_files)
        return Mixture([MixtureEntry(path, 1.0, samples[0].task if samples else path.stem, samples)])
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError([f"{path}: file not found"]) from None
    except json.JSONDecodeError as e:
        raise ManifestError([f"{path}:{e.lineno}: invalid JSON ({e.msg})"]) from None
    items = spec.get("manifests") if isinstance(spec, dict) else None
    if not isinstance(items, list) or not items:
        raise ManifestError([f"{path}: needs a non-empty 'manifests' list"])
    problems: list[str] = []
    entries: list[MixtureEntry] = []
    for i, item in enumerate(items):
        where = f"{path}: manifests[{i}]"
        if isinstance(item, str):
            item = {"path": item}
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            problems.append(f"{where}: needs a 'path'")
            continue
        w = item.get("weight", 1.0)
        if not is_number(w) or w <= 0:
            problems.append(f"{where}: weight must be a number > 0, got {w!r}")
            continue
        mp = Path(item["path"])
        mp = mp if mp.is_absolute() else path.resolve().parent / mp
        task = item.get("task") if isinstance(item.get("task"), str) else None
        try:
            samples = load_manifest(mp, task=task, check_files=check_files)
        except ManifestError as e:
            problems.extend(e.problems)
            continue
        entries.append(MixtureEntry(mp, float(w), task or mp.stem, samples))
    if problems:
        raise ManifestError(problems, str(path))
    return Mixture(entries)
