"""Preference pairs for DPO (Tarsier2's third stage), built by the model itself.

For every clip of a training manifest the model describes the clean clip (the "chosen" candidate)
and corrupted copies of it (the "rejected" candidates): frames reversed, shuffled, a span dropped,
or a segment swapped in from another clip. A scorer the caller passes (the CLI's: a judge of
`tarsier eval` with AutoDQ) scores every candidate against the clip's reference (the manifest row's
answer); a pair is kept only when the
chosen candidate's F1 beats the rejected one's by at least `min_margin`. The rest are recorded as
dropped, with the reason, in the clip ledger.

Pairs file (JSONL, the messages format of the training manifests; video paths relative to the file):

    {"messages": [{"role": "user", "content": [
        {"type": "video", "video": {"video_file": "videos/a.mp4"}},
        {"type": "text", "text": "Write a fine-grained description of the video."}]}],
     "chosen":   [{"role": "assistant", "content": [{"type": "text", "text": "The red circle ..."}]}],
     "rejected": [{"role": "assistant", "content": [{"type": "text", "text": "The red circle ..."}]}],
     "corruption": {"kind": "reverse", "indices": [7, 6, 5, 4, 3, 2, 1, 0]},
     "scores": {"judge": "exact", "metric": "f1", "margin": 0.5,
                "chosen": {"precision": 1.0, "recall": 1.0, "f1": 1.0},
                "rejected": {"precision": 0.5, "recall": 0.5, "f1": 0.5}},
     "reference": "...", "clip": "3f2a...", "source": "describe.jsonl:2"}

`corruption` and `scores` are what the builder records; a hand-written pairs file needs only
`messages`, `chosen` and `rejected`. Beside PAIRS.jsonl the builder keeps PAIRS.clips.jsonl, one line
per finished clip (pairs kept, candidates dropped and why, or the error), written after the clip's
pairs, so a rerun skips finished clips (including those that gave no pair) and redoes a clip a kill
cut short.

Corruptions, as recorded (N = frames per clip, indices into the clean clip's N frames):
    reverse  indices N-1 .. 0
    shuffle  a seeded permutation other than the identity and the reverse
    drop     a span [a, b) of the frames removed; the rest resampled to N frames (uniform, first and last kept)
    swap     frames [a, b) replaced by the same positions of another clip (`other`: its video and window)
    none     no corruption: the rejected candidates are the clean clip's own samples the judge ranks below
             the chosen one (the model's own errors on the real video; needs --samples >= 2 and a
             temperature). Not in the default set: it asks for no extra generation, only other samples.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tarsier.common.files import atomic_write, read_jsonl
from tarsier.common.messages import assistant_turn, parse_messages_sample, user_turn, video_spec
from tarsier.trainers.manifest import ManifestError, checked_rows

CORRUPTIONS = ("reverse", "shuffle", "drop", "swap")   # the default set
ON_POLICY = "none"                                      # rejected: the clean clip's lower-ranked samples
KINDS = (*CORRUPTIONS, ON_POLICY)
Scorer = Callable[[str, list[str]], list[dict | None]]   # (reference, candidate texts) -> a score per text
LEDGER_SUFFIX = ".clips.jsonl"


# ---------------------------------------------------------------------------------------------
# The pairs file
# ---------------------------------------------------------------------------------------------
@dataclass
class Pair:
    video: Path                       # absolute (resolved against the pairs file's folder)
    start: float | None
    end: float | None
    frame_times: list[float] | None
    prompt: str
    chosen: str
    rejected: str
    corruption: dict | None
    scores: dict | None
    source: str                       # "file:line"


def _turn_text(value: Any, user: dict, name: str) -> tuple[str | None, str | None]:
    """The assistant text of `chosen` / `rejected`: a list of messages, one message or a plain string,
    read by the training manifests' own messages parser (common/messages.py)."""
    if isinstance(value, str):
        value = [{"role": "assistant", "content": value}]
    elif isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not any(isinstance(m, dict) and m.get("role") == "assistant" for m in value):
        return None, f"'{name}' has no assistant turn"
    parsed, err = parse_messages_sample({"messages": [user, *value]})
    if err:
        return None, f"'{name}': {err}"
    return parsed["answer"], None


