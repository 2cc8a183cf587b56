"""Training manifests: both formats, validation errors naming file:line, weighted mixtures, exact resume."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tarsier.trainers.manifest import LengthGroupedBatches, ManifestError, Sample, load_manifest, load_mixture

DREAM_FLAT = Path(__file__).resolve().parents[1].parent / "shared" / "dream1k" / "DREAM-1k.sample.jsonl"


def _msg(video, answer="A red circle grows.", prompt="Describe the video in detail.", **video_extra):
    v = {"video_file": video, **video_extra}
    return {"messages": [
        {"role": "user", "content": [{"type": "video", "video": v}, {"type": "text", "text": prompt}]},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]}], "task": "caption"}


@pytest.fixture()
def folder(tmp_path) -> Path:
    (tmp_path / "videos").mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        (tmp_path / "videos" / name).write_bytes(b"\0")
    return tmp_path


def _write(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_messages_format(folder):
    p = _write(folder / "m.jsonl", [
        _msg("videos/a.mp4"),
        _msg("videos/b.mp4", start=1.0, end=3.5, frames=[1.0, 2.0, 3.0]),
        # DREAM style: answer in `reference`, empty `text`
        {"messages": [
            {"role": "user", "content": [{"type": "video", "video": {"video_file": "videos/c.mp4"}, "text": None},
                                         {"type": "text", "text": "Describe the video in detail."}]},
            {"role": "assistant", "content": [{"type": "text", "text": "", "reference": "It spins."}]}]},
    ])
    s = load_manifest(p)
    assert len(s) == 3 and all(isinstance(x, Sample) for x in s)
    assert s[0].video == (folder / "videos" / "a.mp4").resolve()
    assert s[0].prompt == "Describe the video in detail." and s[0].answer == "A red circle grows."
    assert s[0].task == "caption" and s[0].source == f"{p}:1"
    assert (s[1].start, s[1].end, s[1].frame_times) == (1.0, 3.5, [1.0, 2.0, 3.0])
    assert s[2].answer == "It spins." and s[2].task == "m"


def test_flat_dream_format(folder):
    p = _write(folder / "flat.jsonl", [{"idx": 1, "text": {"prompt": "<video>\nDescribe the video in detail.",
                                                            "response": "A cat jumps."},
                                        "video_file": "videos/a.mp4"}])
    (s,) = load_manifest(p)
    assert s.prompt == "Describe the video in detail." and s.answer == "A cat jumps."


def test_dream_sample_rows_parse_but_name_missing_videos():
    if not DREAM_FLAT.is_file():
        pytest.skip("DREAM-1K sample not present")
    with pytest.raises(ManifestError) as e:
        load_manifest(DREAM_FLAT)
    assert f"{DREAM_FLAT}:1: video file not found" in str(e.value)
    assert all("video file not found" in p for p in e.value.problems)
    assert len(load_manifest(DREAM_FLAT, check_files=False)) == 20


def test_validation_errors_name_file_line_and_reason(folder):
    no_asst = _msg("videos/a.mp4")
    no_asst["messages"] = no_asst["messages"][:1]
    no_video = _msg("videos/a.mp4")
    no_video["messages"][0]["content"] = no_video["messages"][0]["content"][1:]
    p = _write(folder / "bad.jsonl", [
        _msg("videos/a.mp4"),                               # 1 ok
        '{"messages": [',                                   # 2 invalid JSON
        no_asst,                                            # 3
        _msg("videos/missing.mp4"),                         # 4
        _msg("videos/a.mp4", answer="  "),                  # 5
        _msg("videos/a.mp4", start=3.0, end=2.0),           # 6
        no_video,                                           # 7
        _msg("videos/a.mp4", start=-1),                     # 8
    ])
    with pytest.raises(ManifestError) as e:
        load_manifest(p)
    msg = str(e.value)
    expect = {2: "invalid JSON", 3: "missing assistant turn", 4: "video file not found",
              5: "empty answer", 6: "start 3.0 >= end 2.0", 7: "no video item", 8: "bad start"}
    for line, reason in expect.items():
        assert f"{p}:{line}: {reason}" in msg, (line, msg)
    assert f"{p}:1:" not in msg
    assert len(e.value.problems) == 7
    assert isinstance(e.value, ValueError)


def test_error_list_is_capped(folder):
    p = _write(folder / "many.jsonl", ["not json"] * 30)
    with pytest.raises(ManifestError) as e:
        load_manifest(p)
    assert len(e.value.problems) == 30 and "and 10 more" in str(e.value)


def _mixture(folder) -> Path:
    _write(folder / "x.jsonl", [_msg("videos/a.mp4", answer=f"x{i}") for i in range(5)])
    _write(folder / "y.jsonl", [_msg("videos/b.mp4", answer=f"y{i}") for i in range(3)])
    mix = folder / "mix.json"
    mix.write_text(json.dumps({"manifests": [{"path": "x.jsonl", "weight": 3.0, "task": "cap"},
                                             {"path": "y.jsonl", "weight": 1.0}]}))
    return mix


def test_mixture_sampling_by_weight(folder):
    m = load_mixture(_mixture(folder))
    assert len(m) == 8 and m.weights == [3.0, 1.0]
    assert [e.task for e in m.entries] == ["cap", "y"]
    it = m.sampler(seed=1)
    draws = [next(it) for _ in range(4000)]
    c = Counter(s.answer[0] for s in draws)
    assert 0.70 < c["x"] / 4000 < 0.80
    # shuffled epochs: every sample of a manifest once before any repeats
    xs = [s.answer for s in draws if s.answer[0] == "x"]
    assert sorted(xs[:5]) == [f"x{i}" for i in range(5)]
    assert all(s.task == "cap" for s in draws if s.answer[0] == "x")
    # deterministic per seed, different across seeds
    again = m.sampler(seed=1)
    assert [next(again).answer for _ in range(50)] == [s.answer for s in draws[:50]]
    other = m.sampler(seed=2)
    assert [next(other).answer for _ in range(50)] != [s.answer for s in draws[:50]]


def test_sampler_state_restore_is_exact(folder):
    m = load_mixture(_mixture(folder))
    it = m.sampler(seed=7)
    for _ in range(37):
        next(it)
    state = json.loads(json.dumps(it.state_dict()))     # survives JSON
    expected = [next(it).source + next(it).answer for _ in range(100)]
    fresh = load_mixture(_mixture(folder)).sampler(seed=0)
    fresh.load_state_dict(state)
    assert [next(fresh).source + next(fresh).answer for _ in range(100)] == expected
    bad = dict(state, sizes=[1, 2])
    with pytest.raises(ValueError):
        fresh.load_state_dict(bad)


def _lengths_mixture(folder) -> Path:
    # answers of very different lengths, as stage 1's short QA answers and long captions are
    _write(folder / "x.jsonl", [_msg("videos/a.mp4", answer="word " * (1 + (7 * i) % 40)) for i in range(50)])
    mix = folder / "len.json"
    mix.write_text(json.dumps({"manifests": [{"path": "x.jsonl"}]}))
    return mix


def test_length_grouped_batches_cut_padding_and_keep_the_samples(folder):
    m = load_mixture(_lengths_mixture(folder))
    grouped = LengthGroupedBatches(m.sampler(seed=3), batch_size=4, group=8)
    batches = [next(grouped) for _ in range(16)]
    plain = m.sampler(seed=3)
    drawn = [next(plain) for _ in range(64)]
    # the same samples, in the same number; only how they are batched differs
    assert sorted(s.answer for b in batches for s in b) == sorted(s.answer for s in drawn)

    def padding(bs):
        return sum(len(b) * max(len(s.answer) for s in b) - sum(len(s.answer) for s in b) for b in bs)

    ungrouped = [drawn[i:i + 4] for i in range(0, 64, 4)]
    assert padding(batches) < padding(ungrouped) / 3
    # group 1 is the sampler's own order
    one = LengthGroupedBatches(m.sampler(seed=3), batch_size=4, group=1)
    assert [s.answer for _ in range(4) for s in next(one)] == [s.answer for s in drawn[:16]]


@pytest.mark.parametrize("served", [0, 3, 8, 11])
def test_length_grouped_batches_restore_is_exact(folder, served):
    m = load_mixture(_lengths_mixture(folder))
    grouped = LengthGroupedBatches(m.sampler(seed=5), batch_size=4, group=8)
    for _ in range(served):
        next(grouped)
    state = json.loads(json.dumps(grouped.state_dict()))
    expected = [[s.source for s in next(grouped)] for _ in range(20)]
    fresh = LengthGroupedBatches(load_mixture(_lengths_mixture(folder)).sampler(seed=0), batch_size=4, group=8)
    fresh.load_state_dict(state)
    assert [[s.source for s in next(fresh)] for _ in range(20)] == expected


def test_length_grouped_batches_take_a_plain_sampler_state(folder):
    """Checkpoints written before batches were grouped hold the sampler's state alone."""
    m = load_mixture(_lengths_mixture(folder))
    it = m.sampler(seed=2)
    for _ in range(9):
        next(it)
    grouped = LengthGroupedBatches(load_mixture(_lengths_mixture(folder)).sampler(seed=0), batch_size=4, group=2)
    grouped.load_state_dict(it.state_dict())
    assert sorted(s.source for s in next(grouped) + next(grouped)) == sorted(next(it).source for _ in range(8))


