"""Review reports (tarsier.reports: pages, templates, charts; engine.thumbnails; `tarsier report`).

Runs are built by hand (no model needed). The browser tests open the pages in headless Chromium
(Debian's `chromium`; skipped with a reason when it is not installed) through the pages' own
self-test hook (`#selftest=QUERY`): the page runs its filter and writes the visible counts and the
number of script/resource errors into attributes of <html>, which `--dump-dom` shows. Set
TARSIER_REPORT_SCREENSHOTS=DIR to keep the screenshots for a look.
"""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np
import pytest

from tarsier.engine.thumbnails import save_clip_thumbnails, thumbnail_relpath
from tarsier.reports.charts import stage_offsets, write_curves, write_eval_charts
from tarsier.reports.describe_page import describe_summary, load_describe_run, write_describe_report
from tarsier.reports.eval_page import evaluation_report_html
from tarsier.reports.results import detect_kind, detect_kinds
from tarsier.reports.train_page import write_training_report

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"

WORDS = ["a", "red", "circle", "moves", "left", "then", "blue", "square", "grows", "while", "the", "green",
         "triangle", "rotates", "slowly", "and", "yellow", "star", "disappears", "behind", "purple", "edge"]


# ----------------------------------------------------------------------------------------------
# builders

def _frames(n: int = 8, size: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = np.zeros((n, size, size, 3), np.uint8)
    for i in range(n):
        frames[i] = rng.integers(0, 255, 3, dtype=np.uint8)  # a flat colour per frame
        y = (i * size) // n
        frames[i, y : y + size // 4, size // 4 : size // 2] = 255 - frames[i, 0, 0]  # a moving square
    return frames


def _clip(video: str, clip: int, n_clips: int, start: float, end: float, text: str, **kw) -> dict:
    n = 8
    rec = {"video": video, "clip": clip, "n_clips": n_clips, "start": start, "end": end,
           "frame_times": [round(start + (end - start) * i / (n - 1), 3) for i in range(n)],
           "model": "nano", "grain": "fine", "prompt": "Describe the video in detail.", "settings": "abc123",
           "description": text, "tokens": len(text.split()) + 3,
           "timings": {"decode_s": 0.05, "generate_s": 0.5}}
    rec.update(kw)
    return rec


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def make_describe_run(out: Path) -> Path:
    """3 videos (one with a '#' and a space in its name), one failing video, a rerun appended, a
    clip whose thumbnails are missing, a description that tries to inject HTML."""
    recs = [
        _clip("a/cats.mp4", 0, 3, 0.0, 4.2, "A tabby cat jumps onto the sofa and lies down."),
        _clip("a/cats.mp4", 1, 3, 4.2, 6.0, "The cat stretches <b>lazily</b> & yawns."),
        _clip("a/cats.mp4", 2, 3, 6.0, 12.5, "A dog walks in; the cat runs away."),
        _clip("b/street #2 night.mp4", 0, 2, 0.0, 3.0, "Cars drive past wet neon signs."),
        _clip("b/street #2 night.mp4", 1, 2, 3.0, 5.0, "old text, replaced by the rerun"),
        {"video": "broken.mp4", "error": "moov atom not found", "stage": "open", "model": "nano",
         "grain": "fine", "prompt": "Describe the video in detail.", "settings": "abc123"},
        {"video": "c/flaky.mp4", "error": "decoder crashed", "stage": "decode", "model": "nano",
         "grain": "fine", "prompt": "Describe the video in detail.", "settings": "abc123"},
        # the rerun
        _clip("b/street #2 night.mp4", 1, 2, 3.0, 5.0, "A cyclist rings a bell and turns right."),
        _clip("c/flaky.mp4", 0, 1, 0.0, 2.0, "A kite flies over a beach."),
    ]
    _write_jsonl(out / "descriptions.jsonl", recs)
    with open(out / "descriptions.jsonl", "a", encoding="utf-8") as f:
        f.write('{"video": "torn.mp4", "clip": 0, "desc')  # a torn last line
    for rec in recs:
        if "clip" in rec and not (rec["video"] == "a/cats.mp4" and rec["clip"] == 2):  # leave one clip without
            save_clip_thumbnails(out, rec["video"], rec["clip"], _frames(seed=rec["clip"]))
    (out / "a").mkdir(exist_ok=True)
    (out / "a" / "cats.srt").write_text("1\n00:00:00,000 --> 00:00:04,200\nA tabby cat\n", encoding="utf-8")
    return out


def make_big_run(out: Path, n_videos: int = 50, per_video: int = 10) -> Path:
    """500 clips with thumbnails (the same small JPEG copied, to keep the test fast)."""
    one = save_clip_thumbnails(out, "seed.mp4", 0, _frames(1))[0]
    data = (out / one).read_bytes()
    recs = []
    rng = np.random.default_rng(1)
    for v in range(n_videos):
        video = f"set{v // 10}/video_{v:03d}.mp4"
        for c in range(per_video):
            words = " ".join(rng.choice(WORDS, size=int(rng.integers(40, 90))))
            recs.append(_clip(video, c, per_video, c * 3.0, c * 3.0 + 3.0, words.capitalize() + "."))
            for i in range(8):
                p = out / thumbnail_relpath(video, c, i)
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
    recs.append({"video": "set9/bad.mp4", "error": "no decodable video frames", "stage": "decode"})
    _write_jsonl(out / "descriptions.jsonl", recs)
    return out


def make_training_run(run: Path) -> Path:
    rows = []
    for step in range(0, 201, 5):
        rows.append({"step": step, "loss": 3.0 * np.exp(-step / 80) + 0.3 + 0.05 * np.sin(step), "stage": "stage1",
                     "lr": 1e-4 * min(1.0, (step + 1) / 20), "samples_per_s": 40.0, "elapsed_s": step * 0.5})
    for step in range(0, 101, 5):  # stage 2 restarts its step count
        rows.append({"step": step, "loss": 1.0 * np.exp(-step / 50) + 0.2, "stage": "stage2",
                     "lr": 2e-5 * (1 - step / 100), "samples_per_s": 30.0, "elapsed_s": 100 + step * 0.6})
        if step % 50 == 0:
            rows.append({"step": step, "eval_loss": 1.1 * np.exp(-step / 60) + 0.25, "stage": "stage2"})
    rows.append({"step": 101})  # no values at all: tolerated
    _write_jsonl(run / "metrics.jsonl", [{k: (float(v) if isinstance(v, np.floating) else v) for k, v in r.items()}
                                         for r in rows])
    (run / "run.json").write_text(json.dumps({"model": "nano", "stage": "stage2", "lr": 2e-5, "epochs": 2,
                                              "data": {"manifest": "synth/stage2.jsonl", "tasks": ["caption", "qa"]},
                                              "seed": 0}), encoding="utf-8")
    for name in ("checkpoints/step-000100", "checkpoints/step-000200", "final"):
        (run / name).mkdir(parents=True)
        (run / name / "config.json").write_text("{}", encoding="utf-8")
        (run / name / "model.safetensors").write_bytes(b"\0" * 2048)
    return run


def make_eval_dir(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)

    def stats(r, p, n, failed=0, missing=0):
        return {"recall": r, "precision": p, "f1": None if r is None or p is None else 2 * p * r / (p + r),
                "n": n, "scored": n - failed - missing, "failed": failed, "missing": missing,
                "n_recall": n - failed, "n_precision": n - failed - missing}

    cats = {"live-action": stats(0.31, 0.42, 2), "animation": stats(0.25, 0.38, 2, failed=1),
            "youtube/vlog": stats(0.4, 0.45, 1, missing=1)}
    report = {"metric": "AutoDQ", "version": 1, "judge": {"name": "exact", "approximate": True,
                                                          "note": "approximate: string matching"},
              "created": "2026-11-24T00:00:00Z", "overall": {**stats(0.32, 0.417, 5, 1, 1), "categories": 3},
              "categories": cats,
              "buckets": {"events": {"1-3": stats(0.5, 0.5, 2), "4-6": stats(0.2, 0.3, 3)},
                          "duration": {"<5s": stats(0.4, 0.4, 5)}},
              "counts": {"references": 5, "scored": 3, "failed": 1, "missing": 1},
              "policy": {"failed": "excluded", "missing": "recall 0"}}
    (d / "report.json").write_text(json.dumps(report), encoding="utf-8")
    samples = [
        {"idx": "live_1", "category": "live-action", "status": "ok", "video": "live_1.mp4",
         "reference": "A man opens a door and walks in.", "prediction": "A man opens the door. He sits down.",
         "ref_events": ["The man opens a door.", "The man walks in."], "pred_events": ["The man opens the door.",
                                                                                        "The man sits down."],
         "recall_judgements": [{"event": "The man opens a door.", "label": "entailment"},
                               {"event": "The man walks in.", "label": "neutral"}],
         "precision_judgements": [{"event": "The man opens the door.", "label": "entailment"},
                                  {"event": "The man sits down.", "label": "contradiction"}],
         "recall": 0.5, "precision": 0.5, "judge": "exact", "ref_events_source": "annotation"},
        {"idx": "live_2", "category": "live-action", "status": "ok", "video": "live_2.mp4",
         "reference": "A woman waves.", "prediction": "A woman waves <hello>.",
         "ref_events": ["The woman waves."], "pred_events": ["The woman waves."],
         "recall_judgements": [{"event": "The woman waves.", "label": "entailment"}],
         "precision_judgements": [{"event": "The woman waves.", "label": "entailment"}],
         "recall": 1.0, "precision": 1.0, "judge": "exact"},
        {"idx": "anim_1", "category": "animation", "status": "failed", "video": "anim_1.mp4",
         "reference": "A cartoon fox jumps.", "prediction": "garbled", "ref_events": ["The fox jumps."],
         "pred_events": None, "recall": None, "precision": None, "note": "could not extract predicted events",
         "judge": "exact"},
        {"idx": "anim_2", "category": "animation", "status": "ok", "video": "anim_2.mp4",
         "reference": "A robot dances.", "prediction": "A robot dances and falls.",
         "ref_events": ["The robot dances."], "pred_events": ["The robot dances.", "The robot falls."],
         "recall_judgements": [{"event": "The robot dances.", "label": "entailment"}],
         "precision_judgements": [{"event": "The robot dances.", "label": "entailment"},
                                  {"event": "The robot falls.", "label": "neutral"}],
         "recall": 1.0, "precision": 0.5, "judge": "exact"},
        {"idx": "yt_1", "category": "youtube/vlog", "status": "missing", "video": "yt_1.mp4",
         "reference": "A girl rides a bike.", "prediction": None, "ref_events": ["The girl rides a bike."],
         "recall": 0.0, "precision": None, "note": "no prediction for this video", "judge": "exact"},
    ]
    _write_jsonl(d / "samples.jsonl", samples)
    return d


# ----------------------------------------------------------------------------------------------
# HTML checks

def _local_refs(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"#][^"]*)"', page)  # src, data-src and href


def assert_self_contained(page_path: Path) -> str:
    page = page_path.read_text(encoding="utf-8")
    assert "data:image" not in page and ";base64," not in page, "no inline base64 images"
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page), "no external fetches"
    assert "<link " not in page and "@import" not in page
    for ref in _local_refs(page):
        assert not ref.startswith("/") and "://" not in ref, f"absolute link {ref}"
        assert (page_path.parent / unquote(ref)).exists(), f"dangling link {ref}"
    return page


