"""VideoLLM: the project's own video-language model, its whole forward path in this one file.

    frames (B, N, S, S, 3) uint8
      -> normalise -> frozen open_clip vision tower, patch tokens of one block     (B*N, P, Dv)
         (a ResNet tower: the cells of one stage's feature map are its "patches")
      -> optional spatial average pool                                               (B*N, P', Dv)
      -> [optional: concat the change to the next frame's features]                (B*N, P', 2Dv)
      -> projector: Linear(Dv or 2Dv, D) -> GELU -> Linear(D, D)                     (B*N, P', D)
      -> [newline embedding after each patch row] + frame-separator embedding        (B*N, T, D)
         [+ MLP of the whole frame's change to the next (all cells), on the separator]
      -> [+ learned embedding of the frame's place in the clip]
      -> scattered into the LLM's input embeddings at the <video> placeholder positions
      -> any Hugging Face causal LM (loss on answer tokens / batched greedy generation)

Tarsier has no temporal position embedding: its pretrained LLM learns time from token order. A small
LLM trained from scratch finds "the frame after the last event I described" far faster when every
frame's tokens say where in the clip they are, so `projector.time_slots` can add that (nano does).
For the same reason `projector.motion_separator` puts the frame's whole change in one token: in the
cell tokens a move is a small change inside tokens dominated by what is there, and its direction
shows only across cells; nano learned no direction at all without it (BENCHMARKS.md).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tarsier.engine import model_files
from tarsier.engine.config import ModelConfig, VisionConfig
from tarsier.engine.interface import FrameSpec, Generation, SquareGeometry

IGNORE_INDEX = -100


def labelled_loss(hidden: torch.Tensor, head: nn.Module, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token cross-entropy over the labelled tokens, with the LM head applied only where a label is
    predicted: with Qwen2-VL's 152k vocabulary the head over every position (the video's tokens too) is
    most of a training step. Returns (loss, logits of those positions, (N, vocab), row-major)."""
    labels = labels[:, 1:].to(hidden.device)
    mask = labels != IGNORE_INDEX
    logits = head(hidden[:, :-1][mask])
    loss = F.cross_entropy(logits.float(), labels[mask]) if mask.any() else logits.sum() * 0.0
    return loss, logits


