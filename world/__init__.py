"""The synthetic world: short rendered videos of coloured shapes with exact ground truth.

One module per concern, each importing only those above it in this list:
    vocabulary  shapes, colours, backgrounds, verbs and the canonical event sentences (the exact
                judge, tarsier.evaluation.exact, parses with the same words)
    plan        plan_video(seed, index): shots, objects and timed events; replay_plan(truth)
    language    fine and brief descriptions, questions (open, multiple choice, order)
    truth       make_truth(seed, index): the plan told in words, one truth.jsonl record
    render      frame_state(plan, t), render_frame, render_video (numpy masks, PyAV/libx264)
    manifests   stage-1/stage-2 training manifests and benchmarks in the DREAM-1K messages format
    build       generate(out, videos, seed): `tarsier synth`, with a pool of worker processes

The same seed gives the same files, byte for byte, whatever the number of worker processes.
"""
