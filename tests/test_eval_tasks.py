"""Benchmark tasks beside AutoDQ: multiple choice, open-ended QA, captioning. Scoring by hand on
hand-made rows, CIDEr-D on a published worked example, the TVBench sample rows, the CLI's `score`,
bad benchmark files and unmatched prediction files."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tarsier.cli.app import app
from tarsier.evaluation.benchdata import BenchFileError, load_bench, parse_options
from tarsier.evaluation.cider import bleu4, cider_d, ptb_tokenize
from tarsier.evaluation.mcq import aggregate, parse_choice, score_rows

TVBENCH = Path(__file__).resolve().parents[2] / "shared" / "tvbench" / "TVBench.sample.jsonl"
if not TVBENCH.is_file():
    TVBENCH = Path("/work/shared/tvbench/TVBench.sample.jsonl")
DREAM = Path("/work/shared/dream1k/DREAM-1k.sample.jsonl")
runner = CliRunner()


def mcq_row(idx, dataset: str, question: str, options: list[str], letter: str, vid: str = "v.mp4") -> dict:
    """A row written the way TVBench's annotation file writes them."""
    text = "Question: " + question + "\n" + "\n".join(f"({chr(65 + i)}) {o}" for i, o in enumerate(options))
    return {"messages": [
        {"role": "user", "content": [{"type": "video", "video": {"video_file": "<placeholder>"}},
                                     {"type": "text", "text": text}]},
        {"role": "assistant", "content": [{"type": "text", "text": " Answer: ("},
                                          {"type": "text", "text": "", "reference": letter}]}],
        "dataset": dataset, "task": "video/QA", "idx": idx, "vid": vid}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---------------------------------------------------------------------------------------------
def test_parse_choice_letters_digits_parentheses_empty_invalid():
    assert parse_choice("A", 4) == "A"
    assert parse_choice("B) Take off a hat/cap.", 4) == "B"      # what follows " Answer: ("
    assert parse_choice("(c)", 4) == "C"
    assert parse_choice(" d.", 4) == "D"
    assert parse_choice("2", 4) == "B"                             # digits map to letters
    assert parse_choice("(4)", 4) == "D"
    assert parse_choice("The answer is C.", 4) == "C"
    assert parse_choice("I would say (B) here", 4) == "B"
    assert parse_choice("", 4) is None and parse_choice("   ", 4) is None and parse_choice(None, 4) is None
    assert parse_choice("E", 4) is None                            # beyond the options
    assert parse_choice("5", 4) is None and parse_choice("0", 4) is None
    assert parse_choice("Because", 4) is None                      # a word, not a letter
    assert parse_options("Question: q?\n(A) one\n(B) two\n(C) three") == [("A", "one"), ("B", "two"), ("C", "three")]
    assert parse_options("Which?\nA. x\nB. y\nAnswer with the letter.") == [("A", "x"), ("B", "y")]


def test_mcq_scores_per_subtask_and_overall_by_hand(tmp_path):
    rows = [
        mcq_row(0, "Demo/Count", "How many?", ["two", "three", "four"], "A"),
        mcq_row(1, "Demo/Count", "How many now?", ["two", "three", "four"], "B"),
        mcq_row(2, "Demo/Count", "How many later?", ["two", "three", "four"], "C"),
        mcq_row(3, "Demo/Order", "What first?", ["early", "later"], "A"),
        mcq_row(4, "Demo/Order", "What last?", ["early", "later"], "B"),
        mcq_row(5, "Demo/Order", "What in between?", ["early", "later"], "A"),
    ]
    bench = load_bench(write_jsonl(tmp_path / "b.jsonl", rows))
    assert [r.task for r in bench] == ["mcq"] * 6 and bench[0].prefix == " Answer: (" and bench[0].subtask == "Count"
    answers = {"0": "A) two", "1": "2", "2": "", "3": "(b) later", "4": "E"}      # no answer for 5
    results = score_rows(bench, answers)
    assert [r.status for r in results] == ["correct", "correct", "invalid", "wrong", "invalid", "missing"]
    agg = aggregate(results)
    count, order = agg["categories"]["Count"], agg["categories"]["Order"]
    assert count["accuracy"] == pytest.approx(2 / 3) and count["invalid"] == 1
    assert order["accuracy"] == 0.0 and order["answered"] == 2 and order["missing"] == 1
    o = agg["overall"]
    assert o["accuracy_subtasks"] == pytest.approx((2 / 3 + 0) / 2)    # mean over sub-tasks
    assert o["accuracy_questions"] == pytest.approx(2 / 5)             # mean over answered questions
    assert (o["invalid"], o["missing"], o["correct"]) == (2, 1, 2)