def parse_pair_row(row: Any) -> tuple[dict | None, str | None]:
    """(fields, None) or (None, reason) for one row of a pairs file."""
    if not isinstance(row, dict):
        return None, "row is not a JSON object"
    msgs = row.get("messages")
    if not isinstance(msgs, list):
        return None, "'messages' is not a list"
    user = next((m for m in msgs if isinstance(m, dict) and m.get("role") == "user"), None)
    if user is None:
        return None, "missing user turn"
    parsed, err = parse_messages_sample({"messages": [user, {"role": "assistant", "content": "-"}]})
    if err:
        return None, err
    for name in ("chosen", "rejected"):
        if name not in row:
            return None, f"missing '{name}'"
    chosen, err = _turn_text(row["chosen"], user, "chosen")
    if err:
        return None, err
    rejected, err = _turn_text(row["rejected"], user, "rejected")
    if err:
        return None, err
    if chosen == rejected:
        return None, "chosen and rejected are the same text"
    for name in ("corruption", "scores"):
        if row.get(name) is not None and not isinstance(row[name], dict):
            return None, f"'{name}' must be an object"
    parsed.pop("answer")
    return {**parsed, "chosen": chosen, "rejected": rejected, "corruption": row.get("corruption"),
            "scores": row.get("scores")}, None


def load_pairs(path: str | Path, check_files: bool = True) -> list[Pair]:
    """Load and validate a pairs file; every problem (file:line: reason) raised at once as a ManifestError."""
    path = Path(path)
    problems: list[str] = []
    pairs = [Pair(video=vp, start=parsed["start"], end=parsed["end"], frame_times=parsed["frames"],
                  prompt=parsed["prompt"], chosen=parsed["chosen"], rejected=parsed["rejected"],
                  corruption=parsed["corruption"], scores=parsed["scores"], source=where)
             for where, _row, parsed, vp in checked_rows(path, parse_pair_row, problems, check_files)]
    if not problems and not pairs:
        problems.append(f"{path}: no pairs")
    if problems:
        raise ManifestError(problems, str(path))
    return pairs


def video_item(video: Path, start, end, frame_times, relative_to: Path) -> dict:
    return video_spec(os.path.relpath(video, relative_to), start, end, frame_times)


def pair_row(sample, chosen: str, rejected: str, corruption: dict, scores: dict, clip: str,
             relative_to: Path) -> dict:
    video = video_item(sample.video, sample.start, sample.end, sample.frame_times, relative_to)
    return {
        "messages": [user_turn(video, sample.prompt)],
        "chosen": [assistant_turn(chosen)],
        "rejected": [assistant_turn(rejected)],
        "corruption": corruption, "scores": scores, "reference": sample.answer, "clip": clip,
        "source": sample.source,
    }


# ---------------------------------------------------------------------------------------------
# Frames and corruptions
# ---------------------------------------------------------------------------------------------
def clip_frames(processor, video, start=None, end=None, frame_times=None, frames: int | None = None) -> np.ndarray:
    """(N, H, W, 3) uint8 frames of one training clip in the model's own frame geometry, decoded as
    stages 1 and 2 decode them (trainers.frames: a whole video as `tarsier describe` does, or a window
    or explicit frame times)."""
    from tarsier.trainers.frames import sample_frames

    geometry = getattr(processor, "geometry", None)
    size = int(getattr(geometry, "size", None) or 224)
    return sample_frames(str(video), int(frames or processor.frames), size, start, end, frame_times,
                         geometry=geometry)


