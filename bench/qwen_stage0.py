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


def encoder_cells(model, with_patches: bool = False):
    """uint8 frames (B, S, S, 3), or pairs of consecutive frames (B, 2, S, S, 3) for a processor that packs
    two frames a temporal patch, -> the merged visual tokens (B, cells², LLM width), as the LLM receives
    them; `with_patches`: also the blocks' output before the merger (B, patches, encoder width), in the
    processor's patch order."""
    import torch

    visual = model.hf.model.visual

    def cells(frames_u8) -> torch.Tensor:
        clips = frames_u8.numpy() if frames_u8.dim() == 5 else frames_u8.numpy()[:, None]
        pixels, grid = model.processor.pixels(list(clips))
        out = visual(pixels.to(model.dtype), grid_thw=grid)
        merged = out.pooler_output.view(len(frames_u8), -1, out.pooler_output.shape[-1])
        if with_patches:
            return merged, out.last_hidden_state.view(len(frames_u8), -1, out.last_hidden_state.shape[-1])
        return merged

    return cells


def _kind_maps_job(args: tuple):
    """Worker: per-pixel shape kinds (0 background, 1 + SHAPES index) of the frames `render_scene_frames`
    renders for these scenes (`scene_instants`), drawn where the renderer draws them (`shape_masks`): an
    object covers its pixels once it is more than half faded in."""
    import numpy as np

    from tarsier.trainers.tower import scene_instants
    from tarsier.world.render import frame_state, pixel_grids, shape_masks
    from tarsier.world.vocabulary import SHAPES

    seed, first, count, per_scene, size, gap = args
    grids = pixel_grids(size)
    maps = []
    for plan, t in scene_instants(seed, first, count, per_scene, gap):
        kinds = np.zeros((size, size), np.uint8)
        for o, (y0, y1, x0, x1), mask in shape_masks(frame_state(plan, t), size, grids):
            if o.alpha > 0.5:
                kinds[y0:y1, x0:x1][mask] = 1 + SHAPES.index(o.shape)
        maps.append(kinds)
    return np.stack(maps)


