"""Training on a tiny model: loss falls, exact resume, stage 2 from stage 1, LoRA, bad data, 2 processes."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tarsier.cli.app import app
from tarsier.engine import checkpoint as ckpt
from tarsier.trainers.train import TrainArgs, train

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("tarsier_home")


def args(world: Path, out: Path, stage: str = "stage1", **kw) -> TrainArgs:
    base = dict(stage=stage, data=str(world / stage / "mixture.json"), out=str(out), init="tiny-random",
                steps=6, batch_size=4, lr=3e-3, warmup=2, log_every=1, device="cpu", workers=1,
                feature_cache=str(out.parent / "features"))
    base.update(kw)
    return TrainArgs(**base)


def losses(run: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_loss_falls_and_checkpoint_is_loadable(world, tmp_path):
    run = tmp_path / "run"
    final = train(args(world, run, steps=25, lr=1e-2, warmup=3))
    curve = losses(run)
    assert len(curve) == 25
    assert sum(curve[-5:]) / 5 < sum(curve[:5]) / 5 - 0.5
    model = ckpt.load(final, device="cpu")  # config + safetensors + tokenizer
    assert model.config.name == "tiny-random"
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"step", "loss", "lr", "samples_per_s", "elapsed_s", "stage"} <= set(row)
    assert (run / "run.json").is_file() and (run / "checkpoints" / "step-0000025" / "optimizer.safetensors").is_file()


def test_interrupted_run_resumes_exactly(world, tmp_path):
    straight = tmp_path / "straight"
    train(args(world, straight, steps=8))
    broken = tmp_path / "broken"
    last = train(args(world, broken, steps=8, stop_after=3))
    assert last.name == "step-0000003" and not (broken / "final").exists()
    train(args(world, broken, steps=8, resume=True))
    a, b = losses(straight), losses(broken)
    assert len(a) == len(b) == 8
    assert a == pytest.approx(b, abs=1e-5)
    # resuming a finished run returns its model untouched
    weights = broken / "final" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert train(args(world, broken, steps=8, resume=True)) == broken / "final"
    assert weights.stat().st_mtime_ns == before and len(losses(broken)) == 8


def test_stage2_starts_from_stage1(world, tmp_path):
    s1 = tmp_path / "s1"
    train(args(world, s1, steps=3))
    s2 = tmp_path / "s2"
    final = train(args(world, s2, stage="stage2", init=str(s1), steps=3))
    assert json.loads((s2 / "run.json").read_text())["init_source"] == str(s1 / "final")
    stage1_model = ckpt.load(s1 / "final", device="cpu")
    stage2_model = ckpt.load(final, device="cpu")
    assert stage1_model.tokenizer.get_vocab() == stage2_model.tokenizer.get_vocab()
    assert not torch.equal(stage1_model.projector[0].weight, stage2_model.projector[0].weight)
    # the frozen tower did not move
    for (n, p), (_, q) in zip(stage1_model.vision.named_parameters(), stage2_model.vision.named_parameters()):
        assert torch.equal(p, q), n


def test_lora_saves_and_reloads_adapters(world, tmp_path):
    from peft import PeftModel

    s1 = tmp_path / "s1"
    train(args(world, s1, steps=2))
    run = tmp_path / "lora"
    final = train(args(world, run, stage="stage2", init=str(s1), steps=4, lora=True, lora_r=4, lr=1e-2))
    assert (final / "adapter" / "adapter_model.safetensors").is_file()
    merged = ckpt.load(final, device="cpu")
    base = ckpt.load(s1 / "final", device="cpu")
    base.llm = PeftModel.from_pretrained(base.llm, str(final / "adapter"))
    from safetensors.torch import load_file

    trainable = load_file(str(final / "trainable.safetensors"))
    base.projector.load_state_dict({k[len("projector."):]: v for k, v in trainable.items() if k.startswith("projector.")})
    base.frame_separator.data.copy_(trainable["frame_separator"])
    frames = torch.randint(0, 256, (2, 8, 32, 32, 3), dtype=torch.uint8)
    batch = merged.tokenize([merged.format_prompt("Describe the video in detail.")] * 2, 8)
    with torch.no_grad():
        _, a = merged(batch["input_ids"], batch["attention_mask"], frames=frames)
        _, b = base(batch["input_ids"], batch["attention_mask"], frames=frames)
    assert torch.allclose(a, b, atol=1e-4)
    # and the adapters actually changed something
    plain = ckpt.load(s1 / "final", device="cpu")
    with torch.no_grad():
        _, c = plain(batch["input_ids"], batch["attention_mask"], frames=frames)
    assert not torch.allclose(a, c, atol=1e-4)
    # a LoRA run resumes too
    run2 = tmp_path / "lora2"
    train(args(world, run2, stage="stage2", init=str(s1), steps=4, lora=True, lora_r=4, stop_after=2))
    train(args(world, run2, stage="stage2", init=str(s1), steps=4, lora=True, lora_r=4, resume=True))
    assert len(losses(run2)) == 4


def test_fresh_nano_starts_from_the_tower_it_ships(world, tmp_path):
    from safetensors.torch import load_file

    from tarsier.trainers.tower import shipped_tower
    from tarsier.trainers.train import build_or_load

    shipped = load_file(str(shipped_tower("nano") / "tower.safetensors"))
    model, source = build_or_load(args(world, tmp_path / "r", init="nano"), ["a red circle moves"] * 4)
    assert "+tower:" in source
    assert all(torch.equal(t, shipped[k]) for k, t in model.vision.state_dict().items())
    model, source = build_or_load(args(world, tmp_path / "r", init="nano", vision_init="none"), ["a red circle"] * 4)
    assert source == "new:nano"
    assert not all(torch.equal(t, shipped[k]) for k, t in model.vision.state_dict().items())
    assert shipped_tower("tiny-random") is None


def test_projector_settings_change_a_fresh_model_only(world, tmp_path):
    from tarsier.trainers.train import build_or_load

    texts = ["a red circle moves"] * 4
    model, _ = build_or_load(args(world, tmp_path / "r", init="nano"), texts)
    assert model.config.projector.motion_separator and model.motion_projector is not None
    model, _ = build_or_load(args(world, tmp_path / "r", init="nano", projector={"motion_separator": False}), texts)
    assert not model.config.projector.motion_separator and model.motion_projector is None
    with pytest.raises(ValueError, match="unknown projector setting 'motion'"):
        build_or_load(args(world, tmp_path / "r", init="nano", projector={"motion": True}), texts)
    with pytest.raises(ValueError, match="fresh model"):   # a checkpoint folder brings its own config
        build_or_load(args(world, tmp_path / "r", init=str(tmp_path), projector={"motion_separator": True}), texts)


def test_feature_store_decodes_the_same_in_process_and_in_a_pool(world, tmp_path):
    from tarsier.trainers.data import FeatureStore, clip_key
    from tarsier.trainers.manifest import load_mixture
    from tarsier.trainers.train import build_or_load

    samples = load_mixture(world / "stage2" / "mixture.json").samples
    model, _ = build_or_load(args(world, tmp_path / "unused"), [s.answer for s in samples])
    clips = {clip_key(s): s for s in samples}
    inline = FeatureStore(model, 4, tmp_path / "inline", workers=1)
    pooled = FeatureStore(model, 4, tmp_path / "pooled", workers=2)
    inline.ensure(samples, batch=4)
    pooled.ensure(samples, batch=4)
    assert inline.computed == pooled.computed == len(clips) == 8
    for key in clips:
        assert torch.equal(inline.pool[inline.memory[key]], pooled.pool[pooled.memory[key]])
    again = FeatureStore(model, 4, tmp_path / "pooled", workers=2)
    again.ensure(samples)
    assert (again.computed, again.loaded) == (0, len(clips))
    assert torch.equal(again.get(samples[:2]), pooled.get(samples[:2]))


def test_feature_store_keeps_only_its_ram_budget_and_reads_the_rest_back(world, tmp_path):
    from tarsier.trainers.data import FeatureStore, clip_key, parse_bytes
    from tarsier.trainers.manifest import load_mixture
    from tarsier.trainers.train import build_or_load

    samples = list({clip_key(s): s for s in load_mixture(world / "stage2" / "mixture.json").samples}.values())
    model, _ = build_or_load(args(world, tmp_path / "unused"), [s.answer for s in samples])
    everything = FeatureStore(model, 4, tmp_path / "c", workers=1, ram_bytes=parse_bytes("1GB"))
    expected = everything.get(samples)
    per_clip = expected[0].numel() * expected[0].element_size()
    assert everything.memory_bytes == len(samples) * per_clip == 8 * per_clip

    small = FeatureStore(model, 4, tmp_path / "c", workers=1, ram_bytes=2 * per_clip + 1)
    for _ in range(2):   # two passes over 8 clips with room for 2: every clip comes back from its file
        for i in range(0, len(samples), 2):
            assert torch.equal(small.get(samples[i:i + 2]), expected[i:i + 2])
            assert len(small.memory) <= 2 and small.memory_bytes <= small.ram_bytes
    assert (small.computed, small.loaded, small.disk_reads) == (0, 8, 16)
    assert list(small.memory) == [clip_key(s) for s in samples[-2:]]   # the most recently used stay
    assert small.pool.shape[0] == 2   # one block of two slots, allocated once: RAM cannot creep past it

    for path in (tmp_path / "c").rglob("*.safetensors"):   # `tarsier cache --all` under a running job
        path.unlink()
    assert torch.equal(small.get(samples[:1]), expected[:1]) and small.computed == 1
    assert parse_bytes("512MB") == 512 * 1024**2 and parse_bytes("1.5g") == 1536 * 1024**2 and parse_bytes("0") == 0
    with pytest.raises(ValueError, match="not a size"):
        parse_bytes("lots")


def test_bad_manifest_row_is_a_clear_usage_error(world, tmp_path):
    bad = tmp_path / "bad.jsonl"
    good = (world / "stage2" / "describe.jsonl").read_text().splitlines()[0]
    row = json.loads(good)
    row["messages"] = row["messages"][:1]  # no assistant turn
    fixed = good.replace("../videos/", str(world / "videos") + "/")
    bad.write_text(fixed + "\n" + json.dumps(row) + "\n{not json\n")
    result = CliRunner().invoke(app, ["train", "stage1", "-d", str(bad), "-o", str(tmp_path / "r"),
                                      "--init", "tiny-random", "--steps", "1", "--device", "cpu"])
    assert result.exit_code == 2
    assert f"{bad}:2" in result.output and f"{bad}:3" in result.output
    assert not (tmp_path / "r").exists()


def test_cli_train_and_describe_with_result(world, tmp_path):
    run = tmp_path / "cli"
    result = CliRunner().invoke(app, ["train", "stage1", "-d", str(world / "stage1" / "mixture.json"), "-o", str(run),
                                      "--init", "tiny-random", "--steps", "2", "-b", "2", "--device", "cpu",
                                      "--feature-cache", str(tmp_path / "f"), "--workers", "1"])
    assert result.exit_code == 0, result.output
    video = sorted((world / "videos").glob("*.mp4"))[0]
    result = CliRunner().invoke(app, ["describe", str(video), "-m", str(run / "final"), "-o", str(tmp_path / "d"),
                                      "--max-new-tokens", "3", "--scenes", "none", "-q"])
    assert result.exit_code == 0, result.output


def test_accelerate_two_cpu_processes(world, tmp_path):
    """Two processes (the shipped DDP config; the trainer's --device cpu makes them gloo CPU processes) write
    the same model as one process accumulating the same two micro-batches (one sample each: each
    micro-batch's loss is a mean over its own answer tokens, so the split must be the same)."""
    if shutil.which("accelerate") is None and not (Path(sys.executable).parent / "accelerate").exists():
        pytest.skip("accelerate launcher not installed")
    launcher = str(Path(sys.executable).parent / "accelerate")
    run = tmp_path / "ddp"
    common = ["-d", str(world / "stage1" / "mixture.json"), "--init", "tiny-random", "--steps", "3", "-b", "2",
              "--device", "cpu", "--log-every", "1", "--feature-cache", str(tmp_path / "f"), "--workers", "1",
              "--group-by-length", "1"]
    # not accelerate's --cpu flag: with it `accelerate launch` starts a single process
    cmd = [launcher, "launch", "--config_file", str(REPO / "configs" / "accelerate" / "ddp.yaml"),
           "--num_processes", "2", "--mixed_precision", "no", "-m", "tarsier.cli.app", "train", "stage1",
           "-o", str(run), *common]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TARSIER_HOME": str(tmp_path / "home")}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stderr.count("model saved to") == 1   # reported by the first process only
    one = tmp_path / "one"
    result = CliRunner().invoke(app, ["train", "stage1", "-o", str(one), "--grad-accum", "2", *common])
    assert result.exit_code == 0, result.output
    assert losses(run) == pytest.approx(losses(one), abs=1e-5) and len(losses(run)) == 3
    a, b = ckpt.load(run / "final", device="cpu"), ckpt.load(one / "final", device="cpu")
    assert a.config.name == "tiny-random"
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.allclose(p, q, atol=1e-6), name


@pytest.mark.parametrize("train_tower", [False, True], ids=["shipped-tower", "train-tower"])
def test_demo_whole_story_in_miniature(tmp_path, train_tower):
    """synth -> [tower] -> stage 1 -> stage 2 -> install nano -> describe the benchmark -> exact-judge scores."""
    import tarsier
    from tarsier.demo import DemoConfig, run_demo

    cfg = DemoConfig(work=tmp_path / "demo", train_videos=8, bench_videos=2, train_tower=train_tower,
                     tower_steps=2, tower_scenes=4, stage1_steps=2, stage2_steps=2,
                     batch_size=4, describe_batch=2, device="cpu")
    summary = run_demo(cfg, log=lambda m: None)
    for grain in ("fine", "brief"):
        assert set(summary["scores"][grain]) >= {"precision", "recall", "f1"}
    assert summary["scores"]["heldout_loss"] > 0
    assert (tmp_path / "demo" / "eval-full-fine" / "report.json").is_file()
    # finished steps live in folders named by what shaped them, so other settings never resume them
    assert len(list((tmp_path / "demo").glob("tower-2-*"))) == int(train_tower)
    [run] = (tmp_path / "demo" / "runs").iterdir()
    assert (run / "stage2-full" / "final").is_dir()
    from tarsier.demo import fingerprint as _fingerprint
    assert _fingerprint({"a": 1}, 2) == _fingerprint({"a": 1}, 2) != _fingerprint({"a": 1}, 3)
    nano = tarsier.load("nano", device="cpu")  # the shipped one: the demo installs nano-demo
    assert nano.config.name == "nano"
    demo = tarsier.load("nano-demo", device="cpu")  # installed into TARSIER_HOME
    assert demo.config.name == "nano" and summary["installed_as"] == "nano-demo"
    assert (tmp_path / "home" / "models" / "nano-demo" / "model.safetensors").is_file()
    assert not (tmp_path / "home" / "models" / "nano").exists()
    # the shipped nano scored on the same benchmark in the same run
    assert set(summary["shipped"]["scores"]["fine"]) >= {"precision", "recall", "f1"}


def test_frame_source_for_a_trained_tower_keeps_only_its_ram_budget(world, tmp_path):
    """--train-vision decodes frames instead of reading cached features; those frames stay within
    --cache-ram too (the most recently used), and what was let go is decoded again, equal."""
    from tarsier.trainers.data import FrameSource, clip_key
    from tarsier.trainers.manifest import load_mixture
    from tarsier.trainers.train import build_or_load

    samples = list({clip_key(s): s for s in load_mixture(world / "stage2" / "mixture.json").samples}.values())
    model, _ = build_or_load(args(world, tmp_path / "unused"), [s.answer for s in samples])
    expected = FrameSource(model, 4).get(samples)
    per_clip = expected[0].numel() * expected[0].element_size()
    small = FrameSource(model, 4, ram_bytes=2 * per_clip + 1)
    for _ in range(2):
        assert torch.equal(small.get(samples), expected)
    assert small.decoded == 2 * len(samples) and small.held == 2 * per_clip
    assert list(small.cache) == [clip_key(s) for s in samples[-2:]]
    small.get(samples[-1:])
    assert small.decoded == 2 * len(samples)   # still held: not decoded again


def test_init_from_the_demo_installed_model(world, tmp_path, tarsier_home):
    """`--init nano-demo` continues from what `tarsier demo` installed; before the demo ran it says so."""
    from tarsier.engine.checkpoint import ModelNotFound, cache_model_dir
    from tarsier.trainers.train import build_or_load

    with pytest.raises(ModelNotFound, match="not installed here"):
        build_or_load(args(world, tmp_path / "a", init="nano-demo"), ["a red circle"])
    installed = cache_model_dir("nano-demo")
    demo = ckpt.load("tiny-random", device="cpu")
    demo.save(installed)
    model, source = build_or_load(args(world, tmp_path / "b", init="nano-demo"), ["a red circle"])
    assert source == str(installed)
    for (n, p), (_, q) in zip(model.named_parameters(), demo.named_parameters(), strict=True):
        assert torch.equal(p, q), n
