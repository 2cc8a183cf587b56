"""`tarsier train tower|stage1|stage2|cache-features|dpo-pairs|dpo`: the paper's two-stage recipe (+ a stage 0
for nano) and Tarsier2's third stage (preference pairs built by the model itself, then DPO)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tarsier.cli.common import err_console, usage_error
from tarsier.cli.helptext import Group

train_app = typer.Typer(
    cls=Group,
    help="Train video-language models (the project's own, Tarsier1 and Tarsier2 checkpoints): stage 1 (multi-task pre-training), stage 2 (multi-grained "
    "instruction tuning), stage 3 (Tarsier2's DPO on preference pairs the model builds itself: dpo-pairs, "
    "then dpo), and for nano a stage 0 that pretrains its vision tower. Runs data-parallel "
    "under `accelerate launch` with no code change.",
    no_args_is_help=True,
)

Data = Annotated[Path, typer.Option("--data", "-d", help="Mixture .json or manifest .jsonl (DREAM-1K messages format).")]
Out = Annotated[Path, typer.Option("--out", "-o", help="Run folder (metrics, checkpoints, final model).")]


def _run(stage: str, data: Path, out: Path, init: str, **kw) -> None:
    """kw: the command's remaining options, named as TrainArgs fields."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from tarsier.engine.checkpoint import ModelNotFound
    from tarsier.reports.charts import write_curves
    from tarsier.trainers.manifest import ManifestError
    from tarsier.trainers.train import TrainArgs, train

    if kw.get("vision_init") is not None:
        kw["vision_init"] = str(kw["vision_init"])
    if kw.get("lora_alpha") is None:
        kw["lora_alpha"] = 2 * kw.get("lora_r", 16)
    if kw.get("lora_targets") is not None:
        kw["lora_targets"] = [t.strip() for t in kw["lora_targets"].split(",") if t.strip()]
    from tarsier.trainers.data import parse_bytes

    try:
        parse_bytes(kw.get("cache_ram", "4GB"))
    except ValueError as exc:
        raise usage_error(f"--cache-ram: {exc}") from None
    args = TrainArgs(stage=stage, data=str(data), out=str(out), init=init, **kw)
    import os

    # under `accelerate launch` every process runs this; only the first one reports
    main = os.environ.get("RANK", "0") == "0"
    quiet = kw.get("log_every", 10) <= 0 or not main
    progress = Progress(TextColumn(f"[bold]{stage}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]:.4f} lr {task.fields[lr]:.2e} "
                                   "{task.fields[sps]:.1f} samples/s"),
                        TimeRemainingColumn(), console=err_console, disable=quiet)
    task = progress.add_task(stage, total=args.steps, loss=float("nan"), lr=0.0, sps=0.0)

    def on_log(row: dict) -> None:
        progress.update(task, completed=row["step"], loss=row["loss"], lr=row["lr"], sps=row["samples_per_s"])
        if not err_console.is_terminal:
            err_console.print(f"{stage} step {row['step']}/{args.steps} loss {row['loss']:.4f} "
                              f"lr {row['lr']:.2e} {row['samples_per_s']:.1f} samples/s", markup=False, soft_wrap=True)

    try:
        with progress:
            final = train(args, on_log=on_log,
                          on_status=lambda m: main and err_console.print(m, markup=False),
                          on_checkpoint=write_curves)   # loss.png, lr.png in the run folder
    except ManifestError as exc:
        raise usage_error(str(exc)) from None
    except (ModelNotFound, ValueError) as exc:
        raise usage_error(str(exc)) from None
    if main:
        err_console.print(f"model saved to {final}", markup=False, soft_wrap=True)