def test_single_manifest_as_mixture(folder):
    p = _write(folder / "one.jsonl", [_msg("videos/a.mp4")])
    m = load_mixture(p)
    assert len(m) == 1 and m.weights == [1.0]


def test_mixture_errors(folder):
    (folder / "bad.jsonl").write_text("{oops\n")
    mix = folder / "m.json"
    mix.write_text(json.dumps({"manifests": [{"path": "bad.jsonl"}, {"path": "gone.jsonl"},
                                             {"path": "bad.jsonl", "weight": 0}]}))
    with pytest.raises(ManifestError) as e:
        load_mixture(mix)
    msg = str(e.value)
    assert "bad.jsonl:1: invalid JSON" in msg and "gone.jsonl: file not found" in msg
    assert "weight must be a number > 0" in msg


def test_synth_manifests_load(tmp_path):
    from tarsier.world.build import generate

    generate(tmp_path, 3, seed=9, workers=1)
    m1 = load_mixture(tmp_path / "stage1" / "mixture.json")
    assert {e.task for e in m1.entries} == {"caption", "qa", "action", "mcq", "order"}
    m2 = load_mixture(tmp_path / "stage2" / "mixture.json")
    assert len(m2) == 6
    assert {s.task for s in m2.samples} == {"describe/brief", "describe/fine"}
    bench = load_manifest(tmp_path / "benchmark.jsonl")
    assert all(s.prompt == "Describe the video in detail." for s in bench)
    assert all(s.video.is_file() for s in m1.samples)


