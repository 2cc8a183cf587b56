"""Fine-tuning the published layouts: a tiny Tarsier2 checkpoint in the literal published format (upstream's
wrapper naming, as Tarsier2-Recap-7b ships) trains through the model interface, resumes exactly, trains LoRA
adapters, and saves standard transformers Qwen2-VL folders that plain `from_pretrained` loads with the same
logits; `tarsier export` writes any published naming in that layout; a tiny Tarsier1 (LLaVA layout) trains too."""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))

import published_fixtures as pf

from tarsier.cli.app import app
from tarsier.engine import checkpoint as ckpt
from tarsier.trainers.train import TrainArgs, train

pytestmark = pytest.mark.usefixtures("tarsier_home")
INSTRUCTION = "Describe the video in detail."


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory) -> Path:
    return pf.write_qwen2_vl(tmp_path_factory.mktemp("tarsier2-recap-7b"), style="llava")


def targs(world: Path, out: Path, init, stage: str = "stage1", **kw) -> TrainArgs:
    """Short answers (the QA manifest) and 2 frames per clip: a Qwen2-VL step is dominated by its
    152,064-token vocabulary, so the sequences are kept short."""
    base = dict(stage=stage, data=str(world / "stage1" / "qa.jsonl"), out=str(out), init=str(init), steps=4,
                batch_size=2, lr=1e-2, warmup=1, log_every=1, device="cpu", workers=1, frames=2,
                feature_cache=str(out.parent / "features"))
    base.update(kw)
    return TrainArgs(**base)