# Options shared by both stages, declared once.
Steps = Annotated[int, typer.Option(help="Optimizer steps.", min=1)]
Batch = Annotated[int, typer.Option("--batch-size", "-b", help="Samples per optimizer step (all processes).", min=1)]
Accum = Annotated[int, typer.Option(help="Gradient accumulation micro-steps per optimizer step.", min=1)]
Lr = Annotated[float, typer.Option(help="Peak learning rate (AdamW), warmup then cosine decay.")]
Warmup = Annotated[int, typer.Option(help="Warmup steps.", min=0)]
Wd = Annotated[float, typer.Option(help="AdamW weight decay.")]
Clip = Annotated[float, typer.Option(help="Gradient-norm clipping; 0 = off.")]
Seed = Annotated[int, typer.Option(help="Seed for init, data order and dropout.")]
SaveEvery = Annotated[int, typer.Option(help="Checkpoint every N steps (0 = only at the end).", min=0)]
LogEvery = Annotated[int, typer.Option(help="Log metrics every N steps.", min=1)]
Lora = Annotated[bool, typer.Option(show_default=False, help="Train LoRA adapters (peft) on the LLM instead of the full LLM; the "
                                        "projector/merger still trains in full. Saves the merged model, adapter/ "
                                        "and trainable.safetensors.")]
LoraR = Annotated[int, typer.Option(help="LoRA rank.", min=1)]
LoraAlpha = Annotated[int | None, typer.Option(help="LoRA alpha (scale alpha/r) [default: 2 x rank].", min=1)]
LoraTargets = Annotated[str | None, typer.Option(help="Comma-separated LLM linear layers LoRA adapts "
                                                      "[default: the attention and MLP projections, "
                                                      "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj].")]
TrainVision = Annotated[bool, typer.Option(show_default=False, help="Unfreeze the vision encoder (frozen by default, as in the papers; "
                                                "Tarsier2: its blocks, the merger always trains).")]
Init = Annotated[str, typer.Option(help="Where training starts: a published model (tarsier2-recap-7b, tarsier2-7b, "
                                        "tarsier-7b, or a hub id owner/name), a checkpoint or run folder of either "
                                        "published layout or the project's own, or a preset to build a FRESH "
                                        "model from its config (nano: a fresh nano on its shipped tower, the "
                                        "recipe's start, not the shipped trained weights; tiny-random), or "
                                        "nano-demo (the model `tarsier demo` installed).")]
VisionInit = Annotated[Path | None, typer.Option(help="A `tarsier train tower` folder: the tower of a fresh model (--init PRESET). Default: the one the preset ships (nano's); `none`: a random tower.")]
GradCkpt = Annotated[bool, typer.Option(show_default=False, help="Gradient checkpointing in the LLM (less memory, slower).")]
FeatCache = Annotated[str, typer.Option(help="Tower feature cache: auto (user cache), off, or a folder.")]
CacheRam = Annotated[str, typer.Option(help="RAM for tower features kept in memory (e.g. 4GB, 512MB); the rest "
                                           "is read from the disk cache when a batch needs it. With "
                                           "--train-vision: RAM for decoded frames kept for reuse.")]
Frames = Annotated[int | None, typer.Option(help="Frames per sample (default: the model's).", min=1)]
PairFrames = Annotated[bool | None, typer.Option(
    "--pair-frames/--duplicate-frames", show_default=False,
    help="Tarsier2 (Qwen2-VL layout): two consecutive frames in each temporal patch, as Qwen2-VL's own video "
         "input (upstream's use_multi_images_for_video false), or every frame twice, as Tarsier2 ships. Saved with "
         "the fine-tune, so describe feeds the same [default: as the --init checkpoint does].")]
Workers = Annotated[int, typer.Option(help="Decode worker processes (0 = half the CPU cores, at most 4; 1 = decode in-process).", min=0)]
GroupByLength = Annotated[int, typer.Option(help="Sort this many batches' worth of samples by length before "
                                                 "batching, to cut padding (1 = off).", min=1)]
