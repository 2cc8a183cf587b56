"""The VideoLLM forward path, batching and the checkpoint format, on the tiny random preset."""
from __future__ import annotations

import json
import time

import pytest
import torch

import tarsier
from tarsier.engine import checkpoint as ckpt
from tarsier.engine.config import ModelConfig


@pytest.fixture(scope="module")
def tiny():
    return tarsier.load("tiny-random", device="cpu")


def frames(b: int, n: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, n, size, size, 3), dtype=torch.uint8, generator=g)


def test_tiny_preset_builds_fast_and_small():
    tarsier.load("tiny-random", device="cpu")  # imports warm
    t = time.perf_counter()
    model = tarsier.load("tiny-random", device="cpu")
    assert time.perf_counter() - t < 5  # generous: the claim is "well under a second" on an idle core
    assert model.config.llm["hidden_size"] == 32 and model.config.llm["num_hidden_layers"] == 2
    assert sum(p.numel() for p in model.parameters()) < 200_000


def test_visual_tokens_scatter_at_placeholders(tiny):
    n = 8
    batch = tiny.tokenize([tiny.format_prompt("Describe the video in detail.")], n)
    per_frame = tiny.config.visual_tokens_per_frame()
    assert per_frame == (32 // 8) ** 2 + 1  # 16 patches + the frame separator
    assert int((batch["input_ids"] == tiny.video_token_id).sum()) == n * per_frame
    visual = tiny.visual_tokens(frames=frames(1, n))
    assert visual.shape == (1, n * per_frame, tiny.config.llm["hidden_size"])
    embeds = tiny.embed_inputs(batch["input_ids"], visual)
    mask = batch["input_ids"][0] == tiny.video_token_id
    assert torch.equal(embeds[0, mask], visual[0])
    # every frame ends with the learned separator
    sep_rows = embeds[0, mask].view(n, per_frame, -1)[:, -1]
    assert torch.allclose(sep_rows, tiny.frame_separator.expand(n, -1))


def _variant(vision: dict | None = None, **projector):
    preset = ckpt.read_preset("tiny-random")
    config = ModelConfig.from_dict(preset["config"])
    for k, v in projector.items():
        setattr(config.projector, k, v)
    for k, v in (vision or {}).items():
        setattr(config.vision, k, v)
    tiny = tarsier.load("tiny-random", device="cpu")
    model = ckpt.build_random(config, tiny.tokenizer)
    return model.eval()


def _tokens_when_only_the_last_frame_changes(model, seed: int):
    """Visual tokens (frame, token, D) of a 4-frame clip, of the same clip with its last frame
    inverted, and of a still clip of its first frame."""
    clip = frames(1, 4, seed=seed)
    later = clip.clone()
    later[0, 3] = 255 - later[0, 3]
    still = clip[:, :1].expand(1, 4, *clip.shape[2:])
    per = model.config.visual_tokens_per_frame()
    with torch.no_grad():
        return tuple(model.visual_tokens(frames=c).view(4, per, -1) for c in (clip, later, still))


def test_temporal_difference_shows_each_frame_its_change_to_the_next():
    model = _variant(temporal_difference=True)
    assert model.projector[0].in_features == 2 * model.config.vision.width
    a, b, still = _tokens_when_only_the_last_frame_changes(model, seed=3)
    assert torch.equal(a[:2], b[:2])                      # frames 0 and 1 do not see frame 3
    assert not torch.allclose(a[2, :-1], b[2, :-1])       # frame 2's change now differs
    # a still clip: every change is zero, so each frame's tokens are the projector of (features, 0)
    assert torch.allclose(still[0], still[3])


def test_time_slots_tell_identical_frames_apart():
    model = _variant(time_slots=4)
    clip = frames(1, 1, seed=4).expand(1, 8, 32, 32, 3)   # 8 copies of one frame, 4 slots: 2 per slot
    per = model.config.visual_tokens_per_frame()
    with torch.no_grad():
        v = model.visual_tokens(frames=clip).view(8, per, -1)
    assert torch.equal(v[0], v[1]) and torch.equal(v[6], v[7])
    assert not torch.allclose(v[1], v[2])
    assert torch.allclose(v[2] - v[0], (model.time_embedding[1] - model.time_embedding[0]).expand(per, -1))


def test_motion_separator_carries_the_frames_change_to_the_next():
    model = _variant(motion_separator=True, spatial_pool=2)
    cells = model.config.cell_grid() ** 2
    assert model.motion_projector[0].in_features == cells * model.config.vision.width
    a, b, still = _tokens_when_only_the_last_frame_changes(model, seed=6)
    assert torch.equal(a[:2], b[:2])                      # frames 0 and 1 do not see frame 3
    assert torch.equal(a[2, :-1], b[2, :-1])              # frame 2's cells are its own...
    assert not torch.allclose(a[2, -1], b[2, -1])         # ...its separator carries the change to frame 3
    assert torch.allclose(a[3, -1], still[3, -1])         # the last frame has no next: zero change, as in a still clip


def test_batched_generation_equals_one_by_one(tiny):
    clips = frames(3, seed=1)
    prompts = ["Describe the video in detail.", "Describe the video in one short sentence.", "What moves?"]
    batched = tiny.generate(clips, prompts, max_new_tokens=10)
    single = [tiny.generate(clips[i:i + 1], [prompts[i]], max_new_tokens=10)[0] for i in range(3)]
    assert [g.text for g in batched] == [g.text for g in single]
    assert all(0 < g.tokens <= 10 for g in batched)


def test_loss_only_on_answer_tokens(tiny):
    batch = tiny.tokenize([tiny.format_prompt("hi")], 8, answers=["a red circle"], padding_side="right")
    labels = batch["labels"][0]
    answer = tiny.tokenizer(" a red circle", add_special_tokens=False)["input_ids"] + [tiny.tokenizer.eos_token_id]
    assert labels[labels != -100].tolist() == answer
    loss, logits = tiny(batch["input_ids"], batch["attention_mask"], batch["labels"], frames=frames(1))
    assert torch.isfinite(loss) and logits.shape[:2] == batch["input_ids"].shape


def test_checkpoint_roundtrip(tiny, tmp_path):
    folder = ckpt.save(tiny, tmp_path / "ck")
    assert sorted(p.name for p in folder.iterdir()) >= ["config.json", "model.safetensors", "tokenizer.json"]
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["architecture"] == "VideoLLM" and cfg["llm"]["model_type"] == "llama"
    again = tarsier.load(folder, device="cpu")
    clips = frames(2, seed=3)
    a = tiny.generate(clips, ["Describe the video in detail."] * 2, max_new_tokens=8)
    b = again.generate(clips, ["Describe the video in detail."] * 2, max_new_tokens=8)
    assert a == b
    assert ModelConfig.load(folder / "config.json") == again.config


def test_resnet_tower_cells_are_its_patches(tmp_path):
    # a 2-stage ResNet read after stage 2 (stride 8): the same 4x4 grid of 32-px frames as the ViT
    model = _variant(vision={"resnet_blocks": (1, 1), "width": 64, "patch_size": 8})
    v = model.config.vision
    assert v.layers == 2 and not hasattr(model.vision.layer3, "weight") and not list(model.vision.layer3.parameters())
    feats = model.encode_frames(frames(1, 2))
    assert feats.shape == (2, (32 // 8) ** 2, 64)
    # a cell sees its own corner of the frame: changing the bottom-right corner leaves the top-left cell alone
    clip = frames(1, 1, seed=5)
    other = clip.clone()
    other[0, 0, 24:, 24:] = 255 - other[0, 0, 24:, 24:]
    a, b = model.encode_frames(clip), model.encode_frames(other)
    assert torch.allclose(a[0, 0], b[0, 0]) and not torch.allclose(a[0, -1], b[0, -1])
    # it trains in frozen eval mode (BatchNorm keeps its statistics) and round-trips through a checkpoint
    model.train()
    assert not model.vision.training
    again = tarsier.load(ckpt.save(model, tmp_path / "rn"), device="cpu")
    assert again.config.vision.resnet_blocks == (1, 1)
    clips = frames(2, seed=3)
    prompts = ["Describe the video in detail."] * 2
    assert model.eval().generate(clips, prompts, max_new_tokens=6) == again.generate(clips, prompts, max_new_tokens=6)


def test_resnet_tower_geometry_is_checked():
    from tarsier.engine.config import VisionConfig
    from tarsier.engine.model import resolve_vision_config

    with pytest.raises(ValueError, match="stride 4, 8, 16 or 32"):
        resolve_vision_config(VisionConfig(resnet_blocks=(1, 1), patch_size=12, width=96, image_size=48))
    with pytest.raises(ValueError, match="at least up to stage 3"):
        resolve_vision_config(VisionConfig(resnet_blocks=(1, 1), patch_size=16, width=128, image_size=64))
    rn50 = resolve_vision_config(VisionConfig(name="RN50"))   # open_clip's registry, no weights
    assert (rn50.resnet_blocks, rn50.patch_size, rn50.width) == ((3, 4, 6, 3), 32, 2048)


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(ckpt.ModelNotFound, match="unknown model"):
        tarsier.load("no-such-model", device="cpu")
    with pytest.raises(ckpt.ModelNotFound, match="not a checkpoint"):
        tarsier.load(tmp_path, device="cpu")
