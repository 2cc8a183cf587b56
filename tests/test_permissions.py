"""Output files get the user's normal permissions (0666 minus the umask), so a copied output folder
can be shared: eval reports and checkpoint weights used to be created 0600 by temporary-file paths
(tempfile.mkstemp, safetensors' save_file)."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tarsier.cli.app import app
from tarsier.common.files import atomic_write, normal_file_mode, normal_permissions, save_safetensors

DREAM = Path("/work/shared/dream1k")
FLAT = DREAM / "DREAM-1k.sample.jsonl"


@pytest.fixture
def umask():
    """A fixed umask for the test (022: files 0644), the old one restored after."""
    old = os.umask(0o022)
    yield 0o022
    os.umask(old)


def _modes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode) for p in folder.rglob("*") if p.is_file()}


def test_normal_file_mode_follows_the_umask(umask):
    assert normal_file_mode() == 0o666 & ~umask
    os.umask(0o027)
    assert normal_file_mode() == 0o640


def test_file_primitives_give_normal_permissions(tmp_path, umask):
    import torch

    atomic_write(tmp_path / "a.txt", "x")
    save_safetensors(tmp_path / "w.safetensors", {"t": torch.zeros(2)})
    secret = tmp_path / "sub" / "s.bin"
    secret.parent.mkdir()
    secret.write_bytes(b"")
    secret.chmod(0o600)
    normal_permissions(tmp_path)
    assert set(_modes(tmp_path).values()) == {0o644}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temporary file left


@pytest.mark.skipif(not FLAT.is_file(), reason="needs the DREAM-1K sample")
def test_eval_outputs_have_normal_permissions(tmp_path, umask):
    rows = [json.loads(line) for line in FLAT.read_text().splitlines() if line.strip()]
    pred = tmp_path / "descriptions.jsonl"
    pred.write_text("".join(json.dumps({"video": f"videos/{r['idx']:06d}.mp4", "clip": 0,
                                        "description": r["text"]["response"]}) + "\n" for r in rows))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["eval", "autodq", str(pred), "--ref", str(FLAT), "--judge", "exact",
                                      "-o", str(out)])
    assert result.exit_code in (0, 1), result.output   # 1: the exact judge cannot parse some real text
    modes = _modes(out)
    assert {"report.json", "report.md", "samples.jsonl"} <= set(modes)
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_checkpoint_files_have_normal_permissions(tmp_path, umask):
    from tarsier.engine import checkpoint as ckpt

    model = ckpt.load("tiny-random", device="cpu")
    model.save(tmp_path / "ckpt")
    modes = _modes(tmp_path / "ckpt")
    assert ckpt.WEIGHTS_NAME in modes and ckpt.CONFIG_NAME in modes
    assert set(modes.values()) == {0o666 & ~umask}, modes
