"""bench/qwen_stage0.py, the stage 0 of issue 20's proof: it trains a Qwen2-VL-layout checkpoint's vision
encoder (patch embedding, blocks, merger) and nothing else, and writes a folder plain transformers loads."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import published_fixtures as pf
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from transformers import Qwen2VLForConditionalGeneration

    model, info = Qwen2VLForConditionalGeneration.from_pretrained(str(folder), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(("distill", "dense", "pairs", "motion"),
                         [(0.0, 0.0, 0, 0.0), (1.0, 1.0, 0, 0.0), (1.0, 1.0, 16, 1.0)])
def test_stage0_trains_the_encoder_only_and_writes_a_standard_folder(distill, dense, pairs, motion, tmp_path):
    from qwen_stage0 import pretrain

    init = pf.write_qwen2_vl(tmp_path / "init", style="qwen2_vl", special_base=1024)
    export = tmp_path / "init-standard"
    import tarsier

    tarsier.load(str(init), device="cpu").save(export)   # the same weights in today's names, to compare
    before = weights(export)
    out = tmp_path / "stage0"
    summary = pretrain(init, out, size=112, steps=3, batch=4, lr=2e-3, scenes=4, per_scene=2, heldout=None,
                       distill=distill, dense=dense, pairs=pairs, motion=motion, heldout_scenes=40, log=lambda _: None)
    assert summary["metrics"]["cells"] == 16 and summary["settings"]["distill"] == distill
    assert summary["settings"]["dense"] == dense and "shape_recall" in summary["metrics"]["train_sample"]
    after = weights(out)
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("model.visual.") for k in moved)
    assert any(".merger." in k for k in moved) and any(".blocks." in k for k in moved)
    # the packing it trained with is what the folder tells describe and the trainer to feed
    pre = json.loads((out / "preprocessor_config.json").read_text())
    assert pre["use_multi_images_for_video"] is (not pairs)
    assert tarsier.load(str(out), device="cpu").processor.duplicate_frames is (not pairs)
    if pairs:
        assert summary["metrics"]["train_frames"] == 16 and "next_presence_recall" in summary["metrics"]
        assert 0.0 <= summary["metrics"]["direction_accuracy"] <= 1.0 and summary["metrics"]["direction_moves"] > 0
        assert 0.0 <= summary["metrics"]["motion_direction_accuracy"] <= 1.0
    # a second call finds the finished folder and trains nothing
    assert pretrain(init, out, size=112, steps=3, batch=4, lr=2e-3, scenes=4, per_scene=2, heldout=None,
                    distill=distill, log=lambda _: None) == summary


def test_distillation_needs_the_teachers_grid(tmp_path):
    from qwen_stage0 import pretrain

    init = pf.write_qwen2_vl(tmp_path / "init", style="qwen2_vl", special_base=1024)
    with pytest.raises(ValueError, match="teacher's 16 cells"):
        pretrain(init, tmp_path / "out", size=56, steps=1, batch=2, lr=2e-3, scenes=2, per_scene=1, heldout=None,
                 distill=1.0, log=lambda _: None)


def test_patch_labels_cover_the_drawn_shapes_in_the_processors_patch_order(tmp_path):
    """Each patch's label says how much of it a shape covers; checked against the rendered frames themselves,
    cut into patches by the checkpoint's own processor (so a wrong patch order fails)."""
    import numpy as np
    from qwen_stage0 import patch_kinds

    import tarsier
    from tarsier.trainers.tower import render_scene_frames

    model = tarsier.load(pf.write_qwen2_vl(tmp_path / "init", style="qwen2_vl", special_base=1024), device="cpu")
    frames = render_scene_frames(777, 3, 2, 112, render_size=112, workers=1)["frames"]
    shares = patch_kinds(777, 3, 2, 112, patch=14, merge=2).astype(np.float32)
    assert shares.shape == (6, 64, 6) and np.allclose(shares.sum(-1), 1.0, atol=1e-2)
    for frame, share in zip(frames, shares):
        background = np.median(frame.reshape(-1, 3), 0)
        drawn = (np.abs(frame.astype(int) - background).sum(-1) > 60).astype(np.uint8) * 255
        pixels, _ = model.processor.pixels([np.repeat(drawn[None, :, :, None], 3, -1)])
        mean, std = model.processor.video_processor.image_mean[0], model.processor.video_processor.image_std[0]
        red = pixels.view(64, 3, 2, 14, 14)[:, 0].float() * std + mean        # the drawn mask, patch by patch
        covered = red.mean((1, 2, 3)).numpy()
        assert share[:, 0].min() < 0.9                                          # some patch holds a shape
        assert np.abs((1 - share[:, 0]) - covered).max() < 0.2


def test_motion_targets_ask_each_mover_in_its_first_frames_cell():
    from qwen_stage0 import MOTION_SCALE, motion_targets

    slots = torch.zeros(1, 2, 35, 6)
    slots[0, 0, 3] = torch.tensor([1.0, -1.5, 1.5, 0.0, 1.0, 0.0])   # x -1.5, y 1.5 in [-2, 2]: cell (0, 3) of 4 x 4
    slots[0, 1, 3] = torch.tensor([1.0, -1.0, 1.5, 0.5, 1.0, 0.0])   # moved right by 0.5, grew by 0.5
    slots[0, 0, 7] = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])    # gone in the second frame: not asked
    change, asked = motion_targets(slots, 4)
    assert change[0, 3].tolist() == [0.5 * MOTION_SCALE, 0.0, 0.5 * MOTION_SCALE]
    assert asked.shape == (1, 16, 35) and asked[0, :, 3].nonzero().flatten().tolist() == [12]   # row 3, column 0
    assert asked[0, :, 7].sum() == 0 and asked.sum() == 1
