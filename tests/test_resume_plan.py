"""A rerun with nothing left to do is answered before the model loads (engine.resume_plan)."""
from __future__ import annotations

import io
import json

import pytest

from tarsier.engine import checkpoint as engine_checkpoint
from tarsier.engine.curate import CurateOptions
from tarsier.engine.describe import describe

OPTS = {"model": "tiny-random", "device": "cpu", "max_new_tokens": 3, "workers": 0, "max_clip": 4.0}


@pytest.fixture
def loads(monkeypatch):
    """Counts model loads (the real load still runs)."""
    calls = []
    real = engine_checkpoint.load

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_checkpoint, "load", counting)
    return calls


def test_finished_rerun_does_not_load_the_model(tmp_path, videos, loads):
    out = tmp_path / "out"
    listing = f"{videos['cuts'].path}\n{videos['long'].path}\n"
    first = describe(["-"], stdin=io.StringIO(listing), output_dir=out, **OPTS)
    assert first.videos_ok == 2 and loads == ["tiny-random"]
    again = describe(["-"], stdin=io.StringIO(listing), output_dir=out, formats=("jsonl", "csv"), **OPTS)
    assert loads == ["tiny-random"]                       # answered from the plan
    assert (again.videos_skipped, again.clips_skipped, again.clips_done) == (2, first.clips_done, 0)
    assert (out / "dataset.csv").read_text().count("\n") == first.clips_done + 1   # manifests still rebuilt
    # other settings, or a new video: the model loads
    describe(["-"], stdin=io.StringIO(listing), output_dir=out, **{**OPTS, "max_clip": 5.0})
    assert len(loads) == 2
    more = describe(["-"], stdin=io.StringIO(listing + f"{videos['late'].path}\n"), output_dir=out, **OPTS)
    assert len(loads) == 3 and more.videos_ok == 1 and more.videos_skipped == 2


def test_a_missing_clip_file_is_work_left(tmp_path, videos, loads):
    av_video_small = videos["cuts"].path
    out = tmp_path / "out"
    curate = CurateOptions(clips_dir=str(out / "clips"), clip_codec="h264")
    describe([str(av_video_small)], output_dir=out, curate=curate, **OPTS)
    describe([str(av_video_small)], output_dir=out, curate=curate, **OPTS)
    assert len(loads) == 1
    rec = json.loads((out / "descriptions.jsonl").read_text().splitlines()[0])
    (out / "clips" / rec["clip_file"]).unlink()
    again = describe([str(av_video_small)], output_dir=out, curate=curate, **OPTS)
    assert len(loads) == 2 and again.clips_done == 0 and (out / "clips" / rec["clip_file"]).is_file()