# ----------------------------------------------------------------------------------------------
# thumbnails

def test_save_clip_thumbnails(tmp_path):
    from PIL import Image

    rels = save_clip_thumbnails(tmp_path, "a/b c.mp4", 3, _frames(8, 336))
    assert rels == [f"thumbs/a/b c.mp4/clip0003_f{i}.jpg" for i in range(8)]
    for rel in rels:
        data = (tmp_path / rel).read_bytes()
        assert data.startswith(JPEG_MAGIC) and len(data) < 12_000
        assert Image.open(tmp_path / rel).size == (128, 128)
    # display aspect restores the shape the square stretch removed; CHW and float frames are accepted
    wide = save_clip_thumbnails(tmp_path, "w.mp4", 0, _frames(2, 384), aspect=16 / 9)
    assert Image.open(tmp_path / wide[0]).size == (128, 72)
    small = save_clip_thumbnails(tmp_path, "s.mp4", 0, _frames(1, 32))  # never upscaled
    assert Image.open(tmp_path / small[0]).size == (32, 32)
    chw = save_clip_thumbnails(tmp_path, "f.mp4", 0, _frames(2, 256).transpose(0, 3, 1, 2).astype(np.float32) / 255)
    assert Image.open(tmp_path / chw[1]).size == (128, 128)
    assert not list(tmp_path.rglob("*.tmp"))
    for odd, folder in (("../escape.mp4", "__/escape.mp4"), ("/abs/x.mp4", "abs/x.mp4"), ("a/../../x.mp4", "a/__/__/x.mp4"),
                        ("C:\\v\\y.mp4", "C_/v/y.mp4")):
        (rel,) = save_clip_thumbnails(tmp_path / "out", odd, 0, _frames(1))
        assert rel == f"thumbs/{folder}/clip0000_f0.jpg"  # never outside OUT_DIR/thumbs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "thumbs"]