# ---------------------------------------------------------------------------------------------
# Vision tower
# ---------------------------------------------------------------------------------------------
def resolve_vision_config(cfg: VisionConfig) -> VisionConfig:
    """Fill the geometry fields from open_clip's registry when a named tower is used, so that
    config.json always states the real token count."""
    if cfg.source == "hf_clip":
        h = cfg.hf_config or {}
        cfg.image_size = int(h.get("image_size", cfg.image_size))
        cfg.patch_size = int(h.get("patch_size", cfg.patch_size))
        cfg.width = int(h.get("hidden_size", cfg.width))
        cfg.layers = int(h.get("num_hidden_layers", cfg.layers))
        cfg.heads = int(h.get("num_attention_heads", cfg.heads))
        return cfg
    if cfg.name is None:
        if cfg.resnet_blocks:
            cfg.resnet_blocks = tuple(cfg.resnet_blocks)
            cfg.layers = len(cfg.resnet_blocks)   # the ViT fields say nothing about a ResNet; keep them honest
            resnet_stage(cfg)
        return cfg
    import open_clip

    model_cfg = open_clip.get_model_config(cfg.name)
    if model_cfg is None:
        raise ValueError(f"unknown open_clip model {cfg.name!r}")
    v = model_cfg["vision_cfg"]
    if "timm_model_name" in v and v.get("timm_model_name"):
        raise ValueError(f"{cfg.name}: timm-backed towers are not supported yet; use a ViT or ResNet tower")
    if isinstance(v.get("layers"), (list, tuple)):   # CLIP RN50 & co: read the last stage's feature map
        cfg.resnet_blocks = tuple(int(b) for b in v["layers"])
        cfg.image_size = int(v.get("image_size", cfg.image_size))
        cfg.patch_size = 32
        cfg.width = int(v.get("width", 64)) * 32
        cfg.layers = len(cfg.resnet_blocks)
        cfg.heads = max(1, cfg.width // int(v.get("head_width", 64)))
        return cfg
    cfg.image_size = int(v.get("image_size", cfg.image_size))
    cfg.patch_size = int(v.get("patch_size", cfg.patch_size))
    cfg.width = int(v.get("width", cfg.width))
    cfg.layers = int(v.get("layers", cfg.layers))
    cfg.heads = max(1, cfg.width // int(v.get("head_width", 64)))
    cfg.mlp_ratio = float(v.get("mlp_ratio", cfg.mlp_ratio))
    return cfg


def build_vision_tower(cfg: VisionConfig) -> nn.Module:
    if cfg.source == "hf_clip":  # published Tarsier: a transformers CLIP tower (weights come with the checkpoint)
        from transformers import CLIPVisionConfig, CLIPVisionModel

        return CLIPVisionModel(CLIPVisionConfig(**(cfg.hf_config or {})))
    import open_clip
    from open_clip.model import CLIPVisionCfg, _build_vision_tower

    if cfg.name is not None:
        model_cfg = open_clip.get_model_config(cfg.name)
        vision_cfg = CLIPVisionCfg(**model_cfg["vision_cfg"])
        tower = _build_vision_tower(model_cfg["embed_dim"], vision_cfg, quick_gelu=model_cfg.get("quick_gelu", False))
        if cfg.pretrained:
            full = open_clip.create_model(cfg.name, pretrained=cfg.pretrained)
            tower.load_state_dict(full.visual.state_dict())
        return tower
    if cfg.resnet_blocks:
        from open_clip.modified_resnet import ModifiedResNet

        stage = resnet_stage(cfg)
        # stage s has stride 4 * 2**(s-1) and base_width * stride channels; stages after it are not
        # needed, so a config may list only the blocks up to it (open_clip always builds four)
        blocks = list(cfg.resnet_blocks) + [1] * (4 - len(cfg.resnet_blocks))
        tower = ModifiedResNet(layers=blocks, output_dim=cfg.width, heads=cfg.heads,
                               image_size=cfg.image_size, width=cfg.width // cfg.patch_size)
        # only the patch features of `stage` are ever read: the later stages and the attention pool
        # would be dead weight in every checkpoint
        for late in ("layer1", "layer2", "layer3", "layer4")[stage:]:
            setattr(tower, late, nn.Identity())
        tower.attnpool = nn.Identity()
        return tower
    vision_cfg = CLIPVisionCfg(
        layers=cfg.layers, width=cfg.width, head_width=cfg.width // cfg.heads, mlp_ratio=cfg.mlp_ratio,
        patch_size=cfg.patch_size, image_size=cfg.image_size,
    )
    return _build_vision_tower(cfg.width, vision_cfg)


def resnet_stage(cfg: VisionConfig) -> int:
    """The ResNet stage (1-4) whose feature map a ResNet tower's `patch_size` (its stride) names."""
    stage = {4: 1, 8: 2, 16: 3, 32: 4}.get(cfg.patch_size)
    if stage is None or cfg.width % cfg.patch_size or cfg.image_size % cfg.patch_size:
        raise ValueError(f"a ResNet tower reads stride 4, 8, 16 or 32, and its width and image_size must be "
                         f"multiples of that stride; got patch_size {cfg.patch_size}, width {cfg.width}, "
                         f"image_size {cfg.image_size}")
    if not stage <= len(cfg.resnet_blocks) <= 4:
        raise ValueError(f"resnet_blocks {cfg.resnet_blocks} must list 1-4 stages, at least up to stage {stage} "
                         f"(patch_size {cfg.patch_size})")
    return stage


def tower_features(vision: nn.Module, cfg: VisionConfig, x: torch.Tensor) -> torch.Tensor:
    """Normalised images (B, 3, S, S) -> patch features (B, P, Dv) of an open_clip tower's configured
    block (ViT: `feature_layer`, CLS dropped) or stage (ResNet: the cells of its feature map)."""
    if cfg.resnet_blocks:
        fmap = vision.forward_intermediates(x, indices=[resnet_stage(cfg)], stop_early=True,
                                            intermediates_only=True)["image_intermediates"][0]
        return fmap.flatten(2).transpose(1, 2)
    out = vision.forward_intermediates(x, indices=[cfg.feature_layer % cfg.layers], stop_early=True,
                                       intermediates_only=True, output_fmt="NLC")
    return out["image_intermediates"][0]


def pool_patches(features: torch.Tensor, pool: int) -> torch.Tensor:
    """(B, P, D) patch tokens of a square grid -> (B, P / pool², D), averaged over pool x pool blocks."""
    if pool <= 1:
        return features
    grid = int(features.shape[1] ** 0.5)
    f = features.transpose(1, 2).reshape(features.shape[0], -1, grid, grid)
    return F.avg_pool2d(f, pool).flatten(2).transpose(1, 2)


# ---------------------------------------------------------------------------------------------
# The processor: frame geometry, the prompt template, token ids (CPU only, no weights)
# ---------------------------------------------------------------------------------------------
class VideoLLMProcessor:
    """Square frames of the tower's size; Tarsier's `USER: <video>\n{instruction} ASSISTANT:` template;
    the placeholder expanded to every visual token of every frame (engine/interface.py)."""

    def __init__(self, config: ModelConfig, tokenizer):
        self.config = config
        self.tokenizer = tokenizer
        self.video_token_id = tokenizer.convert_tokens_to_ids(config.video_token)
        self.geometry = SquareGeometry(config.vision.image_size)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def frames(self) -> int:
        return self.config.frames

    @property
    def grains(self) -> dict[str, str]:
        if self.config.prompts is not None:
            return dict(self.config.prompts)
        from tarsier import prompts
        return {g: prompts.read(g) for g in prompts.GRAINS}   # what stage 2 trains the project's models on

    def frame_spec(self, width: int, height: int, frames: int | None = None) -> FrameSpec:
        return self.geometry.frame_spec(width, height, frames or self.config.frames)

    def prompt(self, instruction: str) -> str:
        return self.config.prompt_template.format(instruction=instruction.strip())

    def inputs(self, clips, instructions: list[str], answers: list[str] | None = None,
               prefixes: list[str] | None = None) -> dict:
        frames = torch.as_tensor(np.stack([np.asarray(c) for c in clips])) if isinstance(clips, list | tuple) \
            else torch.as_tensor(clips)
        prompts = [self.prompt(i) + (prefixes[k] if prefixes else "") for k, i in enumerate(instructions)]
        batch = self.tokenize(prompts, frames.shape[1], answers=answers,
                              padding_side="right" if answers is not None else "left")
        batch["frames"] = frames
        return batch

    def tokenize(self, prompts: list[str], n_frames: int, answers: list[str] | None = None,
                 padding_side: str = "left") -> dict[str, torch.Tensor]:
        """Prompts (already formatted, one <video> each) -> padded ids with the placeholder expanded
        to n_frames * tokens_per_frame positions; with answers, labels cover the answer and EOS only."""
        tok = self.tokenizer
        n_visual = n_frames * self.config.visual_tokens_per_frame()
        rows, labels = [], []
        for i, prompt in enumerate(prompts):
            ids = tok(prompt, add_special_tokens=False)["input_ids"]
            if ids.count(self.video_token_id) != 1:
                raise ValueError("a prompt must contain the video placeholder exactly once")
            at = ids.index(self.video_token_id)
            ids = ids[:at] + [self.video_token_id] * n_visual + ids[at + 1:]
            if tok.bos_token_id is not None:
                ids = [tok.bos_token_id] + ids
            lab = [IGNORE_INDEX] * len(ids)
            if answers is not None:
                ans = tok(" " + answers[i].strip(), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                ids, lab = ids + ans, lab + ans
            rows.append(ids)
            labels.append(lab)
        return pad_rows(rows, labels, tok.pad_token_id, left=padding_side == "left")


def pad_rows(rows: list[list[int]], labels: list[list[int]], pad_id: int, left: bool) -> dict[str, torch.Tensor]:
    """Token rows of different lengths -> input_ids, attention_mask and labels of one width, padded on the
    left (generation: every row ends where its answer starts) or on the right (training)."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    label_t = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, (r, lab) in enumerate(zip(rows, labels)):
        sl = slice(width - len(r), width) if left else slice(0, len(r))
        input_ids[i, sl] = torch.tensor(r)
        attention[i, sl] = 1
        label_t[i, sl] = torch.tensor(lab)
    return {"input_ids": input_ids, "attention_mask": attention, "labels": label_t}


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------
class VideoLLM(nn.Module):
    def __init__(self, config: ModelConfig, tokenizer, llm: nn.Module | None = None):
        super().__init__()
        from transformers import AutoConfig, AutoModelForCausalLM

        self.config = config
        self.tokenizer = tokenizer
        config.vision = resolve_vision_config(config.vision)
        v = config.vision
        self.vision = build_vision_tower(v)
        if llm is None:
            llm_cfg = AutoConfig.for_model(**config.llm)
            llm = AutoModelForCausalLM.from_config(llm_cfg)
        self.llm = llm
        d_model = self.llm.get_input_embeddings().embedding_dim
        projector_in = v.width * (2 if config.projector.temporal_difference else 1)
        self.projector = nn.Sequential(nn.Linear(projector_in, d_model), nn.GELU(), nn.Linear(d_model, d_model))
        if config.projector.frame_token_id is None:
            self.frame_separator = nn.Parameter(torch.randn(d_model) * 0.02)
        else:
            self.frame_separator = None
        self.motion_projector = None
        if config.projector.motion_separator:
            cells = config.cell_grid() ** 2
            self.motion_projector = nn.Sequential(nn.Linear(cells * v.width, d_model), nn.GELU(),
                                                  nn.Linear(d_model, d_model))
        slots = config.projector.time_slots
        self.time_embedding = nn.Parameter(torch.randn(slots, d_model) * 0.02) if slots else None
        self.register_buffer("pixel_mean", torch.tensor(v.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(v.std).view(1, 3, 1, 1), persistent=False)
        self.processor = VideoLLMProcessor(config, tokenizer)
        self.video_token_id = self.processor.video_token_id
        # The checkpoint's generation_config.json, when it has one (published Tarsier): a repetition
        # penalty or extra stop ids there change greedy output, as transformers' from_pretrained applies them.
        self.generation_config = None
        self.set_vision_trainable(not v.frozen)

    # -- helpers --------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.projector[0].weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.projector[0].weight.dtype

    @property
    def frame_size(self) -> int:
        return self.config.vision.image_size

    def trainable_parameters(self):
        """What a fine-tune updates by default: the projector(s) and the LLM; the tower only when unfrozen."""
        return [p for name, p in self.named_parameters() if not name.startswith("vision.") or not self.config.vision.frozen]

    def save(self, folder) -> None:
        model_files.save(self, folder)

    def set_vision_trainable(self, trainable: bool) -> None:
        self.vision.requires_grad_(trainable)
        self.vision.train(trainable and self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.config.vision.frozen:
            self.vision.eval()  # a frozen tower never runs dropout/noise
        return self

    # -- step 1: frames -> vision features -------------------------------------------------------
    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, N, S, S, 3) uint8 -> (B*N, P, Dv) patch features of the configured block (CLS dropped)."""
        b, n = frames.shape[:2]
        x = frames.reshape(b * n, *frames.shape[2:]).to(self.device)
        x = x.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
        x = ((x - self.pixel_mean) / self.pixel_std).to(self.dtype)
        v = self.config.vision
        with torch.set_grad_enabled(torch.is_grad_enabled() and not v.frozen):
            if v.source == "hf_clip":
                # hidden_states[0] is the embedding output, so [index + 1] is the output of block `index`
                # (= hidden_states[-2] for feature_layer -2, as in LLaVA/Tarsier); [:, 1:] drops CLS.
                out = self.vision(pixel_values=x, output_hidden_states=True)
                return out.hidden_states[v.feature_layer % v.layers + 1][:, 1:]
            return tower_features(self.vision, v, x)

    # -- step 2: features -> LLM-space visual tokens --------------------------------------------
    def project(self, features: torch.Tensor, frames_per_video: int) -> torch.Tensor:
        """(B*N, P, Dv) -> (B, N*T, D): projector, optional pooling, row newlines, frame separators."""
        features = pool_patches(features, self.config.projector.spatial_pool)
        grid = int(features.shape[1] ** 0.5)
        change = None
        if self.config.projector.temporal_difference or self.motion_projector is not None:
            clips = features.view(-1, frames_per_video, *features.shape[1:])
            change = torch.zeros_like(clips)
            change[:, :-1] = clips[:, 1:] - clips[:, :-1]
            change = change.flatten(0, 1)
        if self.config.projector.temporal_difference:
            features = torch.cat([features, change], dim=-1)
        x = self.projector(features.to(self.dtype))
        bn, _, d = x.shape
        embed = self.llm.get_input_embeddings()
        newline_id = self.config.projector.newline_token_id
        if newline_id is not None:
            newline = embed.weight[newline_id].to(x.dtype).expand(bn, grid, 1, d)
            x = torch.cat([x.view(bn, grid, grid, d), newline], dim=2).view(bn, -1, d)
        if self.frame_separator is not None:
            sep = self.frame_separator
        else:
            sep = embed.weight[self.config.projector.frame_token_id]
        sep = sep.to(x.dtype).expand(bn, 1, d)
        if self.motion_projector is not None:
            sep = sep + self.motion_projector(change.flatten(1).to(self.dtype)).unsqueeze(1)
        x = torch.cat([x, sep], dim=1)
        if self.time_embedding is not None:
            place = torch.arange(bn, device=x.device) % frames_per_video
            slot = place * self.time_embedding.shape[0] // frames_per_video
            x = x + self.time_embedding[slot].to(x.dtype).unsqueeze(1)
        return x.reshape(bn // frames_per_video, -1, d)

    # -- step 3: text with placeholders -> token ids (the processor's job) ------------------------
    def format_prompt(self, instruction: str) -> str:
        return self.processor.prompt(instruction)

    def tokenize(self, prompts: list[str], n_frames: int, answers: list[str] | None = None,
                 padding_side: str = "left") -> dict[str, torch.Tensor]:
        return self.processor.tokenize(prompts, n_frames, answers=answers, padding_side=padding_side)

    # -- step 4: scatter visual tokens into the text embeddings -----------------------------------
    def embed_inputs(self, input_ids: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        is_video = input_ids == self.video_token_id
        text_ids = input_ids.masked_fill(is_video, 0)
        embeds = self.llm.get_input_embeddings()(text_ids)
        if int(is_video.sum()) != visual.shape[0] * visual.shape[1]:
            raise ValueError("visual token count does not match the placeholders in the prompt")
        return embeds.masked_scatter(is_video.unsqueeze(-1), visual.to(embeds.dtype))

    def visual_tokens(self, frames: torch.Tensor | None = None, features: torch.Tensor | None = None,
                      frames_per_video: int | None = None) -> torch.Tensor:
        """Either raw frames (B, N, S, S, 3) or cached tower features (B, N, P, Dv)."""
        if features is None:
            frames_per_video = frames.shape[1]
            features = self.encode_frames(frames)
        else:
            frames_per_video = features.shape[1]
            features = features.reshape(-1, *features.shape[2:]).to(self.device)
        return self.project(features, frames_per_video)

    # -- training forward -------------------------------------------------------------------------
    def forward(self, input_ids, attention_mask, labels=None, frames=None, features=None, labelled_only=False):
        """(loss, logits). `labelled_only` (with labels): the logits only where a labelled token is
        predicted, (N, vocab) as `labelled_loss` returns them, and the LM head applied only there."""
        visual = self.visual_tokens(frames=frames, features=features)
        embeds = self.embed_inputs(input_ids.to(self.device), visual)
        if labelled_only and labels is not None:
            hidden = self.llm.get_decoder()(inputs_embeds=embeds, attention_mask=attention_mask.to(self.device),
                                            use_cache=False).last_hidden_state
            return labelled_loss(hidden, self.llm.get_output_embeddings(), labels)
        out = self.llm(inputs_embeds=embeds, attention_mask=attention_mask.to(self.device), use_cache=False)
        logits = out.logits
        loss = None
        if labels is not None:
            labels = labels.to(self.device)
            loss = F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX
            )
        return loss, logits

    # -- inference: batched, left-padded greedy decoding with a KV cache --------------------------
    @torch.inference_mode()
    def generate(self, clips, instructions: list[str], max_new_tokens: int | None = None,
                 prefixes: list[str] | None = None, temperature: float = 0.0) -> list[Generation]:
        """clips: (B, N, S, S, 3) uint8 or a list of (N, S, S, 3) arrays, one instruction per clip;
        `prefixes`: text forced as the start of each answer (not part of the returned text);
        `temperature` > 0 samples (torch's global RNG) instead of greedy decoding."""
        batch = self.processor.inputs(clips, instructions, prefixes=prefixes)
        visual = self.visual_tokens(frames=batch["frames"])
        embeds = self.embed_inputs(batch["input_ids"].to(self.device), visual)
        tok = self.tokenizer
        stops = stop_token_ids(tok, self.generation_config)
        out = self.llm.generate(
            inputs_embeds=embeds,
            attention_mask=batch["attention_mask"].to(self.device),
            **greedy_kwargs(self.generation_config, max_new_tokens or self.config.max_new_tokens, stops,
                            tok.pad_token_id, temperature, [self.video_token_id]),
        )
        return decode_generations(tok, out.tolist(), stops)


def greedy_kwargs(generation_config, max_new_tokens: int, stops: list[int], pad_token_id,
                  temperature: float = 0.0, never: list[int] | None = None) -> dict:
    """generate() kwargs: the checkpoint's generation config (repetition penalty, ...) with greedy
    decoding forced, as upstream calls generate(do_sample=False) on a model that loaded that config.
    `temperature` > 0: plain temperature sampling instead (no top-k / top-p cut), never emitting the
    `never` ids (the video placeholder: fed back, it would ask for another video's worth of tokens)."""
    kwargs = {"max_new_tokens": max_new_tokens, "do_sample": False, "num_beams": 1, "eos_token_id": stops,
              "pad_token_id": pad_token_id, "use_cache": True}
    sampling = {"temperature": None, "top_p": None, "top_k": None}
    if temperature > 0:
        kwargs["do_sample"] = True
        sampling = {"temperature": temperature, "top_p": 1.0, "top_k": 0}
        if never := [i for i in never or () if i is not None]:
            kwargs["suppress_tokens"] = never
    if generation_config is None:
        return {**kwargs, **(sampling if temperature > 0 else {})}
    import copy

    gc = copy.deepcopy(generation_config)
    gc.update(**kwargs, **sampling)
    return {"generation_config": gc}


def stop_token_ids(tok, generation_config=None) -> list[int]:
    """End of text for the model: the tokenizer's EOS, the chat turn ends a template uses, and every
    eos id of the checkpoint's generation config."""
    ids = {tok.eos_token_id}
    for t in ("<|im_end|>", "<|endoftext|>"):   # not get_vocab(): that copies a 150k-entry dict per call
        i = tok.convert_tokens_to_ids(t)
        if i is not None and i != tok.unk_token_id:
            ids.add(i)
    eos = getattr(generation_config, "eos_token_id", None)
    ids.update(eos if isinstance(eos, list | tuple) else [eos])
    return sorted(i for i in ids if i is not None)


def decode_generations(tok, rows: list[list[int]], stops: list[int]) -> list[Generation]:
    results = []
    for row in rows:
        n = next((i for i, t in enumerate(row) if t in stops), len(row))
        results.append(Generation(text=tok.decode(row[:n], skip_special_tokens=True).strip(), tokens=n))
    return results
