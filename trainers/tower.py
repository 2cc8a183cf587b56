"""Stage 0: pretrain a small vision tower on the synthetic world's frames, then freeze it.

The paper freezes a pretrained CLIP tower. nano has no pretrained tower that loads offline, and a
frozen random one carries too little about which shapes are where for a small LLM to learn from in
minutes (linear probes on it did not beat the majority class on colour presence). So, standing in
for CLIP's pretraining, we train the tower once with the synthetic world's exact ground truth. The
patch features are pooled into cells exactly as the projector pools them (`spatial_pool`), and a
linear head on each cell must read, for each of the world's 35 colour-shape identities whose centre
lies in that cell, that it is there and its position, size and orientation; every cell also reads
the background and the camera offset. Stage 1 and 2 then load the frozen tower with `--vision-init`.

nano's tower is a small CLIP-style ResNet (open_clip's ModifiedResNet, CLIP RN50's layout), not a
ViT: at 64 px the shapes are 10-13 px across, and in the same 1,000 steps a ViT learned colours but
barely shapes (shape recall 0.29, whatever its depth, learning rate or patch size), where the ResNet
reached 0.87 (BENCHMARKS.md).

Labels come from `tarsier.world.render.frame_state`, the function the renderer draws from, and frames
are decoded from the rendered videos with the describe pipeline's resize, so the tower learns
from exactly what it will see at inference.

OUT layout:
    tower.safetensors    the tower's weights (keys as in VideoLLM.vision)
    head.safetensors     the linear read-out it was trained with, so its metrics can be checked again
    tower.json           vision config, held-out metrics, settings

nano ships such a tower (engine/presets/towers/nano, made by the command in its tower.json), as a
real model ships its pretrained CLIP weights: a fresh nano starts from it, and `tarsier demo` spends
its minutes on stages 1 and 2 unless asked to redo stage 0 (`--train-tower`).
"""
from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tarsier.common.files import atomic_write, read_jsonl, save_safetensors
from tarsier.world.plan import CUTS_PROB, PAN_PROB, plan_video, replay_plan
from tarsier.world.render import frame_state, render_frame
from tarsier.world.vocabulary import BACKGROUNDS, COLOURS, SHAPES

IDENTITIES = [(c, s) for c in COLOURS for s in SHAPES]
SLOT = 6                     # presence, x, y, size, cos and sin of the angle modulo the shape's symmetry
POS_WEIGHT = 8.0              # few of the 35 identities are on screen at once
SYMMETRY = {"circle": 0, "square": 4, "triangle": 3, "star": 5, "hexagon": 6}
_RGB = np.array(list(COLOURS.values()), np.float32)
_BACKGROUNDS = list(BACKGROUNDS)


def frame_targets(plan: dict, t: float) -> tuple[np.ndarray, int, np.ndarray]:
    """(slots (35, 6), background index, camera offset (2,)) of the scene at time t."""
    state = frame_state(plan, t)
    cx, cy = state.camera
    slots = np.zeros((len(IDENTITIES), SLOT), np.float32)
    for s in state.objects:
        x, y, r, ang, col, alpha = s.x, s.y, s.r, s.angle, s.rgb, s.alpha
        if alpha <= 0.5:   # half faded in or out: the description calls it neither present nor absent
            continue
        colour = int(((_RGB - np.asarray(col, np.float32)) ** 2).sum(1).argmin())
        k = colour * len(SHAPES) + SHAPES.index(s.shape)
        sym = SYMMETRY[s.shape]
        # screen coordinates, scaled to about [-2, 2] so no target dominates the loss
        slots[k] = [1.0, (x - cx) * 4 - 2, (y - cy) * 4 - 2, r * 20 - 2,
                    math.cos(sym * ang) if sym else 0.0, math.sin(sym * ang) if sym else 0.0]
    return slots, _BACKGROUNDS.index(state.shot["background"]), np.array([cx, cy], np.float32) * 10


def _cell_mask(slots, cells: int):
    """(N, 35, SLOT) targets -> (N, cells², 35): 1 where an identity's centre lies in that cell of a
    cells x cells grid over the screen (targets hold screen positions scaled to [-2, 2])."""
    import torch

    xy = ((slots[..., 1:3] + 2) / 4 * cells).long().clamp(0, cells - 1)
    cell = xy[..., 1] * cells + xy[..., 0]
    return torch.nn.functional.one_hot(cell, cells * cells).transpose(1, 2).to(slots.dtype)


