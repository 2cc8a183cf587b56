"""Stage 3 (DPO): pairs built by the model (corruptions as recorded, unrankable pairs dropped, resume),
the sigmoid DPO loss by hand, training (loss down, margin up), exact resume, LoRA, precomputed reference
log-probs, the Qwen2-VL (Tarsier2) layout, bad pair rows as file:line."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tarsier.cli.app import app
from tarsier.engine import checkpoint as ckpt
from tarsier.trainers.dpo import DPOArgs, dpo_loss, sequence_logps, train_dpo
from tarsier.trainers.manifest import ManifestError
from tarsier.trainers.pairs import PairArgs, build_pairs, clip_frames, load_pairs, sample_descriptions

pytestmark = pytest.mark.usefixtures("tarsier_home")

FINE = "describe/fine"


# ---------------------------------------------------------------------------------------------
# The loss, by hand
# ---------------------------------------------------------------------------------------------
def test_dpo_loss_against_hand_computed_values():
    # pair 1: beta 0.5, policy (-1, -3), reference (-2, -2): rewards +0.5 / -0.5, logit 1,
    #         loss = log(1 + e^-1) = 0.31326168751822286
    # pair 2: beta 0.5, policy (-5, -4), reference (-4, -4.5): rewards -0.5 / +0.25, logit -0.75,
    #         loss = log(1 + e^0.75) = ln(3.1170000166) = 1.1368710061149
    loss, chosen, rejected = dpo_loss(torch.tensor([-1.0, -5.0]), torch.tensor([-3.0, -4.0]),
                                      torch.tensor([-2.0, -4.0]), torch.tensor([-2.0, -4.5]), beta=0.5)
    assert loss.tolist() == pytest.approx([0.31326168751822286, 1.1368710061149], abs=1e-6)
    assert chosen.tolist() == pytest.approx([0.5, -0.5])
    assert rejected.tolist() == pytest.approx([-0.5, 0.25])
    # equal log-probs: log 2, whatever beta
    loss, _, _ = dpo_loss(*(torch.tensor([-7.0]),) * 4, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2))


def test_sequence_logps_sum_the_labelled_tokens():
    # vocabulary of 4, uniform logits: every token has log-prob log(1/4); labels on 2 positions
    logits = torch.zeros(1, 5, 4)
    labels = torch.tensor([[-100, -100, 2, 3, -100]])
    assert sequence_logps(logits, labels).item() == pytest.approx(2 * math.log(0.25))
    # logits at position t predict token t+1: a confident logit for token 2 at position 1 -> log-prob ~0
    logits[0, 1, 2] = 50.0
    assert sequence_logps(logits, labels).item() == pytest.approx(math.log(0.25), abs=1e-6)


def test_sequence_logps_agree_with_the_models_own_loss():
    model = ckpt.load("tiny-random", device="cpu")
    frames = torch.randint(0, 256, (1, 8, 32, 32, 3), dtype=torch.uint8).numpy()
    batch = model.processor.inputs(list(frames), ["Describe the video."], answers=["a red circle moves left"])
    labels = batch["labels"]
    with torch.no_grad():
        loss, logits = model(**batch)
    n = int((labels[:, 1:] != -100).sum())
    assert sequence_logps(logits, labels).item() == pytest.approx(-loss.item() * n, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# The pairs file
# ---------------------------------------------------------------------------------------------
def _user(video: str, text: str = "Describe the video.") -> dict:
    return {"role": "user", "content": [{"type": "video", "video": {"video_file": video}},
                                        {"type": "text", "text": text}]}


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def test_bad_pair_rows_fail_with_file_and_line(world, tmp_path):
    video = str(world / "videos" / "s5_00000.mp4")
    good = {"messages": [_user(video)], "chosen": _assistant("A red circle grows."),
            "rejected": _assistant("A red circle shrinks.")}
    rows = [
        json.dumps(good),
        "{not json",
        json.dumps({**good, "rejected": []}),
        json.dumps({"messages": [_user(video)], "chosen": _assistant("same"), "rejected": "same"}),
        json.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                    "chosen": "a", "rejected": "b"}),
        json.dumps({"messages": [_user("nowhere.mp4")], "chosen": "a", "rejected": "b"}),
        json.dumps({k: v for k, v in good.items() if k != "chosen"}),
        json.dumps({**good, "corruption": "reversed"}),
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(ManifestError) as info:
        load_pairs(path)
    problems = info.value.problems
    assert problems == [
        f"{path}:2: invalid JSON (Expecting property name enclosed in double quotes at column 2)",
        f"{path}:3: 'rejected' has no assistant turn",
        f"{path}:4: chosen and rejected are the same text",
        f"{path}:5: no video item in the user turn",
        f"{path}:6: video file not found: nowhere.mp4",
        f"{path}:7: missing 'chosen'",
        f"{path}:8: 'corruption' must be an object",
    ]
    # the CLI: one usage error naming every bad row, exit 2, no traceback
    result = CliRunner().invoke(app, ["train", "dpo", "-d", str(path), "-o", str(tmp_path / "run"),
                                      "--init", "tiny-random", "--device", "cpu"])
    assert result.exit_code == 2
    assert f"{path}:4: chosen and rejected are the same text" in result.output
    assert "Traceback" not in result.output
    # a plain string and a single message are accepted for chosen / rejected
    path.write_text(json.dumps({"messages": [_user(video)], "chosen": "A red circle grows.",
                                "rejected": {"role": "assistant", "content": "A red circle shrinks."}}) + "\n")
    (pair,) = load_pairs(path)
    assert (pair.chosen, pair.rejected, pair.video) == ("A red circle grows.", "A red circle shrinks.", Path(video))


# ---------------------------------------------------------------------------------------------
# Building pairs
# ---------------------------------------------------------------------------------------------
class Spy:
    """Records every clip the model is asked to describe (and passes the call on)."""

    def __init__(self, model, describe=None):
        self.model, self.clips, self.describe = model, [], describe
        self._generate = model.generate
        model.generate = self

    def __call__(self, clips, instructions, max_new_tokens=None, temperature=0.0):
        self.clips.extend(np.asarray(c) for c in clips)
        gens = self._generate(clips, instructions, max_new_tokens=max_new_tokens, temperature=temperature)
        if self.describe is not None:
            for g, c in zip(gens, clips):
                g.text = self.describe(np.asarray(c))
        return gens


def _ledger(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_pairs_apply_the_recorded_corruptions_and_drop_what_the_judge_cannot_rank(world, tmp_path):
    from tarsier.evaluation.autodq import CandidateScorer
    from tarsier.evaluation.exact import ExactJudge

    model = ckpt.load("tiny-random", device="cpu")
    spy = Spy(model)
    out = tmp_path / "pairs.jsonl"
    args = PairArgs(model="tiny-random", data=str(world / "stage2" / "describe.jsonl"), out=str(out), task=FINE,
                    limit=2, device="cpu")
    run = build_pairs(args, model=model, scorer=CandidateScorer(ExactJudge()))
    assert (run.clips, run.failed, run.kept) == (2, 0, 0)
    ledger = _ledger(tmp_path / "pairs.clips.jsonl")
    assert len(ledger) == 2 and len(spy.clips) == 2 * 5
    for i, record in enumerate(ledger):
        # a random tiny model writes no event: chosen and rejected both score F1 0, so no pair is kept
        assert record["kept"] == 0 and len(record["dropped"]) == 4
        # (a random model often writes the same gibberish whatever it sees)
        assert {d["reason"] for d in record["dropped"]} <= {
            "the judge does not rank chosen above rejected (margin 0.000)", "the same text as the chosen candidate"}
        assert all(d["chosen"]["f1"] == d["rejected"]["f1"] == 0.0 for d in record["dropped"])
        specs = {d["corruption"]["kind"]: d["corruption"] for d in record["dropped"]}
        clean, *fed = spy.clips[5 * i: 5 * i + 5]
        video = world / "stage2" / json.loads(
            (world / "stage2" / "describe.jsonl").read_text().splitlines()[int(record["source"].rsplit(":", 1)[1]) - 1]
        )["messages"][0]["content"][0]["video"]["video_file"]
        assert np.array_equal(clean, clip_frames(model.processor, video))
        reverse, shuffle, drop, swap = fed
        assert np.array_equal(reverse, clean[::-1])
        perm = specs["shuffle"]["indices"]
        assert sorted(perm) == list(range(8)) and perm not in (list(range(8)), list(range(7, -1, -1)))
        assert np.array_equal(shuffle, clean[perm])
        a, b = specs["drop"]["span"]
        assert b - a == 4 and not set(specs["drop"]["indices"]) & set(range(a, b))
        assert specs["drop"]["indices"][0] == (0 if a > 0 else b) and len(specs["drop"]["indices"]) == 8
        assert np.array_equal(drop, clean[specs["drop"]["indices"]])
        a, b = specs["swap"]["span"]
        other_video = (tmp_path / specs["swap"]["other"]["video_file"]).resolve()
        assert other_video != video.resolve()
        other = clip_frames(model.processor, other_video)
        assert np.array_equal(swap[a:b], other[a:b])
        assert np.array_equal(swap[:a], clean[:a]) and np.array_equal(swap[b:], clean[b:])
    assert out.read_text() == ""
    # resumable: a rerun skips both clips (even though they gave no pair) and asks the model nothing
    again = build_pairs(args, model=model, scorer=CandidateScorer(ExactJudge()))
    assert (again.clips, again.reused) == (0, 2) and len(spy.clips) == 10
    # other settings never mix into the same file
    with pytest.raises(ValueError, match="other settings"):
        build_pairs(PairArgs(**{**args.__dict__, "min_margin": 0.3}), model=model, scorer=CandidateScorer(ExactJudge()))


def _first_fine(world: Path, n: int) -> list[dict]:
    rows = [json.loads(x) for x in (world / "stage2" / "describe.jsonl").read_text().splitlines()]
    return [r for r in rows if r["task"] == FINE][:n]


def _fine_manifest(world: Path, folder: Path, n: int) -> tuple[list[dict], Path]:
    """The first n fine rows of the world's stage-2 manifest, video paths absolute, written to folder/fine.jsonl."""
    rows = _first_fine(world, n)
    manifest = folder / "fine.jsonl"
    for r in rows:
        item = r["messages"][0]["content"][0]["video"]
        item["video_file"] = str((world / "stage2" / item["video_file"]).resolve())
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows, manifest


