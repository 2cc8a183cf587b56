"""Published Tarsier / Tarsier2 checkpoints: tiny random copies in the exact published formats, loaded offline
by the real code path (engine.load on a folder, presets through a faked hub cache), then used to describe
videos. No weights are downloaded: a test that reached the hub would fail under HF_HUB_OFFLINE=1."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import tarsier

sys.path.insert(0, str(Path(__file__).parent))

import published_fixtures as pf

torch = pytest.importorskip("torch")

SHARED_VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "videos"
INSTRUCTIONS = ["Describe the video in detail.", "Describe the video in one short sentence.", "What happens?"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """Every test here runs with the hub off and an empty Hugging Face cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)


@pytest.fixture(scope="session")
def llava_dir(tmp_path_factory) -> Path:
    return pf.write_llava(tmp_path_factory.mktemp("tarsier-7b"))


@pytest.fixture(scope="session")
def qwen_dir(tmp_path_factory) -> Path:
    return pf.write_qwen2_vl(tmp_path_factory.mktemp("tarsier2-recap-7b"), style="llava")


@pytest.fixture(scope="session")
def qwen_plain_dir(tmp_path_factory) -> Path:
    return pf.write_qwen2_vl(tmp_path_factory.mktemp("tarsier2-7b-0115"), style="qwen2_vl")


@pytest.fixture(scope="session")
def llava_model(llava_dir):
    import tarsier
    return tarsier.load(llava_dir, device="cpu")


@pytest.fixture(scope="session")
def qwen_model(qwen_dir):
    return tarsier.load(qwen_dir, device="cpu")


@pytest.fixture(scope="session")
def small_video(tmp_path_factory) -> Path:
    import videogen

    d = tmp_path_factory.mktemp("published-videos")
    videogen.make_video(d / "two_scenes.mp4", [(1.5, 0), (1.5, 2)], fps=10, size=(96, 64))
    return d


def _frames(model, batch: int, seed: int = 0) -> torch.Tensor:
    """Random clips of the model's frame count: Tarsier1's square, or a 3:2 frame for Tarsier2."""
    g = torch.Generator().manual_seed(seed)
    spec = model.processor.frame_spec(84, 56)
    return torch.randint(0, 256, (batch, spec.frames, spec.height, spec.width, 3), generator=g, dtype=torch.uint8)


