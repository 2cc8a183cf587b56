"""Stage-1 and stage-2 training, on Hugging Face accelerate, of every layout the project loads: its own
VideoLLM, Tarsier1 (LLaVA layout, loaded into VideoLLM) and Tarsier2 (Qwen2-VL layout; trainers/finetune.py).

The paper's recipe: the vision tower stays frozen; the projector and the whole LLM are trained
(or LoRA adapters on the LLM's attention and MLP projections instead of the full LLM). Stage 1 is multi-task pre-training on a mixture of
manifests; stage 2 is multi-grained instruction tuning initialised from a stage-1 checkpoint.
Loss is on assistant tokens only. AdamW, warmup + cosine, gradient accumulation and clipping.

`accelerate launch --num_processes N train ...` runs the same code data-parallel: each process
takes its slice of every global batch, drawn from one seeded mixture sampler, so the data order
does not depend on the number of processes and a resumed run continues exactly.

Run folder:
    run.json            the arguments
    metrics.jsonl       one line per logged step
    checkpoints/step-N/ a loadable model (config.json, model.safetensors, tokenizer) + trainer state
    final/              the finished model
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from tarsier.common.files import atomic_write, normal_permissions, save_safetensors
from tarsier.engine import checkpoint as ckpt
from tarsier.engine.config import ModelConfig
from tarsier.trainers.schedule import lr_lambda

STAGES = ("stage1", "stage2")


@dataclass
class TrainArgs:
    stage: str
    data: str                       # mixture .json or a single manifest .jsonl
    out: str                        # run folder
    init: str = "nano"              # preset (fresh model from its config) | checkpoint folder | run folder
    steps: int = 1000               # optimizer steps
    batch_size: int = 16            # samples per optimizer step, summed over processes and accumulation
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup: int = 50
    weight_decay: float = 0.0
    clip_grad: float = 1.0
    seed: int = 0
    save_every: int = 0             # 0 = only at the end
    log_every: int = 10
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_targets: list[str] | None = None   # LLM linear layers LoRA adapts (default: attention + MLP projections)
    train_vision: bool = False
    vision_init: str | None = None  # a `tarsier train tower` folder for a fresh model's tower ("none": random;
                                    # default: the tower the preset ships, if any)
    projector: dict | None = None   # a fresh model's projector settings over the preset's (experiments/nano/recipe.py)
    grad_checkpointing: bool = False
    feature_cache: str = "auto"     # auto (user cache) | off | a folder
    cache_ram: str = "4GB"          # tower features held in RAM; the rest is read from the disk cache per batch
    frames: int | None = None       # frames per sample (default: the model's)
    pair_frames: bool | None = None  # Tarsier2: consecutive frames share a temporal patch (True) or each frame fills
                                     # one twice (False, as Tarsier2 ships); None: as the --init checkpoint says
    workers: int = 0                # decode processes (0 = half the cores, at most 4; 1 = decode in-process)
    group_by_length: int = 16       # batches sorted together by length to cut padding (1 = off)
    resume: bool = False
    device: str = "auto"
    threads: int = 0                # CPU intra-op threads; 0 = re-decided while training (trainers/threads.py)
    stop_after: int | None = None   # end this invocation after N steps (a planned interruption)


# ---------------------------------------------------------------------------------------------
def build_or_load(args: TrainArgs, texts: list[str], config_overrides: dict | None = None):
    """The starting model: a run folder or checkpoint, or a fresh model built from a preset config
    (with a byte-level BPE trained on the training texts). `config_overrides` ({"vision": {...},
    "projector": {...}}) is merged over a fresh model's preset config, one section at a time."""
    from tarsier.trainers.finetune import load_init

    def from_checkpoint() -> None:
        if args.vision_init or args.projector or config_overrides:
            raise ValueError("--vision-init and projector settings are for a fresh model; a checkpoint brings its own")

    init = Path(args.init).expanduser()
    if init.is_dir():
        from_checkpoint()
        folder = resolve_run_checkpoint(init)
        return ckpt.load_folder(folder), str(folder)
    published = load_init(args.init)   # tarsier2-7b, tarsier-7b, owner/name: the published weights
    if published is not None:
        from_checkpoint()
        return published, args.init
    preset = ckpt.read_preset(args.init)
    if "config" not in preset:
        # a trained preset with no recipe of its own (nano-demo): its installed weights are the start
        installed = ckpt.trained_preset_dir(args.init)
        if (installed / ckpt.CONFIG_NAME).is_file():
            from_checkpoint()
            return ckpt.load_folder(installed), str(installed)
        raise ckpt.ModelNotFound(f"preset {args.init!r} is not installed here ({installed}) and has no config to "
                                 "build a fresh model from")
    for section, values in (config_overrides or {}).items():
        preset["config"][section].update(values)
    from tarsier.engine.tokenizer import build_bpe_tokenizer

    tok = build_bpe_tokenizer(texts, vocab_size=preset.get("tokenizer", {}).get("vocab_size", 512))
    config = ModelConfig.from_dict(preset["config"])
    for key, value in (args.projector or {}).items():
        if not hasattr(config.projector, key):
            raise ValueError(f"unknown projector setting {key!r}")
        setattr(config.projector, key, value)
    config.llm["vocab_size"] = len(tok)
    model = ckpt.build_random(config, tok, seed=args.seed)
    from tarsier.trainers.tower import load_tower, shipped_tower

    # a preset that ships a pretrained tower (nano) starts from it, as a real model starts from
    # pretrained CLIP weights; "none" keeps the random tower (to train it with --train-vision)
    tower = args.vision_init or shipped_tower(args.init)
    if tower and str(tower) != "none":
        load_tower(model, tower)
        return model, f"new:{args.init}+tower:{tower}"
    return model, f"new:{args.init}"


