"""The parameters experiments/nano/ reaches the library through (instead of patching it): a feature
source standing in for the frozen tower, and config overrides of a fresh model or a stage-0 tower."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tarsier.trainers.train import TrainArgs, build_or_load, train

pytestmark = pytest.mark.usefixtures("tarsier_home")


def args(world: Path, out: Path, **kw) -> TrainArgs:
    base = dict(stage="stage1", data=str(world / "stage1" / "mixture.json"), out=str(out), init="tiny-random",
                steps=2, batch_size=4, lr=3e-3, warmup=1, log_every=1, device="cpu", workers=1,
                feature_cache=str(out.parent / f"{out.name}-features"))
    base.update(kw)
    return TrainArgs(**base)


def losses(run: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_feature_source_stands_in_for_the_tower(world, tmp_path):
    from tarsier.trainers.data import FeatureStore
    from tarsier.trainers.manifest import load_mixture

    train(args(world, tmp_path / "tower"))
    # the same model built apart: its tower's features, handed to train() as a feature source
    samples = load_mixture(world / "stage1" / "mixture.json").samples
    model, _ = build_or_load(args(world, tmp_path / "unused"), [t for s in samples for t in (s.prompt, s.answer)])
    store = FeatureStore(model, model.config.frames, tmp_path / "apart", workers=1)

    class Source:
        calls = 0

        def get(self, batch):
            Source.calls += 1
            return store.get(batch)

    train(args(world, tmp_path / "source"), feature_source=Source())
    assert Source.calls == 2 and not (tmp_path / "source-features").exists()
    assert losses(tmp_path / "source") == pytest.approx(losses(tmp_path / "tower"), abs=1e-6)
    with pytest.raises(ValueError, match="feature source"):
        train(args(world, tmp_path / "vision", train_vision=True), feature_source=Source())


def test_config_overrides_change_a_fresh_model_only(world, tmp_path):
    texts = ["a red circle moves"] * 4
    model, _ = build_or_load(args(world, tmp_path / "r", init="nano", vision_init="none"), texts,
                             {"vision": {"width": 256, "resnet_blocks": None, "layers": 1, "patch_size": 16},
                              "projector": {"spatial_pool": 1}})
    assert (model.config.vision.width, model.config.vision.layers, model.config.projector.spatial_pool) == (256, 1, 1)
    plain, _ = build_or_load(args(world, tmp_path / "r", init="nano", vision_init="none"), texts)
    assert plain.config.vision.width != 256
    with pytest.raises(ValueError, match="fresh model"):   # a checkpoint folder brings its own config
        build_or_load(args(world, tmp_path / "r", init=str(tmp_path)), texts, {"projector": {"spatial_pool": 1}})


def test_tower_pretraining_takes_config_overrides(tmp_path):
    from tarsier.trainers.tower import TowerArgs, pretrain_tower

    vit = {"patch_size": 8, "width": 64, "layers": 1, "heads": 2, "feature_layer": -1, "resnet_blocks": None}
    metrics = pretrain_tower(TowerArgs(out=str(tmp_path / "t"), steps=1, batch_size=4, scenes=4, per_scene=1,
                                       workers=1), log=lambda m: None,
                             config_overrides={"vision": vit, "projector": {"spatial_pool": 4}})
    saved = json.loads((tmp_path / "t" / "tower.json").read_text())
    assert {k: saved["vision"][k] for k in ("patch_size", "width", "layers")} == {"patch_size": 8, "width": 64,
                                                                                  "layers": 1}
    assert saved["vision"]["resnet_blocks"] is None and metrics["cells"] == 4
