"""`tarsier eval` in-process with CliRunner."""
from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tarsier.cli.app import app

DREAM = Path("/work/shared/dream1k")
FLAT = DREAM / "DREAM-1k.sample.jsonl"
MESSAGES = DREAM / "DREAM-1k.messages-format.sample.jsonl"
runner = CliRunner()


def _describe_jsonl(path: Path) -> Path:
    """Predictions as `tarsier describe` writes them: own reference text split over two clips for even
    rows, another video's text for odd rows, one failed video, one video missing."""
    rows = [json.loads(line) for line in FLAT.read_text().splitlines() if line.strip()]
    with path.open("w") as f:
        for i, r in enumerate(rows):
            video = f"videos/{r['idx']:06d}.mp4"
            if r["idx"] == 2:
                f.write(json.dumps({"video": video, "error": "cannot decode", "stage": "decode"}) + "\n")
                continue
            if r["idx"] == 3:
                continue
            text = r["text"]["response"] if i % 2 == 0 else rows[(i + 7) % len(rows)]["text"]["response"]
            first, _, rest = text.partition(". ")
            for clip, part in ((1, rest), (0, first + ".")):      # out of order on purpose
                f.write(json.dumps({"video": video, "clip": clip, "description": part, "start": 0.0}) + "\n")
    return path


def test_eval_autodq_embed_writes_three_outputs(tmp_path):
    pred = _describe_jsonl(tmp_path / "descriptions.jsonl")
    out = tmp_path / "out"
    result = runner.invoke(app, ["eval", "autodq", str(pred), "--ref", str(MESSAGES), "--judge", "embed",
                                 "-o", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["judge"]["name"].startswith("embed:all-MiniLM-L6-v2@") and report["judge"]["approximate"]
    assert set(report["categories"]) == {"live-action", "animation", "youtube/vlog", "vertical/shorts", "stock"}
    assert report["counts"]["missing"] == 2 and report["counts"]["prediction_errors"] == 1
    assert report["counts"]["failed"] == 0
    assert 0 < report["overall"]["f1"] < 1
    assert set(report["buckets"]) == {"events", "shots", "subjects", "duration"}
    md = (out / "report.md").read_text()
    assert report["judge"]["name"] in md and "Approximate" in md
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 20
    s1 = next(s for s in samples if s["idx"] == "1")
    assert s1["status"] == "ok" and s1["recall_judgements"] and s1["pred_events"]
    assert s1["prediction"].startswith("A character emerges")          # clips joined in clip order
    assert next(s for s in samples if s["idx"] == "2")["note"].startswith("description failed")
    assert "AutoDQ" in result.output and "APPROXIMATE" in result.output


def test_eval_usage_errors(tmp_path):
    pred = _describe_jsonl(tmp_path / "d.jsonl")
    r = runner.invoke(app, ["eval", "autodq", str(pred), "--ref", str(FLAT), "--judge", "gpt-4", "-o", str(tmp_path)])
    assert r.exit_code == 2 and "unknown judge" in r.output
    r = runner.invoke(app, ["eval", "autodq", str(tmp_path / "nope.jsonl"), "--ref", str(FLAT), "--judge", "embed"])
    assert r.exit_code == 2 and "not found" in r.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    r = runner.invoke(app, ["eval", "autodq", str(pred), "--ref", str(bad), "--judge", "embed",
                            "-o", str(tmp_path / "o")])
    assert r.exit_code == 2


class _HalfBroken:
    name = "half-broken"

    def extract_events(self, texts):
        return [None if "green monsters" in t else [t] for t in texts]

    def entail(self, pairs):
        return [["entailment"] * len(events) for _, events in pairs]


def test_eval_exit_1_when_samples_fail_and_bench_glue(tmp_path, monkeypatch):
    import tarsier.cli.eval as cli
    from tarsier.evaluation import judges as eval_judges

    monkeypatch.setattr(eval_judges, "make_judge", lambda spec, **kw: _HalfBroken())
    pred = _describe_jsonl(tmp_path / "d.jsonl")
    r = runner.invoke(app, ["eval", "autodq", str(pred), "--ref", str(FLAT), "--judge", "x", "-o", str(tmp_path / "o")])
    assert r.exit_code == 1, r.output
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    # idx 1's text is its own prediction and also idx 602's (rows shifted by 7)
    assert report["categories"]["animation"]["failed"] == 1 and report["categories"]["stock"]["failed"] == 1
    assert report["counts"]["failed"] == 2

    # `eval bench`: describe (stubbed here) then score the JSONL it wrote
    calls = {}

    def fake_describe(videos, *, model, output_dir, **kw):
        calls.update(videos=videos, model=model)
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        _describe_jsonl(Path(output_dir) / "descriptions.jsonl")
        return Path(output_dir) / "descriptions.jsonl", 0

    monkeypatch.setattr(cli, "describe_benchmark", fake_describe)
    videos = tmp_path / "videos"
    videos.mkdir()
    r = runner.invoke(app, ["eval", "bench", "--model", "nano", "--ref", str(FLAT), "--videos", str(videos),
                            "-o", str(tmp_path / "bench"), "--judge", "x"])
    assert r.exit_code == 1, r.output
    assert calls == {"videos": [str(videos)], "model": "nano"}
    assert (tmp_path / "bench" / "report.json").is_file()


def test_eval_compare_refuses_other_judges(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps({
            "judge": {"name": f"judge-{name}"}, "overall": {"f1": 0.5, "precision": 0.5, "recall": 0.5},
            "categories": {}}))
    r = runner.invoke(app, ["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert r.exit_code == 2 and "different judges" in r.output
    r = runner.invoke(app, ["eval", "compare", str(tmp_path / "a"), str(tmp_path / "a" / "report.json")])
    assert r.exit_code == 0, r.output


def test_eval_modules_do_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, tarsier.cli.eval, tarsier.evaluation, tarsier.evaluation.judges, tarsier.evaluation.score_descriptions, tarsier.evaluation.embed; "
            "bad = [m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules]; "
            "print(*bad, file=sys.stderr); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