# ----------------------------------------------------------------------------------------------
# describe runs

def test_describe_records_latest_wins(tmp_path):
    videos = {v.video: v for v in load_describe_run(make_describe_run(tmp_path))}
    assert set(videos) == {"a/cats.mp4", "b/street #2 night.mp4", "broken.mp4", "c/flaky.mp4"}
    street = videos["b/street #2 night.mp4"].clips
    assert [c["description"] for c in street][1] == "A cyclist rings a bell and turns right."
    assert not videos["c/flaky.mp4"].errors, "an error superseded by a later success is not shown"
    assert [e["stage"] for e in videos["broken.mp4"].errors] == ["open"]
    s = describe_summary(list(videos.values()))
    assert (s["videos"], s["clips"], s["errors"]) == (4, 6, 1)
    assert s["generate_s"] == pytest.approx(3.0)
    assert s["words_min"] == 6 and s["words_max"] == 10


def test_describe_rerun_with_fewer_clips(tmp_path):
    _write_jsonl(tmp_path / "descriptions.jsonl", [
        _clip("v.mp4", 0, 3, 0, 1, "old0"), _clip("v.mp4", 1, 3, 1, 2, "old1"), _clip("v.mp4", 2, 3, 2, 3, "old2"),
        _clip("v.mp4", 0, 2, 0, 1.5, "new0"), _clip("v.mp4", 1, 2, 1.5, 3, "new1"),
        _clip("v.mp4", 0, 1, 0, 3, "brief", grain="brief"),
    ])
    (entry,) = load_describe_run(tmp_path)
    assert [[c["description"] for c in v.clips] for v in entry.variants] == [["new0", "new1"], ["brief"]]
    page = write_describe_report(tmp_path).read_text(encoding="utf-8")
    ids = re.findall(r"<article class=clip id=(\S+?)>", page)
    assert len(ids) == 3 and len(set(ids)) == 3
    assert all(f'href="#{i}"' in page for i in ids), "every timeline segment links its clip"