def _fit(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize, for a swapped-in clip of another size."""
    if frames.shape[1:3] == (height, width):
        return frames
    ys = (np.arange(height) * frames.shape[1] // height).clip(0, frames.shape[1] - 1)
    xs = (np.arange(width) * frames.shape[2] // width).clip(0, frames.shape[2] - 1)
    return frames[:, ys][:, :, xs]


def plan_corruption(kind: str, n: int, rng: random.Random) -> dict:
    """What a corruption does to a clip of n frames, as recorded in the pairs file."""
    from tarsier.engine.sampling import sample_indices

    if kind == "reverse":
        return {"kind": kind, "indices": list(range(n - 1, -1, -1))}
    if kind == "shuffle":
        order = list(range(n))
        avoid = (order, order[::-1])
        perm = order
        for _ in range(100):
            perm = order[:]
            rng.shuffle(perm)
            if perm not in avoid:
                break
        return {"kind": kind, "indices": perm}
    span = max(1, n // 2)
    a = rng.randrange(0, n - span + 1)
    if kind == "drop":
        rest = [i for i in range(n) if not a <= i < a + span] or list(range(n))   # one frame: nothing to drop
        return {"kind": kind, "span": [a, a + span], "indices": [rest[i] for i in sample_indices(len(rest), n)]}
    if kind == "swap":
        return {"kind": kind, "span": [a, a + span]}
    raise ValueError(f"unknown corruption {kind!r}; choose from {', '.join(CORRUPTIONS)}")


def apply_corruption(frames: np.ndarray, spec: dict, other: np.ndarray | None = None) -> np.ndarray:
    """The corrupted clip a recorded corruption describes."""
    if spec["kind"] == "swap":
        if other is None:
            raise ValueError("a swap needs the other clip's frames")
        a, b = spec["span"]
        out = frames.copy()
        other = _fit(other, frames.shape[1], frames.shape[2])
        out[a:b] = other[np.arange(a, b) % len(other)]
        return out
    return frames[np.asarray(spec["indices"])]


# ---------------------------------------------------------------------------------------------
# Candidates: greedy through the model interface, or sampled with a temperature
# ---------------------------------------------------------------------------------------------
def sample_descriptions(model, clips, instructions: list[str], *, max_new_tokens: int, temperature: float,
                        seed: int) -> list[str]:
    """Temperature samples, batched through the interface's generate() with its KV cache, from a random
    state of their own (`seed`), so a clip's candidates are the same whatever ran before it."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gens = model.generate(clips, instructions, max_new_tokens=max_new_tokens, temperature=temperature)
    return [g.text for g in gens]


# ---------------------------------------------------------------------------------------------
# The builder
# ---------------------------------------------------------------------------------------------
@dataclass
class PairArgs:
    model: str                          # preset, checkpoint folder or run folder
    data: str                           # manifest .jsonl or mixture .json
    out: str                            # PAIRS.jsonl
    judge: str = "exact"
    judge_options: dict = field(default_factory=dict)   # make_judge's options (url, cache_path, ...)
    corruptions: tuple[str, ...] = CORRUPTIONS
    samples: int = 1                    # candidates per clip and per corruption
    temperature: float = 0.0            # 0 = greedy (then samples must be 1)
    min_margin: float = 0.1             # chosen F1 - rejected F1 needed to keep a pair
    max_new_tokens: int | None = None
    frames: int | None = None
    task: str | None = None             # keep only manifest rows whose task starts with this
    limit: int | None = None            # first N clips
    seed: int = 0
    device: str = "auto"
    overwrite: bool = False

    def settings(self) -> dict:
        """What changes the pairs: a rerun with other settings does not mix its pairs in."""
        keep = ("model", "judge", "corruptions", "samples", "temperature", "min_margin", "max_new_tokens",
                "frames", "seed")
        d = asdict(self)
        return {k: (list(d[k]) if isinstance(d[k], tuple) else d[k]) for k in keep}


@dataclass
class PairRun:
    pairs: Path
    ledger: Path
    clips: int = 0          # clips done in this run
    kept: int = 0
    dropped: int = 0
    failed: int = 0
    reused: int = 0         # clips finished by an earlier run


def clip_id(sample) -> str:
    key = json.dumps([str(Path(sample.video).resolve()), sample.start, sample.end, sample.frame_times,
                      sample.prompt, sample.answer])
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def ledger_path(pairs: Path) -> Path:
    pairs = Path(pairs)
    stem = pairs.name[:-len(".jsonl")] if pairs.name.endswith(".jsonl") else pairs.name
    return pairs.with_name(stem + LEDGER_SUFFIX)


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line a kill left half-written, so the next appended row starts on its own line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        path.write_bytes(data[:data.rfind(b"\n") + 1])


def _load_model(name: str, device: str):
    from tarsier.engine import checkpoint as ckpt
    from tarsier.trainers.train import resolve_run_checkpoint

    path = Path(name).expanduser()
    return ckpt.load(resolve_run_checkpoint(path) if path.is_dir() else name, device=device)


def build_pairs(args: PairArgs, *, scorer: Scorer | None = None, model=None,
                on_clip: Callable[[dict], None] | None = None) -> PairRun:
    """Describe, corrupt, score and keep pairs for every clip not done yet; returns the counts.
    `scorer(reference, texts)` gives each candidate's {"precision", "recall", "f1"} against the clip's
    reference, or None where it cannot score one; its `name` is recorded in the pairs (the CLI passes
    tarsier.evaluation.autodq.CandidateScorer: AutoDQ with the --judge). It is needed only when
    there are clips to do. Raises ManifestError (bad manifest), ValueError (bad settings, or a pairs
    file of other settings)."""

    from tarsier.common.types import VideoError
    from tarsier.trainers.manifest import load_mixture

    if args.samples < 1:
        raise ValueError("samples must be >= 1")
    if args.temperature < 0:
        raise ValueError("temperature must be >= 0")
    if args.temperature == 0 and args.samples > 1:
        raise ValueError("greedy decoding gives one candidate; use --temperature > 0 for several samples")
    for kind in args.corruptions:
        if kind not in KINDS:
            raise ValueError(f"unknown corruption {kind!r}; choose from {', '.join(KINDS)}")
    if not args.corruptions:
        raise ValueError("at least one corruption is needed")
    if ON_POLICY in args.corruptions and args.samples < 2:
        raise ValueError("--corruption none takes its rejected candidates from the clean clip's other samples: "
                         "use --samples 2 or more (with --temperature > 0)")
    samples = load_mixture(args.data).samples
    if args.task:
        samples = [s for s in samples if s.task.startswith(args.task)]
        if not samples:
            raise ValueError(f"no manifest row has a task starting with {args.task!r}")
    if args.limit:
        samples = samples[:args.limit]

    out = Path(args.out)
    ledger = ledger_path(out)
    settings = args.settings()
    if args.overwrite:
        for p in (out, ledger):
            if p.exists():
                p.unlink()
    for p in (out, ledger):
        _drop_torn_tail(p)
    previous = list(read_jsonl(ledger))   # a line torn by a kill is skipped: that clip is redone
    other = [r.get("settings") for r in previous if r.get("settings") != settings]
    if other:
        raise ValueError(f"{out} was built with other settings ({json.dumps(other[0])}); "
                         "use --overwrite or another output file")
    # a clip is done once its ledger line is written, after all its pairs; pairs of a clip cut short by
    # a kill are removed and the clip is redone
    done = {r.get("clip") for r in previous if "error" not in r}
    rows = list(read_jsonl(out))
    if any(r.get("clip") not in done for r in rows):
        atomic_write(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows if r.get("clip") in done))
    run = PairRun(pairs=out, ledger=ledger)
    todo = [s for s in samples if clip_id(s) not in done]
    run.reused = len(samples) - len(todo)
    if not todo:
        return run

    if scorer is None:
        raise ValueError("building pairs needs a scorer (tarsier.evaluation.autodq.CandidateScorer)")
    if model is None:
        model = _load_model(args.model, args.device)
    judge_name = getattr(scorer, "name", args.judge)   # a judge made on first use is made here, not per clip
    processor = model.processor
    n_frames = int(args.frames or processor.frames)
    max_new = int(args.max_new_tokens or getattr(model.config, "max_new_tokens", 256))
    others = sorted({(str(s.video), s.start, s.end, tuple(s.frame_times or ())) for s in samples})
    decoded: dict[tuple, np.ndarray] = {}

    def frames_of(key: tuple) -> np.ndarray:
        if key not in decoded:
            if len(decoded) > 64:
                decoded.pop(next(iter(decoded)))
            decoded[key] = clip_frames(processor, key[0], key[1], key[2], list(key[3]) or None, n_frames)
        return decoded[key]

    def describe(clips: list[np.ndarray], prompt: str, seed: int) -> list[str]:
        if args.temperature > 0:
            return sample_descriptions(model, clips, [prompt] * len(clips), max_new_tokens=max_new,
                                       temperature=args.temperature, seed=seed)
        return [g.text for g in model.generate(clips, [prompt] * len(clips), max_new_tokens=max_new)]

    out.parent.mkdir(parents=True, exist_ok=True)
    relative_to = out.resolve().parent
    with open(out, "a", encoding="utf-8") as pf, open(ledger, "a", encoding="utf-8") as lf:
        for sample in todo:
            cid = clip_id(sample)
            record: dict[str, Any] = {"clip": cid, "source": sample.source, "settings": settings}
            try:
                key = (str(sample.video), sample.start, sample.end, tuple(sample.frame_times or ()))
                clean = frames_of(key)
                rng = random.Random(f"{args.seed}/{cid}")
                variants: list[tuple[dict | None, np.ndarray]] = [(None, clean)]
                dropped: list[dict] = []
                for kind in args.corruptions:
                    if kind == ON_POLICY:
                        continue   # no frames of its own: its candidates are the clean samples
                    spec = plan_corruption(kind, len(clean), rng)
                    other_frames = None
                    if kind == "swap":
                        choices = [k for k in others if k[0] != key[0]]
                        if not choices:
                            dropped.append({"corruption": spec, "reason": "no other video to swap a segment from"})
                            continue
                        okey = rng.choice(choices)
                        other_frames = frames_of(okey)
                        spec["other"] = video_item(Path(okey[0]), okey[1], okey[2], list(okey[3]) or None,
                                                   relative_to)
                    corrupted = apply_corruption(clean, spec, other_frames)
                    if np.array_equal(corrupted, clean):
                        dropped.append({"corruption": spec, "reason": "the corruption leaves the clip unchanged"})
                        continue
                    variants.append((spec, corrupted))
                clips = [frames for _, frames in variants for _ in range(args.samples)]
                texts = describe(clips, sample.prompt, rng.getrandbits(63))
                scores = scorer(sample.answer, texts)
                k = args.samples
                clean_scored = [(s["f1"], i) for i, s in enumerate(scores[:k]) if s is not None]
                kept = 0
                if not clean_scored:
                    dropped.append({"corruption": None, "reason": "the judge could not score the clean candidates"})
                else:
                    best = max(clean_scored, key=lambda x: (x[0], -x[1]))[1]
                    chosen, chosen_score = texts[best], scores[best]
                    groups = [(spec, range(v * k, (v + 1) * k)) for v, (spec, _) in enumerate(variants[1:], start=1)]
                    if ON_POLICY in args.corruptions:
                        groups.insert(0, ({"kind": ON_POLICY}, [j for j in range(k) if j != best]))
                    for spec, candidates in groups:
                        seen: set[str] = set()
                        for j in candidates:
                            text, score = texts[j], scores[j]
                            if text in seen:
                                continue
                            seen.add(text)
                            why = None
                            margin = None if score is None else round(chosen_score["f1"] - score["f1"], 6)
                            if score is None:
                                why = "the judge could not score the rejected candidate"
                            elif text == chosen:
                                why = "the same text as the chosen candidate"
                            elif margin <= 0 or margin < args.min_margin:
                                why = f"margin {margin:.3f} below {max(args.min_margin, 0.0):.3f}" if margin > 0 \
                                    else f"the judge does not rank chosen above rejected (margin {margin:.3f})"
                            if why:
                                dropped.append({"corruption": spec, "reason": why, "chosen": chosen_score,
                                                "rejected": score})
                                continue
                            row = pair_row(sample, chosen, text, spec, {
                                "judge": judge_name, "metric": "f1", "margin": margin,
                                "chosen": chosen_score, "rejected": score}, cid, relative_to)
                            pf.write(json.dumps(row, ensure_ascii=False) + "\n")
                            kept += 1
                    pf.flush()
                record.update({"kept": kept, "dropped": dropped})
                run.kept += kept
                run.dropped += len(dropped)
            except (VideoError, OSError, ValueError) as exc:
                record["error"] = f"{type(exc).__name__}: {exc}"
                run.failed += 1
            lf.write(json.dumps(record, ensure_ascii=False) + "\n")
            lf.flush()
            run.clips += 1
            if on_clip:
                on_clip(record)
    return run
