"""Fine-tuning cost of a real-shaped Tarsier2-7B: LoRA and full, with and without gradient checkpointing.

A random-initialised Qwen2-VL-7B (bench/published.py builds it on the device in bf16; no weights are
downloaded) is prepared the way `tarsier train` prepares a Tarsier2 checkpoint (trainers/finetune.py:
vision blocks frozen, merger and LLM trained in full or LoRA r=16 on the LLM's projections, trained weights
in float32 under bf16 autocast, fused AdamW, the LM head only at the answer's positions) and fed clips of
the geometry upstream gives a 1280x720 video (16 frames, 9,216 visual tokens) with a 256-token answer.
For each setting: step time, tokens/s and peak GPU memory at batch 1, then batches doubled until one does
not fit (the largest that fits is the last row printed for that setting).

    python bench/finetune_gpu.py                  # needs a CUDA GPU
    python bench/finetune_gpu.py --tiny --device cpu --max-batch 2   # the same code path on tiny shapes

Without a GPU (and without --tiny) it prints "not measured (no GPU)" rows.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SETTINGS = [("lora", False), ("lora", True), ("full", False), ("full", True)]


def prepare(model, mode: str, checkpointing: bool, device):
    """The trainer's preparation of a Tarsier2 model (trainers/train.py), on `device`."""
    from tarsier.trainers.finetune import (
        add_qwen_lora,
        enable_gradient_checkpointing,
        fp32_master_weights,
        freeze,
        lora_targets,
    )
    from tarsier.trainers.train import adamw

    freeze(model, train_vision=False)
    if mode == "lora":
        add_qwen_lora(model, 16, 32, lora_targets(model, None))
    if device.type != "cpu":
        fp32_master_weights(model)
    if checkpointing:
        enable_gradient_checkpointing(model)
    model.train()
    return adamw([p for p in model.parameters() if p.requires_grad], 1e-5, 0.0)


def step_inputs(model, batch: int, answer_tokens: int, source) -> dict:
    import torch

    spec = model.processor.frame_spec(*source)
    clips = list(torch.randint(0, 256, (batch, spec.frames, spec.height, spec.width, 3), dtype=torch.uint8).numpy())
    answer = " ".join(["a"] * answer_tokens)   # one BPE token a word with the bench tokenizer
    return model.processor.inputs(clips, ["Describe the video in detail."] * batch, answers=[answer] * batch)


def measure(model, optimizer, batch: int, answer_tokens: int, device, source, steps: int) -> tuple[float, float, float]:
    """(seconds a step, tokens/s, peak GiB) over `steps` optimizer steps after one warm-up step."""
    import torch

    inputs = step_inputs(model, batch, answer_tokens, source)
    tokens = int(inputs["attention_mask"].sum())
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()

    def one_step():
        with autocast:
            loss, _ = model(**inputs, labelled_only=True)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    one_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(steps):
        one_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - t) / steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return seconds, tokens / seconds, peak


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny shapes (smoke test of the code path, any device)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--answer-tokens", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args(argv)
    import torch
    from published import build_tarsier2

    print("| Tarsier2-7B shapes (random init) | gradient checkpointing | batch | s/step | tokens/s | peak GPU memory |")
    print("|---|---|---|---|---|---|")
    if not args.tiny and not torch.cuda.is_available():
        for mode, ckpt in SETTINGS:
            for b in ("1", "largest that fits"):
                print(f"| {mode} | {'on' if ckpt else 'off'} | {b} | not measured (no GPU) | not measured (no GPU) | "
                      "not measured (no GPU) |")
        return 0
    device = torch.device(args.device if torch.cuda.is_available() or args.device == "cpu" else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    source = (160, 90) if args.tiny else (1280, 720)
    for mode, ckpt in SETTINGS:
        model = build_tarsier2(args.tiny, device, dtype)
        optimizer = prepare(model, mode, ckpt, device)
        batch = 1
        while batch <= args.max_batch:
            try:
                seconds, rate, peak = measure(model, optimizer, batch, args.answer_tokens, device, source, args.steps)
            except torch.cuda.OutOfMemoryError:
                print(f"| {mode} | {'on' if ckpt else 'off'} | {batch} | out of memory | | |", flush=True)
                break
            mem = "n/a (CPU)" if peak != peak else f"{peak:.1f} GiB"
            print(f"| {mode}{' (tiny)' if args.tiny else ''} | {'on' if ckpt else 'off'} | {batch} | {seconds:.2f} | "
                  f"{rate:,.0f} | {mem} |", flush=True)
            batch *= 2
        del model, optimizer
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