def losses(run: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def stage1_run(world, qwen_dir, tmp_path_factory) -> Path:
    old = os.environ.get("TARSIER_HOME")
    os.environ["TARSIER_HOME"] = str(tmp_path_factory.mktemp("home"))
    try:
        run = tmp_path_factory.mktemp("qwen-stage1") / "run"
        train(targs(world, run, qwen_dir, steps=8, warmup=2))
    finally:
        if old is None:
            os.environ.pop("TARSIER_HOME", None)
        else:
            os.environ["TARSIER_HOME"] = old
    return run


def clip_inputs(model, seed: int = 0) -> dict:
    """Two 112x84 clips of 2 frames: a temporal grid (2) no longer than the merged spatial grid (4x3), where
    upstream's rotary positions and transformers 5.x's agree (they differ after the video once t exceeds it)."""
    g = torch.Generator().manual_seed(seed)
    clips = [torch.randint(0, 256, (2, 84, 112, 3), generator=g, dtype=torch.uint8).numpy() for _ in range(2)]
    return model.processor.inputs(clips, [INSTRUCTION, "What happens?"])


def plain_logits(hf, batch: dict) -> torch.Tensor:
    keys = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids")
    with torch.no_grad():
        return hf(**{k: batch[k] for k in keys}).logits


def our_logits(model, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch)[1]


# -- Tarsier2 (Qwen2-VL layout) ----------------------------------------------------------------------------
def test_tarsier2_trains_with_the_loss_falling_and_only_what_should_train_moves(stage1_run, qwen_dir):
    curve = losses(stage1_run)
    assert len(curve) == 8
    assert sum(curve[-3:]) / 3 < sum(curve[:3]) / 3 - 0.5, curve
    run = json.loads((stage1_run / "run.json").read_text())
    assert run["init_source"] == str(qwen_dir)
    before = dict(ckpt.load_folder(qwen_dir).hf.named_parameters())
    after = dict(ckpt.load_folder(stage1_run / "final").hf.named_parameters())
    assert set(before) == set(after)
    for name, p in after.items():
        moved = not torch.equal(p.float(), before[name].float())
        if name.startswith("model.visual.") and ".merger." not in name:
            assert not moved, f"{name}: the vision encoder is frozen by default"
    assert any(not torch.equal(after[n].float(), before[n].float()) for n in after if ".merger." in n)
    assert not torch.equal(after["lm_head.weight"].float(), before["lm_head.weight"].float())


def test_tarsier2_fine_tune_is_a_standard_qwen2_vl_folder(stage1_run):
    from transformers import Qwen2VLForConditionalGeneration

    final = stage1_run / "final"
    for name in ("config.json", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
                 "chat_template.jinja", "preprocessor_config.json", "generation_config.json"):
        assert (final / name).is_file(), name
    config = json.loads((final / "config.json").read_text())
    assert config["architectures"] == ["Qwen2VLForConditionalGeneration"] and config["model_type"] == "qwen2_vl"
    ours = ckpt.load_folder(final).eval()
    # trained on 2 frames (targs): describe feeds the fine-tune 2 frames too
    assert json.loads((final / "preprocessor_config.json").read_text())["num_frames"] == 2
    assert ours.processor.frames == ours.config.frames == 2
    assert ours.processor.frame_spec(160, 90).frames == 2
    plain = Qwen2VLForConditionalGeneration.from_pretrained(str(final), trust_remote_code=False).eval()
    batch = clip_inputs(ours)
    a, b = our_logits(ours, batch), plain_logits(plain, batch)
    assert a.dtype == b.dtype == torch.float32
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_tarsier2_stage2_resumes_exactly(world, stage1_run, tmp_path):
    straight = tmp_path / "straight"
    train(targs(world, straight, stage1_run, stage="stage2", steps=3))
    assert json.loads((straight / "run.json").read_text())["init_source"] == str(stage1_run / "final")
    # the interrupted run also recomputes activations (--grad-checkpointing): the same numbers, less memory
    broken = tmp_path / "broken"
    last = train(targs(world, broken, stage1_run, stage="stage2", steps=3, stop_after=1, grad_checkpointing=True))
    assert last.name == "step-0000001" and (last / "model.safetensors.index.json").is_file()
    train(targs(world, broken, stage1_run, stage="stage2", steps=3, resume=True, grad_checkpointing=True))
    assert losses(straight) == pytest.approx(losses(broken), abs=1e-5)
    a = ckpt.load_folder(straight / "final").hf.state_dict()
    b = ckpt.load_folder(broken / "final").hf.state_dict()
    # equal up to float summation order (gloo's all-reduce vs accumulation; measured 1.7e-5 where an lr 1e-2
    # step moves a weight by about 1e-2)
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-4, worst


def test_tarsier2_lora_saves_adapters_and_a_merged_folder(world, stage1_run, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import Qwen2VLForConditionalGeneration

    run = tmp_path / "lora"
    final = train(targs(world, run, stage1_run, stage="stage2", steps=3, lora=True, lora_r=4, lora_alpha=8,
                        stop_after=2))
    final = train(targs(world, run, stage1_run, stage="stage2", steps=3, lora=True, lora_r=4, lora_alpha=8,
                        resume=True))
    assert len(losses(run)) == 3
    adapter = final / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file()
    trainable = load_file(str(final / "trainable.safetensors"))
    assert any(".lora_A." in k for k in trainable) and any(".merger." in k for k in trainable)
    assert not any(k.startswith("model.visual.blocks.") for k in trainable)
    adapted = {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in trainable if ".lora_" in k}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert all(".language_model." in k for k in trainable if ".lora_" in k)

    # merged folder (plain transformers) == base + adapters (peft) + the merger trained beside them
    base_folder = stage1_run / "final"
    merged = Qwen2VLForConditionalGeneration.from_pretrained(str(final)).eval()
    base = Qwen2VLForConditionalGeneration.from_pretrained(str(base_folder))
    with_adapters = PeftModel.from_pretrained(base, str(adapter)).eval()
    merger = {k: v for k, v in trainable.items() if ".merger." in k}
    result = with_adapters.base_model.model.load_state_dict(merger, strict=False)
    assert not result.unexpected_keys
    ours = ckpt.load_folder(final).eval()
    batch = clip_inputs(ours, seed=1)
    a, b = plain_logits(merged, batch), plain_logits(with_adapters, batch)
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    assert torch.allclose(our_logits(ours, batch), a, atol=1e-5)
    before = plain_logits(Qwen2VLForConditionalGeneration.from_pretrained(str(base_folder)).eval(), batch)
    assert not torch.allclose(a, before, atol=1e-3), "the adapters changed nothing"


def test_describe_loads_a_tarsier2_fine_tune(world, stage1_run, tmp_path):
    video = sorted((world / "videos").glob("*.mp4"))[0]
    result = CliRunner().invoke(app, ["describe", str(video), "-m", str(stage1_run / "final"), "-o",
                                      str(tmp_path / "d"), "--max-new-tokens", "3", "--scenes", "none", "-q"])
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "d").iterdir())


