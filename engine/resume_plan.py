"""Plan the resume before the model loads: a rerun with nothing left to do answers in about a second.

The resume key of the records (model id, grain, instruction, settings hash) comes from the model's
processor, so computing it means loading the model, which for a 7B checkpoint takes far longer than
reading the JSONL. Every run therefore remembers, in OUT/.tarsier-plan.json, which key a request led
to. The request is everything that decides the key: the describe arguments that reach it, the
model's identity (its name, plus the preset file, or the size and time of every file of its
checkpoint folder) and the size and time of the engine's own source files (an update of the code
may change what a model sees, so it forgets the plans). A rerun of a remembered request whose videos
are all complete under that key (and, with --clips, whose clip files are all there) returns at
once; the manifests are still rebuilt. Anything else (a new video, a missing clip file, an input
that is not there, another request) goes the normal way, model and all.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

PLAN_NAME = ".tarsier-plan.json"
_KEEP = 32   # requests remembered per output folder


def expand_stdin(inputs: list[str], stdin) -> list[str]:
    """'-' replaced by the paths it reads (once), so the inputs can be discovered twice."""
    if "-" not in inputs:
        return list(inputs)
    if stdin is None:
        import sys

        stdin = sys.stdin
    listed = [line.strip() for line in stdin if line.strip()]
    out: list[str] = []
    for item in inputs:
        if item == "-":
            out.extend(listed)
            listed = []   # discover reads an exhausted stream for a second '-'
        else:
            out.append(item)
    return out


def _stats(folder: Path) -> list:
    try:
        return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file())
    except OSError:
        return []


def model_identity(model) -> list | None:
    """What says the model is the same one as last time; None for an already loaded model object."""
    if not isinstance(model, str | Path):
        return None
    from tarsier.engine.checkpoint import ModelNotFound, read_preset, trained_preset_dir

    name = str(model)
    path = Path(name).expanduser()
    if path.is_dir():
        return [name, _stats(path)]
    try:
        preset = read_preset(name)
    except (ModelNotFound, OSError, ValueError):
        return [name]
    return [name, preset, _stats(trained_preset_dir(name))]


def _code_identity() -> list:
    return _stats(Path(__file__).resolve().parent)


def request_key(model, **arguments) -> str | None:
    ident = model_identity(model)
    if ident is None:
        return None
    blob = json.dumps([ident, arguments, _code_identity()], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()


def recall(out: Path, key: str | None) -> dict | None:
    if key is None:
        return None
    try:
        return json.loads((Path(out) / PLAN_NAME).read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def remember(out: Path | None, key: str | None, base: dict) -> None:
    """Best effort: a plan that cannot be written only costs the next rerun its shortcut."""
    if out is None or key is None:
        return
    from tarsier.engine.writers import atomic_write_text

    path = Path(out) / PLAN_NAME
    try:
        plans = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(plans, dict):
            plans = {}
    except (OSError, ValueError):
        plans = {}
    plans.pop(key, None)
    plans[key] = base
    plans = dict(list(plans.items())[-_KEEP:])
    try:
        atomic_write_text(path, json.dumps(plans, sort_keys=False))
    except OSError:
        pass


def finished_early(key: str | None, inputs: list[str], output_dir, *, formats, curate, extensions, recursive,
                   shard_size: int, notify):
    """The run's DescribeSummary when a remembered request has nothing left to do, else None."""
    if key is None or output_dir is None:
        return None
    out = Path(output_dir)
    base = recall(out, key)
    if base is None:
        return None
    from tarsier.engine.curate import Curation
    from tarsier.engine.describe import JSONL_NAME, DescribeSummary, _stem_collisions, finished_records
    from tarsier.engine.discover import DEFAULT_EXTENSIONS, discover

    jsonl = out / JSONL_NAME
    videos, problems = discover(list(inputs), extensions=extensions or DEFAULT_EXTENSIONS, recursive=recursive)
    if problems or not videos:
        return None   # a problem is recorded by the normal path, every run
    stems = _stem_collisions(v.rel for v in videos)
    curation = Curation(curate, base, stems, lambda *a: None)
    done = curation.usable(finished_records([jsonl], base))
    clips = 0
    for v in videos:
        recs = done.get(v.rel, {})
        prior = next(iter(recs.values()), None)
        if prior is None or len(recs) != prior.get("n_clips") or not curation.complete(recs):
            return None
        clips += len(recs)
    notify("start", videos=len(videos), todo=0, skipped=len(videos))
    summary = DescribeSummary(videos=len(videos), videos_skipped=len(videos), clips_skipped=clips, jsonl=jsonl)
    from tarsier.engine.writers import MANIFEST_WRITERS, described_clips, write_manifests

    if set(formats) & set(MANIFEST_WRITERS):
        summary.manifests = write_manifests(
            formats, out, described_clips([jsonl], base), clips_dir=curation.o.clips_path,
            sources={v.rel: v.path for v in videos}, stems=stems, shard_size=shard_size)
    return summary


__all__ = ["expand_stdin", "finished_early", "remember", "request_key"]