# ---------------------------------------------------------------------------------------------
def test_cider_d_on_a_published_worked_example():
    # SummEval's test of its CIDEr (the pycocoevalcap CiderScorer, whitespace tokens, sigma 6):
    # evaluation/tests/test_cider.py expects 2.5759014911864084 for these three pairs (test_util.py)
    cands = ["28-year-old chef found dead in San Francisco mall",
             "A 28-year-old chef who recently moved to San Francisco was found dead in the staircase of a local "
             "shopping center.",
             "The victim's brother said he cannot imagine anyone who would want to harm him,\"Finally, it went "
             "uphill again at him.\""]
    refs = ["28-Year-Old Chef Found Dead at San Francisco Mall",
            "A 28-year-old chef who had recently moved to San Francisco was found dead in the stairwell of a local "
            "mall this week.",
            "But the victim's brother says he can't think of anyone who would want to hurt him, saying, \"Things were "
            "finally going well for him.\""]
    score, per = cider_d([c.split() for c in cands], [[r.split()] for r in refs])
    assert score == pytest.approx(2.5759014911864084, abs=1e-12)
    assert len(per) == 3 and sum(per) / 3 == pytest.approx(score)
    # by hand: a candidate equal to its only reference, no n-gram shared with the other items:
    # every sim_n is 1 and the length penalty is 1, so 10 each
    s, per = cider_d([["a", "red", "ball", "rolls"], ["two", "blue", "cats", "sleep"]],
                     [[["a", "red", "ball", "rolls"]], [["two", "blue", "cats", "sleep"]]])
    assert per == pytest.approx([10.0, 10.0]) and s == pytest.approx(10.0)


def test_bleu4_and_ptb_tokens_by_hand():
    cat = "the cat sat on the mat".split()
    # precisions 6/7, 5/6, 4/5, 3/4, candidate longer than the reference: BP 1
    assert bleu4([cat + ["today"]], [[cat]]) == pytest.approx((6 / 7 * 5 / 6 * 4 / 5 * 3 / 4) ** 0.25)
    # all precisions 1, candidate 6 tokens against 7: BP exp(1 - 7/6)
    assert bleu4([cat], [[cat + ["today"]]]) == pytest.approx(math.exp(1 - 7 / 6))
    assert ptb_tokenize("A man can't open the door, it's locked!") == \
        ["a", "man", "ca", "n't", "open", "the", "door", "it", "'s", "locked"]
    assert ptb_tokenize("A 28-year-old (chef) paid $3.50...") == ["a", "28-year-old", "chef", "paid", "$", "3.50"]