def _reference_of(row: dict) -> str:
    return row["messages"][1]["content"][0]["text"]


def test_pairs_kept_when_the_judge_ranks_chosen_above_rejected(world, tmp_path):
    """A model that describes the clean clip exactly and a corrupted one with its events in reverse
    order and half of them missing; the exact judge ranks them, the scores recorded are the judge's."""
    from tarsier.evaluation.autodq import CandidateScorer
    from tarsier.evaluation.exact import ExactJudge, parse_events, score

    rows, manifest = _fine_manifest(world, tmp_path, 3)
    model = ckpt.load("tiny-random", device="cpu")
    cleans = {}
    for r in rows:
        cleans[r["messages"][0]["content"][0]["video"]["video_file"]] = (
            clip_frames(model.processor, r["messages"][0]["content"][0]["video"]["video_file"]), _reference_of(r))

    def describe(clip):
        for frames, ref in cleans.values():
            if np.array_equal(clip, frames):
                return ref
        # a corrupted clip: which clean clip it came from is the one sharing its first or last frame
        for frames, ref in cleans.values():
            if any(np.array_equal(clip[k], frames[j]) for k in (0, -1) for j in (0, -1)):
                events = [e.sentence() for e in parse_events(ref)]
                return " ".join(events[::-1][: max(1, len(events) // 2)])
        return "Nothing happens."

    Spy(model, describe)
    out = tmp_path / "pairs.jsonl"
    args = PairArgs(model="test", data=str(manifest), out=str(out), corruptions=("reverse", "drop"),
                    min_margin=0.0, device="cpu")
    run = build_pairs(args, model=model, scorer=CandidateScorer(ExactJudge()))
    pairs = load_pairs(out)           # what it writes is a valid pairs file (video paths relative to it)
    raw = [json.loads(x) for x in out.read_text().splitlines()]
    assert run.kept == len(pairs) == len(raw) > 0
    for pair, row in zip(pairs, raw):
        reference = row["reference"]
        ref_events = [e.sentence() for e in parse_events(reference)]
        for side, text in (("chosen", pair.chosen), ("rejected", pair.rejected)):
            p, r = score(text, ref_events)
            assert row["scores"][side]["precision"] == pytest.approx(p)
            assert row["scores"][side]["recall"] == pytest.approx(r)
        assert pair.chosen == reference and row["scores"]["chosen"]["f1"] == 1.0
        assert row["scores"]["margin"] == pytest.approx(1.0 - row["scores"]["rejected"]["f1"])
        assert row["corruption"]["kind"] in ("reverse", "drop") and row["scores"]["judge"] == "exact"
    # what it writes trains as it is
    run_dir = tmp_path / "dpo"
    train_dpo(DPOArgs(data=str(out), out=str(run_dir), init="tiny-random", steps=1, batch_size=2, log_every=1,
                      device="cpu"))
    assert metrics(run_dir)[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    # killed while writing the last clip's pairs (its ledger line not yet written): the rerun removes
    # that clip's pairs, the torn line included, and redoes only that clip
    ledger = (tmp_path / "pairs.clips.jsonl").read_text().splitlines(keepends=True)
    last = json.loads(ledger[-1])["clip"]
    (tmp_path / "pairs.clips.jsonl").write_text("".join(ledger[:-1]))
    text = out.read_text()
    out.write_text(text[: len(text) - 20])
    again = build_pairs(args, model=model, scorer=CandidateScorer(ExactJudge()))
    assert (again.clips, again.reused) == (1, 2)
    assert out.read_text() == text and [r["clip"] for r in _ledger(tmp_path / "pairs.clips.jsonl")][-1] == last
    # a margin no pair reaches keeps nothing, and says why
    strict = build_pairs(PairArgs(**{**args.__dict__, "out": str(tmp_path / "strict.jsonl"), "min_margin": 1.5}),
                         model=model, scorer=CandidateScorer(ExactJudge()))
    assert strict.kept == 0 and strict.dropped >= run.kept
    reasons = {d["reason"] for rec in _ledger(tmp_path / "strict.clips.jsonl") for d in rec["dropped"]}
    assert any(x.startswith("margin ") and x.endswith("below 1.500") for x in reasons)


def test_on_policy_pairs_take_rejected_from_the_clean_clips_other_samples(world, tmp_path):
    """--corruption none: no corrupted copy is described; the chosen text is the best clean sample and the
    rejected ones are the clean samples the judge ranks below it (a copy of the chosen text is dropped)."""
    from tarsier.evaluation.autodq import CandidateScorer
    from tarsier.evaluation.exact import ExactJudge, parse_events

    rows, manifest = _fine_manifest(world, tmp_path, 2)
    model = ckpt.load("tiny-random", device="cpu")
    refs = [(clip_frames(model.processor, r["messages"][0]["content"][0]["video"]["video_file"]), _reference_of(r))
            for r in rows]
    drawn = []

    def describe(clip):   # the k samples of a clip: its reference, half its events, the reference again
        ref = next(ref for frames, ref in refs if np.array_equal(clip, frames))
        events = [e.sentence() for e in parse_events(ref)]
        text = [ref, " ".join(events[: max(1, len(events) // 2)]), ref][sum(1 for d in drawn if d == ref)]
        drawn.append(ref)
        return text

    spy = Spy(model, describe)
    out = tmp_path / "pairs.jsonl"
    args = PairArgs(model="test", data=str(manifest), out=str(out), corruptions=("none",), samples=3,
                    temperature=1.0, min_margin=0.0, device="cpu")
    run = build_pairs(args, model=model, scorer=CandidateScorer(ExactJudge()))
    assert len(spy.clips) == 2 * 3 and all(any(np.array_equal(c, f) for f, _ in refs) for c in spy.clips)
    raw = [json.loads(x) for x in out.read_text().splitlines()]
    assert run.kept == len(raw) == 2
    for row, (_frames, ref) in zip(raw, refs):
        assert row["corruption"] == {"kind": "none"} and row["chosen"][0]["content"][0]["text"] == ref
        assert row["scores"]["chosen"]["f1"] == 1.0 > row["scores"]["rejected"]["f1"]
    reasons = [d["reason"] for rec in _ledger(tmp_path / "pairs.clips.jsonl") for d in rec["dropped"]]
    assert reasons == ["the same text as the chosen candidate"] * 2
    load_pairs(out)
    with pytest.raises(ValueError, match="--samples 2"):
        build_pairs(PairArgs(**{**args.__dict__, "samples": 1, "temperature": 0.0, "out": str(tmp_path / "x.jsonl")}),
                    model=model)


def test_temperature_sampling(world, tmp_path):
    model = ckpt.load("tiny-random", device="cpu")
    clip = clip_frames(model.processor, world / "videos" / "s5_00001.mp4")
    instruction = "Describe the video."
    # a temperature near 0 is greedy decoding: the same text as the interface's generate()
    (greedy,) = model.generate([clip], [instruction], max_new_tokens=12)
    (cold,) = sample_descriptions(model, [clip], [instruction], max_new_tokens=12, temperature=1e-4, seed=0)
    assert cold == greedy.text
    # a hot one varies between samples and is reproducible from the seed
    draw = [sample_descriptions(model, [clip] * 3, [instruction] * 3, max_new_tokens=12, temperature=2.0,
                                seed=7) for _ in range(2)]
    assert draw[0] == draw[1] and len(set(draw[0])) > 1
    with pytest.raises(ValueError, match="greedy"):
        build_pairs(PairArgs(model="tiny-random", data=str(world / "stage2" / "describe.jsonl"),
                             out=str(tmp_path / "p.jsonl"), samples=2), model=model)


def test_dpo_pairs_cli(world, tmp_path):
    out = tmp_path / "pairs.jsonl"
    result = CliRunner().invoke(app, ["train", "dpo-pairs", "--model", "tiny-random", "-d",
                                      str(world / "stage2" / "describe.jsonl"), "-o", str(out), "--task", FINE,
                                      "--limit", "1", "-c", "reverse,shuffle", "--device", "cpu",
                                      "--cache", str(tmp_path / "cache.sqlite")])
    assert result.exit_code == 0, result.output
    assert "1 clip(s) done (0 already done before): 0 pair(s) kept, 2 candidate(s) dropped" in result.output
    (record,) = _ledger(tmp_path / "pairs.clips.jsonl")
    assert [d["corruption"]["kind"] for d in record["dropped"]] == ["reverse", "shuffle"]
    bad = CliRunner().invoke(app, ["train", "dpo-pairs", "--model", "tiny-random", "-d",
                                   str(world / "stage2" / "describe.jsonl"), "-o", str(out), "-c", "blur"])
    assert bad.exit_code == 2 and "unknown corruption 'blur'" in bad.output


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hand_pairs(world, tmp_path_factory) -> Path:
    """Pairs where chosen is the reference and rejected the same events in reverse order."""
    folder = tmp_path_factory.mktemp("pairs")
    rows = []
    for r in _first_fine(world, 8):
        reference = _reference_of(r)
        sentences = [s for s in reference.split(". ") if s]
        rejected = ". ".join(reversed(sentences))
        if rejected == reference:
            continue
        user = r["messages"][0]
        user["content"][0]["video"]["video_file"] = str(
            (world / "stage2" / user["content"][0]["video"]["video_file"]).resolve())
        rows.append({"messages": [user], "chosen": _assistant(reference), "rejected": _assistant(rejected),
                     "corruption": {"kind": "reverse"}})
    path = folder / "pairs.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in rows))
    assert len(rows) >= 4
    return path


@pytest.fixture(scope="module")
def start(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("start") / "model"
    ckpt.load("tiny-random", device="cpu").save(folder)
    return folder


def dargs(pairs: Path, out: Path, init: Path, **kw) -> DPOArgs:
    base = dict(data=str(pairs), out=str(out), init=str(init), steps=6, batch_size=2, lr=1e-2, warmup=0,
                beta=0.5, log_every=1, device="cpu")
    base.update(kw)
    return DPOArgs(**base)


def metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_dpo_lowers_the_loss_and_raises_the_margin(hand_pairs, start, tmp_path):
    run = tmp_path / "run"
    from tarsier.reports.charts import write_training_charts

    final = train_dpo(dargs(hand_pairs, run, start, steps=10), on_checkpoint=write_training_charts)  # as the CLI does
    rows = metrics(run)
    assert len(rows) == 10
    first, last = rows[0], rows[-1]
    # step 1: the policy is the reference
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-5) and first["reward_margin"] == pytest.approx(0, abs=1e-5)
    assert sum(r["loss"] for r in rows[-3:]) / 3 < 0.5 * first["loss"]
    assert min(r["reward_margin"] for r in rows[-3:]) > 0.5 and last["reward_accuracy"] == 1.0
    assert {"reward_chosen", "reward_rejected", "logp_chosen", "logp_rejected", "lr", "samples_per_s",
            "elapsed_s"} <= set(last) and last["stage"] == "dpo"
    for png in ("loss.png", "lr.png", "rewards.png"):
        assert (run / png).stat().st_size > 1000
    from tarsier.reports.train_page import write_training_report

    page = write_training_report(run).read_text()   # `tarsier report RUN`
    assert all(f'src="{png}"' in page for png in ("loss.png", "lr.png", "rewards.png"))
    # the final model loads, and prefers the chosen texts more than its start did
    trained, begun = ckpt.load(final, device="cpu"), ckpt.load(start, device="cpu")
    pairs = load_pairs(hand_pairs)
    from tarsier.trainers.dpo import pair_logps

    clips = [clip_frames(trained.processor, p.video) for p in pairs]
    with torch.no_grad():
        tc, tr = pair_logps(trained, clips, pairs)
        bc, br = pair_logps(begun, clips, pairs)
    assert ((tc - tr) - (bc - br)).mean() > 0
    for (n, p), (_, q) in zip(trained.vision.named_parameters(), begun.vision.named_parameters()):
        assert torch.equal(p, q), n   # the tower stays frozen


@pytest.mark.parametrize("lora,precompute", [(False, False), (True, True)], ids=["full", "lora-precomputed"])
def test_dpo_resumes_exactly(hand_pairs, start, tmp_path, lora, precompute):
    kw = dict(steps=4, lora=lora, lora_r=4, lora_alpha=8, precompute_ref=precompute)
    straight = tmp_path / "straight"
    train_dpo(dargs(hand_pairs, straight, start, **kw))
    broken = tmp_path / "broken"
    last = train_dpo(dargs(hand_pairs, broken, start, stop_after=2, **kw))
    assert last.name == "step-0000002" and not (broken / "final").exists()
    train_dpo(dargs(hand_pairs, broken, start, resume=True, **kw))
    a, b = metrics(straight), metrics(broken)
    assert len(a) == len(b) == 4
    for x, y in zip(a, b):
        for key in ("loss", "reward_margin", "logp_chosen", "logp_rejected"):
            assert x[key] == pytest.approx(y[key], abs=1e-4), (x["step"], key)
    if precompute:
        assert (straight / "ref_logps.jsonl").is_file()
    if lora:
        assert (straight / "final" / "trainable.safetensors").is_file()
        merged = ckpt.load(straight / "final", device="cpu")   # a plain model, adapters folded in
        begun = ckpt.load(start, device="cpu")
        changed = [n for (n, p), (_, q) in zip(merged.named_parameters(), begun.named_parameters())
                   if not torch.equal(p, q)]
        assert changed and all(not n.startswith("vision.") for n in changed)


def test_precomputed_reference_trains_like_the_frozen_copy(hand_pairs, start, tmp_path):
    copy, stored = tmp_path / "copy", tmp_path / "stored"
    train_dpo(dargs(hand_pairs, copy, start, steps=2))
    train_dpo(dargs(hand_pairs, stored, start, steps=2, precompute_ref=True))
    # the same up to float32 rounding: the stored log-probs were computed in other batches (other
    # padding) than the copy's, and a description's log-prob is a sum over hundreds of tokens (~ -600)
    for x, y in zip(metrics(copy), metrics(stored)):
        assert x["loss"] == pytest.approx(y["loss"], abs=2e-4)
        assert x["reward_margin"] == pytest.approx(y["reward_margin"], abs=2e-3)
    rows = [json.loads(x) for x in (stored / "ref_logps.jsonl").read_text().splitlines()]
    assert len(rows) == len(load_pairs(hand_pairs)) and all(r["chosen"] < 0 and r["rejected"] < 0 for r in rows)


@pytest.mark.parametrize("swap", [False, True], ids=["seed-run", "control"])
def test_reference_log_probs_are_reused_from_an_earlier_run(hand_pairs, start, tmp_path, swap):
    """Runs from one start on one pairs file (other seeds, the swapped control) read the first run's
    reference log-probs instead of computing them again, and train exactly as if they had."""
    first = tmp_path / "first"
    train_dpo(dargs(hand_pairs, first, start, steps=1, precompute_ref=True, seed=1))
    computed, reused = tmp_path / "computed", tmp_path / "reused"
    kw = dict(steps=2, precompute_ref=True, seed=2, swap_labels=swap)
    train_dpo(dargs(hand_pairs, computed, start, **kw))
    train_dpo(dargs(hand_pairs, reused, start, ref_logps=str(first / "ref_logps.jsonl"), **kw))
    for x, y in zip(metrics(computed), metrics(reused), strict=True):
        for key in ("loss", "reward_margin", "reward_accuracy"):
            assert x[key] == pytest.approx(y[key], abs=1e-5), key
    assert (reused / "ref_logps.jsonl").read_text() == (computed / "ref_logps.jsonl").read_text()
    with pytest.raises(ValueError, match="not of"):
        other = tmp_path / "other-start"
        ckpt.load("tiny-random", device="cpu").save(other)
        train_dpo(dargs(hand_pairs, tmp_path / "wrong", other, ref_logps=str(first / "ref_logps.jsonl"),
                        **kw))


def test_swapped_labels_control(hand_pairs, start, tmp_path):
    run = tmp_path / "control"
    train_dpo(dargs(hand_pairs, run, start, steps=1, swap_labels=True))
    swapped = json.loads((run / "run.json").read_text())["swapped"]
    sources = [p.source for p in load_pairs(hand_pairs)]
    assert 0 < len(swapped) < len(sources) and set(swapped) <= set(sources)
    # the pairs as trained: chosen and rejected exchanged for exactly the pairs listed, the rest untouched
    from tarsier.trainers.dpo import swap_labels

    pairs = load_pairs(hand_pairs)
    assert swap_labels(pairs, 0) == swapped   # seeded: the same pairs every time
    original = {p.source: p for p in load_pairs(hand_pairs)}
    for p in pairs:
        flipped = p.source in swapped
        assert (p.chosen, p.rejected) == ((original[p.source].rejected, original[p.source].chosen) if flipped
                                          else (original[p.source].chosen, original[p.source].rejected))


def test_dpo_cli(hand_pairs, start, tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "dpo", "-d", str(hand_pairs), "-o", str(run), "--init", str(start),
                                      "--steps", "2", "-b", "2", "--beta", "0.2", "--log-every", "1",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "dpo step 2/2" in result.output and f"model saved to {run / 'final'}" in result.output
    assert json.loads((run / "run.json").read_text())["beta"] == 0.2

    rpo = tmp_path / "rpo"   # with the NLL term: the chosen answers' per-token NLL is logged and in the loss
    result = CliRunner().invoke(app, ["train", "dpo", "-d", str(hand_pairs), "-o", str(rpo), "--init", str(start),
                                      "--steps", "2", "-b", "2", "--sft-weight", "1.0", "--log-every", "1",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    first = json.loads((rpo / "metrics.jsonl").read_text().splitlines()[0])
    assert json.loads((rpo / "run.json").read_text())["sft_weight"] == 1.0
    assert first["nll_chosen"] > 0 and math.isclose(first["loss"], math.log(2) + first["nll_chosen"], rel_tol=1e-4)


# ---------------------------------------------------------------------------------------------
# The Qwen2-VL (Tarsier2) layout
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_dpo_on_a_tiny_qwen2_vl_checkpoint(hand_pairs, tmp_path, lora):
    import published_fixtures as pf

    folder = pf.write_qwen2_vl(tmp_path / "tarsier2", style="qwen2_vl")
    # short texts: the fixture's tokenizer has no merges (a token per character) and 152k logits per token
    pairs = tmp_path / "pairs.jsonl"
    rows = [json.loads(x) for x in hand_pairs.read_text().splitlines()][:4]
    for r in rows:
        first, second = r["chosen"][0]["content"][0]["text"].split(". ")[:2]
        r["chosen"], r["rejected"] = first[:40] + ".", second[:40] + "."
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = tmp_path / "run"
    # full: reference log-probs precomputed and the run stopped and resumed (the checkpoint, model and
    # optimizer state, reloads in this layout); LoRA: the policy with its adapters off is the reference
    kw = dict(steps=4, lr=2e-3, beta=0.5, frames=2, lora=lora, lora_r=4, lora_alpha=8, precompute_ref=not lora)
    if not lora:
        train_dpo(dargs(pairs, run, folder, stop_after=2, **kw))
    final = train_dpo(dargs(pairs, run, folder, resume=not lora, **kw))
    rows = metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert rows[-1]["reward_margin"] > rows[0]["reward_margin"] and rows[-1]["loss"] < rows[0]["loss"]
    trained, begun = ckpt.load(final, device="cpu", dtype=torch.float32), ckpt.load(folder, device="cpu",
                                                                                  dtype=torch.float32)
    assert type(trained).__name__ == "QwenVideoModel"
    moved = {n for (n, p), (_, q) in zip(trained.named_parameters(), begun.named_parameters())
             if not torch.allclose(p, q)}
    assert moved and all(not n.startswith("hf.model.visual.") or ".merger." in n for n in moved)


def test_pairs_on_a_tiny_qwen2_vl_checkpoint(world, tmp_path):
    """Candidates from the Tarsier2 layout, greedy and sampled (sampling extends its token-type ids)."""
    import published_fixtures as pf

    from tarsier.evaluation.autodq import CandidateScorer
    from tarsier.evaluation.exact import ExactJudge

    folder = pf.write_qwen2_vl(tmp_path / "tarsier2", style="llava")
    model = ckpt.load(folder, device="cpu", dtype=torch.float32)
    spy = Spy(model)
    base = dict(model=str(folder), data=str(world / "stage2" / "describe.jsonl"), task=FINE, limit=1, frames=2,
                max_new_tokens=4, corruptions=("reverse",), device="cpu")
    greedy = build_pairs(PairArgs(out=str(tmp_path / "greedy.jsonl"), **base), model=model, scorer=CandidateScorer(ExactJudge()))
    assert (greedy.clips, greedy.failed) == (1, 0) and len(spy.clips) == 2
    assert np.array_equal(spy.clips[1], spy.clips[0][::-1]) and spy.clips[0].shape[0] == 2
    sampled = build_pairs(PairArgs(out=str(tmp_path / "sampled.jsonl"), temperature=1.0, samples=2, **base),
                          model=model, scorer=CandidateScorer(ExactJudge()))
    (record,) = _ledger(tmp_path / "sampled.clips.jsonl")
    assert (sampled.clips, sampled.failed) == (1, 0) and "error" not in record
    assert record["dropped"] and all(d["corruption"]["kind"] == "reverse" for d in record["dropped"])


def test_rpo_term_against_hand_computed_values():
    import math

    from tarsier.trainers.dpo import dpo_loss, rpo_loss

    pc, pr = torch.tensor([-2.0, -6.0]), torch.tensor([-3.0, -4.0])
    rc, rr = torch.tensor([-2.5, -5.0]), torch.tensor([-2.0, -4.5])
    losses, _, _ = dpo_loss(pc, pr, rc, rr, beta=1.0)
    # margins: (0.5 - (-1.0)) = 1.5 and (-1.0 - 0.5) = -1.5
    assert torch.allclose(losses, torch.tensor([math.log1p(math.exp(-1.5)), math.log1p(math.exp(1.5))]))
    tokens = torch.tensor([4, 3])
    assert torch.equal(rpo_loss(losses, pc, tokens, 0.0), losses.mean())   # weight 0: plain DPO
    nll = (2.0 / 4 + 6.0 / 3) / 2                                            # per-token NLL of chosen, averaged
    assert math.isclose(float(rpo_loss(losses, pc, tokens, 0.5)), float(losses.mean()) + 0.5 * nll, rel_tol=1e-6)