# -- loading: every published tensor lands in a parameter --------------------------------------------------
def test_llava_layout_loads_every_tensor(llava_dir, llava_model):
    """Tarsier-7b's 4.x names (vision_tower.vision_model.*, ...) land on the matching parameters, whatever
    the installed transformers calls its CLIP modules."""
    from safetensors import safe_open

    from tarsier.engine.model import VideoLLM

    m = llava_model
    assert isinstance(m, VideoLLM) and m.published_layout == "llava"
    assert m.published_naming.startswith("LLaVA, transformers 4.x")
    assert m.config.vision.source == "hf_clip" and m.config.frames == 8
    assert m.config.prompt_template == "USER: <image>\n{instruction} ASSISTANT: "
    assert m.video_token_id == 32000
    assert (m.config.projector.newline_token_id, m.config.projector.frame_token_id) == (32002, 32003)
    grid = 56 // 14
    assert m.config.visual_tokens_per_frame() == grid * (grid + 1) + 1   # 601 at 336 px / patch 14
    parts = {   # published prefix -> (module, its own key prefix)
        "vision_tower.vision_model.": ({k.removeprefix("vision_model."): v for k, v in m.vision.state_dict().items()}, ""),
        "multi_modal_projector.linear_1.": (m.projector.state_dict(), "0."),
        "multi_modal_projector.linear_2.": (m.projector.state_dict(), "2."),
        "language_model.": (m.llm.state_dict(), ""),
    }
    seen = 0
    for shard in sorted(llava_dir.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open handles are not dicts
                prefix = next(p for p in parts if key.startswith(p))
                params, own = parts[prefix]
                target = own + key[len(prefix):]
                assert torch.equal(params[target].float(), f.get_tensor(key).float()), key
                seen += 1
    assert seen == len(m.state_dict())   # nothing missing, nothing unexpected


@pytest.mark.parametrize("naming", ["published", "4.52"])
def test_llava_namings_load(naming, tmp_path):
    m = tarsier.load(pf.write_llava(tmp_path / naming, naming=naming), device="cpu")
    assert m.published_naming.startswith("LLaVA, transformers 4.x" if naming == "published" else "LLaVA, transformers 4.52+")


@pytest.mark.parametrize(("style", "naming", "want"), [
    ("llava", None, "Tarsier2 wrapper"), ("qwen2_vl", None, "Qwen2-VL, transformers before 4.52"),
    ("qwen2_vl", "4.52", "Qwen2-VL, transformers 4.52+"), ("llava", "pre-4.52", "Qwen2-VL, transformers before 4.52")])
def test_qwen2_vl_namings_load(style, naming, want, tmp_path):
    """Each published Tarsier2 naming loads: every tensor lands on the parameter of the same module."""
    from safetensors import safe_open

    folder = pf.write_qwen2_vl(tmp_path / "ckpt", style=style, naming=naming)
    m = tarsier.load(folder, device="cpu")
    assert m.published_naming.startswith(want)
    vision, lm, head = pf.QWEN_NAMINGS[naming or ("wrapper" if style == "llava" else "pre-4.52")]
    modules = {vision: m.hf.model.visual.state_dict(), lm: m.hf.model.language_model.state_dict(),
               head: m.hf.lm_head.state_dict()}
    for shard in sorted(folder.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118
                prefix = max((p for p in modules if key.startswith(p)), key=len)
                assert torch.equal(modules[prefix][key[len(prefix):]].float(), f.get_tensor(key).float()), key


def test_unmapped_tensors_are_named(tmp_path):
    """A checkpoint in a naming nobody published: the error names the tensors it could not place."""
    from safetensors.torch import load_file, save_file

    from tarsier.engine.checkpoint import ModelNotFound


    folder = pf.write_qwen2_vl(tmp_path / "odd", style="qwen2_vl")
    for shard in folder.glob("*.safetensors"):
        state = {k.replace("visual.blocks.", "visual.layers."): v for k, v in load_file(str(shard)).items()}
        save_file(state, str(shard), metadata={"format": "pt"})
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"] = {k.replace("visual.blocks.", "visual.layers."): v for k, v in index["weight_map"].items()}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelNotFound, match=r"unmapped: \['visual\.layers\.0\."):
        tarsier.load(folder, device="cpu")


def test_llava_visual_tokens_follow_upstream_layout(llava_model):
    """Per frame: CLIP block -2 patch features (CLS dropped) -> linear_1, GELU, linear_2; a newline embedding
    (row 32002 of the LLM table) after every row of patches and the new-frame embedding (row 32003)."""
    m = llava_model
    frames = _frames(m, 1)
    with torch.no_grad():
        got = m.visual_tokens(frames=frames)[0]
        x = frames[0].permute(0, 3, 1, 2).float() / 255
        x = (x - torch.tensor(pf.CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(pf.CLIP_STD).view(1, 3, 1, 1)
        hidden = m.vision(pixel_values=x, output_hidden_states=True).hidden_states[-2][:, 1:]
        proj = m.projector[2](torch.nn.functional.gelu(m.projector[0](hidden)))
        table = m.llm.get_input_embeddings().weight
        g = int(hidden.shape[1] ** 0.5)
        rows = torch.cat([proj.view(-1, g, g, proj.shape[-1]), table[32002].expand(proj.shape[0], g, 1, -1)], 2)
        want = torch.cat([rows.flatten(1, 2), table[32003].expand(proj.shape[0], 1, -1)], 1).flatten(0, 1)
    assert torch.allclose(got, want, atol=1e-5)


def test_qwen2_vl_layout_loads_both_config_styles(qwen_model, qwen_plain_dir):
    from tarsier.engine.qwen2_vl import QwenVideoModel

    for m in (qwen_model, tarsier.load(qwen_plain_dir, device="cpu")):
        assert isinstance(m, QwenVideoModel) and m.published_layout == "qwen2_vl"
        assert m.config.frames == 16
        assert m.hf.config.image_token_id == 151655 and m.hf.config.video_token_id == 151656
        assert m.hf.config.vision_start_token_id == 151652
    prompt = qwen_model.processor.prompt("Describe the video in detail.")
    assert "<|vision_start|><|image_pad|><|vision_end|>Describe the video in detail.<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_qwen2_vl_frames_fill_the_temporal_patch(qwen_model):
    m = qwen_model
    batch = m.processor.inputs(_frames(m, 2), INSTRUCTIONS[:2])
    h, w = 56 // 14, 84 // 14
    assert batch["image_grid_thw"].tolist() == [[16, h, w]] * 2     # 16 frames, each duplicated: t = 16
    n_tokens = 16 * h * w // 4
    assert (batch["input_ids"] == 151655).sum(1).tolist() == [n_tokens] * 2
    lengths = batch["attention_mask"].sum(1)
    assert lengths[0] != lengths[1] and batch["attention_mask"][:, -1].tolist() == [1, 1]   # left padding
    assert batch["attention_mask"][int(lengths.argmin()), 0] == 0


def test_qwen2_vl_pairs_consecutive_frames_when_the_checkpoint_says_so(qwen_plain_dir, tmp_path):
    """Upstream's video_sampling_strategy.use_multi_images_for_video false: consecutive frames share a
    temporal patch (the last repeated for an odd count), and a saved fine-tune keeps saying so."""
    import json
    import shutil

    folder = shutil.copytree(qwen_plain_dir, tmp_path / "paired")
    pre = json.loads((folder / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").write_text(json.dumps({**pre, "use_multi_images_for_video": False}))
    m = tarsier.load(folder, device="cpu")
    assert m.processor.duplicate_frames is False and m.processor.geometry.copies == 1
    clip = torch.stack([torch.full((56, 84, 3), v, dtype=torch.uint8) for v in (0, 100, 200)])   # 3 frames
    pixels, grid = m.processor.pixels([clip])
    assert grid.tolist() == [[2, 4, 6]]                      # 3 frames -> 2 temporal patches
    patches = pixels.view(2, 24, 3, 2, 14, 14)                # (t, h*w, channel, frame in the patch, 14, 14)
    mean, std = m.processor.video_processor.image_mean[0], m.processor.video_processor.image_std[0]
    seen = (patches[:, :, 0] * std + mean) * 255              # red channel back to 0..255
    assert [[round(float(seen[t, :, k].mean())) for k in range(2)] for t in range(2)] == [[0, 100], [200, 200]]
    m.save(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "preprocessor_config.json").read_text())["use_multi_images_for_video"] is False
    assert tarsier.load(tmp_path / "saved", device="cpu").processor.duplicate_frames is False


def test_strict_loading_rejects_a_foreign_tensor(llava_dir, tmp_path):
    import shutil

    from safetensors.torch import save_file

    from tarsier.engine.checkpoint import ModelNotFound


    bad = tmp_path / "bad"
    shutil.copytree(llava_dir, bad)
    index = json.loads((bad / "model.safetensors.index.json").read_text())
    save_file({"extra.weight": torch.zeros(2)}, str(bad / "extra.safetensors"))
    index["weight_map"]["extra.weight"] = "extra.safetensors"
    (bad / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelNotFound, match="unexpected"):
        tarsier.load(bad, device="cpu")


# -- batching ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["llava", "qwen"])
def test_batch_gives_the_same_text_as_one_by_one(which, llava_model, qwen_model):
    m = llava_model if which == "llava" else qwen_model
    frames = _frames(m, 3, seed=1)
    together = m.generate(frames, INSTRUCTIONS, max_new_tokens=8)
    alone = [m.generate(frames[i:i + 1], [INSTRUCTIONS[i]], max_new_tokens=8)[0] for i in range(3)]
    assert [g.text for g in together] == [g.text for g in alone]
    assert all(g.tokens > 0 for g in together)


# -- presets through the hub cache, and the one-line error when absent ---------------------------------------
def test_presets_load_through_the_hub_cache(monkeypatch, llava_dir, qwen_dir):
    from tarsier.engine import hf_layouts
    from tarsier.engine.catalog import list_models

    repos = {"omni-research/Tarsier-7b": llava_dir, "omni-research/Tarsier2-Recap-7b": qwen_dir}

    def fake_snapshot(repo_id, local_files_only):
        assert local_files_only, "an offline run must never try the network"
        if repo_id not in repos:
            raise FileNotFoundError(repo_id)
        return repos[repo_id]

    monkeypatch.setattr(hf_layouts, "_snapshot", fake_snapshot)
    m = tarsier.load("tarsier-7b", device="cpu")
    assert m.model_id == "tarsier-7b" and m.published_layout == "llava"
    m = tarsier.load("omni-research/Tarsier2-Recap-7b", device="cpu")
    assert m.model_id == "omni-research/Tarsier2-Recap-7b" and m.published_layout == "qwen2_vl"
    rows = {r["name"]: r for r in list_models()}
    for name, layout in [("tarsier2-recap-7b", "qwen2_vl"), ("tarsier2-7b", "qwen2_vl"),
                         ("tarsier-7b", "llava"), ("tarsier-34b", "llava")]:
        assert rows[name]["layout"] == layout and rows[name]["kind"] == "published"
        assert rows[name]["memory"].endswith("GB bf16") and rows[name]["params"].endswith("B")
    assert rows["tarsier-7b"]["ready"] and rows["tarsier2-recap-7b"]["ready"]
    assert not rows["tarsier-34b"]["ready"] and not rows["tarsier2-7b"]["ready"]


def test_missing_model_is_one_line_naming_the_ways_forward():
    from tarsier.engine.checkpoint import ModelNotFound

    with pytest.raises(ModelNotFound) as err:
        tarsier.load("tarsier2-recap-7b", device="cpu")
    message = str(err.value)
    assert "\n" not in message
    assert "--model nano" in message and "--model PATH" in message and "Tarsier2-Recap-7b" in message


def test_cli_default_model_missing_exits_2(small_video, tmp_path):
    from typer.testing import CliRunner

    from tarsier.cli.app import app
    from tarsier.cli.describe import DEFAULT_MODEL

    assert DEFAULT_MODEL == "tarsier2-recap-7b"
    result = CliRunner().invoke(app, ["describe", str(small_video), "-o", str(tmp_path / "out"), "-q",
                                      "--device", "cpu"])
    assert result.exit_code == 2, result.output
    text = result.output if not hasattr(result, "stderr") else result.output + (result.stderr or "")
    assert "--model nano" in text and "--model PATH" in text


def test_library_default_model():
    # describe() takes its settings as engine.options.DescribeOptions; the default model is its field's
    from tarsier.engine.options import DescribeOptions

    assert DescribeOptions().what.model == "tarsier2-recap-7b"


# -- describing videos end to end ------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["llava", "qwen"])
def test_describe_generated_video(which, llava_model, qwen_model, small_video, tmp_path):
    from tarsier.common.files import read_jsonl as read_records
    from tarsier.engine.describe import describe

    m = llava_model if which == "llava" else qwen_model
    m.config.max_new_tokens = 6
    summary = describe([str(small_video)], model=m, output_dir=tmp_path / "out", formats=("jsonl", "srt"),
                       batch_size=2, threads=1)
    assert summary.exit_code == 0 and summary.clips_done >= 1, summary.errors
    records = list(read_records(tmp_path / "out" / "descriptions.jsonl"))
    assert records and all(r["description"] and r["tokens"] > 0 for r in records)
    # Tarsier1 always 8 frames; Tarsier2 16, or all of a clip's frames when it has fewer (10 fps here)
    for r in records:
        in_clip = round((r["end"] - r["start"]) * 10)
        assert r["frames"] == len(r["frame_times"]) == (8 if which == "llava" else min(16, in_clip))
    assert (tmp_path / "out" / "two_scenes.srt").is_file()
    again = describe([str(small_video)], model=m, output_dir=tmp_path / "out", batch_size=2, threads=1)
    assert again.videos_skipped == 1 and again.clips_done == 0      # resume works unchanged


@pytest.mark.parametrize("which", ["llava", "qwen"])
def test_describe_a_shared_sample_video(which, llava_model, qwen_model, tmp_path):
    from tarsier.engine.describe import describe

    samples = sorted(SHARED_VIDEOS.glob("*.mp4")) if SHARED_VIDEOS.is_dir() else []
    if not samples:
        pytest.skip(f"no sample videos at {SHARED_VIDEOS}")
    m = llava_model if which == "llava" else qwen_model
    m.config.max_new_tokens = 4
    summary = describe([str(samples[0])], model=m, output_dir=tmp_path / "out", scenes="none", max_clip=None,
                       batch_size=4, threads=1)
    assert summary.exit_code == 0 and summary.clips_done >= 1, summary.errors


def test_llava_model_saved_by_the_project_reloads_natively(llava_model, tmp_path):
    """checkpoint.save writes the hf_clip VisionConfig into config.json: the copy loads as a VideoLLM
    checkpoint (no published mapping) and generates the same text."""
    from tarsier.engine.checkpoint import save

    folder = save(llava_model, tmp_path / "copy")
    assert json.loads((folder / "config.json").read_text())["vision"]["source"] == "hf_clip"
    copy = tarsier.load(folder, device="cpu")
    assert getattr(copy, "published_layout", None) is None
    frames = _frames(llava_model, 1, seed=3)
    assert copy.generate(frames, INSTRUCTIONS[:1], max_new_tokens=6) == \
        llava_model.generate(frames, INSTRUCTIONS[:1], max_new_tokens=6)


def test_models_lists_hub_ids_in_plain_columns_when_piped():
    """Not a terminal: aligned plain columns (no box drawing), the hub id of every published preset."""
    from typer.testing import CliRunner

    from tarsier.cli.app import app

    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["name", "hub", "id"] and not any(c in result.output for c in "│┃━─")
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["tarsier2-recap-7b"][1] == "omni-research/Tarsier2-Recap-7b"
    assert rows["tarsier-7b"][1] == "omni-research/Tarsier-7b" and rows["tiny-random"][1] == "-"
    at = lines[0].index("kind")
    assert all(line[at - 2:at] == "  " for line in lines)   # the columns line up
