"""The whole story offline: synth -> stage 1 -> stage 2 -> describe the benchmark -> score (`tarsier demo`).

Trains a fresh `nano` on the synthetic shapes world at a small budget and installs it in the user's
cache as `nano-demo` (`--model nano-demo`); `--model nano` stays the model that ships in the package,
trained by the full recipe. The demo scores both on the same held-out benchmark in the same run, so
the two sets of numbers are measured alike. Training steps are resumable: a rerun reuses what an
earlier run finished (and says so), `fresh` starts over. As in the paper, the vision tower comes
pretrained and stays frozen: nano ships one, pretrained on rendered frames of the world
(trainers/tower.py, standing in for CLIP). `train_tower` redoes that stage 0 first, for the whole
story from nothing (about 3 more minutes on 2 cores).

Long phases (rendering the worlds, filling the feature cache, describing) report through
`progress(phase, done, total)`; the CLI draws bars on a terminal and prints periodic lines in a log."""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tarsier.common.files import atomic_write, home_dir, read_jsonl
from tarsier.engine.checkpoint import cache_model_dir, read_preset, shipped_model_dir, trained_preset_dir

INSTALL_NAME = "nano-demo"   # never `nano`: that name is the shipped model
Progress = Callable[[str, int, int], None]


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
    install: bool = True              # copy the result to the cache as `nano-demo`
    skip_stage1: bool = False         # the ablation: stage 2 alone (with the same total steps)
    fresh: bool = False               # forget earlier runs in `work` (training, descriptions, scores) first
    score_shipped: bool = True        # also score the shipped nano on the same benchmark, in this run


def run_demo(cfg: DemoConfig, log: Callable[[str], None] = print,
             on_train_log: Callable[[dict], None] | None = None, progress: Progress | None = None) -> dict:
    """Run the demo; returns its summary (also written to WORK/demo-TAG.json): the scores of the model it
    trained, `shipped` (the shipped nano's, measured now on the same benchmark, and its card's), timings,
    and `earlier_run` (when it reused a run it found)."""
    from tarsier.reports.charts import write_curves
    from tarsier.trainers.tower import TowerArgs, pretrain_tower, shipped_tower
    from tarsier.trainers.train import TrainArgs, train
    from tarsier.world.build import generate

    work = Path(cfg.work)
    work.mkdir(parents=True, exist_ok=True)
    if cfg.fresh:
        forget_earlier_runs(work, log)
    timings: dict[str, float] = {}
    progress = progress or (lambda phase, done, total: None)

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
            timed(f"synth {folder.name}", lambda f=folder, n=n, s=seed: generate(
                f, videos=n, seed=s, progress=counter(f"render {f.name}", n, progress)))

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
    earlier = earlier_run(runs, tag)
    if earlier:
        log(earlier["line"])
    if not cfg.stage1_train_vision and not (earlier and earlier["finished"]):   # a frozen tower: its features
        # once per clip, with progress (a finished run needs none: it is not trained again)
        mixtures = [world / "stage2" / "mixture.json"]
        if not cfg.skip_stage1:
            mixtures.insert(0, world / "stage1" / "mixture.json")
        timed("feature cache", lambda: fill_feature_cache(mixtures, tower, progress, log))
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
        target = trained_preset_dir(INSTALL_NAME)
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(final, target, ignore=shutil.ignore_patterns("adapter", "trainable.safetensors"))
        log(f"installed as {INSTALL_NAME} -> {target} (`--model {INSTALL_NAME}`; `--model nano` stays the "
            f"shipped nano)")
        old = cache_model_dir("nano")
        if (old / "config.json").is_file():
            log(f"note: {old} holds an earlier demo's model; `--model nano` loads the shipped one, not that "
                f"folder (left as it is: pass its path to use it, or delete it)")

    from tarsier.engine.checkpoint import load

    model = load(model_path, device=cfg.device)
    model.model_id = INSTALL_NAME
    scores = score_on_benchmark(model, bench, work, tag, batch_size=cfg.describe_batch, log=log, timed=timed,
                                progress=progress)
    summary = {"config": {k: str(v) for k, v in asdict(cfg).items()}, "scores": scores, "timings_s": timings,
               "model": str(model_path), "installed_as": INSTALL_NAME if cfg.install and not cfg.skip_stage1 else None,
               "earlier_run": earlier, "finished_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if cfg.score_shipped:
        summary["shipped"] = score_shipped(bench, work, cfg, log=log, timed=timed, progress=progress)
    atomic_write(work / f"demo-{tag}.json", json.dumps(summary, indent=2) + "\n")
    return summary


def score_shipped(bench: Path, work: Path, cfg: DemoConfig, log: Callable[[str], None] = print, timed=None,
                  progress: Progress | None = None) -> dict:
    """The shipped nano scored on the demo's benchmark now (`scores`), beside what its model card states
    (`card`, with the card's benchmark: the same one when the demo runs with its default benchmark)."""
    from tarsier.engine.checkpoint import load

    card_path = (shipped_model_dir("nano") or Path()) / "card.json"
    card = json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else None
    model = load("nano", device=cfg.device)
    log("the shipped nano, on the same benchmark:")
    scores = score_on_benchmark(model, bench, work, "shipped", batch_size=cfg.describe_batch, log=log, timed=timed,
                                progress=progress)
    same = bool(card) and card["benchmark"]["seed"] == cfg.bench_seed and card["benchmark"]["videos"] == cfg.bench_videos
    return {"scores": scores, "card": card["scores"] if card else None,
            "card_benchmark": card["benchmark"]["command"] if card else None, "same_benchmark_as_card": same}


def earlier_run(runs: Path, tag: str) -> dict | None:
    """What an earlier demo with the same settings left in `runs` (its folder, when, finished or not) and the
    one line that says so, or None."""
    stage_dirs = [d for d in (runs / f"stage1-{tag}", runs / f"stage2-{tag}") if d.is_dir()]
    if not stage_dirs:
        return None
    final = runs / f"stage2-{tag}" / "final"
    finished = (final / "config.json").is_file()
    newest = max([p.stat().st_mtime for d in stage_dirs for p in d.rglob("*") if p.is_file()],
                 default=runs.stat().st_mtime)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(newest))
    if finished:
        line = (f"earlier run: {runs} finished training on {when}; its model is reused and scored again now "
                f"(`tarsier demo --fresh` trains afresh)")
    else:
        line = (f"earlier run: {runs} stopped before the end (last written {when}); resuming it "
                f"(`tarsier demo --fresh` starts afresh)")
    return {"folder": str(runs), "when": when, "finished": finished, "line": line}


