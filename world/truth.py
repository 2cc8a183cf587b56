"""The ground truth of one video: its plan, told in words (descriptions, questions, actions).

A truth record is one line of truth.jsonl; `make_truth` also keeps the full plan under "_plan"
for the renderer, which truth.jsonl leaves out (tarsier.world.plan.replay_plan rebuilds it).
"""
from __future__ import annotations

import random
from typing import Any

from tarsier.world.language import describe_brief, describe_fine, multiple_choice, questions, which_first
from tarsier.world.plan import CUTS_PROB, PAN_PROB, plan_video
from tarsier.world.vocabulary import action_label


def make_truth(seed: int, index: int, cuts_prob: float = CUTS_PROB, pan_prob: float = PAN_PROB,
               fps: int = 12, size: int = 128) -> dict[str, Any]:
    """Complete ground truth of one video (no rendering). The words come from a second random
    stream, `random.Random(f"{seed}:{index}:text")`, so they never change the plan."""
    plan = plan_video(seed, index, cuts_prob, pan_prob)
    trng = random.Random(f"{seed}:{index}:text")
    vid = f"s{seed}_{index:05d}"
    n_frames = max(2, round(plan["duration"] * fps))
    events_out = []
    for e in plan["events"]:
        args = {k: v for k, v in e["args"].items() if k != "object_id"}
        events_out.append({"colour": e["colour"], "shape": e["shape"], "verb": e["verb"], "args": args,
                           "t_start": e["t_start"], "t_end": e["t_end"], "shot": e["shot"],
                           "subject_id": e["subject_id"], "sentence": e["sentence"]})
    idents = {(o["colour"], o["shape"]) for o in plan["objects"]}
    truth = {
        "video_id": vid, "index": index, "seed": seed, "cuts_prob": cuts_prob, "pan_prob": pan_prob,
        "video_file": f"videos/{vid}.mp4",
        "duration": round(n_frames / fps, 3), "fps": fps, "size": size, "n_frames": n_frames,
        "shots": plan["shots"], "objects": plan["objects"],
        "events": events_out, "event_sentences": [e["sentence"] for e in plan["events"]],
        "n_events": len(events_out), "n_shots": len(plan["shots"]), "n_subjects": len(idents),
        "brief": describe_brief(plan, trng), "fine": describe_fine(plan, trng),
    }
    truth["qa"] = questions(plan, trng)
    truth["mcq"] = [multiple_choice(plan, trng)]
    truth["order"] = [which_first(plan, trng)]
    actions: list[str] = []
    for e in plan["events"]:
        a = action_label(e["verb"], e["args"])
        if a not in actions:
            actions.append(a)
    truth["actions"] = actions
    truth["_plan"] = plan
    return truth
