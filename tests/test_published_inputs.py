"""What the published models are fed, against upstream's rules stated here independently.

Upstream (github bytedance/tarsier): Tarsier2 inference reads configs/tarser2_default_config.yaml
(n_frames 16, max_pixels 460800, min_pixels 0, do_image_resize false, video_sampler_version v1,
use_multi_images_for_video true), samples frames with `_sample_frame_indices_v1` (all frames when the clip
has at most n_frames, else round(i*(T-1)/(n-1))), duplicates every frame, resizes each with
`smart_resize(h, w, factor=1, min_pixels, max_pixels)` (where TarsierProcessor lowers max_pixels to
128*384*384 // number_of_images when that is smaller), and the Qwen2VLImageProcessor then rounds to multiples
of 28 within its own min_pixels 3136 / max_pixels 12845056. The video's tokens are the image pad token
(151655), one per merged 2x2 patch, inside <|vision_start|> ... <|vision_end|> of the chat template;
get_rope_index continues the text after a vision block at the block's largest position + 1.
Tarsier1 (branch `tarsier`): 8 frames stretched to a square, "USER: <image>*8\\n{instruction} ASSISTANT: ".
Nothing below calls the library to compute an expected value.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

import tarsier

sys.path.insert(0, str(Path(__file__).parent))

import published_fixtures as pf
import videogen

torch = pytest.importorskip("torch")

FINE = "Describe the video in detail."
SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"


# -- upstream's rules, written down from its code ----------------------------------------------------------
def _round_to(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's smart_resize as transformers 4.47 (upstream's pin) wrote it."""
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def upstream_tarsier2(width: int, height: int, clip_frames: int, n_frames: int = 16) -> dict:
    t = clip_frames if clip_frames <= n_frames else n_frames
    images = 2 * t
    max_pixels = 460800
    if 128 * 384 * 384 // images < max_pixels:
        max_pixels = 128 * 384 * 384 // images
    h1, w1 = _round_to(height, width, 1, 0, max_pixels)
    h2, w2 = _round_to(h1, w1, 28, 3136, 12845056)
    grid = [images // 2, h2 // 14, w2 // 14]
    return {"frames": t, "resized": (w1, h1), "seen": (w2, h2), "grid": grid,
            "pixels": (grid[0] * grid[1] * grid[2], 3 * 2 * 14 * 14),
            "tokens": grid[0] * grid[1] * grid[2] // 4}


def upstream_rope(types: list[int], grids: list[list[int]]) -> list[list[int]]:
    """modeling_qwen2_vl_fast.get_rope_index for one unpadded row; types 0 text, 1 vision."""
    out = [[], [], []]
    start, g = 0, iter(grids)
    i = 0
    while i < len(types):
        if types[i] == 0:
            for d in range(3):
                out[d].append(start)
            start += 1
            i += 1
            continue
        t, h, w = next(g)
        h, w = h // 2, w // 2
        for ti in range(t):
            for hi in range(h):
                for wi in range(w):
                    out[0].append(start + ti)
                    out[1].append(start + hi)
                    out[2].append(start + wi)
        start = start + max(t - 1, h - 1, w - 1) + 1
        i += t * h * w
    return out


# -- fixtures -----------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    import tarsier
    return tarsier.load(pf.write_qwen2_vl(tmp_path_factory.mktemp("recap"), style="llava"), device="cpu")


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    return tarsier.load(pf.write_llava(tmp_path_factory.mktemp("tarsier7b")), device="cpu")


ASPECTS = {"16:9": (1280, 720), "2.4:1": (1920, 800), "9:16": (720, 1280), "4:3": (640, 480), "small": (320, 240)}


@pytest.fixture(scope="module")
def aspect_videos(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("aspects")
    return {name: videogen.make_video(d / f"{name.replace(':', 'x')}.mp4", [(0.8, 0)], fps=25, size=size)
            for name, size in ASPECTS.items()}


def _decode(path, processor, frames=None):
    from tarsier.engine.video import ClipOptions, read_clips

    options = ClipOptions(scenes="none", max_clip=None, frames=frames or processor.frames,
                          geometry=processor.geometry, threads=1)
    return read_clips(path, options)[1]


# -- geometry -----------------------------------------------------------------------------------------------
def test_the_issue_figures():
    """The two worked examples: 1280x720 -> 896x504 and 320x240 -> 308x252 (not 672x672)."""
    assert upstream_tarsier2(1280, 720, 100)["seen"] == (896, 504)
    assert upstream_tarsier2(320, 240, 100)["seen"] == (308, 252)
    assert upstream_tarsier2(1920, 800, 100)["seen"] == (1064, 448)


@pytest.mark.parametrize("aspect", list(ASPECTS))
def test_tarsier2_sees_what_upstream_shows_it(aspect, qwen, aspect_videos):
    video = aspect_videos[aspect]
    want = upstream_tarsier2(*video.size, clip_frames=video.frames)
    clips = _decode(video.path, qwen.processor)
    assert len(clips) == 1
    clip = clips[0]
    assert clip.frames.shape == (want["frames"], want["resized"][1], want["resized"][0], 3)
    assert len(set(clip.frame_times)) == want["frames"]
    assert clip.frame_size == want["seen"]
    batch = qwen.processor.inputs([clip.frames], [FINE])
    assert batch["image_grid_thw"].tolist() == [want["grid"]]
    assert tuple(batch["pixel_values"].shape) == want["pixels"]
    tok = qwen.tokenizer
    text = (f"{SYSTEM}<|im_start|>user\n<|vision_start|>" + "<|image_pad|>" * want["tokens"]
            + f"<|vision_end|>{FINE}<|im_end|>\n<|im_start|>assistant\n")
    assert batch["input_ids"][0].tolist() == tok(text, add_special_tokens=False)["input_ids"]
    assert (batch["input_ids"] == 151655).sum() == want["tokens"]


@pytest.mark.parametrize("aspect", ["16:9", "9:16", "small"])
def test_tarsier1_stretches_to_a_square_with_upstream_prompt(aspect, llava, aspect_videos):
    video = aspect_videos[aspect]
    clip = _decode(video.path, llava.processor)[0]
    side = pf.LLAVA_VISION["image_size"]
    assert clip.frames.shape == (8, side, side, 3) and clip.frame_size == (side, side)
    batch = llava.processor.inputs([clip.frames], [FINE])
    tok = llava.tokenizer
    upstream = [tok.bos_token_id] + tok("USER: " + "<image>" * 8 + f"\n{FINE} ASSISTANT: ",
                                        add_special_tokens=False)["input_ids"]
    grid = side // pf.LLAVA_VISION["patch_size"]
    per_frame = grid * (grid + 1) + 1     # each <image>: rows of patches + a newline each, + the new-frame token
    expanded = [x for i in upstream for x in ([i] * per_frame if i == 32000 else [i])]
    assert batch["input_ids"][0].tolist() == expanded


def test_short_clips_use_every_frame_once(qwen, llava, tmp_path):
    """Upstream's v1 sampler: a clip with T <= 16 frames gives all T (no repeats); Tarsier1 always 8."""
    short = videogen.make_video(tmp_path / "short.mp4", [(0.4, 1)], fps=25, size=(160, 96))   # 10 frames
    slow = videogen.make_video(tmp_path / "slow.mp4", [(1.2, 2)], fps=10, size=(160, 96))     # 12 frames
    for video in (short, slow):
        clip = _decode(video.path, qwen.processor)[0]
        assert clip.frames.shape[0] == video.frames
        assert [round(t, 3) for t in clip.frame_times] == [round(t, 3) for t in video.frame_times]
        assert qwen.processor.inputs([clip.frames], [FINE])["image_grid_thw"][0, 0] == video.frames
        assert _decode(video.path, llava.processor)[0].frames.shape[0] == 8


def test_pixel_cap_bites_from_21_frames(qwen):
    """128*384*384 pixels over all 2T images of a sample: from 21 frames on, a 1280x720 frame gets less."""
    spec20, spec21 = qwen.processor.frame_spec(1280, 720, 20), qwen.processor.frame_spec(1280, 720, 21)
    assert (spec20.width, spec20.height) == upstream_tarsier2(1280, 720, 100, n_frames=20)["resized"]
    assert (spec21.width, spec21.height) == upstream_tarsier2(1280, 720, 100, n_frames=21)["resized"]
    assert spec21.width * spec21.height < spec20.width * spec20.height


# -- rotary positions -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("frames", [16, 32])
def test_rotary_positions_follow_upstream(frames, qwen):
    clips = [np.zeros((frames, 56, 112, 3), np.uint8), np.zeros((3, 84, 56, 3), np.uint8)]
    batch = qwen.processor.inputs(clips, [FINE, "What happens?"])
    inner = qwen.hf.model
    got, deltas = inner.get_rope_index(batch["input_ids"], batch["mm_token_type_ids"],
                                       image_grid_thw=batch["image_grid_thw"],
                                       attention_mask=batch["attention_mask"])
    grids = batch["image_grid_thw"].tolist()
    for row in range(2):
        keep = batch["attention_mask"][row].bool()
        types = (batch["input_ids"][row][keep] == 151655).int().tolist()
        want = upstream_rope(types, [grids[row]])
        assert got[:, row, keep].tolist() == want
        assert int(deltas[row]) == max(want[0]) + 1 - len(types)
    if frames == 32:   # the temporal size (32) exceeds the merged grid side (4): transformers' own rule differs
        stock = type(inner).__mro__[1].get_rope_index
        other, _ = stock(inner, batch["input_ids"], batch["mm_token_type_ids"],
                         image_grid_thw=batch["image_grid_thw"], attention_mask=batch["attention_mask"])
        assert not torch.equal(other, got)


# -- batching, generation config, grains -------------------------------------------------------------------
def test_mixed_geometries_batch_equals_one_by_one(qwen):
    g = torch.Generator().manual_seed(5)
    clips = [torch.randint(0, 256, shape, generator=g, dtype=torch.uint8).numpy()
             for shape in [(16, 56, 100, 3), (16, 100, 56, 3), (5, 60, 80, 3)]]
    instructions = [FINE, "What happens?", FINE]
    together = qwen.generate(clips, instructions, max_new_tokens=6)
    alone = [qwen.generate([c], [i], max_new_tokens=6)[0] for c, i in zip(clips, instructions)]
    assert [x.text for x in together] == [x.text for x in alone]
    assert all(x.tokens > 0 for x in together)


def test_generation_config_of_the_checkpoint_is_applied(qwen, tmp_path, monkeypatch):
    """Extra stop ids and a repetition penalty in generation_config.json change greedy output, as they do
    upstream (from_pretrained reads the file, generate(do_sample=False) keeps the rest of it)."""
    clips = [torch.randint(0, 256, (4, 56, 56, 3), generator=torch.Generator().manual_seed(1),
                           dtype=torch.uint8).numpy()]
    plain = tarsier.load(pf.write_qwen2_vl(tmp_path / "plain", style="qwen2_vl", generation={}), device="cpu")
    batch = plain.processor.inputs(clips, [FINE])
    out = plain.hf.generate(**{**batch, "pixel_values": batch["pixel_values"].float()}, max_new_tokens=12,
                            do_sample=False)
    ids = out[0, batch["input_ids"].shape[1]:].tolist()
    a = plain.generate(clips, [FINE], max_new_tokens=12)[0]
    assert a.tokens == 12 and a.text == plain.tokenizer.decode(ids, skip_special_tokens=True).strip()
    stops = {**pf.QWEN_GENERATION, "eos_token_id": [151645, 151643, ids[3]]}
    stopping = tarsier.load(pf.write_qwen2_vl(tmp_path / "stop", style="qwen2_vl", generation=stops), device="cpu")
    b = stopping.generate(clips, [FINE], max_new_tokens=12)[0]
    assert b.tokens == 3 and b.text == plain.tokenizer.decode(ids[:3], skip_special_tokens=True).strip()
    assert stopping.generate(clips, [FINE], max_new_tokens=12)[0] == b   # greedy despite do_sample true

    seen = {}
    real = qwen.hf.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(qwen.hf, "generate", spy)
    qwen.generate(clips, [FINE], max_new_tokens=2)
    config = seen["generation_config"]
    assert config.repetition_penalty == pf.QWEN_GENERATION["repetition_penalty"]
    assert config.do_sample is False and config.num_beams == 1 and config.max_new_tokens == 2


def test_published_grains_use_upstream_instructions(qwen, llava):
    from tarsier.engine.interface import instruction_for

    brief = ("Describe the video in a short sentence with simple words. It is important that the short sentence "
             "must be like the following examples: \n1. A man is singing.\n2. A women is dancing.\n3. A cat is "
             "meowing.")
    for m in (qwen, llava):
        assert instruction_for(m.processor, "fine") == FINE
        assert instruction_for(m.processor, "brief") == brief


def test_a_grain_the_model_was_not_trained_for_warns():
    from tarsier.engine.interface import GrainWarning, instruction_for

    m = tarsier.load("tiny-random", device="cpu")
    m.config.prompts = {"fine": FINE}
    with pytest.warns(GrainWarning, match="brief"):
        assert instruction_for(m.processor, "brief") == "Describe the video in one short sentence."


def test_describe_records_what_the_model_saw(qwen, aspect_videos, tmp_path):
    from tarsier.common.files import read_jsonl as read_records
    from tarsier.engine.describe import describe

    qwen.config.max_new_tokens = 3
    video = aspect_videos["small"]
    summary = describe([str(video.path)], model=qwen, output_dir=tmp_path / "out", scenes="none", workers=0,
                       threads=1)
    assert summary.exit_code == 0, summary.errors
    rec = next(read_records(tmp_path / "out" / "descriptions.jsonl"))
    want = upstream_tarsier2(*video.size, clip_frames=video.frames)
    assert rec["frame_size"] == list(want["seen"]) and rec["frames"] == want["frames"] == len(rec["frame_times"])


def test_cli_says_in_one_line_when_a_grain_is_not_supported(tmp_path, aspect_videos):
    from typer.testing import CliRunner

    from tarsier.cli.app import app
    from tarsier.engine.checkpoint import save


    m = tarsier.load("tiny-random", device="cpu")
    m.config.prompts = {"fine": FINE}          # a checkpoint trained for detailed descriptions only
    folder = save(m, tmp_path / "fine-only")
    result = CliRunner().invoke(app, ["describe", str(aspect_videos["small"].path), "--model", str(folder),
                                      "--grain", "brief", "-o", str(tmp_path / "out"), "--device", "cpu",
                                      "--max-new-tokens", "2", "--scenes", "none"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1 and "'brief'" in lines[0] and "Traceback" not in result.output


def test_processors_are_picklable_and_weightless(qwen, llava):
    """Decode workers and Ray tasks get the processor: it must pickle, without the model's weights."""
    import pickle

    for m in (qwen, llava):
        blob = pickle.dumps(m.processor)
        copy = pickle.loads(blob)
        assert copy.frame_spec(1280, 720) == m.processor.frame_spec(1280, 720)
        assert copy.prompt(FINE) == m.processor.prompt(FINE)
        assert len(blob) < 50_000_000 and not any(isinstance(v, torch.nn.Module) for v in vars(copy).values())


def test_a_forced_answer_prefix_follows_the_template(qwen, llava):
    """Benchmarks force the start of the answer (TVBench: " Answer: ("): it goes after the generation prompt."""
    prefix = "Best option: ("
    for m in (qwen, llava):
        spec = m.processor.frame_spec(84, 56)
        clip = np.zeros((spec.frames, spec.height, spec.width, 3), np.uint8)
        plain = m.processor.inputs([clip], [FINE])["input_ids"][0].tolist()
        forced = m.processor.inputs([clip], [FINE], prefixes=[prefix])["input_ids"][0].tolist()
        tail = m.tokenizer(prefix, add_special_tokens=False)["input_ids"]
        assert forced[:len(plain)] == plain and forced[len(plain):] == tail