def test_describe_report_page(tmp_path):
    out = make_describe_run(tmp_path / "run")
    path = write_describe_report(out)
    assert path == out / "report.html"
    page = assert_self_contained(path)
    assert "The cat stretches &lt;b&gt;lazily&lt;/b&gt; &amp; yawns." in page
    assert "moov atom not found" in page and "<code>open</code>" in page
    assert "decoder crashed" not in page
    assert 'href="a/cats.srt"' in page
    assert page.count("class=ph ") == 8, "the clip without thumbnails shows placeholders"
    assert "thumbs/b/street%20%232%20night.mp4/clip0001_f7.jpg" in page
    assert "old text, replaced" not in page
    # the copied folder still works: only relative links
    copy = shutil.copytree(out, tmp_path / "elsewhere")
    assert_self_contained(Path(copy) / "report.html")


@pytest.fixture(scope="module")
def big_run(tmp_path_factory) -> Path:
    return make_big_run(tmp_path_factory.mktemp("big"))


def test_describe_report_500_clips_is_small(big_run):
    import time

    t0 = time.perf_counter()
    path = write_describe_report(big_run)
    took = time.perf_counter() - t0
    size = path.stat().st_size
    page = path.read_text(encoding="utf-8")
    assert page.count("<article class=clip ") == 500
    assert page.count("<img ") == 4000
    assert size < 3_000_000, f"report for 500 clips is {size / 1e6:.2f} MB"
    assert "base64" not in page and "data:image" not in page
    assert took < 10, f"writing the page took {took:.1f} s"
    assert page.count("<img data-src=") == 4000 - 48, "thumbnails past the first screen load as they come into view"


