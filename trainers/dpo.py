"""Stage 3 (Tarsier2): DPO on preference pairs, through the model interface only.

Sigmoid DPO (Rafailov et al. 2023): for a pair with policy log-probabilities pi_c, pi_r of the chosen
and rejected descriptions and the reference model's ref_c, ref_r,

    loss = -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))

A description's log-probability is the sum of its token log-probabilities given the clean clip and
the prompt (the positions where the processor's labels are not IGNORE_INDEX: the answer and its end
token). The implicit rewards are beta * (pi - ref); their accuracy is the share of pairs whose chosen
reward is the larger.

The reference is the starting model, frozen: a copy of it, the policy with its LoRA adapters switched
off (LoRA runs, where nothing but the adapters trains), or log-probabilities computed once before the
first step and stored in RUN/ref_logps.jsonl (`precompute_ref`: one model in memory instead of two).

Run folder, checkpoints, exact resume and curves as stages 1 and 2 (trainers/train.py):
    run.json, metrics.jsonl, checkpoints/step-N/ (model + trainer state), final/, loss.png, lr.png,
    rewards.png; a LoRA checkpoint holds the merged model (loadable as it is) and the adapters in
    trainable.safetensors.
"""
from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from tarsier.common.files import atomic_write, normal_permissions, read_jsonl, save_safetensors

REF_LOGPS = "ref_logps.jsonl"
TRAINABLE = "trainable.safetensors"
STAGE = "dpo"


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair sigmoid DPO loss and the implicit rewards (chosen, rejected), from sequence log-probs."""
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    return -F.logsigmoid(chosen_reward - rejected_reward), chosen_reward.detach(), rejected_reward.detach()


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of the log-probabilities of the labelled tokens, per row (logits at t predict token t+1, as
    the models' own loss reads them)."""
    from tarsier.engine.model import IGNORE_INDEX

    return labelled_logps(logits[:, :-1][labels[:, 1:].to(logits.device) != IGNORE_INDEX], labels)


def labelled_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`sequence_logps` from the logits at the labelled positions only ((N, vocab), row-major, what a
    model's forward returns with `labelled_only=True`)."""
    from tarsier.engine.model import IGNORE_INDEX

    labels = labels[:, 1:].to(logits.device)
    mask = labels != IGNORE_INDEX
    rows = torch.arange(labels.shape[0], device=logits.device).unsqueeze(1).expand_as(labels)[mask]
    # log-softmax over the labelled positions only: with a 150k vocabulary a full (B, L, V) float copy
    # is most of a step's memory
    picked = logits.float().log_softmax(-1).gather(1, labels[mask].unsqueeze(1)).squeeze(1)
    return torch.zeros(labels.shape[0], device=logits.device, dtype=picked.dtype).index_add(0, rows, picked)


def pair_logps(model, clips, pairs, processor=None, chosen_tokens: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) sequence log-probs of a batch of pairs: one forward over chosen then rejected rows.
    `processor`: the model's, when `model` is a wrapper (accelerate's) that does not expose it.
    `chosen_tokens`, when given, gets each chosen answer's labelled token count (a tensor)."""
    from tarsier.engine.model import IGNORE_INDEX

    prompts = [p.prompt for p in pairs]
    batch = (processor or model.processor).inputs(list(clips) * 2, prompts * 2,
                                   answers=[p.chosen for p in pairs] + [p.rejected for p in pairs])
    labels = batch["labels"]
    _, logits = model(**batch, labelled_only=True)
    logps = labelled_logps(logits, labels)
    if chosen_tokens is not None:
        chosen_tokens.append((labels[:len(pairs), 1:] != IGNORE_INDEX).sum(1).to(logps.device))
    return logps[:len(pairs)], logps[len(pairs):]