def resolve_run_checkpoint(folder: Path) -> Path:
    """A run folder means its final model, else its latest checkpoint; a model folder is itself."""
    if (folder / ckpt.CONFIG_NAME).is_file():
        return folder
    if (folder / "final" / ckpt.CONFIG_NAME).is_file():
        return folder / "final"
    latest = latest_checkpoint(folder)
    if latest is None:
        raise ckpt.ModelNotFound(f"{folder}: not a checkpoint or a run folder with checkpoints")
    return latest


def latest_checkpoint(run: Path) -> Path | None:
    from tarsier.trainers.state import STATE_JSON

    steps = sorted((run / "checkpoints").glob("step-*")) if (run / "checkpoints").is_dir() else []
    steps = [s for s in steps if (s / STATE_JSON).is_file()]
    return steps[-1] if steps else None


def checkpoint_step(folder: Path) -> int:
    from tarsier.trainers.state import STATE_JSON

    return int(json.loads((folder / STATE_JSON).read_text(encoding="utf-8"))["step"])


def adamw(params, lr: float, weight_decay: float, fsdp: bool = False):
    """AdamW with weight decay on matrices only. Fused (one kernel over all tensors): on a CPU 5x faster
    than the default for-each form over a 152,064-row embedding (0.031 s vs 0.156 s a step, one thread);
    not under FSDP, whose sharded parameters the fused kernel is not proven on here."""
    import torch

    params = list(params)
    return torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
                              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
                             lr=lr, fused=not fsdp)


# ---------------------------------------------------------------------------------------------
def add_lora(model, args: TrainArgs) -> None:
    from peft import LoraConfig, get_peft_model

    from tarsier.trainers.finetune import add_qwen_lora, is_qwen, lora_targets

    targets = lora_targets(model, args.lora_targets)
    if is_qwen(model):
        add_qwen_lora(model, args.lora_r, args.lora_alpha, targets, train_vision=args.train_vision)
        return
    config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.0,
                        target_modules=targets, bias="none")
    model.llm = get_peft_model(model.llm, config)


def merged_state_dict(model) -> dict[str, torch.Tensor]:
    """A plain VideoLLM state dict with LoRA folded in, without disturbing the live adapters.
    Tied tensors (embeddings = LM head) appear once, under the name safetensors' load_model expects."""
    from safetensors.torch import _remove_duplicate_names

    llm = model.llm
    llm.merge_adapter()
    try:
        live = {}
        for name, value in model.state_dict().items():
            if "lora_" in name:
                continue
            if name.startswith("llm."):
                name = name.replace("llm.base_model.model.", "llm.").replace(".base_layer.", ".")
            live[name] = value
        removed = {n for names in _remove_duplicate_names(live).values() for n in names}
        return {n: t.detach().cpu().clone().contiguous() for n, t in live.items() if n not in removed}
    finally:
        llm.unmerge_adapter()


