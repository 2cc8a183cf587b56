"""Tiny random checkpoints written to disk in the published Tarsier formats (see engine/published.py).

`write_llava(folder)`: omni-research/Tarsier-7b's layout: a LLaVA config.json (TarsierForConditionalGeneration,
clip_vision_model + llama, image_token_index 32000, image_newline_idx 32002, image_new_idx 32003), tensors
vision_tower.vision_model.* / multi_modal_projector.linear_{1,2}.* / language_model.model.* /
language_model.lm_head.weight in two safetensors shards with an index, a tokenizer whose "<image>" is id 32000
(vocab >= 32004 in the LLM), added_tokens.json, special_tokens_map.json, a CLIP preprocessor_config.json.

`write_qwen2_vl(folder, style)`: Tarsier2's layout: Qwen2-VL tensors in the pre-4.52 naming (visual.*, model.*,
lm_head.*), config.json either upstream's LLaVA-style wrapper (style="llava") or a Qwen2-VL config
(style="qwen2_vl"), a Qwen2-style tokenizer with the real special-token ids (151643..151656), chat_template.json,
a Qwen2VLImageProcessor preprocessor_config.json. Sizes are tiny; formats are the real ones.
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
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _bpe(front_specials: list[str], base_size: int, back_specials: list[str]):
    """Byte-level BPE trained on a few sentences, its vocab padded with unreachable fillers to `base_size`,
    then `back_specials` added so they get ids base_size, base_size + 1, ..."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=front_specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator([CORPUS], trainer=trainer)
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


def write_llava(folder: str | Path, seed: int = 0) -> Path:
    import torch
    from transformers import (
        CLIPVisionConfig,
        CLIPVisionModel,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vision = CLIPVisionModel(CLIPVisionConfig(**{k: v for k, v in LLAVA_VISION.items() if k != "model_type"}))
    text_cfg = {k: v for k, v in LLAVA_TEXT.items() if k not in ("_name_or_path", "architectures", "torch_dtype")}
    llm = LlamaForCausalLM(LlamaConfig(**text_cfg))
    d_v, d = LLAVA_VISION["hidden_size"], LLAVA_TEXT["hidden_size"]
    state = {f"vision_tower.{k}": v for k, v in vision.state_dict().items()}
    state.update({f"language_model.{k}": v for k, v in llm.state_dict().items()})
    state["multi_modal_projector.linear_1.weight"] = torch.randn(d, d_v) * 0.2
    state["multi_modal_projector.linear_1.bias"] = torch.randn(d) * 0.02
    state["multi_modal_projector.linear_2.weight"] = torch.randn(d, d) * 0.2
    state["multi_modal_projector.linear_2.bias"] = torch.randn(d) * 0.02
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


def write_qwen2_vl(folder: str | Path, style: str = "llava", seed: int = 0) -> Path:
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    text = {k: v for k, v in QWEN_TEXT.items() if k != "torch_dtype"}
    config = Qwen2VLConfig(text_config={**text, "model_type": "qwen2_vl_text"},
                           vision_config={**QWEN_VISION, "model_type": "qwen2_vl_vision"})
    model = Qwen2VLForConditionalGeneration(config)
    with torch.no_grad():   # the default init leaves a tiny random model emitting one token forever
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.2)
    legacy = {}   # the pre-4.52 Qwen2-VL names that Tarsier2 was saved with
    for k, v in model.state_dict().items():
        if k.startswith("model.visual."):
            k = k[len("model."):]
        elif k.startswith("model.language_model."):
            k = "model." + k[len("model.language_model."):]
        legacy[k] = v.to(torch.bfloat16)
    _save_shards(legacy, folder)
    ids = {"image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
           "vision_end_token_id": 151653}
    if style == "llava":
        raw = {"_name_or_path": "omni-research/Tarsier2-Recap-7b", "architectures": ["TarsierForConditionalGeneration"],
               "model_type": "llava", "image_token_index": 151655, "projection_head": None,
               "vision_feature_layer": -1, "torch_dtype": "bfloat16", "transformers_version": "4.47.1",
               "text_config": QWEN_TEXT, "vision_config": QWEN_VISION}
    else:
        raw = {"_name_or_path": "omni-research/Tarsier2-7b-0115", "architectures": ["Qwen2VLForConditionalGeneration"],
               "model_type": "qwen2_vl", **{k: v for k, v in QWEN_TEXT.items() if k != "model_type"},
               **ids, "vision_config": QWEN_VISION, "transformers_version": "4.47.1"}
    _write_json(folder / "config.json", raw)
    tok = PreTrainedTokenizerFast(tokenizer_object=_bpe([], 151643, QWEN_SPECIALS),
                                  eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.save_pretrained(str(folder))
    cfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    cfg.update({"tokenizer_class": "Qwen2Tokenizer", "padding_side": "left", "model_max_length": 32768,
                "bos_token": None, "errors": "replace"})
    _write_json(folder / "tokenizer_config.json", cfg)
    _write_json(folder / "chat_template.json", {"chat_template": QWEN_CHAT_TEMPLATE})
    _write_json(folder / "generation_config.json", {"bos_token_id": 151643, "eos_token_id": [151645, 151643],
                                                    "pad_token_id": 151643, "do_sample": False})
    _write_json(folder / "preprocessor_config.json", {
        "min_pixels": 3136, "max_pixels": 3136, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
        "image_mean": CLIP_MEAN, "image_std": CLIP_STD, "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2VLProcessor"})
    return folder