def test_empty_describe_run(tmp_path):
    (tmp_path / "descriptions.jsonl").write_text("", encoding="utf-8")
    page = write_describe_report(tmp_path).read_text(encoding="utf-8")
    assert "No records" in page


# ----------------------------------------------------------------------------------------------
# training runs

def test_training_curves_and_page(tmp_path):
    from PIL import Image

    run = make_training_run(tmp_path / "run")
    offsets = stage_offsets(json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines())
    assert offsets == {"stage1": 0, "stage2": 201}
    written = write_curves(run)
    assert [p.name for p in written] == ["loss.png", "lr.png"]
    for p in written:
        assert p.read_bytes().startswith(PNG_MAGIC)
        assert Image.open(p).size[0] >= 600
    path = write_training_report(run)
    page = assert_self_contained(path)
    for needle in ("loss.png", "lr.png", "checkpoints/step-000100", "final", "synth/stage2.jsonl",
                   "data.tasks", "stage2", "Evaluation loss"):
        assert needle in page, needle


def test_training_curves_tolerate_bad_rows(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2}\nnot json\n{"step": 3, "loss": "x"}\n'
                                            '{"step": 4, "loss": 1.5, "lr": 1e-4}\n{"loss": 9}\n{"step": 5, "lr"',
                                            encoding="utf-8")
    assert [p.name for p in write_curves(tmp_path)] == ["loss.png", "lr.png"]
    (tmp_path / "metrics.jsonl").write_text("", encoding="utf-8")
    (tmp_path / "loss.png").unlink()
    assert write_curves(tmp_path) == []
    page = write_training_report(tmp_path).read_text(encoding="utf-8")
    assert "No metrics logged yet" in page and "run.json not found" in page


# ----------------------------------------------------------------------------------------------
# evaluations

def test_eval_chart_and_page(tmp_path):
    d = make_eval_dir(tmp_path / "eval")
    (chart,) = write_eval_charts(d)
    assert chart.name == "categories.png" and chart.read_bytes().startswith(PNG_MAGIC)
    path = evaluation_report_html(d)
    page = assert_self_contained(path)
    assert "Judge: exact." in page and "Approximate." in page
    assert page.count("<article class=sample ") == 5
    assert 'class="entailment"' in page and 'class="contradiction"' in page and 'class="neutral"' in page
    assert "unmatched (neutral)" in page and "A woman waves &lt;hello&gt;." in page
    assert "by events" in page and "by duration" in page
    assert "41.7" in page  # overall precision in percent


def test_eval_page_from_evaluation_writer(tmp_path):
    """The page reads what evaluation.report actually writes (schema kept in step)."""
    pytest.importorskip("tarsier.evaluation.report")
    from tarsier.evaluation.autodq import SampleResult
    from tarsier.evaluation.report import build_report, write_outputs

    class Judge:
        name = "fake-judge"

    s1 = SampleResult(idx="1", category="live-action", status="ok", reference="A man runs.",
                      prediction="A man runs fast.", ref_events=["The man runs."], pred_events=["The man runs fast."],
                      recall_labels=["entailment"], precision_labels=["neutral"], recall=1.0, precision=0.0,
                      extra={"duration": 4.0, "n_events": 1})
    s2 = SampleResult(idx="2", category="stock", status="missing", reference="Waves.", prediction=None,
                      ref_events=["Waves crash."], recall=0.0, note="no prediction for this video")
    write_outputs(tmp_path, build_report([s1, s2], Judge()), [s1, s2])
    assert detect_kind(tmp_path) == "eval"
    page = assert_self_contained(evaluation_report_html(tmp_path))
    assert "fake-judge" in page and page.count("<article class=sample ") == 2
    assert "The man runs fast." in page and "unmatched (neutral)" in page