Resume = Annotated[bool, typer.Option(show_default=False, help="Continue the run in --out from its latest checkpoint.")]
Device = Annotated[str, typer.Option(help="auto or cpu (under accelerate launch, the launcher decides).")]
Threads = Annotated[int, typer.Option(help="CPU threads per process; 0 = re-decided while training (fewer when "
                                           "other work takes cores, all of them when it leaves).", min=0)]
StopAfter = Annotated[int | None, typer.Option(hidden=True, help="End after N steps of this invocation.")]


@train_app.command("stage1")
def stage1(
    data: Data, out: Out,
    init: Init = "nano",
    steps: Steps = 1000, batch_size: Batch = 16, grad_accum: Accum = 1, lr: Lr = 1e-3, warmup: Warmup = 50,
    weight_decay: Wd = 0.0, clip_grad: Clip = 1.0, seed: Seed = 0, save_every: SaveEvery = 0,
    log_every: LogEvery = 10, lora: Lora = False, lora_r: LoraR = 16, lora_alpha: LoraAlpha = None,
    lora_targets: LoraTargets = None, train_vision: TrainVision = False,
    vision_init: VisionInit = None, grad_checkpointing: GradCkpt = False, feature_cache: FeatCache = "auto", cache_ram: CacheRam = "4GB",
    frames: Frames = None, pair_frames: PairFrames = None, workers: Workers = 0, group_by_length: GroupByLength = 16,
    resume: Resume = False, device: Device = "auto", threads: Threads = 0, stop_after: StopAfter = None,
) -> None:
    """Stage 1: multi-task video-to-text pre-training on a mixture (captioning, QA, actions, ...)."""
    _run("stage1", **locals())


@train_app.command("stage2")
def stage2(
    data: Data, out: Out,
    init: Init = ...,
    steps: Steps = 1000, batch_size: Batch = 16, grad_accum: Accum = 1, lr: Lr = 5e-4, warmup: Warmup = 20,
    weight_decay: Wd = 0.0, clip_grad: Clip = 1.0, seed: Seed = 0, save_every: SaveEvery = 0,
    log_every: LogEvery = 10, lora: Lora = False, lora_r: LoraR = 16, lora_alpha: LoraAlpha = None,
    lora_targets: LoraTargets = None, train_vision: TrainVision = False,
    vision_init: VisionInit = None, grad_checkpointing: GradCkpt = False, feature_cache: FeatCache = "auto", cache_ram: CacheRam = "4GB",
    frames: Frames = None, pair_frames: PairFrames = None, workers: Workers = 0, group_by_length: GroupByLength = 16,
    resume: Resume = False, device: Device = "auto", threads: Threads = 0, stop_after: StopAfter = None,
) -> None:
    """Stage 2: multi-grained description instruction tuning, from a stage-1 checkpoint."""
    _run("stage2", **locals())


@train_app.command("cache-features")
def cache_features(
    data: Data,
    init: Annotated[str, typer.Option(help="Checkpoint folder (or run folder) whose tower computes the features.")] = ...,
    feature_cache: FeatCache = "auto", frames: Frames = None, workers: Workers = 0,
) -> None:
    """Compute the frozen tower's features for every clip of a mixture once, ahead of training."""
    import time

    from tarsier.engine import checkpoint as ckpt
    from tarsier.trainers.data import FeatureStore
    from tarsier.trainers.manifest import ManifestError, load_mixture
    from tarsier.trainers.train import resolve_run_checkpoint

    try:
        mixture = load_mixture(str(data))
        model = ckpt.load_folder(resolve_run_checkpoint(Path(init)))
    except (ManifestError, ckpt.ModelNotFound) as exc:
        raise usage_error(str(exc)) from None
    model.eval()
    folder = None if feature_cache == "auto" else Path(feature_cache)
    # nothing is held in RAM: the features only have to reach the disk cache
    store = FeatureStore(model, frames or model.config.frames, folder, workers=workers, dataset=str(data.resolve()),
                         ram_bytes=0)
    t = time.perf_counter()
    store.ensure(mixture.samples)
    err_console.print(f"{store.computed} clips encoded, {store.loaded} already cached, "
                      f"in {time.perf_counter() - t:.1f}s -> {store.folder}", markup=False, soft_wrap=True)


