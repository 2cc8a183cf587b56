"""The files of a world: training manifests (stage 1, stage 2) and benchmarks, all in the
Tarsier2/DREAM-1K "messages" format, written from the truth records.

OUT layout:
    videos/s{seed}_{index:05d}.mp4     the clips (tarsier.world.build)
    truth.jsonl                         one record of ground truth per video
    stage1/{caption,qa,action,mcq,order}.jsonl + stage1/mixture.json
    stage2/describe.jsonl + stage2/mixture.json
    benchmark.jsonl                     DREAM-1K "messages" format with reference events
    bench/{mcq,qa,caption}.jsonl        the other benchmark types in the messages format upstream publishes
                                        (evaluation/benchdata.py): `tarsier eval bench --videos OUT`
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from tarsier.common.files import atomic_file, atomic_write_json
from tarsier.world.language import cap, describe_brief
from tarsier.world.plan import replay_plan

DATASET = "synthetic/shapes"

BRIEF_PROMPTS = [
    "Describe the video in one short sentence.",
    "Summarize the video in one sentence.",
    "Give a brief description of the video.",
    "In one sentence, what happens in the video?",
]
FINE_PROMPTS = [
    "Describe the video in detail.",
    "Give a detailed description of the video, event by event.",
    "Describe everything that happens in the video, in order.",
    "Write a fine-grained description of the video.",
]
CAPTION_PROMPTS = [
    "Describe the video.",
    "What happens in the video?",
    "Write a caption for this video.",
    "Caption the video.",
]
ACTION_PROMPT = "What actions happen in the video?"


def _item_video(video_file: str) -> dict[str, Any]:
    return {"reference": None, "text": None, "type": "video", "video": {"video_file": video_file}}


def _item_text(text: str) -> dict[str, Any]:
    return {"reference": None, "text": text, "type": "text", "video": None}


def message_row(video_file: str, prompt: str, answer: str, task: str, video_id: str, idx: int) -> dict[str, Any]:
    """One training row in the Tarsier2/DREAM-1K "messages" format (answer in `text`)."""
    return {
        "messages": [
            {"content": [_item_video(video_file), _item_text(prompt)], "role": "user"},
            {"content": [{"reference": None, "text": answer, "type": "text", "video": None}],
             "role": "assistant"},
        ],
        "dataset": DATASET, "task": task, "idx": idx, "video_id": video_id,
    }


def benchmark_row(truth: dict[str, Any], idx: int) -> dict[str, Any]:
    """One row shaped exactly like DREAM-1k.messages-format (reference = fine description)."""
    return {
        "messages": [
            {"content": [_item_video(truth["video_file"]), _item_text("Describe the video in detail.")],
             "role": "user"},
            {"content": [{"reference": truth["fine"], "text": "", "type": "text", "video": None}],
             "role": "assistant"},
        ],
        "dataset": DATASET,
        "task": "video/caption",
        "idx": idx,
        "extra_info": {"duration": truth["duration"], "events": truth["event_sentences"],
                       "n_events": truth["n_events"], "n_shots": truth["n_shots"],
                       "n_subjects": truth["n_subjects"]},
        "vid": idx,
    }


def _bench_row(video_file: str, prompt: str, prefix: str, reference, dataset: str, task: str, idx) -> dict[str, Any]:
    """A benchmark row as upstream writes them (TVBench, MSVD-QA...): the assistant turn's text is the
    forced answer prefix, the reference sits in its own item."""
    answer = ([{"reference": None, "text": prefix, "type": "text", "video": None}] if prefix else []) + [
        {"reference": reference, "text": "", "type": "text", "video": None}]
    return {"messages": [{"content": [_item_video(video_file), _item_text(prompt)], "role": "user"},
                         {"content": answer, "role": "assistant"}],
            "dataset": dataset, "task": task, "idx": idx, "vid": video_file}


CAPTION_REFERENCES = 3   # brief captions per video, told in different words (as MSVD / MSR-VTT have several)
QA_PER_VIDEO = 2


def bench_rows(truths: list[dict[str, Any]], seed: int) -> dict[str, list[dict]]:
    """The held-out benchmark files of a world: multiple choice (the question format of stage 1's
    mcq rows, which nano learns; reference = the letter), open-ended QA (reference = the exact
    synthetic answer; sub-task = the question type) and captioning (several brief captions of the
    same events, each from its own text stream)."""
    rng = random.Random(f"{seed}:bench")
    out: dict[str, list[dict]] = {"mcq": [], "qa": [], "caption": []}
    for i, t in enumerate(truths):
        vf = t["video_file"]
        for m in t["mcq"]:
            letter = m["answer"].split(".", 1)[0].strip()
            out["mcq"].append(_bench_row(vf, m["question"], "", letter, "synthetic/events", "mcq",
                                         len(out["mcq"])))
        qas = list(t["qa"])
        rng.shuffle(qas)
        for qa in qas[:QA_PER_VIDEO]:
            out["qa"].append(_bench_row(vf, qa["question"], "", qa["answer"], f"synthetic/{qa['type']}", "qa",
                                        len(out["qa"])))
        plan = replay_plan(t)
        refs = [t["brief"]] + [describe_brief(plan, random.Random(f"{t['seed']}:{t['index']}:caption{k}"))
                               for k in range(1, CAPTION_REFERENCES)]
        out["caption"].append(_bench_row(vf, BRIEF_PROMPTS[0], "", refs, "synthetic/captions", "caption", i))
    return out


STAGE1_WEIGHTS = {"caption": 2.0, "qa": 1.5, "action": 0.5, "mcq": 1.0, "order": 1.0}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with atomic_file(path, "w", fsync=False) as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def write_manifests(out: Path, truths: list[dict[str, Any]], seed: int) -> dict[str, int]:
    """Write truth.jsonl, stage1/*, stage2/*, benchmark.jsonl. Returns row counts per file."""
    rng = random.Random(f"{seed}:manifests")
    s1: dict[str, list] = {k: [] for k in STAGE1_WEIGHTS}
    s2: list[dict] = []
    bench: list[dict] = []
    for i, t in enumerate(truths):
        vf1 = "../" + t["video_file"]
        vid = t["video_id"]
        s1["caption"].append(message_row(vf1, rng.choice(CAPTION_PROMPTS), t["fine"], "caption", vid, i))
        qas = list(t["qa"])
        rng.shuffle(qas)
        for qa in qas[:4]:
            s1["qa"].append(message_row(vf1, qa["question"], qa["answer"], "qa", vid, i))
        s1["action"].append(message_row(vf1, ACTION_PROMPT, cap(", ".join(t["actions"])) + ".",
                                        "action", vid, i))
        for m in t["mcq"]:
            s1["mcq"].append(message_row(vf1, m["question"], m["answer"], "mcq", vid, i))
        for o in t["order"]:
            s1["order"].append(message_row(vf1, o["question"], o["answer"], "order", vid, i))
        bp = BRIEF_PROMPTS[0] if rng.random() < 0.4 else rng.choice(BRIEF_PROMPTS)
        fp = FINE_PROMPTS[0] if rng.random() < 0.4 else rng.choice(FINE_PROMPTS)
        s2.append(message_row(vf1, bp, t["brief"], "describe/brief", vid, i))
        s2.append(message_row(vf1, fp, t["fine"], "describe/fine", vid, i))
        bench.append(benchmark_row(t, i + 1))
    counts = {}
    _write_jsonl(out / "truth.jsonl", [{k: v for k, v in t.items() if k != "_plan"} for t in truths])
    counts["truth.jsonl"] = len(truths)
    for name, rows in s1.items():
        _write_jsonl(out / "stage1" / f"{name}.jsonl", rows)
        counts[f"stage1/{name}.jsonl"] = len(rows)
    atomic_write_json(out / "stage1" / "mixture.json", {"manifests": [
        {"path": f"{name}.jsonl", "weight": w, "task": name} for name, w in STAGE1_WEIGHTS.items()]})
    _write_jsonl(out / "stage2" / "describe.jsonl", s2)
    counts["stage2/describe.jsonl"] = len(s2)
    atomic_write_json(out / "stage2" / "mixture.json", {"manifests": [
        {"path": "describe.jsonl", "weight": 1.0}]})   # rows keep their describe/brief, describe/fine
    _write_jsonl(out / "benchmark.jsonl", bench)
    counts["benchmark.jsonl"] = len(bench)
    for name, rows in bench_rows(truths, seed).items():
        _write_jsonl(out / "bench" / f"{name}.jsonl", rows)
        counts[f"bench/{name}.jsonl"] = len(rows)
    return counts
