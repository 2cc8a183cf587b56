"""Does training a published architecture learn from the video? (issue 20's proof)

A tiny Qwen2-VL-layout model (Tarsier2's layout: upstream's LLaVA-style wrapper config, published tensor
names, Qwen2's special-token ids and 152,064-row vocabulary), random-initialised on disk by
tests/published_fixtures.py, is trained with `tarsier train stage1` then `tarsier train stage2`
(`--train-vision`: no pretrained Qwen2-VL encoder loads offline) on a synthetic world, describes a held-out
seed's benchmark at the fine grain and is scored with the exact judge. The control is the same recipe on a
copy of both worlds whose videos are all black (same names, sizes, frame counts and manifests): the
trainer, processor and describe run unchanged, only the pixels carry nothing, so whatever F1 the control
reaches comes from the language prior. Printed: both fine event F1s, their ratio, and whether the trained
folder loads with plain `Qwen2VLForConditionalGeneration.from_pretrained` (no remote code).

    python bench/qwen_learns.py --work /tmp/qwen-learns                      # the 30-minute recipe per arm
    python bench/qwen_learns.py --work /tmp/qwen-smoke --smoke               # a minute or two: the plumbing
    python bench/qwen_learns.py --work /tmp/qwen-s0 --vocab compact --vision-width 128 --vision-depth 4 \
        --frames 16 --stage0-steps 3000 --stage0-distill 1 --freeze-vision   # third try: stage 0 first
    (the first three tries drew the random weights at 0.2: add --init-std 0.2 to repeat them)
    python bench/qwen_learns.py --work W --vocab compact --vision-width 128 --vision-depth 4 --arms none
    python bench/qwen_stage0.py --init W/init-h128-l4-v128x4-compact-std0.02 --out S0a --steps 1500 --batch 32 --scenes 10000 \
        --distill 5 --dense 5 --heldout W/bench-s9001-n100-112px
    python bench/qwen_stage0.py --init S0a --out S0b --steps 3000 --batch 32 --scenes 10000 --distill 5 --dense 10 \
        --scene-seed 778 --heldout W/bench-s9001-n100-112px
    python bench/qwen_learns.py --work W --vocab compact --vision-width 128 --vision-depth 4 --frames 16 \
        --stage0-from S0b --freeze-vision --stage1-steps 300 --stage2-steps 2100 --arms video   # fourth try
    python bench/qwen_stage0.py --init S0b --out P1 --steps 2000 --batch 32 --scenes 6000 --distill 5 --dense 10 \
        --scene-seed 779 --pairs 16                                   # fifth try: two frames a temporal patch
    python bench/qwen_stage0.py --init P1 --out P2 --steps 1500 --batch 32 --scenes 6000 --distill 5 --dense 10 \
        --scene-seed 780 --pairs 16 --motion 1
    python bench/qwen_stage0.py --init P2 --out P3 --steps 1500 --batch 32 --scenes 6000 --distill 5 --dense 10 \
        --scene-seed 781 --pairs 16 --motion 10
    python bench/qwen_learns.py --work W --vocab compact --vision-width 128 --vision-depth 4 --frames 16 \
        --stage0-from P3 --freeze-vision --stage1-steps 300 --stage2-steps 2100 --arms video   # and --arms blank
    then, for ARM in video and blank (WORLD: W/world-s1-n2000-112px, or its -blank copy for the control), twice:
    tarsier train stage2 -d WORLD/stage2/mixture.json --init W/ARM-stage2/final -o W/ARM-more --steps 1500 \
        --lr 5e-4 --warmup 20 -b 8 --frames 16                       # then from W/ARM-more/final, --steps 2000
    and score each final folder with fine_f1 below (the fifth try: video F1 0.343, control 0.000)
    python bench/qwen_learns.py --work /tmp/qwen-gpu --device cuda --stage2-steps 4000   # on a GPU

Everything is resumable: worlds, blank copies and finished training runs are reused from --work.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def model_settings(hidden: int, layers: int, vision_width: int, vision_depth: int,
                   tie: bool = False) -> tuple[dict, dict]:
    """Qwen2-VL text / vision settings at a small size: head width 32 in both towers (M-RoPE sections of
    Qwen2-VL's 2:1:1 split over half the head), the merger projecting to the LLM's width. `tie`: the LM
    head shares the embedding (as Qwen2-VL-2B ships), halving the 152,064-row tables the optimizer updates."""
    heads = max(1, hidden // 32)
    half = (hidden // heads) // 2
    text = {"hidden_size": hidden, "intermediate_size": 4 * hidden, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": max(1, heads // 2),
            "max_position_embeddings": 4096, "tie_word_embeddings": tie,
            "rope_scaling": {"type": "mrope", "mrope_section": [half // 2, half // 4, half - half // 2 - half // 4]}}
    vision = {"depth": vision_depth, "embed_dim": vision_width, "hidden_size": hidden,
              "num_heads": max(1, vision_width // 32), "mlp_ratio": 4}
    return text, vision


def world_corpus(world: Path) -> str:
    """Every prompt and answer of the training manifests: the text the tokenizer's BPE is learnt from."""
    texts = []
    for manifest in sorted(world.glob("stage*/*.jsonl")):
        for line in manifest.read_text(encoding="utf-8").splitlines():
            for message in json.loads(line)["messages"]:
                texts += [c["text"] for c in message["content"] if c.get("text")]
    return "\n".join(texts)


def blank_copy(world: Path, out: Path) -> Path:
    """`world` with every video replaced by an all-black one of the same size, frame rate and frame count
    (encoded as the world renders: libx264, yuv420p); manifests, truth and benchmark files copied as they
    are (their video paths are relative, so they point at the black videos)."""
    import shutil

    import av
    import numpy as np

    if (out / ".complete").is_file():
        return out
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(world, out, ignore=shutil.ignore_patterns("videos"))
    (out / "videos").mkdir()
    for src in sorted((world / "videos").glob("*.mp4")):
        with av.open(str(src)) as inp:
            stream = inp.streams.video[0]
            w, h, rate = stream.codec_context.width, stream.codec_context.height, stream.average_rate
            n = sum(1 for _ in inp.decode(video=0))
        with av.open(str(out / "videos" / src.name), "w", format="mp4") as container:
            enc = container.add_stream("libx264", rate=rate)
            enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
            enc.codec_context.thread_count = 1
            black = av.VideoFrame.from_ndarray(np.zeros((h, w, 3), np.uint8), format="rgb24")
            for _ in range(n):
                for packet in enc.encode(black):
                    container.mux(packet)
            for packet in enc.encode():
                container.mux(packet)
    (out / ".complete").write_text("")
    return out


def synth(folder: Path, videos: int, seed: int, size: int) -> Path:
    if not (folder / "benchmark.jsonl").is_file():
        run(["synth", str(folder), "--videos", str(videos), "--seed", str(seed), "--size", str(size), "-q"])
    return folder


def run(args: list[str]) -> float:
    """`tarsier ARGS` in a child process (the CLI a user runs); its wall time in seconds."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tarsier.cli.app", *args], check=True)
    return time.perf_counter() - t


def train_arm(name: str, world: Path, init: Path, work: Path, a) -> tuple[Path, dict]:
    """stage 1 then stage 2 on `world`, vision trained too; the final folder and the seconds and steps/s of each."""
    common = ["--device", a.device, "-b", str(a.batch), "--frames", str(a.frames),
              "--log-every", "10", "--save-every", "100", "--resume", "--warmup", str(a.warmup)]
    if not a.freeze_vision:
        common.append("--train-vision")
    s1, s2 = work / f"{name}-stage1", work / f"{name}-stage2"
    times = {}
    times["stage1_s"] = run(["train", "stage1", "-d", str(world / "stage1" / "mixture.json"), "-o", str(s1),
                             "--init", str(init), "--steps", str(a.stage1_steps), "--lr", str(a.lr), *common])
    times["stage2_s"] = run(["train", "stage2", "-d", str(world / "stage2" / "mixture.json"), "-o", str(s2),
                             "--init", str(s1), "--steps", str(a.stage2_steps), "--lr", str(a.lr), *common])
    for stage, folder in (("stage1", s1), ("stage2", s2)):
        rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines() if x.strip()]
        if rows:
            times[f"{stage}_steps_per_s"] = round(rows[-1]["step"] / max(rows[-1]["elapsed_s"], 1e-9), 4)
            times[f"{stage}_first_loss"], times[f"{stage}_last_loss"] = rows[0]["loss"], rows[-1]["loss"]
    return s2 / "final", times


def fine_f1(model_dir: Path, bench: Path, work: Path, name: str, batch: int, device: str = "cpu") -> dict:
    """Describe the benchmark's videos at the fine grain and score them with the exact judge."""
    import tarsier
    from tarsier.engine.describe import describe
    from tarsier.evaluation import make_judge, score_file

    model = tarsier.load(str(model_dir), device=device)
    out = work / f"describe-{name}"
    describe([str(bench / "videos")], model=model, grain="fine", scenes="none", max_clip=None, batch_size=batch,
             output_dir=out, formats=("jsonl",), overwrite=True)
    result = score_file(out / "descriptions.jsonl", bench / "benchmark.jsonl", make_judge("exact"),
                        work / f"eval-{name}", replace_other_judge=True)
    overall = result.report["overall"]
    return {k: overall.get(k) for k in ("precision", "recall", "f1")}


def plain_transformers_loads(folder: Path) -> str:
    """The trained folder through plain transformers (no remote code): 'ok' or what went wrong."""
    from transformers import Qwen2VLForConditionalGeneration

    model, info = Qwen2VLForConditionalGeneration.from_pretrained(str(folder), trust_remote_code=False,
                                                                  output_loading_info=True)
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    return "ok" if not problems else json.dumps({k: list(v)[:3] for k, v in problems.items()})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--train-videos", type=int, default=2000)
    p.add_argument("--bench-videos", type=int, default=100)
    p.add_argument("--hidden", type=int, default=128, help="LLM width")
    p.add_argument("--layers", type=int, default=4, help="LLM decoder layers")
    p.add_argument("--vision-width", type=int, default=64)
    p.add_argument("--vision-depth", type=int, default=2)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=112, help="world frame size: 112 px is Tarsier2's 8x8 patches of "
                   "14 (16 visual tokens a frame after the 2x2 merger); the default 128 rounds up to 140 (25)")
    p.add_argument("--untied", action="store_true", help="a separate LM head (as the 7B models ship) instead of "
                   "one tied to the embedding (as Qwen2-VL-2B ships): the optimizer then updates two "
                   "152,064-row tables a step")
    p.add_argument("--vocab", choices=("published", "compact"), default="published",
                   help="published: Qwen2's 152,064 rows with its special-token ids (the LM head is then most of a "
                   "step's work); compact: the same layout with the specials right after the 1,000 BPE tokens "
                   "(1,088 rows), as tiny test models have: about 3x the steps in the same time")
    p.add_argument("--init-std", type=float, default=0.02, help="spread of the random weights: 0.02 is Qwen2-VL's "
                   "initializer_range; the first three tries drew them at 0.2 (the test fixtures' spread), which "
                   "started stage 0 at a loss of 146 instead of 6")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--stage1-steps", type=int, default=150)
    p.add_argument("--stage2-steps", type=int, default=450)
    p.add_argument("--stage0-steps", type=int, default=0, help="first pretrain the vision encoder on rendered "
                   "frames with the world's exact ground truth (bench/qwen_stage0.py), standing in for the pretrained "
                   "encoder every real Tarsier2 starts from; 0: no stage 0 (the first two tries)")
    p.add_argument("--stage0-batch", type=int, default=32)
    p.add_argument("--stage0-distill", type=float, default=0.0, help="stage 0 also regresses nano's shipped tower "
                   "features from each merged token, with this weight (bench/qwen_stage0.py --distill)")
    p.add_argument("--stage0-dense", type=float, default=0.0, help="stage 0 also labels every patch with the "
                   "shape kinds it shows (token labelling), with this weight")
    p.add_argument("--stage0-pairs", type=int, default=0, metavar="N", help="stage 0 packs two consecutive frames "
                   "into each temporal patch, spaced as an N-frame clip's (bench/qwen_stage0.py --pairs); stages 1 "
                   "and 2 and describe then feed pairs too (use_multi_images_for_video false)")
    p.add_argument("--freeze-vision", action="store_true", help="stages 1 and 2 keep the vision encoder frozen, "
                   "as the papers do (after stage 0); default: it trains with them (--train-vision)")
    p.add_argument("--stage0-from", type=Path, help="start stages 1 and 2 from this finished bench/qwen_stage0.py "
                   "folder instead of running stage 0 here")
    p.add_argument("--arms", default="video,blank", help="video, blank or both (comma-separated); none: only write "
                   "the worlds and the random init (the folder bench/qwen_stage0.py --init takes)")
    p.add_argument("--device", default="cpu", help="cpu, or cuda where a GPU is lent: the same recipe in minutes, "
                   "room for more steps (--stage2-steps) and a larger model (--hidden, --vision-width)")
    p.add_argument("--smoke", action="store_true", help="a minute or two: 16 training videos, 4 benchmark "
                   "videos, 3 + 3 steps of batch 2, video arm only")
    a = p.parse_args()
    if a.smoke:
        a.train_videos, a.bench_videos, a.stage1_steps, a.stage2_steps = 16, 4, 3, 3
        a.batch, a.warmup, a.arms = 2, 1, "video"
        a.stage0_steps = min(a.stage0_steps, 3)
    import published_fixtures as pf

    work = a.work
    work.mkdir(parents=True, exist_ok=True)
    world = synth(work / f"world-s1-n{a.train_videos}-{a.size}px", a.train_videos, 1, a.size)
    bench = synth(work / f"bench-s9001-n{a.bench_videos}-{a.size}px", a.bench_videos, 9001, a.size)
    text, vision = model_settings(a.hidden, a.layers, a.vision_width, a.vision_depth, tie=not a.untied)
    init = work / (f"init-h{a.hidden}-l{a.layers}-v{a.vision_width}x{a.vision_depth}{'-untied' if a.untied else ''}"
                   f"{'-compact' if a.vocab == 'compact' else ''}{f'-std{a.init_std:g}' if a.init_std != 0.2 else ''}")
    if not (init / "config.json").is_file():
        pf.write_qwen2_vl(init, style="llava", text=text, vision=vision, corpus=world_corpus(world), bpe_size=1000,
                          special_base=1024 if a.vocab == "compact" else 151643, std=a.init_std)
    import math

    from safetensors import safe_open

    params = 0
    for shard in init.glob("*.safetensors"):
        with safe_open(str(shard), framework="pt") as f:
            params += sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118
    rows = json.loads((init / "config.json").read_text())["text_config"]["vocab_size"]
    print(f"model: LLM {a.layers} x {a.hidden}, vision {a.vision_depth} x {a.vision_width}, "
          f"{params / 1e6:.1f}M parameters ({rows:,}-row vocabulary)")

    if a.stage0_from:   # an encoder bench/qwen_stage0.py pretrained (possibly in several runs, each from the last)
        stage0 = json.loads((a.stage0_from / "stage0.json").read_text())
        print(f"stage 0 (from {a.stage0_from}): {json.dumps(stage0['metrics'])}", flush=True)
        init = a.stage0_from
    elif a.stage0_steps:
        from qwen_stage0 import pretrain

        encoder = work / (f"{init.name}-stage0-{a.stage0_steps}x{a.stage0_batch}"
                          f"{f'-distill{a.stage0_distill:g}' if a.stage0_distill else ''}"
                          f"{f'-dense{a.stage0_dense:g}' if a.stage0_dense else ''}"
                          f"{f'-pairs{a.stage0_pairs}' if a.stage0_pairs else ''}")
        stage0 = pretrain(init, encoder, a.size, a.stage0_steps, a.stage0_batch, 2e-3,
                          scenes=64 if a.smoke else 10000, per_scene=3, heldout=bench, distill=a.stage0_distill,
                          dense=a.stage0_dense, pairs=a.stage0_pairs)
        print(f"stage 0: {json.dumps(stage0['metrics'])}", flush=True)
        init = encoder

    results = {}
    for arm in [x for x in a.arms.split(",") if x != "none"]:
        arm_world, arm_bench = world, bench
        if arm == "blank":
            arm_world = blank_copy(world, work / f"{world.name}-blank")
            arm_bench = blank_copy(bench, work / f"{bench.name}-blank")
        final, times = train_arm(arm, arm_world, init, work, a)
        scores = fine_f1(final, arm_bench, work, arm, batch=16, device=a.device)
        results[arm] = {**scores, **times, "plain_transformers": plain_transformers_loads(final)}
        print(f"{arm}: {json.dumps(results[arm])}", flush=True)
    summary = {"settings": vars(a) | {"work": str(a.work)}, "parameters": params, "results": results}
    if "video" in results and "blank" in results:
        f_video, f_blank = results["video"]["f1"] or 0.0, results["blank"]["f1"] or 0.0
        summary["ratio"] = f_video / f_blank if f_blank else float("inf")
        print(f"fine event F1: video {f_video:.3f}, blanked video {f_blank:.3f}, ratio {summary['ratio']:.2f} "
              f"(target: video >= 0.3 and >= 2x blank)")
    if results:
        (work / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
