"""Tiny random checkpoints written to disk in the published Tarsier formats
(see engine/hf_layouts.py and engine/qwen2_vl.py).

`write_llava(folder)`: omni-research/Tarsier-7b's layout: a LLaVA config.json (TarsierForConditionalGeneration,
clip_vision_model + llama, image_token_index 32000, image_newline_idx 32002, image_new_idx 32003), tensors
vision_tower.vision_model.* / multi_modal_projector.linear_{1,2}.* / language_model.model.* /
language_model.lm_head.weight in two safetensors shards with an index, a tokenizer whose "<image>" is id 32000
(vocab >= 32004 in the LLM), added_tokens.json, special_tokens_map.json, a CLIP preprocessor_config.json.

`write_qwen2_vl(folder, style)`: Tarsier2's layout: config.json either upstream's LLaVA-style wrapper
(style="llava", Tarsier2-Recap-7b) with tensors in the wrapper's names (vision_tower.*, language_model.model.*,
language_model.lm_head.*), or a Qwen2-VL config (style="qwen2_vl", Tarsier2-7b-0115) with the pre-4.52 Qwen2-VL
names (visual.*, model.*, lm_head.*); a Qwen2-style tokenizer with the real special-token ids
(151643..151656), chat_template.json, a Qwen2VLImageProcessor preprocessor_config.json with Qwen2-VL's
min/max pixels, a generation_config.json with a repetition penalty. Sizes are tiny; formats are the real ones.

Every tensor name is written out here from the published layouts (transformers 4.x CLIP, Llama, Qwen2 and
Qwen2-VL vision names), never taken from the installed transformers' modules: a fixture built from the
library's own state_dict() would follow a renaming in the library and hide the break from the tests.
"""
from __future__ import annotations

import json
from pathlib import Path

CORPUS = (
    "USER: ASSISTANT: Describe the video in detail. Describe the video in one short sentence. "
    "A person walks into the room, picks up a red cup and drinks from it. The camera pans to the left. "
    "system user assistant You are a helpful assistant. A red circle moves, then a blue square grows. "
)

LLAVA_VISION = {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                "num_hidden_layers": 3, "num_attention_heads": 2, "image_size": 56, "patch_size": 14,
                "projection_dim": 16, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}
LLAVA_TEXT = {"_name_or_path": "lmsys/vicuna-7b-v1.5", "architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 4, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
              "vocab_size": 32064, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                 "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                 "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]   # ids 151643..151656
QWEN_VISION = {"model_type": "qwen2_vl", "depth": 2, "embed_dim": 32, "hidden_size": 32, "num_heads": 2,
               "mlp_ratio": 2, "in_chans": 3, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
               "hidden_act": "quick_gelu"}
QWEN_TEXT = {"model_type": "qwen2_vl", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 32768,
             "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "vocab_size": 152064, "tie_word_embeddings": False,
             "rope_scaling": {"type": "mrope", "mrope_section": [2, 1, 1]}, "bos_token_id": 151643,
             "eos_token_id": 151645, "torch_dtype": "bfloat16", "use_sliding_window": False}