def test_manifest_rows_are_read_from_the_file_not_held(folder):
    rows = [_msg("videos/a.mp4", answer=f"A red circle grows {i} times.") for i in range(50)]
    p = _write(folder / "m.jsonl", rows[:20] + ["", "   "] + rows[20:])   # blank lines are skipped, numbers kept
    samples = load_manifest(p)
    assert not any(isinstance(v, list | dict) for v in vars(samples).values())   # no rows, no Samples kept
    assert samples.offsets.itemsize == 8 and len(samples) == 50   # what stays in memory: an offset a row
    assert [s.answer for s in samples] == [r["messages"][1]["content"][0]["text"] for r in rows]
    assert samples[20].source == f"{p}:23" and samples[-1].source == f"{p}:52"
    assert [s.answer for s in samples[48:]] == ["A red circle grows 48 times.", "A red circle grows 49 times."]

    _write(p, rows[:20] + ["", "   "] + rows[20:])   # written again, the same rows: still readable
    assert samples[30].answer == "A red circle grows 30 times."
    _write(p, rows[1:])                            # rows moved under a running job: an error naming the file
    with pytest.raises(ManifestError, match="m.jsonl: changed while in use"):
        samples[0]


def test_a_mixture_streams_its_manifests(folder):
    for name in ("x", "y"):
        _write(folder / f"{name}.jsonl", [_msg("videos/a.mp4", answer=f"{name} {i}") for i in range(3)])
    (folder / "mix.json").write_text(json.dumps({"manifests": [{"path": "x.jsonl"}, {"path": "y.jsonl", "weight": 2}]}))
    m = load_mixture(folder / "mix.json")
    assert len(m.samples) == 6
    assert [s.answer for s in m.samples] == ["x 0", "x 1", "x 2", "y 0", "y 1", "y 2"]
    assert [s.answer for s in m.samples] == [s.answer for s in m.samples]   # iterable again and again
    assert [s.answer for s in m.samples[2:4]] == ["x 2", "y 0"] and m.samples[-1].answer == "y 2"