@train_app.command("tower", help=(
    "Stage 0 for nano (synthetic world only): pretrain its small vision tower on rendered, labelled "
    "frames, standing in for CLIP's pretraining; nano ships one made this way. Stage 1 loads another, "
    "frozen, with --vision-init."))
def tower(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for tower.safetensors and tower.json (its metrics).")],
    init: Annotated[str, typer.Option(help="Preset whose vision geometry the tower takes.")] = "nano",
    heldout: Annotated[Path | None, typer.Option(help="A `tarsier synth` folder (another seed) for held-out metrics on decoded video frames.")] = None,
    steps: Steps = 1000, batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Frames per step.", min=1)] = 64,
    lr: Lr = 2e-3,
    scenes: Annotated[int, typer.Option(help="Freshly planned synthetic scenes to render frames from.", min=1)] = 10000,
    per_scene: Annotated[int, typer.Option(help="Random instants rendered per scene.", min=1)] = 3,
    seed: Seed = 0, workers: Workers = 0,
) -> None:
    from tarsier.engine.checkpoint import ModelNotFound
    from tarsier.trainers.tower import TowerArgs, pretrain_tower

    args = TowerArgs(out=str(out), init=init, heldout=str(heldout) if heldout else None, steps=steps,
                     batch_size=batch_size, lr=lr, scenes=scenes, per_scene=per_scene, seed=seed, workers=workers)
    try:
        metrics = pretrain_tower(args, log=lambda m: err_console.print(m, markup=False))
    except (ModelNotFound, ValueError) as exc:
        raise usage_error(str(exc)) from None
    err_console.print(f"tower saved to {out}", markup=False, soft_wrap=True)
    typer.echo(json.dumps(metrics))


Corruption = Annotated[list[str] | None, typer.Option(
    "--corruption", "-c", help="Corruptions for the rejected candidates: reverse, shuffle, drop, swap, or "
                               "none (the clean clip's own lower-ranked samples; needs --samples >= 2) "
                               "(repeat or comma-separate) [default: the four corruptions].")]


