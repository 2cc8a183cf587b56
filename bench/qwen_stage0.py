"""Stage 0 for a Qwen2-VL-layout checkpoint: pretrain its vision encoder on the synthetic world's frames.

Every real Tarsier2 starts from Qwen2-VL's pretrained vision encoder; none loads offline, and one trained
from scratch through the caption loss alone learnt the background colour at best (BENCHMARKS.md, "Does a
published architecture learn from the video?"). So, as nano's tower was (trainers/tower.py), the encoder is
pretrained once with the world's exact ground truth: its merged tokens (one per 2x2 patch cell, the tokens
the LLM reads) go through a linear head that must tell which of the world's 35 colour-shape identities has
its centre in that cell, and its position, size and orientation; every cell also reads the background and
the camera offset (`trainers.tower.cell_loss`). Frames are fed exactly as describe feeds them: the
checkpoint's own processor (every frame twice, Qwen2-VL's patch order and normalisation), one frame a video.

The patch embedding, the vision blocks and the merger train; the LLM does not. The result is written with
the model interface's `save`: a standard transformers Qwen2-VL folder that `tarsier train stage1 --init`
reads, plus `stage0.json` (settings and held-out metrics).

    python bench/qwen_stage0.py --init INIT --out OUT --size 112 --heldout BENCH_WORLD
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def encoder_cells(model):
    """uint8 frames (B, S, S, 3) -> the merged visual tokens (B, cells², LLM width), as the LLM receives them."""
    import torch

    visual = model.hf.model.visual

    def cells(frames_u8) -> torch.Tensor:
        pixels, grid = model.processor.pixels([f[None] for f in frames_u8.numpy()])
        merged = visual(pixels.to(model.dtype), grid_thw=grid).pooler_output
        return merged.view(len(frames_u8), -1, merged.shape[-1])

    return cells


def nano_teacher():
    """nano's shipped tower (a CLIP-style ResNet pretrained on the world's frames: held-out shape recall 0.97)
    as a feature teacher: uint8 frames (B, 64, 64, 3) -> its 4 x 4 feature map (B, 16, 512), the grid a
    112-px frame's merged Qwen2-VL tokens cover, row by row as they are."""
    import torch

    from tarsier.trainers.tower import _pooler, load_saved_tower, shipped_tower

    tower, vcfg = load_saved_tower(shipped_tower("nano"))
    tower.requires_grad_(False)
    unpooled = _pooler(tower, vcfg, pool=1)

    def features(frames_u8) -> torch.Tensor:
        with torch.no_grad():
            return unpooled(frames_u8)

    return features, vcfg.image_size


def pretrain(init: Path, out: Path, size: int, steps: int, batch: int, lr: float, scenes: int, per_scene: int,
             heldout: Path | None, seed: int = 0, scene_seed: int = 777, distill: float = 0.0, log=print) -> dict:
    """`distill` > 0: also regress nano's tower features (`nano_teacher`) from each merged token through a
    linear map, with this weight: a dense target in every cell of every frame, where the read-out's
    presence targets are sparse (a ViT learnt colours from them but barely shapes)."""
    import torch

    import tarsier
    from tarsier.trainers.schedule import lr_lambda
    from tarsier.trainers.tower import _Head, cell_loss, evaluate_tower, load_world_frames, render_scene_frames

    done = out / "stage0.json"
    if done.is_file():
        log(f"{out} already holds a stage-0 encoder")
        return json.loads(done.read_text())
    torch.manual_seed(seed)
    model = tarsier.load(str(init), device="cpu")
    visual = model.hf.model.visual
    model.hf.requires_grad_(False)
    visual.requires_grad_(True)
    cells_of = encoder_cells(model)
    width = model.hf.config.text_config.hidden_size
    head = torch.nn.Linear(width, _Head.size)
    student = torch.nn.Linear(width, 512)   # merged token -> the teacher's feature (used with `distill`)

    t0 = time.perf_counter()
    data = {k: torch.from_numpy(v) for k, v in
            render_scene_frames(scene_seed, scenes, per_scene, size, render_size=size).items()}
    n = len(data["frames"])
    teacher_maps = None
    if distill:
        teacher, teacher_size = nano_teacher()
        # the same scenes and instants, rendered as the teacher was trained (128 px, resized to 64)
        small = torch.from_numpy(render_scene_frames(scene_seed, scenes, per_scene, teacher_size)["frames"])
        teacher_maps = torch.cat([teacher(small[i:i + 512]) for i in range(0, n, 512)])
        mu, sd = teacher_maps.mean((0, 1)), teacher_maps.std((0, 1)).clamp(min=1e-6)
        teacher_maps = (teacher_maps - mu) / sd
        log(f"stage 0: teacher features {tuple(teacher_maps.shape)}")
    probe = cells_of(data["frames"][:1])
    cells = int(round(probe.shape[1] ** 0.5))
    if teacher_maps is not None and teacher_maps.shape[1] != probe.shape[1]:
        raise ValueError(f"--distill needs the teacher's {teacher_maps.shape[1]} cells a frame; {size}-px frames give "
                         f"{probe.shape[1]} merged tokens (112 px at patch 14 and merge 2 give 16)")
    log(f"stage 0: {n} labelled frames in {time.perf_counter() - t0:.1f}s; {probe.shape[1]} tokens a frame")

    params = list(visual.parameters()) + list(head.parameters()) + (list(student.parameters()) if distill else [])
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(min(50, steps // 10 + 1), steps, 0.1))
    gen = torch.Generator().manual_seed(seed)
    visual.train()
    t0 = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(n, (batch,), generator=gen)
        merged = cells_of(data["frames"][idx])
        loss = cell_loss(head(merged), data["slots"][idx], data["background"][idx], data["camera"][idx], cells)
        if distill:
            loss = loss + distill * torch.nn.functional.mse_loss(student(merged), teacher_maps[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"stage 0 step {step + 1}/{steps} loss {loss.item():.4f} "
                f"({(step + 1) * batch / (time.perf_counter() - t0):.0f} frames/s)")
    visual.eval()
    metrics = {"train_frames": n, "seconds": round(time.perf_counter() - t0, 1), "cells": cells * cells}
    if heldout:
        held = {k: torch.from_numpy(v) for k, v in load_world_frames(heldout, size, 100, 3).items()}
        metrics.update(evaluate_tower(visual, head, cells_of, held))
        log("stage 0 held-out: " + ", ".join(f"{k} {v}" for k, v in metrics.items()))
    model.save(out)
    summary = {"init": str(init), "metrics": metrics, "settings": {
        "size": size, "steps": steps, "batch": batch, "lr": lr, "scenes": scenes, "per_scene": per_scene,
        "seed": seed, "scene_seed": scene_seed, "distill": distill}}
    done.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")   # last: the folder is complete
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--init", type=Path, required=True, help="a Qwen2-VL-layout checkpoint folder")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size", type=int, default=112, help="the world's frame size")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--scenes", type=int, default=8000)
    p.add_argument("--per-scene", type=int, default=3)
    p.add_argument("--heldout", type=Path, help="a `tarsier synth` folder of another seed for held-out metrics")
    p.add_argument("--distill", type=float, default=0.0, help="weight of the regression onto nano's tower features "
                   "(0: the read-out's loss alone)")
    a = p.parse_args()
    summary = pretrain(a.init, a.out, a.size, a.steps, a.batch, a.lr, a.scenes, a.per_scene, a.heldout,
                       distill=a.distill)
    print(json.dumps(summary["metrics"]))


if __name__ == "__main__":
    main()
