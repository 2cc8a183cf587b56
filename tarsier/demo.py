"""The whole story offline: synth -> stage 1 -> stage 2 -> describe the benchmark -> score (`tarsier demo`).

Trains the `nano` preset on the synthetic shapes world and installs it in the user's cache, where
`--model nano` finds it. Every step is resumable: a rerun skips what is already done. As in the
paper, the vision tower comes pretrained and stays frozen: nano ships one, pretrained on rendered
frames of the world (trainers/tower.py, standing in for CLIP). `train_tower` redoes that stage 0
first, for the whole story from nothing (about 3 more minutes on 2 cores)."""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tarsier.common.files import atomic_write, home_dir, read_jsonl
from tarsier.engine.checkpoint import read_preset, trained_preset_dir


@dataclass
class DemoConfig:
    work: Path = field(default_factory=lambda: home_dir() / "demo")
    train_videos: int = 2000
    train_seed: int = 1
    bench_videos: int = 100
    bench_seed: int = 9001           # never used for training data
    train_tower: bool = False        # redo stage 0 instead of starting from the tower nano ships
    tower_steps: int = 1000
    tower_scenes: int = 10000
    stage1_steps: int = 300
    stage2_steps: int = 2100
    # the same steps on 3/4 of the samples: 16 took the demo to 10 min 51 s on 2 cores, 12 to 9 min 42 s
    # (11 min 55 s in a slow hour) with a held-out loss as good (0.509, against 0.531 and 0.562; BENCHMARKS.md)
    batch_size: int = 12
    stage1_lr: float = 1e-3          # 2e-3 left stage 2 worse off than no stage 1 at all (BENCHMARKS.md)
    stage2_lr: float = 1e-3
    stage1_train_vision: bool = False  # True also trains the pretrained tower in stage 1 (slower: no feature cache)
    describe_batch: int = 16
    device: str = "auto"
    install: bool = True              # copy the result to the cache as the `nano` preset
    skip_stage1: bool = False         # the ablation: stage 2 alone (with the same total steps)


def run_demo(cfg: DemoConfig, log: Callable[[str], None] = print,
             on_train_log: Callable[[dict], None] | None = None) -> dict:
    from tarsier.reports.charts import write_curves
    from tarsier.trainers.tower import TowerArgs, pretrain_tower, shipped_tower
    from tarsier.trainers.train import TrainArgs, train
    from tarsier.world.build import generate

    work = Path(cfg.work)
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def timed(name: str, fn):
        t = time.perf_counter()
        out = fn()
        timings[name] = round(time.perf_counter() - t, 1)
        return out

    world = work / f"world-s{cfg.train_seed}-n{cfg.train_videos}"
    bench = work / f"bench-s{cfg.bench_seed}-n{cfg.bench_videos}"
    for folder, n, seed in ((world, cfg.train_videos, cfg.train_seed), (bench, cfg.bench_videos, cfg.bench_seed)):
        if not (folder / "benchmark.jsonl").is_file():
            log(f"synth: {n} videos, seed {seed} -> {folder}")
            if folder.exists():
                shutil.rmtree(folder)
            timed(f"synth {folder.name}", lambda f=folder, n=n, s=seed: generate(f, videos=n, seed=s))

    # A rerun reuses finished steps, so their folders are named by everything that shaped them: a
    # demo from an older nano (another tower, other settings) must not be resumed or reinstalled.
    nano = read_preset("nano")["config"]
    if cfg.train_tower:
        tower_key = fingerprint(nano["vision"], nano["projector"]["spatial_pool"], cfg.tower_steps,
                                 cfg.tower_scenes)
        tower = work / f"tower-{cfg.tower_steps}-{tower_key}"
        log(f"tower: {cfg.tower_steps} steps on {cfg.tower_scenes} rendered scenes -> {tower}")
        timed("tower", lambda: pretrain_tower(TowerArgs(out=str(tower), heldout=str(bench), steps=cfg.tower_steps,
                                                        scenes=cfg.tower_scenes), log=log))
    else:
        tower = shipped_tower("nano")
        if tower is None or not (tower / "tower.safetensors").is_file():
            raise FileNotFoundError("this install has no pretrained nano tower; run with train_tower (--train-tower)")
        tower_key = hashlib.sha1((tower / "tower.safetensors").read_bytes()).hexdigest()[:8]
        log(f"tower: the pretrained one nano ships ({tower})")
    runs = work / "runs" / fingerprint(nano, tower_key, world.name, cfg.batch_size, cfg.stage1_steps,
                                        cfg.stage2_steps, cfg.stage1_lr, cfg.stage2_lr, cfg.stage1_train_vision)
    common = dict(batch_size=cfg.batch_size, device=cfg.device, log_every=10, resume=True, warmup=30)
    tag = "s2only" if cfg.skip_stage1 else "full"
    if cfg.skip_stage1:
        s2_init, s2_steps = "nano", cfg.stage1_steps + cfg.stage2_steps
        s2_tower = str(tower)
    else:
        s1 = runs / f"stage1-{tag}"
        log(f"stage 1: {cfg.stage1_steps} steps -> {s1}")
        timed("stage1", lambda: train(TrainArgs(
            stage="stage1", data=str(world / "stage1" / "mixture.json"), out=str(s1), init="nano",
            steps=cfg.stage1_steps, lr=cfg.stage1_lr, train_vision=cfg.stage1_train_vision,
            vision_init=str(tower), **common),
            on_log=on_train_log, on_status=log, on_checkpoint=write_curves))
        s2_init, s2_steps, s2_tower = str(s1), cfg.stage2_steps, None
    s2 = runs / f"stage2-{tag}"
    log(f"stage 2: {s2_steps} steps -> {s2}")
    final = timed("stage2", lambda: train(TrainArgs(
        stage="stage2", data=str(world / "stage2" / "mixture.json"), out=str(s2), init=s2_init,
        steps=s2_steps, lr=cfg.stage2_lr, train_vision=cfg.skip_stage1 and cfg.stage1_train_vision,
        vision_init=s2_tower, **common),
        on_log=on_train_log, on_status=log, on_checkpoint=write_curves))

    model_path = final
    if cfg.install and not cfg.skip_stage1:
        target = trained_preset_dir("nano")
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(final, target, ignore=shutil.ignore_patterns("adapter", "trainable.safetensors"))
        log(f"installed nano -> {target}")

    from tarsier.engine.checkpoint import load

    model = load(model_path, device=cfg.device)
    model.model_id = "nano"
    scores = score_on_benchmark(model, bench, work, tag, batch_size=cfg.describe_batch, log=log, timed=timed)
    summary = {"config": {k: str(v) for k, v in asdict(cfg).items()}, "scores": scores, "timings_s": timings,
               "model": str(model_path)}
    atomic_write(work / f"demo-{tag}.json", json.dumps(summary, indent=2) + "\n")
    return summary