def rpo_loss(dpo_losses: torch.Tensor, chosen_logps: torch.Tensor, chosen_tokens: torch.Tensor,
             weight: float) -> torch.Tensor:
    """DPO plus `weight` x the chosen answers' negative log-likelihood per token (RPO, Pang et al. 2024;
    TRL's `rpo_alpha`). On nano, plain DPO from lr 2e-4 raised its reward accuracy to 0.97 while its
    descriptions lost their grammar ("...bounces back.ore a green square...") and held-out F1 fell from
    0.470 to 0.404: pushing the rejected texts down also pushed down the words the chosen ones share.
    The NLL term keeps the chosen texts likely."""
    loss = dpo_losses.mean()
    if weight:
        loss = loss + weight * (-chosen_logps / chosen_tokens.clamp(min=1)).mean()
    return loss


@dataclass
class DPOArgs:
    data: str                       # pairs .jsonl (trainers/pairs.py)
    out: str                        # run folder
    init: str                       # run folder, checkpoint folder or model name: the policy's start and the reference
    steps: int = 200                # optimizer steps
    batch_size: int = 8             # pairs per optimizer step, summed over processes and accumulation
    grad_accum: int = 1
    lr: float = 5e-5
    min_lr_ratio: float = 0.1
    warmup: int = 10
    weight_decay: float = 0.0
    clip_grad: float = 1.0
    beta: float = 0.1
    sft_weight: float = 0.0         # RPO: + this x the chosen answers' per-token NLL (0 = plain DPO)
    precompute_ref: bool = False
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    frames: int | None = None       # frames per clip (default: the model's)
    seed: int = 0
    save_every: int = 0
    log_every: int = 10
    resume: bool = False
    device: str = "auto"
    threads: int = 0                # CPU intra-op threads; 0 = re-decided while training (trainers/threads.py)
    stop_after: int | None = None   # end this invocation after N steps (a planned interruption)
    # the control run: chosen and rejected swapped in a seeded random half of the pairs, so a gain that
    # survives it does not come from the preference signal
    swap_labels: bool = False
    # with precompute_ref: the reference log-probs an earlier run from the same start computed on these
    # pairs (its RUN/ref_logps.jsonl), instead of computing them again
    ref_logps: str | None = None


# ---------------------------------------------------------------------------------------------
# LoRA on any model of the interface
# ---------------------------------------------------------------------------------------------
def lora_targets(model) -> list[str]:
    """Every linear layer among the parameters a fine-tune updates (model.trainable_parameters():
    the projector and the LLM; never the frozen vision blocks), except the output head."""
    trainable = {id(p) for p in model.trainable_parameters()}
    return [name for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and id(m.weight) in trainable and not name.endswith("lm_head")]


def add_lora(model, r: int, alpha: int) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=lora_targets(model), bias="none")
    model.requires_grad_(False)
    inject_adapter_in_model(config, model)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)


def _lora_layers(model):
    from peft.tuners.lora import LoraLayer

    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoraLayer)]


@contextmanager
def adapters_off(model):
    """The starting model: the policy with its adapters switched off."""
    layers = [m for _, m in _lora_layers(model)]
    for m in layers:
        m.enable_adapters(False)
    try:
        yield model
    finally:
        for m in layers:
            m.enable_adapters(True)


# ---------------------------------------------------------------------------------------------
def _load(source: str, device, dtype=torch.float32):
    """(model on `device`, what it was loaded from): a run folder means its final model or latest checkpoint."""
    from tarsier.engine import checkpoint as ckpt
    from tarsier.trainers.train import resolve_run_checkpoint

    path = Path(source).expanduser()
    if path.is_dir():
        source = str(resolve_run_checkpoint(path))
    return ckpt.load(source, device=str(device), dtype=dtype), source


def _freeze_to_trainable(model) -> None:
    trainable = {id(p) for p in model.trainable_parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)


class ClipFrames:
    """Decoded frames per clip (the clean clip of every pair), the most recent `keep` in memory: a clip
    has several pairs, and nano's clips are small, but 16 Tarsier2 frames are about 21 MB."""

    def __init__(self, processor, frames: int, keep: int = 512):
        self.processor, self.frames, self.keep = processor, frames, keep
        self.cache: OrderedDict = OrderedDict()

    def get(self, pair):
        from tarsier.trainers.pairs import clip_frames

        key = (str(pair.video), pair.start, pair.end, tuple(pair.frame_times or ()))
        if key in self.cache:
            self.cache.move_to_end(key)
        else:
            self.cache[key] = clip_frames(self.processor, pair.video, pair.start, pair.end, pair.frame_times,
                                          self.frames)
            if len(self.cache) > self.keep:
                self.cache.popitem(last=False)
        return self.cache[key]