class _Labelled:
    """Frames and their labels, gathered in a worker and shipped back as four arrays."""

    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []
        self.targets: list[tuple] = []

    def add(self, frame, size: int, plan: dict, t: float) -> None:
        """`frame`: a PyAV VideoFrame, resized as the describe pipeline resizes (AREA)."""
        self.frames.append(frame.reformat(width=size, height=size, format="rgb24", interpolation="AREA").to_ndarray())
        self.targets.append(frame_targets(plan, t))

    def arrays(self) -> tuple[np.ndarray, ...]:
        slots, bgs, cams = zip(*self.targets)
        return np.stack(self.frames), np.stack(slots), np.array(bgs, np.int64), np.stack(cams)


def _gather(job, jobs: list[tuple], workers: int) -> dict[str, np.ndarray]:
    workers = workers or min(4, os.cpu_count() or 1)
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            parts = list(pool.map(job, jobs))
    else:
        parts = [job(j) for j in jobs]
    keys = ("frames", "slots", "background", "camera")
    return {k: np.concatenate([p[i] for p in parts]) for i, k in enumerate(keys)}


def _video_job(args: tuple) -> tuple[np.ndarray, ...]:
    """Worker: decode one world video (every `every`-th frame) and label each kept frame."""
    import av

    truth, folder, size, every = args
    plan = replay_plan(truth)
    out = _Labelled()
    with av.open(str(Path(folder) / truth["video_file"])) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        for i, frame in enumerate(container.decode(stream)):
            if i % every == 0:
                out.add(frame, size, plan, float(frame.time or 0.0))
    return out.arrays()


def load_world_frames(world: Path, size: int, videos: int | None = None, every: int = 2,
                      workers: int = 0) -> dict[str, np.ndarray]:
    """Decoded, labelled frames of the first `videos` videos of a `tarsier synth` folder."""
    world = Path(world)
    truth_file = world / "truth.jsonl"
    if not truth_file.is_file():
        raise ValueError(f"{world} is not a `tarsier synth` folder (no truth.jsonl)")
    truths = list(read_jsonl(truth_file, strict=True))
    truths = truths[:videos] if videos else truths
    return _gather(_video_job, [(t, str(world), size, every) for t in truths], workers)