def save_model_folder(model, folder: Path, lora: bool, weights: dict | None = None,
                      duplicates: set[str] = frozenset()) -> None:
    """config.json + model.safetensors + tokenizer (+ adapter/ and trainable weights for LoRA runs).
    `weights`: the full state dict gathered from an FSDP-sharded model, written instead of the live (sharded)
    tensors, less the tied `duplicates` save_model would drop."""
    from safetensors.torch import save_model

    from tarsier.trainers.finetune import is_qwen, save_qwen

    if is_qwen(model):   # a standard transformers Qwen2-VL folder
        save_qwen(model, folder, lora, weights)
        return
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save(folder / ckpt.CONFIG_NAME)
    model.tokenizer.save_pretrained(str(folder))
    if weights is not None:
        save_safetensors(folder / ckpt.WEIGHTS_NAME, {n: t.contiguous() for n, t in weights.items()
                                                     if n not in duplicates}, metadata={"format": "pt"})
        return
    if not lora:
        save_model(model, str(folder / ckpt.WEIGHTS_NAME))
        normal_permissions(folder / ckpt.WEIGHTS_NAME)   # safetensors creates it 0600
        return
    save_safetensors(folder / ckpt.WEIGHTS_NAME, merged_state_dict(model), metadata={"format": "pt"})
    model.llm.save_pretrained(str(folder / "adapter"))  # peft writes safetensors, 0600
    normal_permissions(folder / "adapter")
    trainable = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_safetensors(folder / "trainable.safetensors", trainable)