# ----------------------------------------------------------------------------------------------
# the pages in a real browser

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]


@pytest.fixture(scope="module")
def chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.skip("headless browser test needs Debian's `chromium` (apt-get install -y chromium)")
    return exe


def _browse(exe: str, tmp: Path, page: Path, hash_: str = "", *, screenshot: Path | None = None) -> str:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    args = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
    if screenshot:
        args += [f"--screenshot={screenshot}", "--window-size=1280,2000"]
    else:  # virtual time lets the page's timers (the self-test's settle delay) run before the dump
        args += ["--dump-dom", "--virtual-time-budget=5000"]
    proc = subprocess.run(args + [page.resolve().as_uri() + hash_], check=False, capture_output=True, text=True,
                          timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Uncaught" not in proc.stderr, proc.stderr[-2000:]
    return proc.stdout


def _attrs(dom: str) -> dict:
    m = re.search(r"<html([^>]*)>", dom)
    assert m, dom[:500]
    return {k: html.unescape(v) for k, v in re.findall(r'([\w-]+)="([^"]*)"', m.group(1))}


def _run_suite(exe: str, tmp: Path, page: Path, suite: list[dict], keep: bool = False) -> tuple[list[dict], int]:
    """Open the page once; its self-test hook runs every filter of the suite and reports the counts
    (and how many images were loaded half a second later, with the last filter on when `keep`)."""
    attrs = _attrs(_browse(exe, tmp, page, "#selftest&suite=" + quote(json.dumps(suite)) + ("&keep=1" if keep else "")))
    assert int(attrs["data-load-ms"]) < 5000, "the page loads without waiting for every thumbnail"
    assert attrs.get("data-selftest") == "done", attrs
    assert attrs["data-js-errors"] == "0", attrs.get("data-js-error-text")
    assert attrs["data-images-pending"] == "0"
    return json.loads(attrs["data-selftest-results"]), int(attrs["data-images-loaded"])


def _screenshot(exe: str, tmp: Path, page: Path, name: str) -> Path:
    shot = tmp / name
    _browse(exe, tmp, page, screenshot=shot)
    assert shot.read_bytes().startswith(PNG_MAGIC) and shot.stat().st_size > 20_000
    keep = os.environ.get("TARSIER_REPORT_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / name)
    return shot


def test_describe_page_in_browser(chromium, tmp_path):
    page = write_describe_report(make_describe_run(tmp_path / "run"))
    got, images = _run_suite(chromium, tmp_path, page, [
        {},                                     # everything
        {"selftest": "CAT"},                    # case-insensitive, in path or description
        {"selftest": "dog runs"},               # every word must match
        {"selftest": "street"},                 # a path matches all its clips
        {"mode": "errors"},                     # errors only
        {"selftest": "moov", "mode": "ok"},     # errors hidden
        {"selftest": "zebra"},                  # nothing
    ])
    keys = ("videos", "clips", "errors")
    assert [tuple(r[k] for k in keys) for r in got] == [
        (4, 6, 1), (1, 3, 0), (1, 1, 0), (1, 2, 0), (1, 0, 1), (0, 0, 0), (0, 0, 0)]
    assert images >= 16, "the thumbnails in view were loaded (and none failed: data-js-errors is 0)"
    _screenshot(chromium, tmp_path, page, "describe-report.png")


def test_500_clip_page_in_browser(chromium, big_run, tmp_path):
    page = write_describe_report(big_run)
    got, images = _run_suite(chromium, tmp_path, page, [{}, {"mode": "errors"}, {"selftest": "video_049"}], keep=True)
    assert [(r["videos"], r["clips"], r["errors"]) for r in got] == [(51, 500, 1), (1, 0, 1), (1, 10, 0)]
    # filtering to the last video brings its 80 thumbnails (past the eagerly loaded first screen) into view
    assert images >= 80


def test_training_page_in_browser(chromium, tmp_path):
    page = write_training_report(make_training_run(tmp_path / "run"))
    attrs = _attrs(_browse(chromium, tmp_path, page, "#selftest="))
    assert attrs["data-selftest"] == "done" and attrs["data-js-errors"] == "0", attrs.get("data-js-error-text")
    assert attrs["data-images-loaded"] == "2" and attrs["data-images-pending"] == "0"  # loss.png, lr.png
    _screenshot(chromium, tmp_path, page, "training-report.png")


def test_eval_page_in_browser(chromium, tmp_path):
    page = evaluation_report_html(make_eval_dir(tmp_path / "eval"))
    got, _ = _run_suite(chromium, tmp_path, page, [
        {}, {"selftest": "robot"}, {"category": "animation", "status": "failed"}, {"category": "live-action"},
        {"selftest": "sits down"}, {"status": "missing"}])
    assert [r["samples"] for r in got] == [5, 1, 1, 2, 1, 1]
    _screenshot(chromium, tmp_path, page, "eval-report.png")


# ----------------------------------------------------------------------------------------------
# CLI

def test_cli_report_kinds(tmp_path):
    from typer.testing import CliRunner

    from tarsier.cli.app import app

    runner = CliRunner()
    cases = {"describe": make_describe_run(tmp_path / "d"), "train": make_training_run(tmp_path / "t"),
             "eval": make_eval_dir(tmp_path / "e")}
    for kind, folder in cases.items():
        assert detect_kind(folder) == kind
        result = runner.invoke(app, ["report", str(folder)])
        assert result.exit_code == 0, result.output
        assert str(folder / "report.html") in result.stdout
        assert (folder / "report.html").is_file()
    other = tmp_path / "elsewhere.html"
    result = runner.invoke(app, ["report", str(cases["eval"]), "--kind", "eval", "-o", str(other)])
    assert result.exit_code == 0 and other.is_file()


def test_bench_folder_gets_both_pages(tmp_path):
    """`tarsier eval bench` writes descriptions and AutoDQ scores into one folder: two linked pages."""
    from typer.testing import CliRunner

    from tarsier.cli.app import app

    folder = make_eval_dir(make_describe_run(tmp_path / "bench"))
    assert detect_kinds(folder) == ["describe", "eval"]
    result = CliRunner().invoke(app, ["report", str(folder)])
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(folder / "report.html"), str(folder / "eval.html")]
    describe_page = assert_self_contained(folder / "report.html")
    eval_page = assert_self_contained(folder / "eval.html")
    assert 'href="eval.html"' in describe_page and 'href="report.html"' in eval_page
    assert "<article class=clip " in describe_page and "<article class=sample " in eval_page
    (folder / "samples.jsonl").write_text(json.dumps({"idx": "1", "category": "stock", "status": "ok",
                                                      "video": "a/cats.mp4", "reference": "r"}) + "\n")
    eval_page = assert_self_contained(evaluation_report_html(folder))  # the scored clip's frames are shown
    assert eval_page.count('<img data-src="thumbs/a/cats.mp4/clip0000_f') == 8
    assert CliRunner().invoke(app, ["report", str(folder), "-o", str(tmp_path / "x.html")]).exit_code == 2


def test_cli_report_usage_errors(tmp_path):
    from typer.testing import CliRunner

    from tarsier.cli.app import app

    runner = CliRunner()
    assert runner.invoke(app, ["report", str(tmp_path)]).exit_code == 2           # nothing to report
    assert runner.invoke(app, ["report", str(tmp_path / "nope")]).exit_code == 2   # not a folder
    (tmp_path / "descriptions.jsonl").write_text("", encoding="utf-8")
    assert runner.invoke(app, ["report", str(tmp_path), "--kind", "bogus"]).exit_code == 2
    assert runner.invoke(app, ["report", str(tmp_path), "--kind", "eval"]).exit_code == 2  # no report.json
    assert runner.invoke(app, ["report", "--help"]).exit_code == 0


def test_imports_stay_light():
    code = ("import sys, tarsier.cli.report, tarsier.reports.pages, tarsier.reports.charts, tarsier.engine.thumbnails; "
            "heavy = [m for m in ('torch', 'matplotlib', 'PIL') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=ROOT,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------------------------
# the package: templates, static files, charts drawn by the training commands

def test_templates_autoescape_and_static_files_are_package_data():
    from importlib.resources import files

    from markupsafe import Markup

    from tarsier.reports.render import environment, static

    env = environment()
    assert env.autoescape is True
    # escaped as the f-string pages were (html.escape: &quot; and &#x27;); safe markup passes; None is empty
    assert env.from_string("{{ x }}|{{ m }}|{{ n }}").render(x="<a href=\"u\">'&", m=Markup("<b>"), n=None) == \
        "&lt;a href=&quot;u&quot;&gt;&#x27;&amp;|<b>|"
    assert env.from_string("<p>\\\n      <b>{{ 1 }}</b>\n</p>").render() == "<p><b>1</b>\n</p>"  # line continuation
    folder = files("tarsier.reports")
    for name in ("report.css", "head.js", "tail.js", "describe.js", "eval.js"):
        assert folder.joinpath("static", name).is_file() and str(static(name)).strip()
    templates = {p.name for p in folder.joinpath("templates").iterdir()}
    assert {"page.html.j2", "describe.html.j2", "train.html.j2", "eval.html.j2", "task.html.j2"} <= templates


def test_pages_and_charts_get_normal_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        run = make_training_run(tmp_path / "run")
        page = write_training_report(run)
        for path in (page, run / "loss.png", run / "lr.png", write_describe_report(make_describe_run(tmp_path / "d"))):
            assert path.stat().st_mode & 0o777 == 0o644, path
    finally:
        os.umask(umask)
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob(".*.tmp*"))


def _fake_training(monkeypatch, module: str, function: str, rows: list[dict]):
    """Stand in for a training function: log `rows`, then take two checkpoints as the real one does."""
    import importlib

    calls = []

    def fake(args, on_log=None, on_status=None, *, on_checkpoint=None):
        run = Path(args.out)
        run.mkdir(parents=True, exist_ok=True)
        for n in (len(rows) // 2, len(rows)):
            _write_jsonl(run / "metrics.jsonl", rows[:n])
            if on_checkpoint:
                on_checkpoint(run)
                calls.append(sorted(p.name for p in run.glob("*.png")))
        return run / "final"

    monkeypatch.setattr(importlib.import_module(module), function, fake)
    return calls


def test_training_commands_draw_curves_at_every_checkpoint(tmp_path, monkeypatch):
    """Training itself draws nothing (it may not import the reports): the CLI hands it a callable
    that redraws the curves after every checkpoint, as the trainer did before."""
    from typer.testing import CliRunner

    from tarsier.cli.app import app

    rows = [{"step": s, "loss": 2.0 / s, "lr": 1e-4, "samples_per_s": 5.0, "elapsed_s": s, "stage": "stage1"}
            for s in range(1, 9)]
    calls = _fake_training(monkeypatch, "tarsier.trainers.train", "train", rows)
    data = tmp_path / "data.jsonl"
    data.write_text("")
    result = CliRunner().invoke(app, ["train", "stage1", "-d", str(data), "-o", str(tmp_path / "s1"),
                                      "--init", "tiny-random", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert calls == [["loss.png", "lr.png"]] * 2
    dpo_rows = [{**r, "stage": "dpo", "reward_margin": 0.1 * r["step"], "reward_chosen": 0.2, "reward_rejected": 0.1,
                 "reward_accuracy": 0.5} for r in rows]
    calls = _fake_training(monkeypatch, "tarsier.trainers.dpo", "train_dpo", dpo_rows)
    result = CliRunner().invoke(app, ["train", "dpo", "-d", str(data), "-o", str(tmp_path / "dpo"),
                                      "--init", "tiny-random", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert calls == [["loss.png", "lr.png", "rewards.png"]] * 2
    assert all((tmp_path / "dpo" / name).read_bytes().startswith(PNG_MAGIC) for name in ("loss.png", "rewards.png"))