QWEN_CHAT_TEMPLATE = (  # Qwen2-VL-Instruct's template (system default, image/video placeholders)
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# A Qwen2-VL-Instruct-style generation_config.json (sampling settings and a repetition penalty): callers that
# force greedy decoding still get the penalty, as upstream's generate(do_sample=False) does
QWEN_GENERATION = {"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": True,
                   "eos_token_id": [151645, 151643], "repetition_penalty": 1.05, "temperature": 0.1,
                   "top_k": 1, "top_p": 0.001, "transformers_version": "4.45.0.dev0"}
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _bpe(front_specials: list[str], base_size: int, back_specials: list[str], corpus: str = CORPUS,
         vocab_size: int = 320):
    """Byte-level BPE trained on a few sentences (or `corpus`), its vocab padded with unreachable fillers to
    `base_size`, then `back_specials` added so they get ids base_size, base_size + 1, ..."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=front_specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator([corpus], trainer=trainer)
    data = json.loads(bpe.to_str())
    vocab = data["model"]["vocab"]
    for i in range(len(vocab), base_size):
        vocab[f"<filler_{i}>"] = i
    tok = Tokenizer.from_str(json.dumps(data))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in back_specials])
    for i, t in enumerate(back_specials):
        assert tok.token_to_id(t) == base_size + i, (t, tok.token_to_id(t))
    return tok


def _save_shards(state: dict, folder: Path, n_shards: int = 2) -> None:
    from safetensors.torch import save_file

    keys = sorted(state)
    per = -(-len(keys) // n_shards)
    weight_map, total = {}, 0
    for i in range(n_shards):
        name = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {k: state[k].contiguous() for k in keys[i * per:(i + 1) * per]}
        save_file(part, str(folder / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
        total += sum(t.numel() * t.element_size() for t in part.values())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2), encoding="utf-8")


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _randn(gen, *shape, std=0.2):
    import torch

    return torch.randn(*shape, generator=gen) * std


def _norm(gen, prefix: str, d: int, bias: bool = True) -> dict:
    import torch

    out = {f"{prefix}.weight": torch.ones(d) + _randn(gen, d, std=0.02)}
    if bias:
        out[f"{prefix}.bias"] = _randn(gen, d, std=0.02)
    return out


def _linear(gen, prefix: str, d_out: int, d_in: int, bias: bool = True, std: float = 0.2) -> dict:
    out = {f"{prefix}.weight": _randn(gen, d_out, d_in, std=std)}
    if bias:
        out[f"{prefix}.bias"] = _randn(gen, d_out, std=0.02)
    return out


def clip_vision_tensors(gen, prefix: str, cfg: dict) -> dict:
    """CLIP ViT tensors under transformers 4.x CLIPVisionModel names (what Tarsier-7b's shards hold after
    `vision_tower.`): vision_model.embeddings.*, pre_layrnorm, encoder.layers.N.*, post_layernorm."""
    d, inner = cfg["hidden_size"], cfg["intermediate_size"]
    grid = cfg["image_size"] // cfg["patch_size"]
    v = f"{prefix}vision_model."
    out = {f"{v}embeddings.class_embedding": _randn(gen, d, std=0.02),
           f"{v}embeddings.patch_embedding.weight": _randn(gen, d, 3, cfg["patch_size"], cfg["patch_size"], std=0.02),
           f"{v}embeddings.position_embedding.weight": _randn(gen, grid * grid + 1, d, std=0.02)}
    out.update(_norm(gen, f"{v}pre_layrnorm", d))
    for i in range(cfg["num_hidden_layers"]):
        layer = f"{v}encoder.layers.{i}."
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            out.update(_linear(gen, f"{layer}self_attn.{proj}", d, d))
        out.update(_norm(gen, f"{layer}layer_norm1", d))
        out.update(_linear(gen, f"{layer}mlp.fc1", inner, d))
        out.update(_linear(gen, f"{layer}mlp.fc2", d, inner))
        out.update(_norm(gen, f"{layer}layer_norm2", d))
    out.update(_norm(gen, f"{v}post_layernorm", d))
    return out


def decoder_tensors(gen, prefix: str, cfg: dict, qkv_bias: bool, std: float = 0.2) -> dict:
    """A Llama/Qwen2 decoder under its published names: embed_tokens, layers.N.{self_attn,mlp,norms}, norm."""
    d, inner, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    head = d // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * head
    out = {f"{prefix}embed_tokens.weight": _randn(gen, vocab, d, std=std)}
    for i in range(cfg["num_hidden_layers"]):
        layer = f"{prefix}layers.{i}."
        out.update(_linear(gen, f"{layer}self_attn.q_proj", d, d, qkv_bias, std))
        out.update(_linear(gen, f"{layer}self_attn.k_proj", kv, d, qkv_bias, std))
        out.update(_linear(gen, f"{layer}self_attn.v_proj", kv, d, qkv_bias, std))
        out.update(_linear(gen, f"{layer}self_attn.o_proj", d, d, False, std))
        out.update(_linear(gen, f"{layer}mlp.gate_proj", inner, d, False, std))
        out.update(_linear(gen, f"{layer}mlp.up_proj", inner, d, False, std))
        out.update(_linear(gen, f"{layer}mlp.down_proj", d, inner, False, std))
        out.update(_norm(gen, f"{layer}input_layernorm", d, bias=False))
        out.update(_norm(gen, f"{layer}post_attention_layernorm", d, bias=False))
    out.update(_norm(gen, f"{prefix}norm", d, bias=False))
    return out


def write_llava(folder: str | Path, seed: int = 0, naming: str = "published") -> Path:
    """naming "published": the 4.x names Tarsier-7b/34b ship with; "4.52": a copy re-saved by
    transformers 4.52+ (model.vision_tower.vision_model.*, model.multi_modal_projector.*,
    model.language_model.*, lm_head.*)."""
    import torch
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    d_v, d = LLAVA_VISION["hidden_size"], LLAVA_TEXT["hidden_size"]
    if naming == "published":
        vision, projector, lm, head = "vision_tower.", "multi_modal_projector.", "language_model.model.", \
            "language_model.lm_head."
    else:
        vision, projector, lm, head = "model.vision_tower.", "model.multi_modal_projector.", \
            "model.language_model.", "lm_head."
    state = clip_vision_tensors(gen, vision, LLAVA_VISION)
    state.update(decoder_tensors(gen, lm, LLAVA_TEXT, qkv_bias=False))
    state[f"{head}weight"] = _randn(gen, LLAVA_TEXT["vocab_size"], d)
    state.update(_linear(gen, f"{projector}linear_1", d, d_v))
    state.update(_linear(gen, f"{projector}linear_2", d, d))
    _save_shards({k: v.to(torch.bfloat16) for k, v in state.items()}, folder)
    _write_json(folder / "config.json", {
        "_name_or_path": "omni-research/Tarsier-7b", "architectures": ["TarsierForConditionalGeneration"],
        "model_type": "llava", "ignore_index": -100, "image_token_index": 32000, "image_newline_idx": 32002,
        "image_new_idx": 32003, "projector_hidden_act": "gelu", "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default", "pad_token_id": 32001, "vocab_size": 32064,
        "torch_dtype": "bfloat16", "transformers_version": "4.39.3",
        "text_config": LLAVA_TEXT, "vision_config": LLAVA_VISION,
    })
    tok = PreTrainedTokenizerFast(tokenizer_object=_bpe(["<unk>", "<s>", "</s>"], 32000, ["<image>", "<pad>"]),
                                  bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>")
    tok.save_pretrained(str(folder))
    cfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    cfg.update({"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
                "padding_side": "left", "model_max_length": 4096})
    _write_json(folder / "tokenizer_config.json", cfg)
    _write_json(folder / "added_tokens.json", {"<image>": 32000})
    _write_json(folder / "special_tokens_map.json", {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                                                     "pad_token": "<unk>"})
    _write_json(folder / "preprocessor_config.json", {
        "crop_size": {"height": 56, "width": 56}, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "image_mean": CLIP_MEAN, "image_std": CLIP_STD, "image_processor_type": "CLIPImageProcessor",
        "processor_class": "LlavaProcessor", "resample": 3, "rescale_factor": 1 / 255,
        "size": {"shortest_edge": 56}})
    return folder


def qwen2_vision_tensors(gen, prefix: str, cfg: dict, out_dim: int, std: float = 0.2) -> dict:
    """Qwen2-VL's vision transformer under its published names: patch_embed.proj (Conv3d, no bias),
    blocks.N.{norm1,norm2,attn.qkv,attn.proj,mlp.fc1,mlp.fc2}, merger.{ln_q,mlp.0,mlp.2}."""
    d, merge = cfg["embed_dim"], cfg["spatial_merge_size"]
    inner, merged = int(d * cfg["mlp_ratio"]), d * merge * merge
    out = {f"{prefix}patch_embed.proj.weight": _randn(
        gen, d, cfg["in_chans"], cfg["temporal_patch_size"], cfg["patch_size"], cfg["patch_size"], std=min(0.05, std))}
    for i in range(cfg["depth"]):
        block = f"{prefix}blocks.{i}."
        out.update(_norm(gen, f"{block}norm1", d))
        out.update(_norm(gen, f"{block}norm2", d))
        out.update(_linear(gen, f"{block}attn.qkv", 3 * d, d, std=std))
        out.update(_linear(gen, f"{block}attn.proj", d, d, std=std))
        out.update(_linear(gen, f"{block}mlp.fc1", inner, d, std=std))
        out.update(_linear(gen, f"{block}mlp.fc2", d, inner, std=std))
    out.update(_norm(gen, f"{prefix}merger.ln_q", d))
    out.update(_linear(gen, f"{prefix}merger.mlp.0", merged, merged, std=std))
    out.update(_linear(gen, f"{prefix}merger.mlp.2", out_dim, merged, std=std))
    return out


QWEN_NAMINGS = {   # (vision, decoder, head) prefixes
    "wrapper": ("vision_tower.", "language_model.model.", "language_model.lm_head."),   # Tarsier2-Recap-7b
    "pre-4.52": ("visual.", "model.", "lm_head."),                                     # Tarsier2-7b-0115
    "4.52": ("model.visual.", "model.language_model.", "lm_head."),                    # re-saved since 4.52
}


def write_qwen2_vl(folder: str | Path, style: str = "llava", seed: int = 0, naming: str | None = None,
                   generation: dict | None = None, text: dict | None = None, vision: dict | None = None,
                   corpus: str | None = None, bpe_size: int = 320, special_base: int = 151643,
                   std: float = 0.2) -> Path:
    """style "llava": upstream's LLaVA-style wrapper config (Tarsier2-Recap-7b), tensors in the wrapper's
    names; style "qwen2_vl": a Qwen2-VL config (Tarsier2-7b-0115), tensors in the pre-4.52 names.
    `naming` overrides the tensor names; `generation` the generation_config.json; `text` / `vision` settings
    over QWEN_TEXT / QWEN_VISION (sizes: bench/qwen_learns.py trains a larger one); the tokenizer's BPE is
    learnt from `corpus` (default CORPUS) with `bpe_size` real tokens. `special_base`: the id of the first
    special token (Qwen2's 151643, the published value); a lower one gives a compact vocabulary (its size
    the specials' end rounded up to 64) with every special id, in config, tokenizer and generation config,
    moved down by the same amount: the same layout with a small tokenizer, as tiny test models have. `std`: the
    weights' spread (0.2 keeps a tiny test model's outputs varied; 0.02, Qwen2-VL's initializer_range, is
    the init to train from). The processor's patch and merge sizes follow `vision`."""
    text = {**QWEN_TEXT, **(text or {})}
    vision = {**QWEN_VISION, **(vision or {})}
    shift = special_base - 151643

    def moved(ids):
        return [i + shift for i in ids] if isinstance(ids, list) else ids + shift

    if shift:
        text = {**text, "bos_token_id": moved(text["bos_token_id"]), "eos_token_id": moved(text["eos_token_id"])}
        text["vocab_size"] = -(-(special_base + len(QWEN_SPECIALS)) // 64) * 64
        generation = {k: moved(v) if k.endswith("token_id") else v
                      for k, v in (generation if generation is not None else QWEN_GENERATION).items()}
    import torch
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    vision_prefix, lm, head = QWEN_NAMINGS[naming or ("wrapper" if style == "llava" else "pre-4.52")]
    state = qwen2_vision_tensors(gen, vision_prefix, vision, text["hidden_size"], std=std)
    state.update(decoder_tensors(gen, lm, text, qkv_bias=True, std=std))
    if not text.get("tie_word_embeddings"):   # tied (as Qwen2-VL-2B ships): the head is the embedding
        state[f"{head}weight"] = _randn(gen, text["vocab_size"], text["hidden_size"], std=std)
    _save_shards({k: v.to(torch.bfloat16) for k, v in state.items()}, folder)
    ids = {"image_token_id": 151655 + shift, "video_token_id": 151656 + shift, "vision_start_token_id": 151652 + shift,
           "vision_end_token_id": 151653 + shift}
    if style == "llava":
        raw = {"_name_or_path": "omni-research/Tarsier2-Recap-7b", "architectures": ["TarsierForConditionalGeneration"],
               "model_type": "llava", "image_token_index": 151655 + shift, "projection_head": None,
               "vision_feature_layer": -1, "torch_dtype": "bfloat16", "transformers_version": "4.47.1",
               "text_config": text, "vision_config": vision}
    else:
        raw = {"_name_or_path": "omni-research/Tarsier2-7b-0115", "architectures": ["Qwen2VLForConditionalGeneration"],
               "model_type": "qwen2_vl", **{k: v for k, v in text.items() if k != "model_type"},
               **ids, "vision_config": vision, "transformers_version": "4.47.1"}
    _write_json(folder / "config.json", raw)
    tok = PreTrainedTokenizerFast(tokenizer_object=_bpe([], special_base, QWEN_SPECIALS, corpus or CORPUS, bpe_size),
                                  eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.save_pretrained(str(folder))
    cfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    cfg.update({"tokenizer_class": "Qwen2Tokenizer", "padding_side": "left", "model_max_length": 32768,
                "bos_token": None, "errors": "replace"})
    _write_json(folder / "tokenizer_config.json", cfg)
    _write_json(folder / "chat_template.json", {"chat_template": QWEN_CHAT_TEMPLATE})
    _write_json(folder / "generation_config.json", generation if generation is not None else QWEN_GENERATION)
    _write_json(folder / "preprocessor_config.json", {   # Qwen2-VL-7B-Instruct's processor settings
        "min_pixels": 3136, "max_pixels": 12845056, "patch_size": vision["patch_size"],
        "temporal_patch_size": vision["temporal_patch_size"], "merge_size": vision["spatial_merge_size"],
        "image_mean": CLIP_MEAN, "image_std": CLIP_STD, "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2VLProcessor"})
    return folder