def score_on_benchmark(model, bench: Path, work: Path, tag: str, batch_size: int = 16,
                       log: Callable[[str], None] = print, timed=None) -> dict:
    """Describe a synthetic benchmark at both grains and score it with the exact judge: P / R / F1
    per grain (None where nothing could be scored), the share of one-sentence brief answers, and
    the held-out loss. Writes describe-TAG-GRAIN/ and eval-TAG-GRAIN/ under `work`."""
    from tarsier.engine.describe import describe
    from tarsier.evaluation import make_judge, score_file

    timed = timed or (lambda name, fn: fn())
    videos = len(list((bench / "videos").iterdir()))
    scores: dict = {}
    judge = make_judge("exact")
    for grain in ("fine", "brief"):
        out = work / f"describe-{tag}-{grain}"
        log(f"describe {videos} benchmark videos ({grain})")
        timed(f"describe {grain}", lambda g=grain, o=out: describe(
            [str(bench / "videos")], model=model, grain=g, scenes="none", max_clip=None,
            batch_size=batch_size, output_dir=o, formats=("jsonl",)))
        result = score_file(out / "descriptions.jsonl", bench / "benchmark.jsonl", judge, work / f"eval-{tag}-{grain}",
                            replace_other_judge=True)
        overall = result.report["overall"]
        scores[grain] = {k: overall.get(k) for k in ("precision", "recall", "f1")}
        if grain == "brief":
            scores[grain]["one_sentence"] = _one_sentence_share(out / "descriptions.jsonl")
    scores["heldout_loss"] = heldout_loss(model, bench / "benchmark.jsonl")
    return scores


def fingerprint(*parts) -> str:
    """A short hash of everything that shaped a step, naming its folder."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:8]


def heldout_loss(model, benchmark: Path, batch: int = 16) -> float:
    """Mean teacher-forced loss per answer token on the benchmark's reference descriptions: a
    continuous measure of how well the model knows the held-out videos, even where event F1 is low."""
    import torch

    from tarsier.trainers.data import FeatureStore
    from tarsier.trainers.manifest import load_manifest

    samples = load_manifest(benchmark)
    store = FeatureStore(model, model.config.frames, workers=1)
    total, tokens = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(samples), batch):
            chunk = samples[i:i + batch]
            nll, count = answer_nll(model, chunk, store.get(chunk))
            total += float(nll.sum())
            tokens += int(count.sum())
    return round(total / max(1, tokens), 4)


def answer_nll(model, samples, features):
    """Teacher-forced loss of each sample's answer (its summed NLL) and its answer token count."""
    import torch

    from tarsier.engine.model import IGNORE_INDEX
    from tarsier.trainers.data import collate

    b = collate(model, samples, model.config.frames)
    _, logits = model(b["input_ids"], b["attention_mask"], features=features)
    labels = b["labels"][:, 1:].to(logits.device)
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2).float(), labels,
                                            ignore_index=IGNORE_INDEX, reduction="none")
    return nll.sum(1), (labels != IGNORE_INDEX).sum(1)


def _one_sentence_share(path: Path) -> float:
    rows = [r for r in read_jsonl(path, strict=True) if "description" in r]
    one = sum(1 for r in rows if r["description"].rstrip(".").count(".") == 0)
    return round(one / max(1, len(rows)), 3)