def save_policy(model, folder: Path, lora: bool) -> None:
    """A loadable model folder (model.save, the interface's own format); LoRA runs also keep the adapters."""
    from tarsier.trainers.finetune import declare_weights, lora_merged

    if not lora:
        model.save(folder)
        declare_weights(folder)
        return
    with lora_merged(model):
        model.save(folder)
    declare_weights(folder)
    adapters = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_safetensors(Path(folder) / TRAINABLE, adapters)


def precompute_reference(model, pairs, frames: ClipFrames, batch: int, status) -> list[tuple[float, float]]:
    out = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(pairs), batch):
            chunk = pairs[i:i + batch]
            c, r = pair_logps(model, [frames.get(p) for p in chunk], chunk)
            out.extend(zip(c.tolist(), r.tolist()))
            status(f"reference log-probs: {min(i + batch, len(pairs))}/{len(pairs)} pairs")
    return out


def write_reference(path: Path, pairs, values, start: str | None = None, swapped=()) -> None:
    """One row per pair: its source, the reference's log-probs of its chosen and rejected texts as the
    pairs file has them (a control run's swaps undone), and the model they come from."""
    swapped = set(swapped)
    atomic_write(path, "".join(json.dumps({"source": p.source, "start": start,
                                           **dict(zip(("rejected", "chosen") if p.source in swapped
                                                      else ("chosen", "rejected"), (c, r)))}) + "\n"
                               for p, (c, r) in zip(pairs, values)))


def read_reference(path: Path, pairs, start: str | None = None, swapped=()) -> list[tuple[float, float]]:
    """(chosen, rejected) per pair as this run orders them (`swapped`: the control run's swapped pairs)."""
    rows = list(read_jsonl(path, strict=True))
    if [r["source"] for r in rows] != [p.source for p in pairs]:
        raise ValueError(f"{path} was computed for other pairs than {pairs[0].source.rsplit(':', 1)[0]}")
    other = next((r["start"] for r in rows if r.get("start") not in (None, start)), None)
    if start is not None and other is not None:
        raise ValueError(f"{path} holds the log-probs of {other}, not of {start}")
    # files from before the start was recorded hold the values in their run's own order
    swapped = set(swapped) if rows and "start" in rows[0] else set()
    return [(float(r["rejected"]), float(r["chosen"])) if r["source"] in swapped
            else (float(r["chosen"]), float(r["rejected"])) for r in rows]


def swap_labels(pairs, seed: int) -> list[str]:
    """Swap chosen and rejected in a seeded random half of the pairs (in place); returns their sources."""
    import random

    rng = random.Random(f"swap/{seed}")
    swapped = []
    for p in pairs:
        if rng.random() < 0.5:
            p.chosen, p.rejected = p.rejected, p.chosen
            swapped.append(p.source)
    return swapped