# ---------------------------------------------------------------------------------------------
def test_tvbench_sample_rows_load_and_score(tmp_path):
    rows = load_bench(TVBENCH)
    assert len(rows) == 20 and {r.task for r in rows} == {"mcq"}
    assert len({r.subtask for r in rows}) == 10 and rows[0].subtask == "Action Antonym"
    assert all(r.prefix == " Answer: (" and r.video_file is None and r.vid for r in rows)
    first = rows[0]
    assert first.options == [("A", "Put on a hat/cap."), ("B", "Take off a hat/cap.")] and first.reference == "A"
    # an upstream-style prediction file: {"idx", "text": {"prediction"}}; right for the first row of
    # each sub-task, the other option's letter for the second
    raw = [json.loads(line) for line in TVBENCH.read_text().splitlines()]
    preds = []
    for i, r in enumerate(raw):
        ref = r["messages"][1]["content"][1]["reference"]
        other = "B" if ref == "A" else "A"
        preds.append({"idx": r["idx"], "text": {"prediction": (ref if i % 2 == 0 else other) + ") ..."}})
    pred = write_jsonl(tmp_path / "pred.jsonl", preds)
    result = runner.invoke(app, ["eval", "score", str(pred), "--ref", str(TVBENCH), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["task"] == "mcq" and report["judge"]["name"] == "mcq:letter"
    assert report["overall"]["accuracy_subtasks"] == 0.5 and report["overall"]["accuracy_questions"] == 0.5
    assert all(c["accuracy"] == 0.5 and c["n"] == 2 for c in report["categories"].values())
    samples = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert samples[0]["question"].startswith("Question: What is the action") and samples[0]["options"][0] == \
        {"letter": "A", "text": "Put on a hat/cap."} and samples[0]["status"] == "correct"
    assert "| Action Antonym | 50.0 | 2 |" in (tmp_path / "out" / "report.md").read_text()
    # the review page: per-sub-task table and every question with its options, answer and verdict
    result = runner.invoke(app, ["report", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Multiple-choice accuracy" in html and "Judge: mcq:letter." in html
    assert html.count("<article class=sample") == 20 and "Put on a hat/cap." in html
    assert "chose A, reference A" in html and "<td>Action Antonym</td><td class=n>50.0</td>" in html


def test_bad_benchmark_rows_fail_before_the_model_with_file_line(tmp_path, monkeypatch):
    from tarsier.engine import checkpoint as engine_checkpoint

    def no_model(*a, **k):
        raise AssertionError("the model must not load for a bad benchmark file")

    monkeypatch.setattr(engine_checkpoint, "load", no_model)
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "ok.mp4").write_bytes(b"")
    good = mcq_row(0, "D/x", "q?", ["a", "b"], "A", vid="ok.mp4")
    no_ref = mcq_row(1, "D/x", "q?", ["a", "b"], "A", vid="ok.mp4")
    no_ref["messages"][1]["content"][1]["reference"] = ""
    beyond = mcq_row(2, "D/x", "q?", ["a", "b"], "C", vid="ok.mp4")
    unknown = dict(mcq_row(3, "D/x", "q?", ["a", "b"], "A", vid="ok.mp4"), task="video/telepathy")
    missing = mcq_row(4, "D/x", "q?", ["a", "b"], "B", vid="gone.mp4")
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [good, no_ref, beyond, unknown, missing]) + "\n{oops\n")
    with pytest.raises(BenchFileError) as e:
        load_bench(path, videos=videos)
    assert e.value.problems == [
        f"{path}:2: no reference",
        f"{path}:3: reference letter C is beyond the 2 options (A-B)",
        f"{path}:4: unknown task 'video/telepathy' (known: mcq, qa, caption, dream, video/QA, video/caption)",
        f"{path}:5: missing video {videos / 'gone.mp4'}",
        f"{path}:6: not valid JSON (Expecting property name enclosed in double quotes)",
    ]
    result = runner.invoke(app, ["eval", "bench", "--model", "tiny-random", "--ref", str(path), "--videos",
                                 str(videos), "--task", "mcq", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    for n in (2, 3, 5, 6):
        assert f"bad.jsonl:{n}:" in result.output.replace("\n", "")
    assert not (tmp_path / "out").exists()


def test_prediction_file_matching_nothing_is_an_error(tmp_path):
    pred = write_jsonl(tmp_path / "p.jsonl", [{"idx": 9000 + i, "prediction": "A"} for i in range(3)])
    result = runner.invoke(app, ["eval", "score", str(pred), "--ref", str(TVBENCH), "-o", str(tmp_path / "o")])
    assert result.exit_code == 1, result.output
    out = " ".join(result.output.split())
    assert "none of the 3 prediction(s)" in out and "20 reference row(s)" in out
    assert "matched 0" in out and "a prediction key: '9000'" in out and "a reference key: 'idx=0" in out
    # the same for AutoDQ (it printed a table of dashes and exited 0 before)
    dream = write_jsonl(tmp_path / "d.jsonl", [{"video": "nope/x.mp4", "clip": 0, "description": "A man."}])
    result = runner.invoke(app, ["eval", "autodq", str(dream), "--ref", str(DREAM), "--judge", "exact",
                                 "-o", str(tmp_path / "a")])
    assert result.exit_code == 1, result.output
    out = " ".join(result.output.split())
    assert "none of the 1 prediction(s)" in out and "a prediction key: 'nope/x.mp4'" in out
    assert not (tmp_path / "a" / "report.json").exists()
    # a partial match is scored; the counts are printed and the missing rows make exit 1
    part = write_jsonl(tmp_path / "part.jsonl", [{"idx": 0, "prediction": "A"}, {"idx": 1, "prediction": "A"},
                                                 {"idx": 77777, "prediction": "B"}])
    result = runner.invoke(app, ["eval", "score", str(part), "--ref", str(TVBENCH), "-o", str(tmp_path / "p")])
    assert result.exit_code == 1, result.output
    out = " ".join(result.output.split())
    assert "matched 2 of 20 reference rows; 18 reference row(s) have no prediction, 1 prediction(s) match no " \
           "reference row (e.g. '77777')" in out
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    assert report["overall"]["missing"] == 18 and report["overall"]["accuracy_questions"] == 1.0
    assert report["unmatched_predictions"] == ["77777"] and len(report["missing_predictions"]) == 18


def test_caption_and_qa_rows_score_from_files(tmp_path):
    def row(idx, task, prompt, reference, dataset):
        return {"messages": [
            {"role": "user", "content": [{"type": "video", "video": {"video_file": f"v{idx}.mp4"}},
                                         {"type": "text", "text": prompt}]},
            {"role": "assistant", "content": [{"type": "text", "text": "", "reference": reference}]}],
            "dataset": dataset, "task": task, "idx": idx}

    caps = write_jsonl(tmp_path / "cap.jsonl", [
        row(0, "video/caption", "Caption it.", ["A red ball rolls.", "a red ball is rolling"], "MSVD"),
        row(1, "video/caption", "Caption it.", ["Two blue cats sleep."], "MSVD")])
    rows = load_bench(caps)
    assert [r.task for r in rows] == ["caption", "caption"] and rows[0].references[1] == "a red ball is rolling"
    pred = write_jsonl(tmp_path / "cp.jsonl", [{"idx": 0, "prediction": "A red ball rolls!"},
                                               {"idx": 1, "prediction": "Two blue cats sleep."}])
    result = runner.invoke(app, ["eval", "score", str(pred), "--ref", str(caps), "-o", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "c" / "report.json").read_text())
    expected, _ = cider_d([ptb_tokenize("A red ball rolls!"), ptb_tokenize("Two blue cats sleep.")],
                          [[ptb_tokenize("A red ball rolls."), ptb_tokenize("a red ball is rolling")],
                           [ptb_tokenize("Two blue cats sleep.")]])
    assert report["overall"]["cider"] == pytest.approx(expected) and report["judge"]["name"] == "cider-d"
    # open-ended QA with the exact judge (the synthetic world's answers)
    qa = write_jsonl(tmp_path / "qa.jsonl", [row(0, "video/QA", "What colour is the ball?", "Red.", "S/colour"),
                                             row(1, "video/QA", "How many cats?", "Two.", "S/count")])
    pred = write_jsonl(tmp_path / "qp.jsonl", [{"idx": 0, "prediction": "red"}, {"idx": 1, "prediction": "Three."}])
    assert runner.invoke(app, ["eval", "score", str(pred), "--ref", str(qa), "-o", str(tmp_path / "q")]).exit_code == 2
    result = runner.invoke(app, ["eval", "score", str(pred), "--ref", str(qa), "--judge", "exact",
                                 "-o", str(tmp_path / "q")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "q" / "report.json").read_text())
    assert report["task"] == "qa" and report["overall"]["accuracy"] == 0.5 and report["overall"]["score"] == 2.5
    assert report["categories"]["colour"]["accuracy"] == 1.0 and report["categories"]["count"]["accuracy"] == 0.0


def test_task_modules_do_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, tarsier.evaluation.benchdata, tarsier.evaluation.mcq, tarsier.evaluation.qa, tarsier.evaluation.cider, tarsier.evaluation.tasks, "
            "tarsier.evaluation.answering, tarsier.cli.eval; "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
            "print(*bad, file=sys.stderr); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_compare_task_reports(tmp_path):
    raw = [json.loads(line) for line in TVBENCH.read_text().splitlines()]
    refs = [r["messages"][1]["content"][1]["reference"] for r in raw]
    half = write_jsonl(tmp_path / "half.jsonl", [{"idx": r["idx"], "prediction": ref if i < 10 else "Z"}
                                                 for i, (r, ref) in enumerate(zip(raw, refs))])
    full = write_jsonl(tmp_path / "full.jsonl", [{"idx": r["idx"], "prediction": ref} for r, ref in zip(raw, refs)])
    for name, pred in (("a", half), ("b", full)):
        runner.invoke(app, ["eval", "score", str(pred), "--ref", str(TVBENCH), "-o", str(tmp_path / name)])
    result = runner.invoke(app, ["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    overall = [line for line in result.output.splitlines() if "overall" in line][0]
    assert "+50.0" in overall                      # 10 of 20 right -> 20 of 20
    # AutoDQ reports and task reports are never compared
    dream = runner.invoke(app, ["eval", "autodq", str(write_jsonl(tmp_path / "d.jsonl", [
        {"video": "videos/000001.mp4", "clip": 0, "description": "A man walks."}])), "--ref", str(DREAM),
        "--judge", "exact", "-o", str(tmp_path / "d")])
    assert dream.exit_code == 0, dream.output
    result = runner.invoke(app, ["eval", "compare", str(tmp_path / "a"), str(tmp_path / "d")])
    assert result.exit_code == 2


def test_qa_verdict_parsing_and_score_for_dream(tmp_path):
    from tarsier.evaluation.parsing import ParseError, parse_qa_verdict

    assert parse_qa_verdict('```json\n{"pred": "yes", "score": 4}\n```') == {"pred": "yes", "score": 4.0}
    assert parse_qa_verdict("Sure. {'pred': 'No', 'score': '1/5'}") == {"pred": "no", "score": 1.0}
    assert parse_qa_verdict('{"pred": true, "score": 5}') == {"pred": "yes", "score": 5.0}
    for bad in ('{"pred": "maybe", "score": 3}', '{"pred": "yes", "score": 7}', '{"pred": "yes"}', "yes, 4"):
        with pytest.raises(ParseError):
            parse_qa_verdict(bad)
    # `eval score --task dream` is AutoDQ
    rows = [json.loads(line) for line in DREAM.read_text().splitlines()][:3]
    pred = write_jsonl(tmp_path / "p.jsonl", [{"idx": r["idx"], "prediction": r["text"]["response"]} for r in rows])
    result = runner.invoke(app, ["eval", "score", str(pred), "--ref", str(DREAM), "--judge", "exact",
                                 "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["metric"] == "AutoDQ" and report["counts"]["matched"] == 3
    assert "matched 3 of 20 reference rows" in " ".join(result.output.split())