def forget_earlier_runs(work: Path, log: Callable[[str], None]) -> None:
    """--fresh: remove what earlier demos trained, described and scored in `work`; keep the rendered worlds
    (their seeds fix every frame, so rendering them again would give the same files)."""
    gone = []
    for path in sorted(work.iterdir()):
        if path.name == "runs" or path.name.startswith(("tower-", "describe-", "eval-", "demo-")):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            gone.append(path.name)
    if gone:
        log(f"fresh: removed earlier runs in {work} ({len(gone)} entries; the rendered worlds are kept)")


def counter(phase: str, total: int, progress: Progress) -> Callable[[int], None]:
    """A progress(k) callback counting up to `total` that reports `phase` (done, total)."""
    done = [0]
    progress(phase, 0, total)

    def advance(k: int) -> None:
        done[0] += k
        progress(phase, done[0], total)

    return advance


def fill_feature_cache(mixtures: list[Path], tower: Path, progress: Progress,
                       log: Callable[[str], None] = print) -> int:
    """The frozen tower's features for every clip the stages read, computed here with progress (train()
    computes missing ones silently) into the very cache train() reads: the folder is named by the tower's
    geometry and weights (trainers.data.vision_fingerprint), so a fresh nano on this tower finds them all.
    Returns how many clips were computed."""
    from tarsier.engine.checkpoint import build_random
    from tarsier.engine.config import ModelConfig
    from tarsier.engine.tokenizer import build_bpe_tokenizer
    from tarsier.trainers.data import FeatureStore, clip_key
    from tarsier.trainers.manifest import load_mixture
    from tarsier.trainers.tower import load_tower

    preset = read_preset("nano")
    tok = build_bpe_tokenizer(vocab_size=preset.get("tokenizer", {}).get("vocab_size", 512))
    config = ModelConfig.from_dict(preset["config"])
    config.llm["vocab_size"] = len(tok)
    model = build_random(config, tok)   # only its tower is used
    load_tower(model, tower)
    model.config.vision.frozen = True   # as train() sets it before naming its cache
    model.eval()
    stores = []
    for path in mixtures:
        store = FeatureStore(model, model.config.frames, dataset=str(Path(path).resolve()), ram_bytes=0)
        stores.append((store, list(load_mixture(str(path)).samples)))
    missing = {clip_key(s) for store, samples in stores for s in samples if not store.path_for(clip_key(s)).is_file()}
    if not missing:
        return 0
    log(f"tower features for {len(missing)} clips -> {stores[0][0].folder}")
    advance = counter("tower features", len(missing), progress)
    for store, samples in stores:
        store.ensure(samples, progress=advance)
    return len(missing)


def score_on_benchmark(model, bench: Path, work: Path, tag: str, batch_size: int = 16,
                       log: Callable[[str], None] = print, timed=None, progress: Progress | None = None) -> dict:
    """Describe a synthetic benchmark at both grains and score it with the exact judge: P / R / F1
    per grain (None where nothing could be scored), the share of one-sentence brief answers, and
    the held-out loss. Writes describe-TAG-GRAIN/ and eval-TAG-GRAIN/ under `work`, describing anew
    every time (never reusing an earlier run's descriptions: the scores are always measured now)."""
    from tarsier.engine.describe import describe
    from tarsier.evaluation import make_judge, score_file

    timed = timed or (lambda name, fn: fn())
    videos = len(list((bench / "videos").iterdir()))
    scores: dict = {}
    judge = make_judge("exact")
    for grain in ("fine", "brief"):
        out = work / f"describe-{tag}-{grain}"
        log(f"describe {videos} benchmark videos ({grain})")
        advance = counter(f"describe {tag} {grain}", videos, progress or (lambda *a: None))
        timed(f"describe {tag} {grain}", lambda g=grain, o=out, a=advance: describe(
            [str(bench / "videos")], model=model, grain=g, scenes="none", max_clip=None,
            batch_size=batch_size, output_dir=o, formats=("jsonl",), overwrite=True,
            progress=lambda event, **info: event == "video" and a(1)))
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