# -- clear errors ----------------------------------------------------------------------------------------
def _train_cli(world, qwen, out, *extra) -> object:
    return CliRunner().invoke(app, ["train", "stage2", "-d", str(world / "stage1" / "qa.jsonl"), "-o", str(out),
                                    "--init", str(qwen), "--steps", "1", "-b", "2", "--frames", "2",
                                    "--device", "cpu", "--workers", "1", *extra])


def test_pair_frames_is_trained_with_and_saved_for_describe(world, qwen_dir, tmp_path):
    result = _train_cli(world, qwen_dir, tmp_path / "r", "--pair-frames", "--frames", "4")
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "r" / "final" / "preprocessor_config.json").read_text())
    assert saved["use_multi_images_for_video"] is False and saved["num_frames"] == 4
    model = ckpt.load(str(tmp_path / "r" / "final"), device="cpu")
    clip = torch.zeros((4, 56, 84, 3), dtype=torch.uint8)
    assert model.processor.pixels([clip])[1].tolist()[0][0] == 2   # 4 frames, two a temporal patch
    # a run continued from it keeps the packing unless told otherwise
    again = _train_cli(world, tmp_path / "r" / "final", tmp_path / "r2", "--frames", "4")
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "r2" / "final" / "preprocessor_config.json").read_text())[
        "use_multi_images_for_video"] is False


def test_pair_frames_on_a_model_without_temporal_patches_is_a_usage_error(world, tmp_path):
    result = _train_cli(world, "tiny-random", tmp_path / "r", "--pair-frames")
    assert result.exit_code == 2, result.output
    assert "only Qwen2-VL-layout models" in result.output and "Traceback" not in result.output


def test_unknown_lora_target_is_one_line_naming_the_ones_there(world, qwen_dir, tmp_path):
    result = _train_cli(world, qwen_dir, tmp_path / "r", "--lora", "--lora-targets", "q_proj,qkv")
    assert result.exit_code == 2, result.output
    assert "no linear layer named 'qkv' in the LLM" in result.output   # qkv is the vision encoder's
    assert "q_proj" in result.output and "Traceback" not in result.output


def test_an_init_whose_layout_cannot_be_trained(world, tmp_path):
    folder = tmp_path / "whisper"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "whisper",
                                                    "architectures": ["WhisperForConditionalGeneration"]}))
    result = _train_cli(world, folder, tmp_path / "r")
    assert result.exit_code == 2, result.output
    assert "unsupported checkpoint layout" in result.output and "Traceback" not in result.output


def test_a_clip_longer_than_the_context_says_how_many_tokens_and_how_to_fit(world, qwen_dir, tmp_path):
    small = tmp_path / "short-context"
    shutil.copytree(qwen_dir, small)
    config = json.loads((small / "config.json").read_text())
    config["text_config"]["max_position_embeddings"] = 160
    (small / "config.json").write_text(json.dumps(config))
    result = _train_cli(world, small, tmp_path / "r", "--frames", "8")
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "exceed the model's context of 160 tokens" in text and "(200 visual: 8 frames x 25)" in text
    tokens, fit = re.search(r"(\d+) tokens \(200 visual.*use --frames (\d+) or fewer", text).groups()
    assert int(tokens) - 200 + int(fit) * 25 <= 160 < int(tokens) - 200 + (int(fit) + 1) * 25
    assert "qa.jsonl:" in text and "Traceback" not in text


# -- export -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("style", ["llava", "qwen2_vl"], ids=["recap-wrapper-names", "pre-4.52-names"])
def test_export_writes_a_standard_folder_with_identical_logits(style, tmp_path):
    from transformers import Qwen2VLForConditionalGeneration

    source = pf.write_qwen2_vl(tmp_path / "src", style=style)
    out = tmp_path / "standard"
    result = CliRunner().invoke(app, ["export", str(source), str(out)])
    assert result.exit_code == 0, result.output
    original = ckpt.load_folder(source).eval()
    plain = Qwen2VLForConditionalGeneration.from_pretrained(str(out)).eval()
    assert plain.dtype == original.dtype == torch.bfloat16
    batch = clip_inputs(original)
    assert torch.equal(our_logits(original, batch), plain_logits(plain, batch))
    again = ckpt.load_folder(out).eval()   # and the project loads it back (describe --model OUT)
    assert torch.equal(our_logits(again, batch), our_logits(original, batch))
    assert CliRunner().invoke(app, ["export", str(source), str(out)]).exit_code == 2   # not over a folder
    assert CliRunner().invoke(app, ["export", str(source), str(out), "--overwrite"]).exit_code == 0


