"""Throughput of the published-checkpoint engines with the real Tarsier2-7B and Tarsier-7B shapes.

Random-initialised models (no weights are downloaded), built directly on the GPU in bf16, fed random frames
of the geometry upstream gives a 1280x720 (16:9) clip (Tarsier2: 16 frames kept at 905x509, seen at 896x504
-> 16x18x32 = 9,216 visual tokens per clip; Tarsier-7B: 8 frames stretched to 336x336 -> 8x601 = 4,808). Measures generated tokens per second (batch 1 and 16,
greedy, up to --new-tokens per clip) and peak GPU memory. Random weights rarely stop early, so the count is
close to batch x new-tokens; the number reported is the tokens actually generated.

    python bench/published.py                 # both models, batch 1 and 16 (needs a CUDA GPU)
    python bench/published.py --tiny          # the same code path on tiny shapes, any device (a smoke test)

Without a GPU (and without --tiny) it prints "not measured (no GPU)" rows.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

QWEN2VL_7B_TEXT = {"model_type": "qwen2_vl", "hidden_size": 3584, "intermediate_size": 18944,
                   "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
                   "vocab_size": 152064, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
                   "rope_theta": 1000000.0, "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
                   "tie_word_embeddings": False}
QWEN2VL_7B_VISION = {"model_type": "qwen2_vl", "depth": 32, "embed_dim": 1280, "hidden_size": 3584,
                     "num_heads": 16, "mlp_ratio": 4, "patch_size": 14, "spatial_merge_size": 2,
                     "temporal_patch_size": 2}
CLIP_L_336 = {"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096,
              "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 336, "patch_size": 14,
              "projection_dim": 768, "hidden_act": "quick_gelu"}
VICUNA_7B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32064,
             "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "tie_word_embeddings": False}


@contextlib.contextmanager
def _default_dtype(dtype):
    """Build a 7B model straight in bf16 on the GPU (no fp32 copy first)."""
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def build_tarsier2(tiny: bool, device, dtype):
    import published_fixtures as pf
    import torch

    from tarsier.engine import qwen2_vl as published

    text, vision = (pf.QWEN_TEXT, pf.QWEN_VISION) if tiny else (QWEN2VL_7B_TEXT, QWEN2VL_7B_VISION)
    raw = {"model_type": "llava", "text_config": dict(text), "vision_config": dict(vision)}
    from transformers import PreTrainedTokenizerFast, Qwen2VLForConditionalGeneration

    tok = PreTrainedTokenizerFast(tokenizer_object=pf._bpe([], 151643, pf.QWEN_SPECIALS),
                                  eos_token="<|im_end|>", pad_token="<|endoftext|>")
    config = published.qwen2_vl_config(raw, tok)
    with torch.device(device), _default_dtype(dtype):
        hf = Qwen2VLForConditionalGeneration(config).to(dtype)
    published.with_upstream_rope(hf)
    tok.padding_side = "left"
    processor = published.QwenProcessor(tok, pf.QWEN_CHAT_TEMPLATE, published.qwen_geometry({}, config.vision_config),
                                        {}, config.vision_config, name="tarsier2-7b-shapes")
    return published.QwenVideoModel(hf, processor, published.QwenVideoConfig(name="tarsier2-7b-shapes")).eval()


def build_tarsier1(tiny: bool, device, dtype):
    import published_fixtures as pf
    import torch
    from transformers import PreTrainedTokenizerFast

    from tarsier.engine import hf_layouts as published
    from tarsier.engine.model import VideoLLM

    vision, text = (pf.LLAVA_VISION, pf.LLAVA_TEXT) if tiny else (CLIP_L_336, VICUNA_7B)
    raw = {"model_type": "llava", "vision_config": dict(vision), "text_config": dict(text),
           "image_token_index": 32000, "image_newline_idx": 32002, "image_new_idx": 32003}
    tok = PreTrainedTokenizerFast(tokenizer_object=pf._bpe(["<unk>", "<s>", "</s>"], 32000, ["<image>", "<pad>"]),
                                  bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>")
    config = published.llava_model_config(raw)
    with torch.device(device), _default_dtype(dtype):
        model = VideoLLM(config, tok).to(dtype)
    return model.eval()


def measure(model, batch: int, new_tokens: int, device, source=(1280, 720)) -> tuple[float, int, float]:
    """(tokens/s, tokens generated, peak GiB) for one batch after a warm-up call, on clips of the frame
    spec the model's processor gives a video of `source` (width, height)."""
    import torch

    spec = model.processor.frame_spec(*source)
    frames = torch.randint(0, 256, (batch, spec.frames, spec.height, spec.width, 3), dtype=torch.uint8)
    instructions = ["Describe the video in detail."] * batch
    model.generate(frames[:1], instructions[:1], max_new_tokens=2)   # warm-up (kernels, allocator)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    gens = model.generate(frames, instructions, max_new_tokens=new_tokens)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    tokens = sum(g.tokens for g in gens)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return tokens / seconds, tokens, peak


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny shapes (smoke test of the code path, any device)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--models", default="tarsier2-7b,tarsier-7b")
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    models = args.models.split(",")

    import torch

    print("| model (random init, real shapes) | batch | output tokens/s | peak GPU memory |")
    print("|---|---|---|---|")
    if not args.tiny and not torch.cuda.is_available():
        for name in models:
            for b in batches:
                print(f"| {name} | {b} | not measured (no GPU) | not measured (no GPU) |")
        return 0
    device = torch.device(args.device if torch.cuda.is_available() or args.device == "cpu" else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    builders = {"tarsier2-7b": build_tarsier2, "tarsier-7b": build_tarsier1}
    for name in models:
        model = builders[name](args.tiny, device, dtype)
        for b in batches:
            try:
                rate, tokens, peak = measure(model, b, args.new_tokens, device,
                                             source=(160, 90) if args.tiny else (1280, 720))
                mem = "n/a (CPU)" if math.isnan(peak) else f"{peak:.1f} GiB"
                print(f"| {name}{' (tiny)' if args.tiny else ''} | {b} | {rate:.1f} ({tokens} tokens) | {mem} |",
                      flush=True)
            except torch.cuda.OutOfMemoryError:
                print(f"| {name} | {b} | out of memory | > device memory |", flush=True)
                torch.cuda.empty_cache()
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
