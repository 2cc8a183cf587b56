"""The describe page: OUT_DIR/report.html from OUT_DIR/descriptions.jsonl and the thumbnails under
OUT_DIR/thumbs/ (tarsier.engine.thumbnails). Per video a timeline of its clips, per clip the frames
it was described from and its description; the errors; a search box and an errors filter (its
self-test hook is described in tarsier.reports.pages)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tarsier.common.files import read_jsonl
from tarsier.engine.thumbnails import thumbnail_relpath
from tarsier.reports.formats import fmt_duration, fmt_time, number
from tarsier.reports.render import write_page
from tarsier.reports.results import DESCRIPTIONS, EVAL_PAGE, REPORT_NAME, is_eval_dir

EAGER_THUMBS = 48  # the first screenful of thumbnails loads with the page; the rest as it scrolls into view


@dataclass
class Variant:
    """One (model, grain, prompt, settings) run over one video."""
    model: str | None
    grain: str | None
    prompt: str | None
    settings: str | None
    clips: list[dict] = field(default_factory=list)


@dataclass
class VideoEntry:
    video: str
    variants: list[Variant] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)

    @property
    def clips(self) -> list[dict]:
        return [c for v in self.variants for c in v.clips]

    @property
    def duration(self) -> float:
        ends = [number(c.get("end")) for c in self.clips] + [number(c.get("duration")) for c in self.clips]
        ends = [e for e in ends if e is not None]
        return max(ends) if ends else 0.0


def _variant_key(rec: dict) -> tuple:
    return tuple(rec.get(k) if isinstance(rec.get(k), (str, int, float, type(None))) else json.dumps(rec.get(k))
                 for k in ("model", "grain", "prompt", "settings"))


def load_describe_run(out_dir: Path) -> list[VideoEntry]:
    """The records of OUT_DIR/descriptions.jsonl as the reviewer should see them.

    A rerun may append records: the latest record per (video, clip, model, grain, prompt, settings)
    wins; clips past the latest `n_clips` of their run are dropped; an error is shown only if no
    successful clip record of the same video comes after it (and only its latest per settings)."""
    records = list(read_jsonl(Path(out_dir) / DESCRIPTIONS))
    clips: dict[tuple, tuple[int, dict]] = {}
    errors: dict[tuple, tuple[int, dict]] = {}
    last_ok: dict[str, int] = {}
    n_clips: dict[tuple, int] = {}
    for i, rec in enumerate(records):
        video = rec.get("video")
        if not isinstance(video, str) or not video:
            continue
        vkey = (video,) + _variant_key(rec)
        if rec.get("error") is not None:
            errors[vkey] = (i, rec)
            continue
        clip = rec.get("clip")
        if isinstance(clip, bool) or not isinstance(clip, int):
            continue
        clips[vkey + (clip,)] = (i, rec)
        last_ok[video] = i
        if isinstance(rec.get("n_clips"), int) and not isinstance(rec.get("n_clips"), bool):
            n_clips[vkey] = rec["n_clips"]

    videos: dict[str, VideoEntry] = {}
    variants: dict[tuple, Variant] = {}
    for key, (_, rec) in sorted(clips.items(), key=lambda kv: (kv[0][0], kv[1][1].get("clip", 0))):
        vkey, clip = key[:-1], key[-1]
        if vkey in n_clips and clip >= n_clips[vkey]:
            continue
        entry = videos.setdefault(key[0], VideoEntry(key[0]))
        if vkey not in variants:
            variants[vkey] = Variant(*vkey[1:])
            entry.variants.append(variants[vkey])
        variants[vkey].clips.append(rec)
    for vkey, (i, rec) in errors.items():
        if last_ok.get(vkey[0], -1) > i:
            continue
        videos.setdefault(vkey[0], VideoEntry(vkey[0])).errors.append(rec)
    for entry in videos.values():
        for v in entry.variants:
            v.clips.sort(key=lambda r: (number(r.get("start")) or 0.0, r["clip"]))
    return [videos[k] for k in sorted(videos)]


def describe_summary(videos: list[VideoEntry]) -> dict:
    clips = [c for v in videos for c in v.clips]
    words = [len(str(c.get("description") or "").split()) for c in clips]
    gen = [number((c.get("timings") or {}).get("generate_s")) if isinstance(c.get("timings"), dict) else None
           for c in clips]
    # decode_s is the video's one decode pass, repeated on each of its clips: count it once per video
    dec = [max((number(c["timings"].get("decode_s")) or 0.0 for c in v.clips if isinstance(c.get("timings"), dict)),
               default=None) for v in videos]
    tokens = [c.get("tokens") for c in clips if isinstance(c.get("tokens"), int)]
    return {
        "videos": len(videos),
        "videos_ok": sum(1 for v in videos if v.clips),
        "clips": len(clips),
        "errors": sum(len(v.errors) for v in videos),
        "words_mean": (sum(words) / len(words)) if words else None,
        "words_min": min(words) if words else None,
        "words_max": max(words) if words else None,
        "generate_s": sum(g for g in gen if g is not None),
        "decode_s": sum(d for d in dec if d is not None),
        "tokens": sum(tokens),
        "models": sorted({str(c.get("model")) for c in clips if c.get("model") is not None}),
        "grains": sorted({str(c.get("grain")) for c in clips if c.get("grain") is not None}),
    }


# ----------------------------------------------------------------------------------------------
# what the template shows: every number already formatted, every text raw (the template escapes)

@dataclass
class Thumb:
    label: str               # the frame's time ("1.25 s") or "frame 3"
    rel: str | None          # its JPEG relative to the page; None when missing (a placeholder is shown)
    eager: bool = False      # loaded with the page (src) rather than when scrolled into view (data-src)


@dataclass
class ClipView:
    id: str
    rec: dict
    span: str                # "0:04.20 – 0:06.00"
    detail: str              # "1.80 s, 13 tokens, gen 0.50 s"
    thumbs: list[Thumb]


@dataclass
class Segment:               # the clip's box on the video's timeline
    id: str
    clip: int
    left: str
    width: str
    tip: str


@dataclass
class VariantView:
    label: str | None        # model · grain · settings, when the page shows more than one variant
    segments: list[Segment]
    clips: list[ClipView]


@dataclass
class VideoView:
    index: int
    path: str
    meta: str                # "3 clips · 12.5 s · 1 error"
    subtitles: list[tuple[str, str]]    # (relative path, "srt" | "vtt")
    errors: list[dict]
    variants: list[VariantView]


def _thumbs(out_dir: Path, video: str, rec: dict, budget: list[int]) -> list[Thumb]:
    times = rec.get("frame_times") if isinstance(rec.get("frame_times"), list) else []
    n = len(times)
    if not n:  # no timestamps recorded: show whatever thumbnails exist
        while n < 64 and (out_dir / thumbnail_relpath(video, rec["clip"], n)).is_file():
            n += 1
    thumbs = []
    for i in range(n):
        t = number(times[i]) if i < len(times) else None
        label = f"{t:.2f} s" if t is not None else f"frame {i}"
        rel = thumbnail_relpath(video, rec["clip"], i)
        if (out_dir / rel).is_file():
            thumbs.append(Thumb(label, rel, eager=budget[0] > 0))
            budget[0] -= 1
        else:
            thumbs.append(Thumb(label, None))
    return thumbs


def _subtitles(out_dir: Path, video: str) -> list[tuple[str, str]]:
    rel = Path(video)
    links = []
    for ext in ("srt", "vtt"):
        for name in (rel.stem, rel.name):
            p = rel.parent / f"{name}.{ext}"
            if (out_dir / p).is_file():
                links.append((p.as_posix(), ext))
                break
    return links


def _text(value) -> str:
    return "" if value is None else str(value)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _video_view(out_dir: Path, vi: int, entry: VideoEntry, many_variants: bool, budget: list[int]) -> VideoView:
    dur = entry.duration
    meta = _plural(len(entry.clips), "clip") + (f" · {fmt_duration(dur)}" if dur else "")
    if entry.errors:
        meta += f" · {_plural(len(entry.errors), 'error')}"
    variants = []
    for var in entry.variants:
        label = None
        if many_variants or len(entry.variants) > 1:
            label = f"{_text(var.model)} · {_text(var.grain)}" + (f" · settings {var.settings}" if var.settings else "")
        suffix = f"_{entry.variants.index(var)}" if len(entry.variants) > 1 else ""
        segments, clips = [], []
        for rec in var.clips:
            cid = f"v{vi}c{rec['clip']}{suffix}"
            s, e = number(rec.get("start")) or 0.0, number(rec.get("end"))
            e = s if e is None else e
            left = 100 * s / dur if dur else 0.0
            width = max(0.3, 100 * (e - s) / dur) if dur else 100.0 / max(1, len(var.clips))
            segments.append(Segment(cid, rec["clip"], f"{left:.3f}", f"{width:.3f}",
                                    f"clip {rec['clip']}: {fmt_time(s)} – {fmt_time(e)} ({e - s:.2f} s)"))
        for rec in var.clips:
            s, e = number(rec.get("start")), number(rec.get("end"))
            timings = rec.get("timings") if isinstance(rec.get("timings"), dict) else {}
            detail = []
            if s is not None and e is not None:
                detail.append(f"{e - s:.2f} s")
            if isinstance(rec.get("tokens"), int):
                detail.append(f"{rec['tokens']} tokens")
            if number(timings.get("generate_s")) is not None:
                detail.append(f"gen {timings['generate_s']:.2f} s")
            clips.append(ClipView(f"v{vi}c{rec['clip']}{suffix}", rec, f"{fmt_time(s)} – {fmt_time(e)}",
                                  ", ".join(detail), _thumbs(out_dir, entry.video, rec, budget)))
        variants.append(VariantView(label, segments, clips))
    return VideoView(vi, entry.video, meta, _subtitles(out_dir, entry.video), entry.errors, variants)


def write_describe_report(out_dir: Path, output: Path | None = None) -> Path:
    """Write OUT_DIR/report.html for a describe run (descriptions.jsonl + thumbs/ beside it)."""
    out_dir = Path(out_dir)
    videos = load_describe_run(out_dir)
    s = describe_summary(videos)
    many = len({(v.model, v.grain, v.prompt, v.settings) for e in videos for v in e.variants}) > 1
    words = ("–" if s["words_mean"] is None
             else f"{s['words_mean']:.1f} ({s['words_min']}–{s['words_max']})")
    cards = [
        ("videos", str(s["videos"]), False), ("clips", str(s["clips"]), False),
        ("errors", str(s["errors"]), bool(s["errors"])),
        ("words per description: mean (min–max)", words, False),
        ("generation time (sum)", fmt_duration(s["generate_s"]), False),
        ("decode time (sum)", fmt_duration(s["decode_s"]), False),
        ("generated tokens", str(s["tokens"]), False),
        ("model · grain", f"{', '.join(s['models']) or '–'} · {', '.join(s['grains']) or '–'}", False),
    ]
    link = None
    if is_eval_dir(out_dir) and (out_dir / EVAL_PAGE).is_file():
        link = {"href": EVAL_PAGE, "text": "AutoDQ scores of these descriptions"}
    budget = [EAGER_THUMBS]
    title = f"tarsier describe — {out_dir.resolve().name}"
    return write_page(
        Path(output) if output else out_dir / REPORT_NAME, "describe.html.j2",
        title=title, heading=title, subtitle=f"{DESCRIPTIONS} in {out_dir}", link=link, cards=cards,
        errors=[(vi, e) for vi, v in enumerate(videos) for e in v.errors],
        videos=[_video_view(out_dir, vi, entry, many, budget) for vi, entry in enumerate(videos)])