def _scene_job(args: tuple) -> tuple[np.ndarray, ...]:
    """Worker: plan scenes as the world does and render a few random instants of each, through the
    same colour subsampling (yuv420p) and AREA resize as encoded-then-decoded videos."""

    import av

    seed, first, count, per_scene, render_size, size, gap = args
    out = _Labelled()
    for plan, t in scene_instants(seed, first, count, per_scene, gap):
        img = render_frame(frame_state(plan, t), render_size)
        out.add(av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p"), size, plan, t)
    return out.arrays()


def scene_instants(seed: int, first: int, count: int, per_scene: int, gap: float = 0.0):
    """(plan, t) of the frames `render_scene_frames` renders for scenes first .. first + count - 1: each scene
    planned as the world plans it, `per_scene` random instants of it. `gap` > 0: each instant t is followed
    by t + gap x the scene's duration (the spacing of consecutive frames a clip is sampled with), so the
    frames come in pairs."""
    import random

    for index in range(first, first + count):
        plan = plan_video(seed, index, CUTS_PROB, PAN_PROB)
        rng = random.Random(f"{seed}:{index}:tower")
        for _ in range(per_scene):
            if not gap:
                yield plan, rng.uniform(0.0, plan["duration"])
                continue
            step = gap * plan["duration"]
            t = rng.uniform(0.0, plan["duration"] - step)
            yield plan, t
            yield plan, t + step


def render_scene_frames(seed: int, scenes: int, per_scene: int, size: int, render_size: int = 128,
                        workers: int = 0, gap: float = 0.0) -> dict[str, np.ndarray]:
    """Labelled frames of `scenes` freshly planned scenes (never the training videos' own), so the
    tower sees a new arrangement in nearly every frame instead of memorising a few hundred videos.
    `gap`: pairs of frames (`scene_instants`), each pair's two in a row."""
    chunk = 64
    jobs = [(seed, i, min(chunk, scenes - i), per_scene, render_size, size, gap) for i in range(0, scenes, chunk)]
    return _gather(_scene_job, jobs, workers)


@dataclass
class TowerArgs:
    out: str                        # where tower.safetensors + tower.json go
    init: str = "nano"              # preset whose vision config the tower takes
    heldout: str | None = None      # another synth folder (another seed) for the held-out metrics
    steps: int = 1000
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 30
    weight_decay: float = 0.01
    scenes: int = 10000             # freshly planned scenes to render frames from
    per_scene: int = 3              # random instants rendered per scene
    scene_seed: int = 777           # plans scenes with a seed of its own, apart from training and benchmark data
    seed: int = 0
    workers: int = 0


class _Head:
    """Names the slices of the linear read-out, so training and evaluation agree on them."""
    n_slots = len(IDENTITIES) * SLOT
    n_bg = len(_BACKGROUNDS)
    n_parts = len(COLOURS) + len(SHAPES)
    size = n_slots + n_bg + 2 + n_parts

    @classmethod
    def split(cls, out):
        """(..., size) -> slots (..., 35, SLOT), background logits (..., 5), camera (..., 2)."""
        slots = out[..., :cls.n_slots].reshape(*out.shape[:-1], len(IDENTITIES), SLOT)
        rest = out[..., cls.n_slots:]
        return slots, rest[..., :cls.n_bg], rest[..., cls.n_bg:cls.n_bg + 2]

    @classmethod
    def parts(cls, out):
        """Logits of 'some shape of this colour' (7) and 'some shape of this kind' (5) being there."""
        return out[..., cls.size - cls.n_parts:]

    @staticmethod
    def part_targets(present):
        """(..., 35) identity presence -> (..., 12): some shape of each colour, some shape of each kind."""
        import torch

        grid = present.unflatten(-1, (len(COLOURS), len(SHAPES)))
        return torch.cat([grid.amax(-1), grid.amax(-2)], dim=-1)


def cell_loss(out, slots, bg, cam, cells: int):
    """The read-out's loss: `out` (B, cells², _Head.size) from a linear head on each cell's features,
    against a frame's targets (`frame_targets`, batched). Any encoder whose features come in a
    cells x cells grid trains with it (nano's tower; bench/qwen_stage0.py's Qwen2-VL encoder)."""
    import torch
    import torch.nn.functional as F

    pred_slots, pred_bg, pred_cam = _Head.split(out)
    # each cell answers for the identities whose centre lies in it; every cell sees the background
    present = slots[..., 0].unsqueeze(1) * _cell_mask(slots, cells)            # (B, cells², 35)
    presence = F.binary_cross_entropy_with_logits(pred_slots[..., 0], present,
                                                  pos_weight=torch.tensor(POS_WEIGHT))
    # colour and kind on their own as well: every triangle teaches "triangle", whatever its colour,
    # five and seven times as often as its one identity does (shape is what the tower learns last)
    presence = presence + F.binary_cross_entropy_with_logits(_Head.parts(out), _Head.part_targets(present),
                                                             pos_weight=torch.tensor(POS_WEIGHT / 3))
    attr = ((pred_slots[..., 1:] - slots[:, None, :, 1:]) ** 2).mean(-1)
    attr = (attr * present).sum() / present.sum().clamp(min=1.0)
    cells_bg = bg[:, None].expand(-1, cells * cells)
    cells_cam = cam[:, None].expand(-1, cells * cells, -1)
    return presence * 3 + attr + F.cross_entropy(pred_bg.flatten(0, 1), cells_bg.flatten()) \
        + F.mse_loss(pred_cam, cells_cam)


def _pooler(tower, vcfg, pool: int):
    """uint8 frames (B, S, S, 3) -> (B, cells², Dv): the normalisation, block and pooling of
    VideoLLM.encode_frames + project, so the head reads exactly what the projector will."""
    import torch

    from tarsier.engine.model import pool_patches, tower_features

    mean = torch.tensor(vcfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(vcfg.std).view(1, 3, 1, 1)

    def pooled(frames_u8: torch.Tensor) -> torch.Tensor:
        x = frames_u8.permute(0, 3, 1, 2).float().div(255.0)
        return pool_patches(tower_features(tower, vcfg, (x - mean) / std), pool)

    return pooled


def pretrain_tower(args: TowerArgs, log: Callable[[str], None] = print, config_overrides: dict | None = None) -> dict:
    """Train the tower + linear head; save the tower; return the held-out metrics. `config_overrides`
    ({"vision": {...}, "projector": {...}}) is merged over the preset's config, one section at a time
    (experiments/nano/tower_arch.py compares architectures this way)."""
    import torch

    from tarsier.engine import checkpoint as ckpt
    from tarsier.engine.config import ModelConfig
    from tarsier.engine.model import build_vision_tower, resolve_vision_config
    from tarsier.trainers.schedule import lr_lambda

    out = Path(args.out)
    done = out / "tower.json"
    if done.is_file() and (out / "tower.safetensors").is_file():
        log(f"{out} already holds a pretrained tower")
        return json.loads(done.read_text())["metrics"]
    preset = ckpt.read_preset(args.init)
    if "config" not in preset:
        raise ckpt.ModelNotFound(f"preset {args.init!r} has no config to build a tower from")
    for section, values in (config_overrides or {}).items():
        preset["config"][section].update(values)
    config = ModelConfig.from_dict(preset["config"])
    vcfg = resolve_vision_config(config.vision)   # tower.json records the geometry the model will check
    if vcfg.source != "open_clip" or vcfg.name is not None:
        raise ValueError("tower pretraining builds a small open_clip ViT or ResNet from the preset's geometry")
    torch.manual_seed(args.seed)
    tower = build_vision_tower(vcfg)
    head = torch.nn.Linear(vcfg.width, _Head.size)
    grid = vcfg.image_size // vcfg.patch_size
    pool = min(grid, config.projector.spatial_pool)
    cells = grid // pool
    pooled = _pooler(tower, vcfg, pool)

    t0 = time.perf_counter()
    data = {k: torch.from_numpy(v) for k, v in render_scene_frames(
        args.scene_seed, args.scenes, args.per_scene, vcfg.image_size, workers=args.workers).items()}
    log(f"tower: {len(data['frames'])} labelled frames in {time.perf_counter() - t0:.1f}s")

    def loss_fn(frames, slots, bg, cam):
        return cell_loss(head(pooled(frames)), slots, bg, cam, cells)

    params = list(tower.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(args.warmup, args.steps, 0.1))
    gen = torch.Generator().manual_seed(args.seed)
    n = len(data["frames"])
    tower.train()
    t0 = time.perf_counter()
    for step in range(args.steps):
        idx = torch.randint(n, (args.batch_size,), generator=gen)
        loss = loss_fn(data["frames"][idx], data["slots"][idx], data["background"][idx], data["camera"][idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == args.steps - 1:
            log(f"tower step {step + 1}/{args.steps} loss {loss.item():.4f} "
                f"({(step + 1) * args.batch_size / (time.perf_counter() - t0):.0f} frames/s)")
    tower.eval()
    metrics = {"train_frames": n, "seconds": round(time.perf_counter() - t0, 1), "cells": cells * cells}
    seen = {k: v[:2000] for k, v in data.items()}
    metrics["train_sample"] = {k: v for k, v in evaluate_tower(tower, head, pooled, seen).items() if "frames" not in k}
    if args.heldout:
        held = {k: torch.from_numpy(v) for k, v in
                load_world_frames(Path(args.heldout), vcfg.image_size, 100, 3, args.workers).items()}
        metrics.update(evaluate_tower(tower, head, pooled, held))
        log("tower held-out: " + ", ".join(f"{k} {v}" for k, v in metrics.items()))
    out.mkdir(parents=True, exist_ok=True)
    save_safetensors(out / "tower.safetensors", {k: v.contiguous() for k, v in tower.state_dict().items()})
    save_safetensors(out / "head.safetensors", {k: v.contiguous() for k, v in head.state_dict().items()})
    # written last: its presence means the tower is complete
    atomic_write(done, json.dumps({"vision": asdict(vcfg), "metrics": metrics, "args": asdict(args)}, indent=2) + "\n")
    return metrics


def evaluate_tower(tower, head, pooled, held: dict) -> dict:
    """Identity presence precision/recall, exact frames, attribute error, background accuracy."""
    import torch

    with torch.inference_mode():
        outs = torch.cat([head(pooled(held["frames"][i:i + 256])) for i in range(0, len(held["frames"]), 256)])
    n_cells = outs.shape[1]
    pred_slots, pred_bg, _ = _Head.split(outs)
    # an identity's answer comes from the cell its centre lies in (the only one trained to give it)
    in_cell = _cell_mask(held["slots"], int(round(n_cells ** 0.5)))
    own = (pred_slots * in_cell.unsqueeze(-1)).sum(1)
    truth = held["slots"][..., 0] > 0.5
    guess = pred_slots[..., 0].amax(1) > math.log(POS_WEIGHT)  # where the pos_weight-ed logit means p = 0.5
    pred_bg = pred_bg.mean(1)
    tp = int((truth & guess).sum())
    attr = ((own[..., 1:4] - held["slots"][..., 1:4]).abs().mean(-1) * truth).sum() / truth.sum()
    # the colour-only and shape-only heads tell which half of an identity the tower misses
    part_truth = _Head.part_targets(truth.float()) > 0.5
    part_guess = _Head.parts(outs).amax(1) > math.log(POS_WEIGHT / 3)
    parts = {}
    for name, cols in (("colour", slice(0, len(COLOURS))), ("shape", slice(len(COLOURS), None))):
        t, g = part_truth[:, cols], part_guess[:, cols]
        hit = int((t & g).sum())
        parts[f"{name}_precision"] = round(hit / max(1, int(g.sum())), 4)
        parts[f"{name}_recall"] = round(hit / max(1, int(t.sum())), 4)
    return {
        "presence_precision": round(tp / max(1, int(guess.sum())), 4),
        "presence_recall": round(tp / max(1, int(truth.sum())), 4),
        **parts,
        "frames_all_identities_right": round(float((guess == truth).all(-1).float().mean()), 4),
        "position_size_mae": round(float(attr), 4),
        "background_accuracy": round(float((pred_bg.argmax(-1) == held["background"]).float().mean()), 4),
        "heldout_frames": len(held["frames"]),
    }


def load_saved_tower(folder: str | Path):
    """(tower in eval mode, its VisionConfig) from a folder `pretrain_tower` wrote."""
    from safetensors.torch import load_file

    from tarsier.engine.config import VisionConfig, tuples_from_json
    from tarsier.engine.model import build_vision_tower

    folder = Path(folder)
    vcfg = VisionConfig(**tuples_from_json(json.loads((folder / "tower.json").read_text())["vision"]))
    tower = build_vision_tower(vcfg)
    tower.load_state_dict(load_file(str(folder / "tower.safetensors")), strict=True)
    return tower.eval(), vcfg


def check_saved_tower(folder: str | Path, frames: dict[str, np.ndarray], pool: int) -> dict:
    """Held-out metrics of a saved tower and its head on labelled frames (as `render_scene_frames`
    or `load_world_frames` give them), pooled into cells as the projector pools them."""
    import torch
    from safetensors.torch import load_file

    tower, vcfg = load_saved_tower(folder)
    head = torch.nn.Linear(vcfg.width, _Head.size)
    head.load_state_dict(load_file(str(Path(folder) / "head.safetensors")), strict=True)
    return evaluate_tower(tower, head, _pooler(tower, vcfg, pool),
                          {k: torch.from_numpy(v) for k, v in frames.items()})


def shipped_tower(preset: str = "nano") -> Path | None:
    """The pretrained tower a preset ships with (its "tower" entry), or None."""
    from importlib import resources

    from tarsier.engine.checkpoint import read_preset

    rel = read_preset(preset).get("tower")
    if not rel:
        return None
    return Path(str(resources.files("tarsier.engine").joinpath("presets", rel)))


def load_tower(model, folder: str | Path) -> None:
    """Put a pretrained tower into `model` (strict: its geometry must match the model's)."""
    from safetensors.torch import load_file

    from tarsier.engine.config import tuples_from_json

    folder = Path(folder)
    meta_path = folder / "tower.json"
    if not meta_path.is_file():
        raise ValueError(f"{folder} holds no pretrained tower (no tower.json; run `tarsier train tower`)")
    meta = json.loads(meta_path.read_text())["vision"]
    have = asdict(model.config.vision)
    keys = ("image_size", "patch_size", "width", "layers", "heads", "mlp_ratio", "resnet_blocks")
    meta = tuples_from_json(meta)
    if any(meta.get(k) != have.get(k) for k in keys):
        raise ValueError(f"tower in {folder} has geometry {[meta.get(k) for k in keys]}, "
                         f"the model needs {[have.get(k) for k in keys]}")
    model.vision.load_state_dict(load_file(str(folder / "tower.safetensors")), strict=True)
