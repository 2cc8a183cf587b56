"""A Tarsier2 (Qwen2-VL layout) training step: the LM head over every position vs only where an answer
token is predicted (`forward(..., labelled_only=True)`, what `tarsier train` and `tarsier train dpo` ask for).

Qwen2-VL's vocabulary has 152,064 rows; a clip of 8 frames is a few hundred visual tokens and the answer a few
dozen, so the head over the whole sequence is mostly spent on positions the loss ignores. The model is
bench/qwen_learns.py's (a 40 M-parameter Qwen2-VL-layout checkpoint written by tests/published_fixtures.py);
the two forms alternate step by step on the same batch, so the ratio holds on a busy machine.

    python bench/qwen_step.py [--steps 6] [--batch 8] [--frames 8]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=6, help="timed steps of each form (after one warm-up each)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--answer-words", type=int, default=40, help="length of each answer (a fine description)")
    a = p.parse_args()
    import published_fixtures as pf
    from qwen_learns import model_settings

    from tarsier.engine import checkpoint as ckpt

    with tempfile.TemporaryDirectory() as tmp:
        text, vision = model_settings(128, 4, 64, 2)
        model = ckpt.load(str(pf.write_qwen2_vl(Path(tmp) / "init", text=text, vision=vision)), device="cpu")
    model.hf.float().train()
    spec = model.processor.frame_spec(128, 128, a.frames)
    g = torch.Generator().manual_seed(0)
    clips = [torch.randint(0, 256, (spec.frames, spec.height, spec.width, 3), generator=g, dtype=torch.uint8).numpy()
             for _ in range(a.batch)]
    answer = " ".join(["the red circle moves left"] * (a.answer_words // 5))
    batch = model.processor.inputs(clips, ["Describe the video in detail."] * a.batch, answers=[answer] * a.batch)
    labelled = int((batch["labels"][:, 1:] != -100).sum())
    params = [q for q in model.hf.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    seconds = {False: [], True: []}
    for step in range(a.steps + 1):
        for labelled_only in (False, True):
            t = time.process_time()
            loss, _ = model(**batch, labelled_only=labelled_only)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if step:   # the first step of each form warms allocators and kernels
                seconds[labelled_only].append(time.process_time() - t)
    full, picked = (sum(seconds[k]) / len(seconds[k]) for k in (False, True))
    print(f"batch {a.batch} x {batch['input_ids'].shape[1]} tokens ({labelled} labelled), {a.frames} frames, "
          f"{torch.get_num_threads()} threads; CPU s per step (mean of {a.steps})")
    print(f"  head at every position: {full:.3f}")
    print(f"  head at labelled only:  {picked:.3f}")
    print(f"  speed-up: {full / picked:.2f}x")


if __name__ == "__main__":
    main()
