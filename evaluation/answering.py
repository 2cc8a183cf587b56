"""Answering benchmark rows with a model: the prompt exactly as the row gives it, the row's answer
prefix forced as the start of the answer, batched; or, for multiple choice, the option the model
scores highest (`likelihood`).

Everything that touches the model goes through the two small functions `generate_with_prefix`
and `option_logprobs`, so that a change of the model interface is a change there only. Frames are
decoded with engine.video (one clip spanning the whole video, the model's frame count and size).
torch is imported inside the functions: the CLI imports this module cheaply.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tarsier.common.files import read_jsonl
from tarsier.evaluation.benchdata import BenchRow

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# ---------------------------------------------------------------------------------------------
# The model calls (the only code here that knows the model interface)
# ---------------------------------------------------------------------------------------------
def generate_with_prefix(model, frames, instructions: list[str], prefix: str, max_new_tokens: int | None):
    """Greedy answers to `instructions` (one per clip of `frames`) whose text starts with `prefix`, written
    after the model's own prompt template (the model interface's `prefixes`); returns the text generated
    AFTER the prefix (a leading space belongs to the prefix's tokens)."""
    gens = model.generate(frames, instructions, max_new_tokens=max_new_tokens,
                          prefixes=[prefix] * len(instructions) if prefix else None)
    return [g.text for g in gens]


def option_logprobs(model, frames, instructions: list[str], prefix: str, n_options: list[int]) -> list[list[float]]:
    """For each clip, the summed log-probability of each option letter (A, B, ...) as the
    continuation of prompt + prefix: one teacher-forced forward over (clip, option) pairs.
    Needs the project's VideoLLM (`tokenize` + `forward` with frames)."""
    import torch

    if not (callable(getattr(model, "tokenize", None)) and callable(getattr(model, "format_prompt", None))):
        raise TypeError(f"--mcq-scoring likelihood needs a VideoLLM model, not {type(model).__name__}")
    tok = model.tokenizer
    n_frames = frames.shape[1]
    seqs, owners, spans = [], [], []
    for i, (instruction, k) in enumerate(zip(instructions, n_options)):
        context = model.format_prompt(instruction) + prefix
        ctx = model.tokenize([context], n_frames)["input_ids"][0].tolist()
        for j in range(k):
            cont = tok(LETTERS[j], add_special_tokens=False)["input_ids"]
            seqs.append(ctx + cont)
            spans.append((len(ctx), len(ctx) + len(cont)))
            owners.append(i)
    width = max(len(s) for s in seqs)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):        # right padding: the scored positions stay where they are
        ids[r, : len(s)] = torch.tensor(s)
        mask[r, : len(s)] = 1
    clip_frames = torch.as_tensor(frames)[torch.tensor(owners)]
    with torch.inference_mode():
        _, logits = model.forward(ids, mask, frames=clip_frames)
    logp = torch.log_softmax(logits.float(), dim=-1).cpu()
    out: list[list[float]] = [[] for _ in instructions]
    for r, (a, b) in enumerate(spans):
        total = sum(float(logp[r, t - 1, ids[r, t]]) for t in range(a, b))
        out[owners[r]].append(total)
    return out


# ---------------------------------------------------------------------------------------------
@dataclass
class AnswerRun:
    path: Path                  # predictions.jsonl
    answered: int = 0
    failed: int = 0             # rows whose video could not be read or whose batch failed
    reused: int = 0             # rows already answered by an earlier run with the same settings
    seconds: float = 0.0        # model time (decode excluded)
    decode_seconds: float = 0.0


def _frame_count(model) -> int:
    processor = getattr(model, "processor", None)
    return int(getattr(processor, "frames", None) or model.config.frames)


def decode(video: Path, model, frames: int | None = None):
    """(N, H, W, 3) uint8 frames of one clip spanning the whole video, in the model's frame geometry
    (as describe asks engine.video for them)."""
    from tarsier.engine.video import ClipOptions, read_clips

    geometry = getattr(getattr(model, "processor", None), "geometry", None)
    size = getattr(geometry, "size", None) or getattr(model, "frame_size", 224)
    options = ClipOptions(scenes="none", min_clip=0.0, max_clip=None, frames=frames or _frame_count(model),
                          frame_size=int(size), geometry=geometry)
    _info, clips = read_clips(video, options)
    if not clips:
        raise ValueError("no decodable video frames")
    return clips[0].frames