def patch_kinds(seed: int, scenes: int, per_scene: int, size: int, patch: int, merge: int, gap: float = 0.0):
    """(N, patches, 1 + len(SHAPES)) float16: the share of each patch's pixels that each shape kind (or the
    background) covers, patches in the processor's order (merge windows row by row, each window's patches
    row by row), for the frames `render_scene_frames(seed, scenes, per_scene, size, render_size=size, gap=gap)`
    gives."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    import numpy as np

    from tarsier.world.vocabulary import SHAPES

    jobs = [(seed, i, min(64, scenes - i), per_scene, size, gap) for i in range(0, scenes, 64)]
    with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as pool:
        kinds = np.concatenate(list(pool.map(_kind_maps_job, jobs)))
    g, w = size // patch, size // patch // merge
    classes = 1 + len(SHAPES)
    out = np.zeros((len(kinds), g * g, classes), np.float16)
    for i in range(0, len(kinds), 1024):
        onehot = np.eye(classes, dtype=np.float32)[kinds[i:i + 1024]]              # (n, S, S, classes)
        share = onehot.reshape(-1, g, patch, g, patch, classes).mean((2, 4))      # (n, g, g, classes)
        share = share.reshape(-1, w, merge, w, merge, classes).transpose(0, 1, 3, 2, 4, 5)
        out[i:i + 1024] = share.reshape(-1, g * g, classes)
    return out


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


HELDOUT_SEED = 9001   # the benchmark world's seed: with --pairs, held-out pairs are rendered from its scenes


def paired(x, views: int):
    """Rows that come in runs of `views` (a pair's two frames) -> one row per pair."""
    return x if views == 1 else x.reshape(-1, views, *x.shape[1:])


def _direction(d):
    """(..., 2) displacements -> 0 left, 1 right, 2 up, 3 down (the larger component decides)."""
    import torch

    horizontal = d[..., 0].abs() >= d[..., 1].abs()
    return torch.where(horizontal, (d[..., 0] > 0).long(), 2 + (d[..., 1] > 0).long())


def _moving(slots):
    """Identities in both frames (`slots`: the two frames' targets) whose centre moves more than ~3 px."""
    moved = slots[1][..., 1:3] - slots[0][..., 1:3]
    return (slots[0][..., 0] > 0.5) & (slots[1][..., 0] > 0.5) & (moved.abs().amax(-1) > 0.1)


def direction_accuracy(outs, slots, cells: int) -> tuple[float, int]:
    """From the read-out of both frames of held-out pairs (`outs`, `slots`: one per frame): how often the
    dominant direction (left, right, up, down) of each identity's on-screen displacement, read from the
    positions its own cells give in the two frames, is the true one; over identities in both frames that
    move more than about 3 px. Returns (accuracy, identities counted)."""
    from tarsier.trainers.tower import _cell_mask, _Head

    positions = []
    for out, target in zip(outs, slots):
        pred = _Head.split(out)[0]
        positions.append((pred * _cell_mask(target, cells).unsqueeze(-1)).sum(1)[..., 1:3])

    counted = _moving(slots)
    right = _direction(positions[1] - positions[0]) == _direction(slots[1][..., 1:3] - slots[0][..., 1:3])
    n = int(counted.sum())
    return round(float(right[counted].float().mean()) if n else 0.0, 4), n


MOTION_SCALE = 5.0   # screen-unit displacements of a frame's spacing are ~0.1-0.4: scaled to about [-2, 2]


def motion_targets(slots, cells: int):
    """From both frames' targets (B, 2, 35, SLOT): what each identity did between them, (B, 35, 3) change of
    x, y and size (scaled by MOTION_SCALE), and where it is asked (B, cells², 35): in the cell of its centre
    in the first frame, for identities in both frames."""
    from tarsier.trainers.tower import _cell_mask

    first, second = slots[:, 0], slots[:, 1]
    both = ((first[..., 0] > 0.5) & (second[..., 0] > 0.5)).to(first.dtype)
    return (second[..., 1:4] - first[..., 1:4]) * MOTION_SCALE, both.unsqueeze(1) * _cell_mask(first, cells)


def pretrain(init: Path, out: Path, size: int, steps: int, batch: int, lr: float, scenes: int, per_scene: int,
             heldout: Path | None, seed: int = 0, scene_seed: int = 777, distill: float = 0.0, dense: float = 0.0,
             pairs: int = 0, motion: float = 0.0, heldout_scenes: int = 300, log=print) -> dict:
    """`distill` > 0: also regress nano's tower features (`nano_teacher`) from each merged token through a
    linear map, with this weight: a dense target in every cell of every frame, where the read-out's
    presence targets are sparse (a ViT learnt colours from them but barely shapes).
    `dense` > 0: also label every patch (token labelling): a linear map from each patch's feature before
    the merger must give the share of its pixels each shape kind covers (`patch_kinds`), with this weight;
    every patch a shape touches says which kind it is, not only the cell its centre lies in.
    `pairs` N > 0: the processor packs two consecutive frames into each temporal patch (upstream's
    use_multi_images_for_video false, Qwen2-VL's own video packing) instead of one frame twice, and the
    encoder trains on pairs of instants spaced as consecutive frames of an N-frame clip: each target above
    is asked for both frames from the same tokens, so what changed between the two is in them. The folder
    records the packing, so stages 1 and 2 and describe feed pairs too. Held-out metrics then come from
    pairs rendered from `heldout_scenes` of the benchmark world's scenes (`HELDOUT_SEED`), two pairs each,
    `next_*` for the second frame.
    `motion` > 0 (with `pairs`): also regress, in the cell of each identity's centre, how far it moved and
    grew between the two frames (`motion_targets`), with this weight: the change itself, not two positions
    whose errors are as large as a frame's motion."""
    import torch

    import tarsier
    from tarsier.trainers.schedule import lr_lambda
    from tarsier.trainers.tower import (
        IDENTITIES,
        _Head,
        cell_loss,
        evaluate_tower,
        load_world_frames,
        render_scene_frames,
    )
    from tarsier.world.vocabulary import SHAPES

    done = out / "stage0.json"
    if done.is_file():
        log(f"{out} already holds a stage-0 encoder")
        return json.loads(done.read_text())
    if pairs == 1:
        raise ValueError("--pairs N needs clips of at least 2 frames")
    if motion and not pairs:
        raise ValueError("--motion needs --pairs: a single frame shows no motion")
    torch.manual_seed(seed)
    model = tarsier.load(str(init), device="cpu")
    views, gap = (2, 1.0 / (pairs - 1)) if pairs else (1, 0.0)
    if pairs:
        model.processor.set_duplicate_frames(False)
    visual = model.hf.model.visual
    model.hf.requires_grad_(False)
    visual.requires_grad_(True)
    cells_of = encoder_cells(model)
    cells_and_patches = encoder_cells(model, with_patches=True)
    width = model.hf.config.text_config.hidden_size
    vcfg = model.hf.config.vision_config
    head = torch.nn.Linear(width, _Head.size * views)    # each frame of the input its own read-out
    student = torch.nn.Linear(width, 512 * views)         # merged token -> the teacher's feature (with `distill`)
    labeller = torch.nn.Linear(vcfg.embed_dim, (1 + len(SHAPES)) * views)   # patch -> its kind shares (`dense`)
    mover = torch.nn.Linear(width, len(IDENTITIES) * 3)   # merged token -> each identity's change (`motion`)

    def read(view: int):
        return lambda tokens: head(tokens).chunk(views, -1)[view]

    t0 = time.perf_counter()
    data = {k: torch.from_numpy(paired(v, views)) for k, v in
            render_scene_frames(scene_seed, scenes, per_scene, size, render_size=size, gap=gap).items()}
    n = len(data["frames"])
    teacher_maps = None
    if distill:
        teacher, teacher_size = nano_teacher()
        # the same scenes and instants, rendered as the teacher was trained (128 px, resized to 64)
        small = torch.from_numpy(render_scene_frames(scene_seed, scenes, per_scene, teacher_size, gap=gap)["frames"])
        teacher_maps = torch.cat([teacher(small[i:i + 512]) for i in range(0, len(small), 512)])
        mu, sd = teacher_maps.mean((0, 1)), teacher_maps.std((0, 1)).clamp(min=1e-6)
        teacher_maps = paired((teacher_maps - mu) / sd, views)
        log(f"stage 0: teacher features {tuple(teacher_maps.shape)}")
    kinds = None
    if dense:
        kinds = paired(torch.from_numpy(patch_kinds(scene_seed, scenes, per_scene, size, vcfg.patch_size,
                                                    vcfg.spatial_merge_size, gap)), views)
        log(f"stage 0: patch kind shares {tuple(kinds.shape)}")
    probe = cells_of(data["frames"][:1])
    cells = int(round(probe.shape[1] ** 0.5))
    if teacher_maps is not None and teacher_maps.shape[-2] != probe.shape[1]:
        raise ValueError(f"--distill needs the teacher's {teacher_maps.shape[-2]} cells a frame; {size}-px frames give "
                         f"{probe.shape[1]} merged tokens (112 px at patch 14 and merge 2 give 16)")
    log(f"stage 0: {n} labelled {'pairs of frames' if pairs else 'frames'} in {time.perf_counter() - t0:.1f}s; "
        f"{probe.shape[1]} tokens each")

    def frame(x, view: int):
        return x if views == 1 else x[:, view]

    params = list(visual.parameters()) + list(head.parameters()) + (list(student.parameters()) if distill else []) \
        + (list(labeller.parameters()) if dense else []) + (list(mover.parameters()) if motion else [])
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(min(50, steps // 10 + 1), steps, 0.1))
    gen = torch.Generator().manual_seed(seed)
    visual.train()
    t0 = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(n, (batch,), generator=gen)
        if dense:
            merged, patches = cells_and_patches(data["frames"][idx])
        else:
            merged = cells_of(data["frames"][idx])
        loss = sum(cell_loss(out, frame(data["slots"][idx], v), frame(data["background"][idx], v),
                             frame(data["camera"][idx], v), cells)
                   for v, out in enumerate(head(merged).chunk(views, -1))) / views
        if distill:
            loss = loss + distill * sum(torch.nn.functional.mse_loss(out, frame(teacher_maps[idx], v))
                                        for v, out in enumerate(student(merged).chunk(views, -1))) / views
        if dense:
            shares = kinds[idx].float()
            loss = loss - dense * sum((frame(shares, v) * torch.log_softmax(out, -1)).sum(-1).mean()
                                      for v, out in enumerate(labeller(patches).chunk(views, -1))) / views
        if motion:
            change, asked = motion_targets(data["slots"][idx], cells)
            error = ((mover(merged).view(*asked.shape, 3) - change[:, None]) ** 2).mean(-1)
            loss = loss + motion * (error * asked).sum() / asked.sum().clamp(min=1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"stage 0 step {step + 1}/{steps} loss {loss.item():.4f} "
                f"({(step + 1) * batch * views / (time.perf_counter() - t0):.0f} frames/s)")
    visual.eval()
    metrics = {"train_frames": n * views, "seconds": round(time.perf_counter() - t0, 1), "cells": cells * cells}

    def labelled_for(labelled: dict, view: int = 0) -> dict:
        """The encoder's inputs with one frame's labels (of a pair's: the first or the second)."""
        return {k: v if k == "frames" else frame(v, view) for k, v in labelled.items()}

    # the same read-out on frames it trained on: tells a slow learner (both low) from one that memorises
    seen = {k: v[:2000] for k, v in data.items()}
    metrics["train_sample"] = {k: v for k, v in evaluate_tower(visual, read(0), cells_of, labelled_for(seen)).items()
                               if "frames" not in k}
    if pairs:
        held = {k: torch.from_numpy(paired(v, views)) for k, v in
                render_scene_frames(HELDOUT_SEED, heldout_scenes, 2, size, render_size=size, gap=gap).items()}
        metrics.update(evaluate_tower(visual, read(0), cells_of, labelled_for(held, 0)))
        metrics.update({f"next_{k}": v for k, v in evaluate_tower(visual, read(1), cells_of, labelled_for(held, 1)).items()
                        if "frames" not in k})
        with torch.inference_mode():
            tokens = torch.cat([cells_of(held["frames"][i:i + 256]) for i in range(0, len(held["frames"]), 256)])
            outs = head(tokens)
        pair_slots = (held["slots"][:, 0], held["slots"][:, 1])
        metrics["direction_accuracy"], metrics["direction_moves"] = direction_accuracy(outs.chunk(2, -1), pair_slots,
                                                                                       cells)
        if motion:   # the change head's own answer, from the cell of each mover's first-frame centre
            change, asked = motion_targets(held["slots"], cells)
            with torch.inference_mode():
                said = (mover(tokens).view(*asked.shape, 3) * asked.unsqueeze(-1)).sum(1)
            counted = _moving(pair_slots)
            metrics["motion_direction_accuracy"] = round(float(
                (_direction(said[..., :2]) == _direction(change[..., :2]))[counted].float().mean()), 4)
            grew = (asked.sum(1) > 0) & (change[..., 2].abs() > 0.5)   # size changed by more than ~0.5 px
            metrics["motion_growth_sign_accuracy"] = round(float(
                ((said[..., 2] > 0) == (change[..., 2] > 0))[grew].float().mean()), 4) if grew.any() else None
        log("stage 0 held-out pairs: " + ", ".join(f"{k} {v}" for k, v in metrics.items()))
    elif heldout:
        held = {k: torch.from_numpy(v) for k, v in load_world_frames(heldout, size, 100, 3).items()}
        metrics.update(evaluate_tower(visual, head, cells_of, held))
        log("stage 0 held-out: " + ", ".join(f"{k} {v}" for k, v in metrics.items()))
    model.save(out)
    summary = {"init": str(init), "metrics": metrics, "settings": {
        "size": size, "steps": steps, "batch": batch, "lr": lr, "scenes": scenes, "per_scene": per_scene,
        "seed": seed, "scene_seed": scene_seed, "distill": distill, "dense": dense, "pairs": pairs,
        "motion": motion}}
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
    p.add_argument("--scene-seed", type=int, default=777, help="plans the rendered scenes; another seed gives a "
                   "continued run (--init a stage-0 folder) fresh frames")
    p.add_argument("--heldout", type=Path, help="a `tarsier synth` folder of another seed for held-out metrics "
                   "(with --pairs: pairs rendered from the seed-9001 benchmark's scenes instead)")
    p.add_argument("--dense", type=float, default=0.0, help="weight of the per-patch shape-kind labels (0: none)")
    p.add_argument("--distill", type=float, default=0.0, help="weight of the regression onto nano's tower features "
                   "(0: the read-out's loss alone)")
    p.add_argument("--pairs", type=int, default=0, metavar="N", help="pack two consecutive frames into each "
                   "temporal patch (use_multi_images_for_video false) and train on pairs spaced as an N-frame clip's "
                   "frames; the folder records the packing (0: one frame twice, Tarsier2's packing)")
    p.add_argument("--motion", type=float, default=0.0, help="with --pairs: weight of the regression of each "
                   "identity's change between the two frames (0: none)")
    a = p.parse_args()
    summary = pretrain(a.init, a.out, a.size, a.steps, a.batch, a.lr, a.scenes, a.per_scene, a.heldout,
                       scene_seed=a.scene_seed, distill=a.distill, dense=a.dense, pairs=a.pairs,
                       motion=a.motion)
    print(json.dumps(summary["metrics"]))


if __name__ == "__main__":
    main()