# ---------------------------------------------------------------------------------------------
def train_dpo(args: DPOArgs, on_log: Callable[[dict], None] | None = None,
              on_status: Callable[[str], None] | None = None, *,
              on_checkpoint: Callable[[Path], None] | None = None) -> Path:
    """Run (or resume) DPO; returns the final model folder (or the last checkpoint when stopped early).
    on_checkpoint(run folder) runs on the main process after every checkpoint (the CLI draws the
    curves there: loss.png, lr.png, rewards.png)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from tarsier.trainers.manifest import Mixture, MixtureEntry
    from tarsier.trainers.pairs import load_pairs
    from tarsier.trainers.schedule import lr_lambda
    from tarsier.trainers.state import load_trainer_state, save_trainer_state
    from tarsier.trainers.threads import cpu_threads
    from tarsier.trainers.train import adamw, checkpoint_step, latest_checkpoint, truncate_metrics

    status = on_status or (lambda msg: None)
    if args.beta <= 0:
        raise ValueError("beta must be > 0")
    run = Path(args.out)
    cpu = args.device == "cpu" or not torch.cuda.is_available()
    accelerator = Accelerator(cpu=cpu, mixed_precision="no" if cpu else "bf16",
                              gradient_accumulation_steps=args.grad_accum)
    world, rank = accelerator.num_processes, accelerator.process_index
    micro = args.batch_size // (world * args.grad_accum)
    if micro < 1 or micro * world * args.grad_accum != args.batch_size:
        raise ValueError(f"batch size {args.batch_size} must be a multiple of processes x accumulation "
                         f"({world} x {args.grad_accum})")
    set_seed(args.seed)

    if args.ref_logps and not args.precompute_ref:
        raise ValueError("reference log-probs from a file (--ref-logps) replace the frozen reference copy: "
                         "use them with --precompute-ref")
    if args.ref_logps and not Path(args.ref_logps).is_file():
        raise ValueError(f"--ref-logps: {args.ref_logps} is not a file")
    pairs = load_pairs(args.data)   # every row validated before anything trains
    swapped = swap_labels(pairs, args.seed) if args.swap_labels else []
    resume_from = latest_checkpoint(run) if args.resume else None
    finished = resume_from is None or checkpoint_step(resume_from) >= args.steps
    if args.resume and (run / "final").exists() and finished:
        status(f"{run} already finished")
        return run / "final"
    if resume_from is not None:
        saved = json.loads((run / "run.json").read_text())
        source = saved["init_source"]
        if saved.get("lora") != args.lora or saved.get("precompute_ref") != args.precompute_ref:
            raise ValueError(f"{run} was started with lora={saved.get('lora')} precompute_ref="
                             f"{saved.get('precompute_ref')}; resume it with the same settings")
        model, _ = _load(source if args.lora else str(resume_from), accelerator.device)
        status(f"resuming from {resume_from}")
    else:
        model, source = _load(args.init, accelerator.device)
    _freeze_to_trainable(model)
    model.to(accelerator.device, dtype=torch.float32)   # fp32 master weights; bf16 autocast on GPUs
    reference = None
    if args.lora:
        add_lora(model, args.lora_r, args.lora_alpha)
        if resume_from is not None:
            from safetensors.torch import load_file

            result = model.load_state_dict(load_file(str(resume_from / TRAINABLE)), strict=False)
            assert not result.unexpected_keys, result.unexpected_keys
    elif not args.precompute_ref:
        # the starting model, frozen (bf16 on GPUs: it only runs forward)
        reference, _ = _load(source, accelerator.device, torch.float32 if cpu else torch.bfloat16)
        reference.requires_grad_(False)
    frames = ClipFrames(model.processor, int(args.frames or model.processor.frames))

    ref_table = None
    if args.precompute_ref:
        path = run / REF_LOGPS
        if resume_from is not None:
            ref_table = read_reference(path, pairs, swapped=swapped)
        else:
            if args.ref_logps:
                ref_table = read_reference(Path(args.ref_logps), pairs, start=source, swapped=swapped)
                status(f"reference log-probs of {len(pairs)} pairs read from {args.ref_logps}")
            else:   # the policy has not moved yet: it is the reference
                ref_table = precompute_reference(model, pairs, frames, max(1, micro), status)
            if accelerator.is_main_process:
                run.mkdir(parents=True, exist_ok=True)
                write_reference(path, pairs, ref_table, start=source, swapped=swapped)
    index = {id(p): i for i, p in enumerate(pairs)}

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = adamw(params, args.lr, args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(args.warmup, args.steps, args.min_lr_ratio))
    sampler = Mixture([MixtureEntry(Path(args.data), 1.0, STAGE, pairs)]).sampler(seed=args.seed)
    step = 0
    if resume_from is not None:
        state = load_trainer_state(resume_from, optimizer=optimizer, scheduler=scheduler)
        sampler.load_state_dict(state["data"])
        step = state["step"]
    model, optimizer = accelerator.prepare(model, optimizer)
    raw = accelerator.unwrap_model(model)

    if accelerator.is_main_process:
        run.mkdir(parents=True, exist_ok=True)
        if resume_from is None:
            info = {**asdict(args), "init_source": source, "pairs": len(pairs), "swapped": swapped}
            atomic_write(run / "run.json", json.dumps(info, indent=2) + "\n")
            (run / "metrics.jsonl").write_text("")
        else:
            truncate_metrics(run / "metrics.jsonl", step)

    def save_checkpoint(folder: Path) -> None:
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            import shutil

            tmp = folder.with_name(folder.name + ".tmp")
            if tmp.exists():
                shutil.rmtree(tmp)
            save_policy(raw, tmp, args.lora)
            save_trainer_state(tmp, optimizer=optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer,
                               scheduler=scheduler, step=step, data_state=sampler.state_dict(),
                               extra={"stage": STAGE})
            normal_permissions(tmp)
            if folder.exists():
                shutil.rmtree(folder)
            tmp.rename(folder)
            if on_checkpoint:
                on_checkpoint(run)
        accelerator.wait_for_everyone()

    def reference_logps(mine, clips):
        if ref_table is not None:
            values = [ref_table[index[id(p)]] for p in mine]
            return (torch.tensor([c for c, _ in values], device=accelerator.device),
                    torch.tensor([r for _, r in values], device=accelerator.device))
        with torch.no_grad():
            if reference is not None:
                return pair_logps(reference, clips, mine)
            with adapters_off(raw):
                return pair_logps(raw, clips, mine)

    model.train()
    tuner = cpu_threads(args.threads, accelerator.device.type)
    t_start = time.perf_counter()
    seen = 0
    keys = ("loss", "reward_chosen", "reward_rejected", "reward_margin", "reward_accuracy", "logp_chosen",
            "logp_rejected", "nll_chosen")
    window = dict.fromkeys(keys, 0.0)
    window_n = 0
    steps_this_run = 0
    metrics = open(run / "metrics.jsonl", "a") if accelerator.is_main_process else None
    try:
        while step < args.steps:
            for _ in range(args.grad_accum):
                global_batch = [next(sampler) for _ in range(micro * world)]
                mine = global_batch[rank::world]
                clips = [frames.get(p) for p in mine]
                ref_c, ref_r = reference_logps(mine, clips)
                with accelerator.accumulate(model):
                    tokens: list = []
                    pol_c, pol_r = pair_logps(model, clips, mine, processor=raw.processor, chosen_tokens=tokens)
                    losses, rew_c, rew_r = dpo_loss(pol_c, pol_r, ref_c.to(pol_c.device), ref_r.to(pol_r.device),
                                                    args.beta)
                    loss = rpo_loss(losses, pol_c, tokens[0], args.sft_weight)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and args.clip_grad > 0:
                        accelerator.clip_grad_norm_(params, args.clip_grad)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                values = {"loss": loss.detach(), "reward_chosen": rew_c.mean(), "reward_rejected": rew_r.mean(),
                          "reward_margin": (rew_c - rew_r).mean(), "reward_accuracy": (rew_c > rew_r).float().mean(),
                          "logp_chosen": pol_c.detach().mean(), "logp_rejected": pol_r.detach().mean(),
                          "nll_chosen": (-pol_c.detach() / tokens[0].clamp(min=1)).mean()}
                for k, v in values.items():
                    window[k] += accelerator.reduce(v.float(), reduction="mean").item() / args.grad_accum
                seen += len(global_batch)
            scheduler.step()
            step += 1
            steps_this_run += 1
            window_n += 1
            if tuner:
                tuner.step_done(len(global_batch) * args.grad_accum)
            if step % args.log_every == 0 or step == args.steps:
                elapsed = time.perf_counter() - t_start
                row = {"step": step, **{k: round(window[k] / window_n, 6) for k in keys},
                       "lr": scheduler.get_last_lr()[0], "samples_per_s": round(seen / elapsed, 3),
                       "elapsed_s": round(elapsed, 3), "stage": STAGE}
                if tuner:
                    row["threads"] = tuner.threads
                window, window_n = dict.fromkeys(keys, 0.0), 0
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
    if accelerator.is_main_process:
        import shutil

        final, tmp = run / "final", run / "final.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        save_policy(raw, tmp, args.lora)
        normal_permissions(tmp)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    accelerator.wait_for_everyone()
    return run / "final"