def answer_rows(rows: list[BenchRow], model, videos: Path, out: Path, *, batch_size: int = 8,
                max_new_tokens: int | None = None, mcq_scoring: str = "generate", frames: int | None = None,
                overwrite: bool = False, progress: Callable[[int, int], None] | None = None) -> AnswerRun:
    """Answer every row; one JSON record per row appended to OUT/predictions.jsonl as batches finish:
    {"idx", "task", "dataset", "answer" (text after the prefix), "prefix", "model", "settings"}
    (+ "logprobs" with likelihood scoring, + "error" for a row that failed). A rerun with the same
    settings reuses the finished rows."""
    import numpy as np
    import torch

    out.mkdir(parents=True, exist_ok=True)
    path = out / "predictions.jsonl"
    model_id = str(getattr(model, "model_id", getattr(model.config, "name", "model")))
    settings = {"model": model_id, "mcq_scoring": mcq_scoring, "frames": frames or _frame_count(model),
                "max_new_tokens": max_new_tokens}
    done: dict[str, dict] = {}
    if path.is_file() and not overwrite:
        records = list(read_jsonl(path))   # a line torn by a kill is skipped: that row is redone
        if all(rec.get("settings") == settings for rec in records):
            done = {str(rec.get("idx")): rec for rec in records if "error" not in rec}
        else:
            overwrite = True       # answers of another model or settings are never mixed in
    if overwrite and path.is_file():
        path.unlink()
    run = AnswerRun(path=path, reused=sum(r.idx in done for r in rows))
    todo = [r for r in rows if r.idx not in done]
    # one prompt shape per batch: the same prefix, and for likelihood scoring the same task
    todo.sort(key=lambda r: (r.prefix, r.task))
    with path.open("a", encoding="utf-8") as f:
        def write(rec: dict) -> None:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            f.flush()

        finished = run.reused
        if progress:
            progress(finished, len(rows))
        start = 0
        while start < len(todo):
            group = [todo[start]]
            while (len(group) < batch_size and start + len(group) < len(todo)
                   and todo[start + len(group)].prefix == group[0].prefix
                   and todo[start + len(group)].task == group[0].task):
                group.append(todo[start + len(group)])
            start += len(group)
            run_fields = {"model": model_id, "settings": settings}   # in every record
            clips, live = [], []
            t0 = time.perf_counter()
            for r in group:
                try:
                    clips.append(decode(videos / (r.video or ""), model, frames))
                    live.append(r)
                except Exception as e:  # noqa: BLE001 - a bad video fails its row, not the run
                    run.failed += 1
                    write({"idx": r.idx, "task": r.task, "dataset": r.dataset, "error": f"video: {e}", **run_fields})
            run.decode_seconds += time.perf_counter() - t0
            if live:
                t0 = time.perf_counter()
                # one tensor when every clip has the same shape; Tarsier2 keeps each video's aspect
                same = all(c.shape == clips[0].shape for c in clips)
                batch = torch.from_numpy(np.stack(clips)) if same else clips
                try:
                    if mcq_scoring == "likelihood" and live[0].task == "mcq":
                        scores = option_logprobs(model, batch, [r.prompt for r in live], live[0].prefix,
                                                 [len(r.options) for r in live])
                        for r, s in zip(live, scores):
                            best = max(range(len(s)), key=s.__getitem__)
                            write({"idx": r.idx, "task": r.task, "dataset": r.dataset, "answer": LETTERS[best],
                                   "prefix": r.prefix, "logprobs": dict(zip(LETTERS, s)), **run_fields})
                    else:
                        texts = generate_with_prefix(model, batch, [r.prompt for r in live], live[0].prefix,
                                                     max_new_tokens)
                        for r, text in zip(live, texts):
                            write({"idx": r.idx, "task": r.task, "dataset": r.dataset, "answer": text,
                                   "prefix": r.prefix, **run_fields})
                    run.answered += len(live)
                except Exception as e:  # noqa: BLE001 - a failed batch fails its rows, not the run
                    run.failed += len(live)
                    for r in live:
                        write({"idx": r.idx, "task": r.task, "dataset": r.dataset,
                               "error": f"model: {type(e).__name__}: {e}", **run_fields})
                run.seconds += time.perf_counter() - t0
            finished += len(group)
            if progress:
                progress(finished, len(rows))
    return run
