"""`tarsier cache`: the feature cache lists its entries (model, datasets, clips, size, last use) and removes
them by age or all at once."""
from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from tarsier.cli.app import app

pytestmark = pytest.mark.usefixtures("tarsier_home")


def test_cache_lists_and_removes_by_age(world, tmp_path):
    from tarsier.engine import checkpoint as ckpt
    from tarsier.trainers.data import FeatureStore
    from tarsier.trainers.manifest import load_mixture

    root = tmp_path / "features"
    manifest = world / "stage1" / "qa.jsonl"
    samples = load_mixture(manifest).samples
    model = ckpt.load_preset("tiny-random")
    store = FeatureStore(model, 2, root, workers=1, dataset=str(manifest))
    store.ensure(samples)
    assert store.computed == 8
    other = FeatureStore(model, 3, root, workers=1, dataset=str(manifest))   # another frame count: another entry
    other.ensure(samples[:1])
    legacy = root / "0123456789abcdef"   # written before cache.json existed
    (legacy / "ab").mkdir(parents=True)
    (legacy / "ab" / "x.safetensors").write_bytes(b"\0" * 100)

    listed = CliRunner().invoke(app, ["cache", "--dir", str(root)])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    mine = next(x for x in lines if x.startswith(store.fingerprint))
    assert "8 clips" in mine and "tiny-random, 2 frames" in mine and "used 0.0 hours ago" in mine
    assert any(x.strip() == str(manifest) for x in lines)
    assert any(x.startswith(legacy.name) and "unknown (no cache.json)" in x for x in lines)
    assert lines[-1].startswith("total ") and "in 3 entries" in lines[-1]

    # the first entry was last used 40 days ago
    meta = json.loads((store.folder / "cache.json").read_text())
    meta["last_used"] = time.time() - 40 * 86400
    (store.folder / "cache.json").write_text(json.dumps(meta))
    dry = CliRunner().invoke(app, ["cache", "--dir", str(root), "--older-than", "30d", "--dry-run"])
    assert dry.exit_code == 0 and f"would remove {store.fingerprint}" in dry.output and store.folder.is_dir()
    gone = CliRunner().invoke(app, ["cache", "--dir", str(root), "--older-than", "30d"])
    assert gone.exit_code == 0 and f"removed {store.fingerprint}" in gone.output
    assert not store.folder.exists() and other.folder.is_dir() and legacy.is_dir()
    # using an entry again makes it recent: a rerun of the same run keeps its cache
    again = FeatureStore(model, 3, root, workers=1, dataset=str(manifest))
    again.ensure(samples[:1])
    assert (again.computed, again.loaded) == (0, 1)
    kept = CliRunner().invoke(app, ["cache", "--dir", str(root), "--older-than", "1d"])
    assert "removed 0 entries" in kept.output and other.folder.is_dir() and legacy.is_dir()

    assert CliRunner().invoke(app, ["cache", "--dir", str(root), "--older-than", "soon"]).exit_code == 2
    everything = CliRunner().invoke(app, ["cache", "--dir", str(root), "--all"])
    assert everything.exit_code == 0 and not any(root.iterdir())
    assert "empty" in CliRunner().invoke(app, ["cache", "--dir", str(root)]).output