def test_export_refuses_the_llava_layout(tmp_path):
    source = pf.write_llava(tmp_path / "tarsier-7b")
    result = CliRunner().invoke(app, ["export", str(source), str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "export writes Tarsier2 (Qwen2-VL layout) checkpoints" in " ".join(result.output.split())


# -- Tarsier1 (LLaVA layout, loaded into VideoLLM) -------------------------------------------------------------
def test_tarsier1_layout_trains_with_the_loss_falling(world, tmp_path):
    source = pf.write_llava(tmp_path / "tarsier-7b")
    run = tmp_path / "t1"
    final = train(targs(world, run, source, steps=6, lr=1e-2, warmup=1, frames=4))
    curve = losses(run)
    assert sum(curve[-2:]) / 2 < sum(curve[:2]) / 2 - 0.5, curve
    model = ckpt.load(final, device="cpu")
    assert model.config.vision.source == "hf_clip"


def test_published_preset_trains_lora_and_resumes_from_the_hub_cache(world, qwen_dir, monkeypatch, tmp_path):
    """--init tarsier2-recap-7b: the weights come from the Hugging Face cache (faked here, offline), and a
    LoRA run reads its base from there again on resume instead of keeping a copy."""
    from tarsier.engine import hf_layouts

    def fake_snapshot(repo_id, local_files_only):
        assert local_files_only, "an offline run must never try the network"
        if repo_id != "omni-research/Tarsier2-Recap-7b":
            raise FileNotFoundError(repo_id)
        return qwen_dir

    monkeypatch.setattr(hf_layouts, "_snapshot", fake_snapshot)
    run = tmp_path / "lora"
    cli = ["train", "stage2", "-d", str(world / "stage1" / "qa.jsonl"), "-o", str(run), "--init", "tarsier2-recap-7b",
           "--steps", "2", "-b", "2", "--frames", "2", "--device", "cpu", "--lora", "--lora-r", "4",
           "--log-every", "1"]
    result = CliRunner().invoke(app, [*cli, "--stop-after", "1"])
    assert result.exit_code == 0, result.output
    saved = json.loads((run / "run.json").read_text())
    assert saved["init_source"] == saved["lora_base"] == "tarsier2-recap-7b" and saved["lora_alpha"] == 8
    assert not (run / "base").exists()
    result = CliRunner().invoke(app, [*cli, "--resume"])
    assert result.exit_code == 0, result.output
    assert len(losses(run)) == 2 and (run / "final" / "adapter" / "adapter_config.json").is_file()
    result = CliRunner().invoke(app, ["export", "tarsier2-recap-7b", str(tmp_path / "exported")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "exported" / "config.json").read_text())["model_type"] == "qwen2_vl"


@pytest.mark.slow   # ~60 s on 2 busy cores; the default run covers 2 processes with tiny-random (test_train.py)
def test_tarsier2_two_processes_write_the_same_checkpoint_as_one(world, qwen_dir, tmp_path):
    """`accelerate launch` with the shipped DDP config, 2 CPU processes (gloo), against one process
    accumulating the same two micro-batches: the same losses and the same standard folder."""
    import subprocess

    launcher = Path(sys.executable).parent / "accelerate"
    if not launcher.exists():
        pytest.skip("accelerate launcher not installed")
    repo = Path(__file__).resolve().parents[1]
    common = ["-d", str(world / "stage1" / "qa.jsonl"), "--init", str(qwen_dir), "--steps", "2", "-b", "2",
              "--frames", "2", "--device", "cpu", "--log-every", "1", "--group-by-length", "1", "--lr", "1e-2",
              "--warmup", "1"]
    ddp = tmp_path / "ddp"
    cmd = [str(launcher), "launch", "--config_file", str(repo / "configs" / "accelerate" / "ddp.yaml"),
           "--num_processes", "2", "-m", "tarsier.cli.app", "train", "stage1", "-o", str(ddp), *common]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    one = tmp_path / "one"
    result = CliRunner().invoke(app, ["train", "stage1", "-o", str(one), "--grad-accum", "2", *common])
    assert result.exit_code == 0, result.output
    assert losses(ddp) == pytest.approx(losses(one), abs=1e-5)
    a = ckpt.load_folder(ddp / "final").hf.state_dict()
    b = ckpt.load_folder(one / "final").hf.state_dict()
    # equal up to float summation order (gloo's all-reduce vs accumulation; measured 1.7e-5 where an lr 1e-2
    # step moves a weight by about 1e-2)
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-4, worst


@pytest.mark.parametrize("layout", ["tarsier2", "tarsier1", "nano"])
def test_labelled_only_forward_gives_the_full_forwards_loss_and_logits(layout, qwen_dir, tmp_path):
    """The trainers ask for the LM head only where an answer token is predicted (the 152k-word head over
    every video token was most of a Tarsier2 step): same loss, and the same logits at those positions."""
    from tarsier.trainers.dpo import labelled_logps, sequence_logps

    folder = {"tarsier2": qwen_dir, "nano": "tiny-random"}.get(layout) or pf.write_llava(tmp_path / "t1")
    model = ckpt.load(str(folder), device="cpu")
    g = torch.Generator().manual_seed(0)
    spec = model.processor.frame_spec(112, 84, 2)
    clips = [torch.randint(0, 256, (spec.frames, spec.height, spec.width, 3), generator=g,
                           dtype=torch.uint8).numpy() for _ in range(2)]
    batch = model.processor.inputs(clips, [INSTRUCTION, "What happens?"],
                                   answers=["a red circle moves left", "it stops"])
    labels = batch["labels"]
    with torch.no_grad():
        loss, logits = model(**batch)
        picked_loss, picked = model(**batch, labelled_only=True)
    mask = labels[:, 1:] != -100
    assert picked.shape == (int(mask.sum()), logits.shape[-1])
    assert torch.allclose(picked, logits[:, :-1][mask], atol=1e-4)
    assert picked_loss.item() == pytest.approx(loss.item(), rel=1e-5)
    assert torch.allclose(labelled_logps(picked, labels), sequence_logps(logits, labels), atol=1e-4)


def test_a_tied_head_checkpoint_loads_without_its_head_tensor(tmp_path):
    """Qwen2-VL-2B (and fine-tunes of it) ties the LM head to the embedding and stores no lm_head tensor."""
    from safetensors import safe_open
    from transformers import Qwen2VLForConditionalGeneration

    folder = pf.write_qwen2_vl(tmp_path / "tied", style="qwen2_vl", text={"tie_word_embeddings": True})
    for shard in folder.glob("*.safetensors"):
        with safe_open(str(shard), framework="pt") as f:
            assert not [k for k in f.keys() if "lm_head" in k]  # noqa: SIM118
    model = ckpt.load(str(folder), device="cpu")
    assert model.hf.lm_head.weight.data_ptr() == model.hf.get_input_embeddings().weight.data_ptr()
    batch = clip_inputs(model)
    plain = Qwen2VLForConditionalGeneration.from_pretrained(str(folder), dtype=torch.float32)
    assert torch.allclose(our_logits(model.float(), batch), plain_logits(plain, batch), atol=1e-4)


def test_a_compact_vocabulary_checkpoint_is_the_same_layout(tmp_path):
    """bench/qwen_learns.py --vocab compact: the specials right after a small BPE (ids 1024..1037 instead of
    151643..151656), every id moved alike; the model, processor and plain transformers read them from the files."""
    from transformers import Qwen2VLForConditionalGeneration

    folder = pf.write_qwen2_vl(tmp_path / "compact", style="qwen2_vl", special_base=1024)
    config = json.loads((folder / "config.json").read_text())
    assert (config["vocab_size"], config["video_token_id"], config["eos_token_id"]) == (1088, 1037, 1026)
    assert json.loads((folder / "generation_config.json").read_text())["eos_token_id"] == [1026, 1024]
    model = ckpt.load(str(folder), device="cpu")
    batch = clip_inputs(model)
    assert int((batch["input_ids"] == 1036).sum()) > 0 and int(batch["input_ids"].max()) < 1088   # <|image_pad|>
    plain = Qwen2VLForConditionalGeneration.from_pretrained(str(folder), dtype=torch.float32)
    assert torch.allclose(our_logits(model.float(), batch), plain_logits(plain, batch), atol=1e-4)
