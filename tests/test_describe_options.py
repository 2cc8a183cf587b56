"""describe's option objects (engine.options), the writers' registry the CLI reads, and
`tarsier describe --help` at 80 columns."""
from __future__ import annotations

import dataclasses
import re

import pytest
from typer.testing import CliRunner

from tarsier.cli.app import app
from tarsier.engine.options import DescribeOptions, option_names
from tarsier.engine.writers import ALL_FORMATS, MANIFEST_WRITERS, SUBTITLE_WRITERS, WRITERS


def test_options_are_frozen_groups_changed_by_field_name():
    base = DescribeOptions()
    changed = base.replace(grain="brief", workers=0, max_clip=None, formats=("jsonl", "srt"))
    assert (changed.what.grain, changed.speed.workers, changed.cut.max_clip) == ("brief", 0, None)
    assert changed.output.formats == ("jsonl", "srt") and base.what.grain == "fine"   # a copy
    with pytest.raises(dataclasses.FrozenInstanceError):
        changed.what.grain = "fine"
    with pytest.raises(TypeError, match="unexpected keyword argument 'grian'"):
        base.replace(grian="brief")


def test_every_former_keyword_is_an_option_field():
    assert set(option_names()) == {
        "model", "grain", "prompt", "frames", "scenes", "threshold", "min_scene_len", "min_clip", "max_clip",
        "batch_size", "max_new_tokens", "device", "output_dir", "formats", "stdout", "overwrite", "extensions",
        "recursive", "stdin", "threads", "workers", "queue_size", "thumbnails", "curate", "shard_size"}


def test_the_registry_is_one_place_for_the_formats():
    assert list(WRITERS) == ["jsonl", "srt", "vtt", "txt", "csv", "ltx", "parquet", "webdataset"]
    assert set(SUBTITLE_WRITERS) == {"srt", "vtt"} and ALL_FORMATS == ("jsonl", "srt", "vtt")
    assert set(MANIFEST_WRITERS) == {"txt", "csv", "ltx", "parquet", "webdataset"}
    assert all(cls.format == name for name, cls in WRITERS.items())


def _help() -> str:
    result = CliRunner().invoke(app, ["describe", "--help"], terminal_width=80, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return result.output


def test_describe_help_fits_80_columns_and_reads_its_formats_from_the_registry():
    text = _help()
    assert "…" not in text and not re.search(r"-[\w-]+\.\.\.", text)
    assert all(len(line) <= 80 for line in text.splitlines()), text
    flat = " ".join(text.split())
    for name in WRITERS:
        assert re.search(rf"(?<![\w-]){name}\b", flat), name
    assert "[default: (tarsier-out, or none with --stdout)]" in flat          # -o
    assert "[default: (cores - 1, at most 16); x>=0]" in flat                 # --workers
    # the examples keep their lines (no option split over two lines)
    assert "  tarsier describe ./videos -o data/ --clips data/clips -f txt,csv \\\n" in text


def test_unknown_format_names_the_registry(tmp_path):
    result = CliRunner().invoke(app, ["describe", str(tmp_path), "-f", "srt,docx", "-o", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown --format docx (choose jsonl, srt, vtt, txt, csv, ltx, parquet, webdataset or all)" in \
        " ".join(result.output.split())
