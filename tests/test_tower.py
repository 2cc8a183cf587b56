"""Stage 0: labels follow the world's plan, the renderer draws the same state, the tower trains,
saves, reloads into a model and is refused by a model of another geometry."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from tarsier.cli.app import app
from tarsier.engine import checkpoint as ckpt
from tarsier.trainers.tower import (
    IDENTITIES,
    TowerArgs,
    _cell_mask,
    check_saved_tower,
    frame_targets,
    load_tower,
    load_world_frames,
    pretrain_tower,
    render_scene_frames,
    shipped_tower,
)
from tarsier.world.render import frame_state, render_frame
from tarsier.world.truth import make_truth

pytestmark = pytest.mark.usefixtures("tarsier_home")


def _video_with(verb: str, seed: int = 11) -> dict:
    for index in range(200):
        truth = make_truth(seed, index)
        if any(e["verb"] == verb for e in truth["events"]):
            return truth
    raise AssertionError(f"no {verb} event in 200 planned videos")


def _present(plan: dict, t: float) -> set[tuple[str, str]]:
    slots, _, _ = frame_targets(plan, t)
    return {IDENTITIES[k] for k in np.flatnonzero(slots[:, 0] > 0.5)}


def test_colour_change_moves_the_object_to_another_identity():
    truth = _video_with("change_colour")
    plan = truth["_plan"]
    ev = next(e for e in plan["events"] if e["verb"] == "change_colour")
    before, after = _present(plan, ev["t_start"] - 0.01), _present(plan, ev["t_end"] + 0.01)
    assert (ev["args"]["from"], ev["shape"]) in before and (ev["args"]["from"], ev["shape"]) not in after
    assert (ev["args"]["to"], ev["shape"]) in after


def test_appear_and_growth_are_in_the_slots():
    truth = _video_with("grow")
    plan = truth["_plan"]
    ev = next(e for e in plan["events"] if e["verb"] == "grow")
    k = IDENTITIES.index((ev["colour"], ev["shape"]))
    size = lambda t: frame_targets(plan, t)[0][k, 3]  # noqa: E731
    assert size(ev["t_end"] + 0.01) > size(ev["t_start"] - 0.01) + 0.3
    truth = _video_with("appear")
    plan = truth["_plan"]
    ev = next(e for e in plan["events"] if e["verb"] == "appear")
    assert (ev["colour"], ev["shape"]) not in _present(plan, ev["t_start"] - 0.01)
    assert (ev["colour"], ev["shape"]) in _present(plan, ev["t_end"] + 0.01)


def test_each_identity_is_answered_by_the_cell_its_centre_is_in():
    import torch

    slots = torch.zeros(1, len(IDENTITIES), 6)
    slots[0, 0, :3] = torch.tensor([1.0, -1.5, -1.5])   # top left of the screen
    slots[0, 1, :3] = torch.tensor([1.0, 1.5, -1.0])    # top right
    slots[0, 2, :3] = torch.tensor([1.0, 0.5, 1.9])     # bottom right
    mask = _cell_mask(slots, 2)
    assert mask.shape == (1, 4, len(IDENTITIES))
    assert mask[0, :, 0].tolist() == [1, 0, 0, 0] and mask[0, :, 1].tolist() == [0, 1, 0, 0]
    assert mask[0, :, 2].tolist() == [0, 0, 0, 1]
    assert _cell_mask(slots, 1).sum(1).eq(1).all()      # one cell: every identity is in it


def test_rendered_frame_is_what_the_video_shows(world):
    """Tower frames are rendered directly; the videos are encoded from the very same renderer."""
    import av

    from tarsier.world.plan import replay_plan

    truth = json.loads((world / "truth.jsonl").read_text().splitlines()[0])
    with av.open(str(world / truth["video_file"])) as c:
        decoded = next(c.decode(video=0)).to_ndarray(format="rgb24").astype(np.float32)
    drawn = render_frame(frame_state(replay_plan(truth), 0.0), truth["size"]).astype(np.float32)
    assert np.abs(decoded - drawn).mean() < 4.0   # only the codec's loss


def test_pretrain_tower_saves_reloads_and_checks_geometry(world, tmp_path):
    out = tmp_path / "tower"
    args = TowerArgs(out=str(out), init="tiny-random", heldout=str(world), steps=4, batch_size=8,
                     scenes=6, per_scene=2, workers=1)
    metrics = pretrain_tower(args, log=lambda m: None)
    assert metrics["train_frames"] == 12 and metrics["heldout_frames"] > 0
    assert 0.0 <= metrics["presence_recall"] <= 1.0 and metrics["background_accuracy"] >= 0.0
    meta = json.loads((out / "tower.json").read_text())
    assert meta["vision"]["image_size"] == 32 and meta["metrics"] == metrics
    assert pretrain_tower(args, log=lambda m: None) == metrics   # done: a rerun only reads it back
    # the saved head lets anyone check the saved tower again, on the same frames to the digit
    held = load_world_frames(world, 32, 100, 3, workers=1)
    again = check_saved_tower(out, held, pool=1)
    assert {k: again[k] for k in ("presence_recall", "shape_recall", "background_accuracy")} == \
        {k: metrics[k] for k in ("presence_recall", "shape_recall", "background_accuracy")}

    from safetensors.torch import load_file

    model = ckpt.load("tiny-random", device="cpu")
    load_tower(model, out)
    saved = load_file(str(out / "tower.safetensors"))
    for name, tensor in model.vision.state_dict().items():
        assert np.allclose(tensor.numpy(), saved[name].numpy())
    model.config.vision.width = 64   # another geometry
    with pytest.raises(ValueError, match="geometry"):
        load_tower(model, out)
    with pytest.raises(ValueError, match="no pretrained tower"):
        load_tower(model, tmp_path)


def test_cli_tower_then_stage1_with_vision_init(world, tmp_path):
    out = tmp_path / "tower"
    result = CliRunner().invoke(app, ["train", "tower", "-o", str(out), "--init", "tiny-random", "--steps", "2",
                                      "-b", "4", "--scenes", "3", "--per-scene", "2", "--workers", "1"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "s1"
    common = ["-d", str(world / "stage1" / "mixture.json"), "--steps", "2", "-b", "2", "--device", "cpu",
              "--feature-cache", str(tmp_path / "f"), "--workers", "1"]
    result = CliRunner().invoke(app, ["train", "stage1", "-o", str(run), "--init", "tiny-random",
                                      "--vision-init", str(out), *common])
    assert result.exit_code == 0, result.output
    from safetensors.torch import load_file

    trained = ckpt.load(run / "final", device="cpu")
    saved = load_file(str(out / "tower.safetensors"))
    for name, tensor in trained.vision.state_dict().items():   # frozen: still the pretrained tower
        assert np.allclose(tensor.numpy(), saved[name].numpy())
    result = CliRunner().invoke(app, ["train", "stage2", "-o", str(tmp_path / "s2"), "--init", str(run),
                                      "--vision-init", str(out), *common])
    assert result.exit_code == 2 and "checkpoint brings its own" in result.output


def test_shipped_nano_tower_reads_scenes_it_never_saw():
    """nano ships its pretrained tower (as a real model ships CLIP): it must fit nano's geometry and
    still read colours, shapes and places on freshly planned scenes of a seed it never trained on."""
    folder = shipped_tower("nano")
    assert folder is not None and (folder / "tower.safetensors").is_file()
    meta = json.loads((folder / "tower.json").read_text())
    nano = ckpt.read_preset("nano")["config"]
    assert meta["vision"]["image_size"] == nano["vision"]["image_size"]
    assert meta["args"]["scene_seed"] != 4242
    frames = render_scene_frames(seed=4242, scenes=60, per_scene=2, size=meta["vision"]["image_size"], workers=1)
    got = check_saved_tower(folder, frames, pool=nano["projector"]["spatial_pool"])
    assert got["colour_precision"] > 0.97 and got["colour_recall"] > 0.97
    assert got["shape_precision"] > 0.93 and got["shape_recall"] > 0.93
    assert got["presence_precision"] > 0.92 and got["presence_recall"] > 0.9
    assert got["background_accuracy"] > 0.95
