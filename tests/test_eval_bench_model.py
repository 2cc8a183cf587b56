"""`tarsier eval bench` with a model: the forced answer prefix, likelihood scoring of options on the
tiny random model, the synthetic world's benchmark files end to end, and the QA judge through the
fault-injecting local HTTP server used for AutoDQ."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tarsier.cli.app import app
from tarsier.evaluation.answering import LETTERS, generate_with_prefix, option_logprobs

runner = CliRunner()
PREFIX = " Answer: ("
QUESTION = "Question: Which way does it move?\n(A) Left.\n(B) Right.\n(C) Up.\n(D) Down."


@pytest.fixture
def tiny():
    from tarsier.engine.checkpoint import load

    return load("tiny-random", device="cpu")


def _frames(model, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    size = int(model.frame_size)
    return torch.randint(0, 256, (n, int(model.config.frames), size, size, 3), generator=g, dtype=torch.uint8)


def test_forced_prefix_starts_the_answer(tiny):
    frames = _frames(tiny, 2, 0)
    # the first generated token is the model's greedy choice after prompt + prefix
    context = tiny.format_prompt(QUESTION) + PREFIX
    ids = tiny.tokenize([context, context], frames.shape[1])
    with torch.inference_mode():
        _, logits = tiny.forward(ids["input_ids"], ids["attention_mask"], frames=frames)
    expected = [tiny.tokenizer.decode([int(t)]).strip() for t in logits[:, -1].argmax(-1)]
    got = generate_with_prefix(tiny, frames, [QUESTION, QUESTION], PREFIX, max_new_tokens=1)
    assert got == expected
    # the prompt function is restored afterwards
    assert tiny.format_prompt("x") == tiny.config.prompt_template.format(instruction="x")


def test_likelihood_picks_the_option_the_model_scores_highest(tiny):
    frames = _frames(tiny, 6, 1)
    tok = tiny.tokenizer
    # teach the tiny model that the answer after the prefix is "C", with the very token sequence
    # the likelihood scorer scores
    context = tiny.tokenize([tiny.format_prompt(QUESTION) + PREFIX], frames.shape[1])["input_ids"][0].tolist()
    target = tok("C", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([context + target] * 4)
    labels = torch.full_like(ids, -100)
    labels[:, len(context):] = ids[:, len(context):]
    before = option_logprobs(tiny, frames[4:], [QUESTION, QUESTION], PREFIX, [4, 4])
    tiny.train()
    opt = torch.optim.Adam([p for p in tiny.parameters() if p.requires_grad], lr=5e-2)
    for _ in range(8):
        loss, _ = tiny.forward(ids, torch.ones_like(ids), labels=labels, frames=frames[:4])
        opt.zero_grad()
        loss.backward()
        opt.step()
    tiny.eval()
    scores = option_logprobs(tiny, frames[4:], [QUESTION, QUESTION], PREFIX, [4, 4])
    for s, b in zip(scores, before):
        assert len(s) == 4 and max(range(4), key=s.__getitem__) == LETTERS.index("C")
        assert all(v < 0 for v in s) and s[2] > b[2]
    # batching (right padding, rows of different option counts) does not change a row's scores
    alone = option_logprobs(tiny, frames[4:5], [QUESTION], PREFIX, [4])[0]
    mixed = option_logprobs(tiny, frames[4:6], [QUESTION, "Question: Left?\n(A) Yes.\n(B) No."], PREFIX, [4, 2])
    assert mixed[0] == pytest.approx(alone, abs=1e-4) and len(mixed[1]) == 2


def _report(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())


def test_bench_answers_the_synthetic_world_end_to_end(world, tmp_path):
    for name in ("mcq", "qa", "caption"):
        assert (world / "bench" / f"{name}.jsonl").is_file()
    truths = [json.loads(line) for line in (world / "truth.jsonl").read_text().splitlines()]
    mcq_rows = [json.loads(line) for line in (world / "bench" / "mcq.jsonl").read_text().splitlines()]
    assert len(mcq_rows) == len(truths)
    assert mcq_rows[0]["messages"][1]["content"][-1]["reference"] == truths[0]["mcq"][0]["answer"].split(".")[0]
    cap = json.loads((world / "bench" / "caption.jsonl").read_text().splitlines()[0])
    refs = cap["messages"][1]["content"][-1]["reference"]
    assert len(refs) == 3 and refs[0] == truths[0]["brief"]

    common = ["--model", "tiny-random", "--videos", str(world), "--device", "cpu", "--max-new-tokens", "6",
              "-b", "3", "-q"]
    out = tmp_path / "mcq"
    r = runner.invoke(app, ["eval", "bench", "--ref", str(world / "bench" / "mcq.jsonl"), "-o", str(out), *common])
    assert r.exit_code == 0, r.output
    report = _report(out)
    assert report["task"] == "mcq" and report["overall"]["n"] == len(truths)
    assert report["overall"]["answered"] == len(truths) and report["timing"]["answered"] == len(truths)
    assert report["timing"]["seconds_per_100_questions"] > 0
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(int(p["idx"]) for p in preds) == list(range(len(truths)))
    # a rerun reuses the answers; likelihood scoring is another setting and answers again
    r = runner.invoke(app, ["eval", "bench", "--ref", str(world / "bench" / "mcq.jsonl"), "-o", str(out), *common])
    assert r.exit_code == 0 and _report(out)["timing"]["reused"] == len(truths)
    lik = tmp_path / "lik"
    r = runner.invoke(app, ["eval", "bench", "--ref", str(world / "bench" / "mcq.jsonl"), "-o", str(lik),
                            "--mcq-scoring", "likelihood", *common])
    assert r.exit_code == 0, r.output
    report = _report(lik)
    assert report["judge"]["name"] == "mcq:likelihood" and report["overall"]["invalid"] == 0
    for p in (json.loads(line) for line in (lik / "predictions.jsonl").read_text().splitlines()):
        assert p["answer"] == max(p["logprobs"], key=p["logprobs"].get)

    for task, extra in (("qa", ["--judge", "exact"]), ("caption", [])):
        out = tmp_path / task
        r = runner.invoke(app, ["eval", "bench", "--ref", str(world / "bench" / f"{task}.jsonl"), "-o", str(out),
                                *common, *extra])
        assert r.exit_code == 0, r.output
        report = _report(out)
        assert report["task"] == task and report["overall"]["missing"] == 0
        assert report["overall"]["scored"] == report["overall"]["n"] > 0


def test_qa_judge_through_the_fault_injecting_server(tmp_path, monkeypatch):
    import test_eval_openai as fake

    from tarsier.evaluation.benchdata import load_bench
    from tarsier.evaluation.tasks import score_file

    def answer(messages):
        prompt = messages[0]["content"]
        if "Predicted answer:\n" not in prompt:
            return fake.fake_answer_autodq(messages)
        question = prompt.split("Question:\n", 1)[1].split("\n\nCorrect answer:", 1)[0]
        if "UNPARSEABLE" in question:
            return "I cannot say."                  # never parseable: the question fails, counted
        correct = prompt.split("Correct answer:\n", 1)[1].split("\n\nPredicted answer:", 1)[0]
        predicted = prompt.split("Predicted answer:\n", 1)[1].split("\n\nAnswer with JSON", 1)[0]
        ok = set(re.findall(r"[a-z]+", correct.lower())) <= set(re.findall(r"[a-z]+", predicted.lower()))
        return "Sure:\n```json\n" + json.dumps({"pred": "yes" if ok else "no", "score": 4 if ok else 1}) + "\n```"

    monkeypatch.setattr(fake, "fake_answer_autodq", fake.fake_answer, raising=False)
    monkeypatch.setattr(fake, "fake_answer", answer)
    questions = [("What colour is the ball?", "Red.", "It is red.", "colour"),
                 ("How many cats?", "Two.", "Three.", "count"),
                 ("What does the man hold?", "A cup.", "He holds a cup.", "object"),
                 ("UNPARSEABLE question?", "Yes.", "Yes.", "object"),
                 ("Where is the dog?", "On the sofa.", "The dog is on the sofa.", "place"),
                 ("Does it rain?", "No.", "Yes.", "yesno")]
    rows = [{"messages": [{"role": "user", "content": [{"type": "video", "video": {"video_file": f"{i}.mp4"}},
                                                       {"type": "text", "text": q}]},
                          {"role": "assistant", "content": [{"type": "text", "text": "", "reference": ref}]}],
             "dataset": f"MSVD-QA/{kind}", "task": "video/QA", "idx": i}
            for i, (q, ref, _, kind) in enumerate(questions)]
    ref = tmp_path / "qa.jsonl"
    ref.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pred = tmp_path / "pred.jsonl"
    pred.write_text("".join(json.dumps({"idx": i, "response": p}) + "\n" for i, (_, _, p, _) in enumerate(questions)))
    bench = load_bench(ref)
    with fake.FakeServer("flaky", delay=1.0) as server:
        judge = fake._judge(server, tmp_path / "c.sqlite")
        result = score_file(pred, bench, "qa", tmp_path / "out", judge=judge)
        assert server.requests > len(questions)           # the injected failures were retried
        sent = server.requests
        again = score_file(pred, bench, "qa", tmp_path / "again", judge=fake._judge(server, tmp_path / "c.sqlite"))
        assert server.requests == sent                     # all from the cache, the unparseable answers too
    o = result.report["overall"]
    # by hand: yes for 0, 2, 4; no for 1, 5; question 3 failed (never dropped)
    assert (o["n"], o["scored"], o["failed"], o["missing"]) == (6, 5, 1, 0)
    assert o["accuracy"] == pytest.approx(3 / 5) and o["score"] == pytest.approx((4 + 1 + 4 + 4 + 1) / 5)
    assert result.report["categories"]["object"]["failed"] == 1
    assert result.report["judge"]["name"] == "openai:fake-judge"
    assert again.report["overall"] == o
    statuses = [json.loads(line)["status"] for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert statuses == ["ok", "ok", "ok", "failed", "ok", "ok"]


@pytest.mark.parametrize("layout", ["llava", "qwen2_vl"])
def test_bench_mcq_with_published_layouts_forces_the_prefix(layout, tmp_path, monkeypatch):
    """Tarsier1 (LLaVA) and Tarsier2 (Qwen2-VL) layouts, tiny and random: the TVBench-style prefix
    reaches the prompt after the model's own template, and the run completes."""
    import published_fixtures as pf
    import videogen

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    folder = pf.write_llava(tmp_path / "m") if layout == "llava" else pf.write_qwen2_vl(tmp_path / "m")
    videos = tmp_path / "videos"
    videos.mkdir()
    videogen.make_video(videos / "a.mp4", [(1.0, 0), (1.0, 2)], fps=10, size=(96, 64))
    rows = [{"messages": [
        {"role": "user", "content": [{"type": "video", "video": {"video_file": "a.mp4"}},
                                     {"type": "text", "text": q}]},
        {"role": "assistant", "content": [{"type": "text", "text": PREFIX},
                                          {"type": "text", "text": "", "reference": "B"}]}],
        "dataset": "Toy/Direction", "task": "video/QA", "idx": i}
        for i, q in enumerate([QUESTION, "Question: Is it red?\n(A) Yes.\n(B) No."])]
    ref = tmp_path / "mcq.jsonl"
    ref.write_text("".join(json.dumps(r) + "\n" for r in rows))

    from tarsier.engine.checkpoint import load

    model = load(folder, device="cpu")
    prompts = []
    processor_type = type(model.processor)
    original_inputs = processor_type.inputs

    def spy(self, clips, instructions, answers=None, prefixes=None):   # the text the model's answer follows
        prompts.extend(self.prompt(i) + (prefixes[j] if prefixes else "") for j, i in enumerate(instructions))
        return original_inputs(self, clips, instructions, answers, prefixes)

    monkeypatch.setattr(processor_type, "inputs", spy)
    from tarsier.evaluation.answering import answer_rows
    from tarsier.evaluation.benchdata import load_bench

    run = answer_rows(load_bench(ref, videos=videos), model, videos, tmp_path / "out", batch_size=2,
                      max_new_tokens=3)
    assert run.answered == 2 and run.failed == 0
    assert len(prompts) == 2 and all(p.endswith(PREFIX) for p in prompts)
    assert "Question: Is it red?" in prompts[1] and not model.processor.prompt("x").endswith(PREFIX)