@train_app.command("dpo-pairs")
def dpo_pairs(
    model: Annotated[str, typer.Option("--model", "-m", help="Model that writes the candidates: a run folder, "
                                                          "checkpoint folder or model name.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Training manifest .jsonl or mixture .json: each row's "
                                                         "clip, prompt and reference (its answer).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Pairs file (JSONL); PAIRS.clips.jsonl beside it records "
                                                       "every clip done, with the candidates dropped and why.")],
    judge: Annotated[str, typer.Option("--judge", "-j", help="AutoDQ judge, as in `tarsier eval`: exact (synthetic "
                                                          "world), openai:MODEL, hf:PATH_OR_ID, embed[@T].")] = "exact",
    corruption: Corruption = None,
    samples: Annotated[int, typer.Option(help="Candidates per clip and per corruption (needs --temperature > 0 "
                                              "when above 1).", min=1)] = 1,
    temperature: Annotated[float, typer.Option(help="Sampling temperature of the candidates; 0 = greedy.",
                                               min=0.0)] = 0.0,
    min_margin: Annotated[float, typer.Option(help="Keep a pair only when chosen's AutoDQ F1 exceeds rejected's by "
                                                   "at least this (and by more than 0).")] = 0.1,
    task: Annotated[str | None, typer.Option(help="Only manifest rows whose task starts with this (e.g. describe/fine).")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N clips.", min=1)] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="Longest candidate (default: the model's).", min=1)] = None,
    frames: Frames = None, seed: Seed = 0, device: Device = "auto",
    judge_url: Annotated[str | None, typer.Option(help="Base URL of an openai judge (default: OPENAI_BASE_URL).")] = None,
    cache: Annotated[Path | None, typer.Option("--cache", help="SQLite cache of judge calls (default: judge_cache.sqlite in the tarsier cache folder).")] = None,
    overwrite: Annotated[bool, typer.Option(show_default=False, help="Start the pairs file afresh (default: skip the clips done).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
) -> None:
    """Preference pairs for DPO: the model describes each clean clip (chosen) and corrupted copies
    (rejected); a pair is kept when the judge ranks chosen above rejected by --min-margin. A rerun skips
    the clips done. Exit code: 0 ok, 1 some clips failed (one line each), 2 usage error."""
    from tarsier.cli.common import EXIT_OK, EXIT_SOME_FAILED, split_list
    from tarsier.engine.checkpoint import ModelNotFound
    from tarsier.evaluation.autodq import CandidateScorer
    from tarsier.evaluation.judges import JudgeError, JudgeSpecError
    from tarsier.trainers.manifest import ManifestError
    from tarsier.trainers.pairs import CORRUPTIONS, PairArgs, build_pairs

    kinds = tuple(split_list(corruption)) or CORRUPTIONS
    options = {"url": judge_url, "cache_path": str(cache) if cache else None}
    args = PairArgs(model=model, data=str(data), out=str(out), judge=judge,
                    judge_options={k: v for k, v in options.items() if v is not None}, corruptions=kinds,
                    samples=samples, temperature=temperature, min_margin=min_margin, max_new_tokens=max_new_tokens,
                    frames=frames, task=task, limit=limit, seed=seed, device=device, overwrite=overwrite)

    def on_clip(record: dict) -> None:
        if "error" in record:
            err_console.print(f"error: {record['source']}: {record['error']}", markup=False, soft_wrap=True)
        elif not quiet:
            err_console.print(f"{record['source']}: {record['kept']} pair(s) kept, {len(record['dropped'])} dropped",
                              markup=False, soft_wrap=True)

    scorer = CandidateScorer(spec=args.judge, options=args.judge_options)   # the judge is built on first use
    try:
        result = build_pairs(args, scorer=scorer, on_clip=on_clip)
    except JudgeError as exc:   # the judge cannot work at all (refused credentials, endpoint down)
        err_console.print(f"error: judge {judge!r}: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_SOME_FAILED) from None
    except (ManifestError, ModelNotFound, JudgeSpecError, ValueError) as exc:
        raise usage_error(str(exc)) from None
    except ImportError as exc:
        raise usage_error(f"judge {judge!r} is not available: {exc}") from None
    finally:
        scorer.close()
    err_console.print(f"{result.clips} clip(s) done ({result.reused} already done before): {result.kept} pair(s) "
                      f"kept, {result.dropped} candidate(s) dropped, {result.failed} clip(s) failed -> {result.pairs}",
                      markup=False, soft_wrap=True)
    raise typer.Exit(EXIT_SOME_FAILED if result.failed else EXIT_OK)


@train_app.command("dpo")
def dpo(
    data: Annotated[Path, typer.Option("--data", "-d", help="Pairs file from `tarsier train dpo-pairs` (or written by hand in its format).")],
    out: Out,
    init: Annotated[str, typer.Option(help="Run folder, checkpoint folder or model name to start from (nano: the shipped trained nano); it is also the frozen reference.")] = ...,
    steps: Steps = 200, batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Pairs per optimizer step (all processes).", min=1)] = 8,
    grad_accum: Accum = 1, lr: Lr = 5e-5, warmup: Warmup = 10, weight_decay: Wd = 0.0, clip_grad: Clip = 1.0,
    beta: Annotated[float, typer.Option(help="DPO's beta: how far the policy may move from the reference (sigmoid loss).", min=1e-6)] = 0.1,
    sft_weight: Annotated[float, typer.Option(help="Add this x the chosen answers' per-token NLL to the loss (RPO; "
                                                   "TRL's rpo_alpha): keeps the chosen texts likely while the "
                                                   "rejected ones are pushed down. 0 = plain DPO.", min=0.0)] = 0.0,
    precompute_ref: Annotated[bool, typer.Option(show_default=False, help="Compute the reference log-probs once before training and "
                                                      "store them in the run folder (one model in memory, not two).")] = False,
    ref_logps: Annotated[Path | None, typer.Option(help="With --precompute-ref: read the reference log-probs from an "
                                                        "earlier run from the same --init on the same pairs "
                                                        "(its RUN/ref_logps.jsonl) instead of computing them.")] = None,
    lora: Lora = False, lora_r: LoraR = 16, frames: Frames = None, seed: Seed = 0, save_every: SaveEvery = 0,
    log_every: LogEvery = 10, resume: Resume = False, device: Device = "auto", threads: Threads = 0,
    stop_after: StopAfter = None,
    swap_labels: Annotated[bool, typer.Option(show_default=False, help="Control run: chosen and rejected swapped in a seeded random "
                                                   "half of the pairs (listed in run.json), to check that a gain "
                                                   "comes from the preference signal.")] = False,
) -> None:
    """Stage 3 (Tarsier2): DPO of a model against its frozen starting point on preference pairs; metrics
    (loss, implicit rewards and their margin and accuracy, log-probs), checkpoints, resume and curves as
    stages 1 and 2."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from tarsier.common.types import VideoError
    from tarsier.engine.checkpoint import ModelNotFound
    from tarsier.reports.charts import write_training_charts
    from tarsier.trainers.dpo import DPOArgs, train_dpo
    from tarsier.trainers.manifest import ManifestError

    args = DPOArgs(data=str(data), out=str(out), init=init, steps=steps, batch_size=batch_size, grad_accum=grad_accum,
                   lr=lr, warmup=warmup, weight_decay=weight_decay, clip_grad=clip_grad, beta=beta, sft_weight=sft_weight,
                   precompute_ref=precompute_ref, lora=lora, lora_r=lora_r, lora_alpha=2 * lora_r, frames=frames,
                   seed=seed, save_every=save_every, log_every=log_every, resume=resume, device=device, threads=threads,
                   stop_after=stop_after, swap_labels=swap_labels, ref_logps=str(ref_logps) if ref_logps else None)
    progress = Progress(TextColumn("[bold]dpo"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]:.4f} margin {task.fields[margin]:.3f} "
                                   "acc {task.fields[acc]:.2f}"), TimeRemainingColumn(), console=err_console)
    task = progress.add_task("dpo", total=steps, loss=float("nan"), margin=0.0, acc=0.0)

    def on_log(row: dict) -> None:
        progress.update(task, completed=row["step"], loss=row["loss"], margin=row["reward_margin"],
                        acc=row["reward_accuracy"])
        if not err_console.is_terminal:
            err_console.print(f"dpo step {row['step']}/{steps} loss {row['loss']:.4f} margin {row['reward_margin']:.4f} "
                              f"accuracy {row['reward_accuracy']:.3f} lr {row['lr']:.2e}", markup=False, soft_wrap=True)

    try:
        with progress:
            final = train_dpo(args, on_log=on_log, on_status=lambda m: err_console.print(m, markup=False),
                              on_checkpoint=write_training_charts)   # loss.png, lr.png, rewards.png
    except (ManifestError, ModelNotFound, ValueError) as exc:
        raise usage_error(str(exc)) from None
    except VideoError as exc:   # a video that was there when the pairs were checked cannot be decoded
        err_console.print(f"error: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    err_console.print(f"model saved to {final}", markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train", short_help="Train: stages 1 and 2 (the paper's recipe), 3 (Tarsier2's DPO), "
                                                     "0 (nano's vision tower).")