# ---------------------------------------------------------------------------------------------
def train(args: TrainArgs, on_log: Callable[[dict], None] | None = None,
          on_status: Callable[[str], None] | None = None, *, config_overrides: dict | None = None,
          feature_source=None, on_checkpoint: Callable[[Path], None] | None = None) -> Path:
    """Run (or resume) a training stage; returns the folder of the final model (or of the last
    checkpoint when stopped early with stop_after). on_checkpoint(run folder) runs on the main
    process after every checkpoint (the CLI draws the curves there: loss.png, lr.png).

    For experiments (experiments/nano/): `config_overrides` changes a fresh model's preset config
    (see build_or_load); `feature_source`, an object whose get(samples) returns (B, N, P, Dv)
    features, stands in for the frozen tower's (e.g. the exact scene state of the synthetic world)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, set_seed

    from tarsier.trainers.data import FeatureStore, FrameSource, collate, parse_bytes
    from tarsier.trainers.finetune import (
        ClipSource,
        check_context,
        check_trainable,
        fp32_master_weights,
        freeze,
        is_qwen,
        load_init,
    )
    from tarsier.trainers.manifest import LengthGroupedBatches, load_mixture
    from tarsier.trainers.state import load_trainer_state, save_trainer_state
    from tarsier.trainers.threads import cpu_threads

    if args.stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}")
    status = on_status or (lambda msg: None)
    run = Path(args.out)
    cpu = args.device == "cpu" or not torch.cuda.is_available()
    accelerator = Accelerator(cpu=cpu, mixed_precision="no" if cpu else "bf16",
                              gradient_accumulation_steps=args.grad_accum)
    world, rank = accelerator.num_processes, accelerator.process_index
    fsdp = accelerator.distributed_type == DistributedType.FSDP   # configs/accelerate/fsdp.yaml
    if fsdp and args.lora:
        raise ValueError("--lora runs data-parallel (configs/accelerate/ddp.yaml): with the base frozen, each GPU "
                         "holds the model; FSDP (fsdp.yaml) is for full fine-tunes")
    micro = args.batch_size // (world * args.grad_accum)
    if micro < 1 or micro * world * args.grad_accum != args.batch_size:
        raise ValueError(f"batch size {args.batch_size} must be a multiple of processes x accumulation "
                         f"({world} x {args.grad_accum})")
    set_seed(args.seed)

    mixture = load_mixture(args.data)  # every row validated before anything trains
    samples = mixture.samples
    resume_from = latest_checkpoint(run) if args.resume else None
    finished = resume_from is None or checkpoint_step(resume_from) >= args.steps
    if args.resume and (run / "final").exists() and finished:
        # nothing left to train: do not rebuild the model only to write the same files again
        status(f"{run} already finished")
        return run / "final"
    if resume_from is not None:
        saved = json.loads((run / "run.json").read_text())
        # LoRA checkpoints hold adapters + projector; the frozen base comes from where the run began.
        start = saved["lora_base"] if args.lora else str(resume_from)
        model = ckpt.load_folder(Path(start)) if Path(start).is_dir() else load_init(start)
        source = saved.get("init_source", args.init)
        status(f"resuming from {resume_from}")
    else:
        model, source = build_or_load(args, [t for s in samples for t in (s.prompt, s.answer)], config_overrides)
    check_trainable(model, args.init)
    qwen = is_qwen(model)
    lora_base = None
    if args.lora and resume_from is None:
        # a published checkpoint (preset or hub id) is read again from the Hugging Face cache on resume
        kept = Path(source).is_dir() or not source.startswith("new:")
        lora_base = source if kept else str(run / "base")
        if not kept and accelerator.is_main_process:
            save_model_folder(model, run / "base", lora=False)
    frames = args.frames or model.config.frames
    model.config.frames = frames
    if args.pair_frames is not None and not qwen:
        raise ValueError(f"--pair-frames/--duplicate-frames: only Qwen2-VL-layout models (Tarsier2) pack frames into "
                         f"temporal patches; --init {args.init} is a {type(model).__name__}")
    if qwen:
        model.processor.frames = frames
        if args.pair_frames is not None:   # saved with the fine-tune (preprocessor_config.json), so describe agrees
            model.processor.set_duplicate_frames(not args.pair_frames)
        if accelerator.device.type == "cpu":
            model.float()   # published weights are bf16: on a CPU, train in float32
        freeze(model, args.train_vision)
        if accelerator.device.type != "cpu":
            fp32_master_weights(model)
    else:
        model.config.vision.frozen = not args.train_vision
        model.set_vision_trainable(args.train_vision)
    if args.lora:
        if not qwen:
            model.llm.requires_grad_(False)
        add_lora(model, args)
        if qwen and accelerator.device.type != "cpu":
            fp32_master_weights(model)   # before a resume loads the saved float32 tensors into them
        if resume_from is not None:
            from safetensors.torch import load_file

            from tarsier.trainers.finetune import load_trainable

            if qwen:
                load_trainable(model, resume_from)
            else:
                missing = model.load_state_dict(load_file(str(resume_from / "trainable.safetensors")), strict=False)
                assert not missing.unexpected_keys, missing.unexpected_keys
    if args.grad_checkpointing:
        from tarsier.trainers.finetune import enable_gradient_checkpointing

        enable_gradient_checkpointing(model)
    model.to(accelerator.device)

    # Frozen tower -> features once per clip; main process computes, the others read the cache.
    # Tarsier2 decodes on the fly: its features (thousands of tokens per clip) cost more to store than to compute.
    use_cache = not qwen and not args.train_vision and args.feature_cache != "off"
    if feature_source is not None:
        if qwen or args.train_vision:
            raise ValueError("a feature source stands in for a frozen tower: not for Tarsier2 or --train-vision")
        source_data, use_cache = feature_source, True
    elif qwen:
        source_data = ClipSource(model.processor, frames)
    elif use_cache:
        folder = None if args.feature_cache == "auto" else Path(args.feature_cache)
        source_data = FeatureStore(model, frames, folder, workers=args.workers, dataset=str(Path(args.data).resolve()),
                                   ram_bytes=parse_bytes(args.cache_ram))
        if accelerator.is_main_process:
            status(f"tower features for the clips of {len(mixture)} samples")
            source_data.ensure(samples)
            status(f"tower features: {source_data.computed} computed, {source_data.loaded} read from the cache "
                   f"({source_data.folder})")
        accelerator.wait_for_everyone()
        if not accelerator.is_main_process:
            source_data.ensure(samples)
    else:
        source_data = FrameSource(model, frames, workers=args.workers, ram_bytes=parse_bytes(args.cache_ram))

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = adamw(params, args.lr, args.weight_decay, fsdp)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(args.warmup, args.steps, args.min_lr_ratio))
    sampler = LengthGroupedBatches(mixture.sampler(seed=args.seed), micro * world, args.group_by_length)
    step = 0
    if fsdp:   # shard the LLM's decoder layers; checkpoints gather the shards into single-process files
        from tarsier.trainers.finetune import (
            OptimizerState,
            gather_full_optimizer,
            gather_full_weights,
            load_full_optimizer_state,
            mark_fsdp_units,
            optimizer_param_names,
            tied_duplicates,
        )

        mark_fsdp_units(model)
        duplicates = set() if qwen else tied_duplicates(model)
        param_names = optimizer_param_names(model, optimizer)
    # under FSDP the optimizer's state can only be set once it is sharded (after prepare)
    saved_optimizer = OptimizerState() if fsdp else optimizer
    if resume_from is not None:
        state = load_trainer_state(resume_from, optimizer=saved_optimizer, scheduler=scheduler)
        sampler.load_state_dict(state["data"])
        step = state["step"]
    model, optimizer = accelerator.prepare(model, optimizer)
    raw = accelerator.unwrap_model(model)
    inner_optimizer = optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer
    if fsdp:
        if resume_from is not None:
            load_full_optimizer_state(model, inner_optimizer, saved_optimizer.state, param_names)
        # accelerate clips an FSDP model's gradients only when handed all its (now sharded) parameters
        params = list(model.parameters())

    if accelerator.is_main_process:
        run.mkdir(parents=True, exist_ok=True)
        if resume_from is None:
            info = {**asdict(args), "init_source": source, "lora_base": lora_base}
            atomic_write(run / "run.json", json.dumps(info, indent=2) + "\n")
            (run / "metrics.jsonl").write_text("")
        else:  # drop metrics logged after the checkpoint we resume from: they will be redone
            truncate_metrics(run / "metrics.jsonl", step)

    def save_checkpoint(folder: Path) -> None:
        accelerator.wait_for_everyone()
        weights, optimizer_state = None, inner_optimizer
        if fsdp:   # every rank takes part in the gather
            weights = gather_full_weights(model)
            optimizer_state = gather_full_optimizer(model, inner_optimizer, param_names)
        if accelerator.is_main_process:
            tmp = folder.with_name(folder.name + ".tmp")
            save_model_folder(raw, tmp, args.lora, weights, duplicates if fsdp else frozenset())
            save_trainer_state(tmp, optimizer=optimizer_state, scheduler=scheduler,
                               step=step, data_state=sampler.state_dict(), extra={"stage": args.stage})
            normal_permissions(tmp)
            if folder.exists():
                import shutil

                shutil.rmtree(folder)
            tmp.rename(folder)
            if on_checkpoint:
                on_checkpoint(run)
        accelerator.wait_for_everyone()

    model.train()
    tuner = cpu_threads(args.threads, accelerator.device.type)
    t_start = time.perf_counter()
    seen_samples = 0
    window_loss, window_n = 0.0, 0
    steps_this_run = 0
    metrics = open(run / "metrics.jsonl", "a") if accelerator.is_main_process else None
    try:
        while step < args.steps:
            tokens = 0
            for _ in range(args.grad_accum):
                global_batch = next(sampler)
                mine = global_batch[rank::world]
                if qwen:   # the processor's own inputs: chat template, geometry, labels on the answer
                    inputs, clip_frames = source_data.inputs(raw, mine)
                else:
                    inputs = collate(raw, mine, frames)
                    clip_frames = [frames] * len(mine)
                    visual_in = source_data.get(mine)
                    inputs["features" if use_cache else "frames"] = visual_in
                check_context(raw, inputs, mine, clip_frames)
                tokens += int(inputs["attention_mask"].sum())
                with accelerator.accumulate(model):
                    loss, _ = model(**inputs, labelled_only=True)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and args.clip_grad > 0:
                        accelerator.clip_grad_norm_(params, args.clip_grad)
                    optimizer.step()  # accelerate skips it until the last micro-batch
                    optimizer.zero_grad(set_to_none=True)
                window_loss += accelerator.reduce(loss.detach(), reduction="mean").item() / args.grad_accum
                seen_samples += len(global_batch)
            scheduler.step()  # once per optimizer step, whatever the number of processes
            step += 1
            steps_this_run += 1
            if tuner:
                tuner.step_done(tokens)
            window_n += 1
            if step % args.log_every == 0 or step == args.steps:
                elapsed = time.perf_counter() - t_start
                row = {"step": step, "loss": round(window_loss / window_n, 6),
                       "lr": scheduler.get_last_lr()[0], "samples_per_s": round(seen_samples / elapsed, 3),
                       "elapsed_s": round(elapsed, 3), "stage": args.stage}
                if tuner:
                    row["threads"] = tuner.threads
                window_loss, window_n = 0.0, 0
                if metrics:
                    metrics.write(json.dumps(row) + "\n")
                    metrics.flush()
                if on_log and accelerator.is_main_process:
                    on_log(row)
            if args.save_every and step % args.save_every == 0 and step < args.steps:
                save_checkpoint(run / "checkpoints" / f"step-{step:07d}")
            if args.stop_after is not None and steps_this_run >= args.stop_after and step < args.steps:
                last = run / "checkpoints" / f"step-{step:07d}"
                if not last.exists():
                    save_checkpoint(last)
                return last
    finally:
        if metrics:
            metrics.close()
    save_checkpoint(run / "checkpoints" / f"step-{step:07d}")
    accelerator.wait_for_everyone()
    weights = gather_full_weights(model) if fsdp else None
    if accelerator.is_main_process:
        final = run / "final"
        tmp = run / "final.tmp"
        save_model_folder(raw, tmp, args.lora, weights, duplicates if fsdp else frozenset())
        normal_permissions(tmp)
        if final.exists():
            import shutil

            shutil.rmtree(final)
        tmp.rename(final)
    accelerator.wait_for_everyone()
    return run / "final"


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the metrics logged after `step` (a resumed run logs them again)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    atomic_write(path, "".join(line + "\n" for line in keep))
