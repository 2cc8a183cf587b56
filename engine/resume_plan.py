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

from tarsier.common.files import atomic_write, read_jsonl
from tarsier.engine.curate import Curation
from tarsier.engine.discover import DEFAULT_EXTENSIONS, discover
from tarsier.engine.options import DescribeOptions
from tarsier.engine.prepare import stem_collisions
from tarsier.engine.tracker import DescribeSummary, left_to_do
from tarsier.engine.writers import JSONL_NAME, rebuild_manifests

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


def request_key(options: DescribeOptions) -> str | None:
    """What decides the records' key: the model's identity, the describe options that reach the key,
    the engine's code. None for an already loaded model (nothing to tell it by) or with overwrite."""
    what, cut = options.what, options.cut
    ident = None if options.output.overwrite else model_identity(what.model)
    if ident is None:
        return None
    arguments = {"grain": what.grain, "prompt": what.prompt, "frames": what.frames, "scenes": cut.scenes,
                 "threshold": cut.threshold, "min_scene_len": cut.min_scene_len, "min_clip": cut.min_clip,
                 "max_clip": cut.max_clip, "max_new_tokens": what.max_new_tokens}
    blob = json.dumps([ident, arguments, _code_identity()], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()


def recall(out: Path, key: str | None) -> dict | None:
    if key is None:
        return None
    try:
        return json.loads((Path(out) / PLAN_NAME).read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def remember(out: Path | None, key: str | None, record_key: dict) -> None:
    """Best effort: a plan that cannot be written only costs the next rerun its shortcut."""
    if out is None or key is None:
        return
    path = Path(out) / PLAN_NAME
    try:
        plans = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(plans, dict):
            plans = {}
    except (OSError, ValueError):
        plans = {}
    plans.pop(key, None)
    plans[key] = record_key
    plans = dict(list(plans.items())[-_KEEP:])
    try:
        atomic_write(path, json.dumps(plans, sort_keys=False))
    except OSError:
        pass


def finished_records(paths, record_key: dict) -> dict[str, dict[int, dict]]:
    """Clip records of earlier runs (JSONL logs) with the same model/grain/prompt/settings:
    video -> clip index -> record."""
    done: dict[str, dict[int, dict]] = {}
    for path in paths:
        for rec in read_jsonl(path):
            if "error" in rec or "clip" not in rec:
                continue
            if any(rec.get(k) != v for k, v in record_key.items()):
                continue
            done.setdefault(rec["video"], {})[rec["clip"]] = rec
    return done


def finished_early(key: str | None, inputs: list[str], options: DescribeOptions, notify):
    """The run's DescribeSummary when a remembered request has nothing left to do, else None."""
    out_options = options.output
    if key is None or out_options.output_dir is None:
        return None
    out = Path(out_options.output_dir)
    record_key = recall(out, key)
    if record_key is None:
        return None
    jsonl = out / JSONL_NAME
    videos, problems = discover(list(inputs), extensions=options.inputs.extensions or DEFAULT_EXTENSIONS,
                                recursive=options.inputs.recursive)
    if problems or not videos:
        return None   # a problem is recorded by the normal path, every run
    stems = stem_collisions(v.rel for v in videos)
    curation = Curation(out_options.curate, record_key, stems, lambda *a: None)
    todo, skipped, clips = left_to_do(videos, curation.usable(finished_records([jsonl], record_key)), curation.complete)
    if todo:
        return None
    notify("start", videos=len(videos), todo=0, skipped=skipped)
    summary = DescribeSummary(videos=len(videos), videos_skipped=skipped, clips_skipped=clips, jsonl=jsonl)
    manifests(summary, notify, out_options, out, jsonl, record_key, videos=videos, stems=stems,
              clips_dir=curation.o.clips_path)
    return summary


def manifests(summary, notify, out_options, out: Path, jsonl: Path, record_key: dict, **kw) -> None:
    """Rebuild the run's trainer manifests into `summary.manifests`; a video whose caption could not
    be put where its trainer looks (txt beside the source) is an error of that video."""
    failed: dict[str, str] = {}
    summary.manifests = rebuild_manifests(out_options.formats, out, jsonl, record_key, failed=failed,
                                          shard_size=out_options.shard_size, **kw)
    for rel, message in failed.items():
        summary.errors.append((rel, message))
        notify("error", video=rel, message=f"{rel}: {message}")


__all__ = ["expand_stdin", "finished_early", "finished_records", "manifests", "remember", "request_key"]
