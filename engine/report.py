"""Static HTML review reports for describe runs, training runs and AutoDQ evaluations.

Every page is one self-contained file, `report.html`, written into the folder it describes:
inline CSS and JS, no server, no CDN, no network fetch, only relative links (it works from a
file:// URL and after the folder is copied elsewhere). Images are files beside the page, never
inline base64: thumbnails under thumbs/ (engine.thumbnails), curves and charts as PNG (matplotlib,
Agg, imported inside the functions that draw).

    write_describe_report(out_dir)    OUT_DIR/report.html from OUT_DIR/descriptions.jsonl
    write_training_report(run_dir)    RUN_DIR/report.html (+ loss.png, lr.png via trainers.plots)
    write_eval_charts(eval_dir)       EVAL_DIR/categories.png
    evaluation_report_html(eval_dir)  EVAL_DIR/report.html (+ categories.png)
    write_reports(folder)             every kind the folder holds (detect_kinds); when a describe run
                                      and an evaluation share a folder (`tarsier eval bench`), the
                                      eval page is EVAL_DIR/eval.html and the two pages link each other

Self-test hook (used by tests/test_report.py with headless Chromium): opening a page with
`#selftest=QUERY&mode=MODE` (and `&category=..&status=..` on the eval page) makes the page's own JS
run its filter and write the result into attributes of <html>: data-selftest="done",
data-visible-videos / -clips / -errors (describe), data-visible-samples (eval), and
data-js-errors (number of script or resource errors seen since the page started).
`#selftest&suite=[{"selftest": "cat"}, {"mode": "errors"}, ...]` (URL-encoded JSON) runs several
filters in one page load and writes their counts as JSON into data-selftest-results (then shows
everything again, unless `&keep=1` leaves the last filter on). Half a second
after the load, data-images-loaded / data-images-pending count the images that came into view;
data-load-ms is the time from navigation to the load event.
"""
from __future__ import annotations

import html
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from tarsier.engine.thumbnails import THUMBS_DIR, thumbnail_relpath

REPORT_NAME = "report.html"
EVAL_PAGE = "eval.html"          # the eval page's name when a describe run shares the folder
DESCRIPTIONS = "descriptions.jsonl"
METRICS = "metrics.jsonl"
EVAL_REPORT = "report.json"
EVAL_SAMPLES = "samples.jsonl"
EVAL_CHART = "categories.png"


# ----------------------------------------------------------------------------------------------
# shared helpers

def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def href(rel: str) -> str:
    """A relative URL for a '/'-separated path (spaces, '#', '?' and non-ASCII percent-encoded)."""
    return quote(str(rel).replace(os.sep, "/"), safe="/")


def read_jsonl(path: Path) -> list[dict]:
    """Dict records of a JSONL file; a torn, corrupt or non-object line is skipped, not fatal."""
    out: list[dict] = []
    if not path.is_file():
        return out
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
    return out


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _num(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def fmt_time(seconds) -> str:
    """0:04.20 / 1:02:03.50"""
    s = _num(seconds)
    if s is None:
        return "–"
    s = max(0.0, s)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{int(h)}:{int(m):02d}:{sec:05.2f}" if h >= 1 else f"{int(m)}:{sec:05.2f}"


def fmt_duration(seconds) -> str:
    s = _num(seconds)
    if s is None:
        return "–"
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(round(s), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m {sec:02d}s" if h else f"{m}m {sec:02d}s"


def fmt_num(value, digits: int = 4) -> str:
    v = _num(value)
    if v is None:
        return "–"
    return f"{v:.{digits}g}"


def fmt_pct(value) -> str:
    v = _num(value)
    return "–" if v is None else f"{100 * v:.1f}"


def save_figure(fig, path: Path, dpi: int = 100) -> Path:
    """Render a matplotlib Figure with the Agg canvas (no pyplot, no global backend) and write it
    atomically, so a page open in a browser never shows half a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, format="png", dpi=dpi)
    os.replace(tmp, path)
    return path


CSS = """
:root{--fg:#1d232b;--dim:#65707d;--bg:#f6f7f9;--card:#fff;--line:#dde1e6;--acc:#2f6fde;--err:#c62f2f;
--ok:#237a3b;--warn:#9a6a00}
*{box-sizing:border-box}
[hidden]{display:none!important}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{padding:16px 24px 8px}
h1{font-size:20px;margin:0 0 2px}
h2{font-size:16px;margin:0 0 8px}
h3{font-size:14px;margin:14px 0 6px}
.sub,.dim{color:var(--dim)}
.sub{font-size:12px}
main,.wrap{padding:0 24px 24px}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;background:#eef0f3;padding:0 3px;border-radius:3px}
a{color:var(--acc)}
.cards{display:flex;flex-wrap:wrap;gap:10px;padding:8px 24px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:8px 12px;min-width:120px}
.card b{display:block;font-size:18px}
.card span{color:var(--dim);font-size:12px}
.card.bad b{color:var(--err)}
.toolbar{position:sticky;top:0;z-index:5;display:flex;gap:8px;align-items:center;flex-wrap:wrap;
padding:8px 24px;background:rgba(246,247,249,.96);border-bottom:1px solid var(--line)}
main .toolbar{margin:0 -24px}
.toolbar input[type=search]{flex:1;min-width:240px;max-width:560px;padding:6px 10px;font:inherit;
border:1px solid var(--line);border-radius:6px}
.toolbar select{padding:5px;font:inherit;border:1px solid var(--line);border-radius:6px;background:#fff}
#count{color:var(--dim);font-size:12px}
section.box,section.video{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 14px;margin:12px 0}
table{border-collapse:collapse;font-size:13px}
th,td{padding:3px 10px 3px 0;text-align:left;vertical-align:top;border-bottom:1px solid #eceff2}
th{color:var(--dim);font-weight:600}
td.n,th.n{text-align:right;padding-left:10px}
.tag{display:inline-block;font-size:11px;padding:0 6px;border-radius:9px;background:#e8eefb;color:#24509c;margin-left:4px}
.tag.grain{background:#eef6ea;color:#2f6a1f}
.tl{position:relative;height:22px;background:#eceff2;border-radius:4px;margin:4px 0 2px;overflow:hidden}
.seg{position:absolute;top:0;bottom:0;border-right:1px solid #fff;background:#7aa5ea;color:#fff;font-size:11px;
text-decoration:none;padding-left:3px;overflow:hidden;white-space:nowrap}
.seg:nth-child(even){background:#4f86e0}
.seg:hover,.seg.sel{background:#f0a43a}
.seg.off{opacity:.25}
.tlinfo{font-size:12px;color:var(--dim);min-height:17px}
.clip{border-top:1px solid #eceff2;padding:8px 0 6px;scroll-margin-top:60px}
.clip:target{background:#fff8e6;outline:2px solid #f0a43a;outline-offset:2px}
.ch{font-size:13px}
.ch .t{font-variant-numeric:tabular-nums}
.sheet{display:flex;gap:3px;margin:5px 0;overflow-x:auto}
.sheet img,.ph{height:72px;min-width:72px;border-radius:3px;background:#dfe3e8;flex:none}
section.video{content-visibility:auto;contain-intrinsic-size:auto 600px}
.ph{width:72px;display:inline-flex;align-items:center;justify-content:center;font-size:10px;color:var(--dim);
background:repeating-linear-gradient(45deg,#e6e9ed,#e6e9ed 6px,#dde1e6 6px,#dde1e6 12px)}
.desc{margin:2px 0 0;white-space:pre-wrap;max-width:1100px}
.err{border-left:3px solid var(--err);background:#fdf1f1;padding:6px 10px;margin:8px 0;border-radius:0 6px 6px 0}
.err b{color:var(--err)}
tr.errrow td:first-child{font-weight:600}
.curves{display:flex;flex-wrap:wrap;gap:12px}
.curves img,.chart{max-width:100%;border:1px solid var(--line);border-radius:6px;background:#fff}
.sample{border-top:1px solid #eceff2;padding:10px 0}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:16px}
@media (max-width:900px){.cols{grid-template-columns:1fr}}
ul.ev{list-style:none;margin:4px 0;padding:0}
ul.ev li{padding:2px 6px;margin:2px 0;border-radius:4px;border-left:4px solid #b8bfc8;background:#f3f4f6}
ul.ev li.entailment{border-color:var(--ok);background:#ebf6ee}
ul.ev li.contradiction{border-color:var(--err);background:#fbeeee}
ul.ev li.neutral{border-color:#b8bfc8}
.lab{font-size:11px;float:right;color:var(--dim);margin-left:8px}
li.entailment .lab{color:var(--ok)}
li.contradiction .lab{color:var(--err)}
.st-failed{color:var(--err)}.st-missing{color:var(--warn)}.st-ok{color:var(--ok)}
details{margin-top:6px}
summary{cursor:pointer;color:var(--dim);font-size:12px}
.note{font-size:12px;color:var(--warn)}
.banner{margin:0 24px;padding:8px 12px;border-radius:6px;background:#fff6df;border:1px solid #f0d48a}
"""

# Installed first in <head>: records script errors, failed resource loads and console.error calls
# in <html data-js-errors>, so a headless browser's --dump-dom shows them.
HEAD_JS = """
(function(){var d=document.documentElement,n=0,t=[];function note(m){n++;t.push(String(m).slice(0,200));
d.setAttribute('data-js-errors',String(n));d.setAttribute('data-js-error-text',t.join(' | '))}
d.setAttribute('data-js-errors','0');
window.addEventListener('error',function(e){var x=e.target;if(x&&x!==window&&(x.src||x.href)){note('resource: '+(x.src||x.href))}
else{note(e.message||'error')}},true);
window.addEventListener('unhandledrejection',function(e){note('rejection: '+e.reason)});
var ce=console.error;console.error=function(){note([].join.call(arguments,' '));return ce.apply(console,arguments)};
window.__selftestParams=function(){var h=location.hash;if(h.indexOf('#selftest')!==0)return null;var p={};
h.slice(1).split('&').forEach(function(kv){var i=kv.indexOf('=');var k=i<0?kv:kv.slice(0,i);
p[k]=i<0?'':decodeURIComponent(kv.slice(i+1).replace(/\\+/g,' '))});return p};})();
"""

# At the end of every page: images with data-src load when they come near the viewport (thousands
# of thumbnails must not all load at once). Checked on scroll, resize and after every filter change
# (window.__reveal), section by section; no IntersectionObserver: headless browsers that paint no
# frames never call it. Then the self-test finisher (pages register window.__selftest(params)).
TAIL_JS = """
(function(){var secs=[].filter.call(document.querySelectorAll('section'),function(s){return s.querySelector('img[data-src]')});
function near(r,h){return r.bottom>=-800&&r.top<=h+800}
function reveal(){var h=window.innerHeight||800;secs=secs.filter(function(s){
if(s.hidden||!near(s.getBoundingClientRect(),h))return true;
[].forEach.call(s.querySelectorAll('img[data-src]'),function(i){if(i.offsetParent!==null&&near(i.getBoundingClientRect(),h)){
i.src=i.getAttribute('data-src');i.removeAttribute('data-src')}});return !!s.querySelector('img[data-src]')})}
var t=0;function later(){if(!t){t=setTimeout(function(){t=0;reveal()},80)}}
window.addEventListener('scroll',later,{passive:true});window.addEventListener('resize',later);
window.addEventListener('hashchange',later);window.__reveal=later;reveal()})();
window.addEventListener('load',function(){var p=window.__selftestParams(),d=document.documentElement;if(!p)return;
function snap(){var o={};[].forEach.call(d.attributes,function(a){if(a.name.indexOf('data-visible-')===0)
o[a.name.slice(13)]=+a.value});return o}
try{if(p.suite){var out=JSON.parse(p.suite).map(function(s){window.__selftest(s);return snap()});
d.setAttribute('data-selftest-results',JSON.stringify(out));if(!p.keep)window.__selftest({})}
else if(window.__selftest){window.__selftest(p)}}catch(e){console.error('selftest: '+e)}
d.setAttribute('data-load-ms',String(Math.round(performance.now())));
setTimeout(function(){var ok=0,wait=0;[].forEach.call(document.images,function(i){if(!i.getAttribute('src'))return;
if(i.complete&&i.naturalWidth){ok++}else{wait++}});d.setAttribute('data-images-loaded',ok);
d.setAttribute('data-images-pending',wait);d.setAttribute('data-selftest','done')},500)});
"""


def page(title: str, body: str, script: str = "") -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
        f"<meta name=\"generator\" content=\"tarsier report\"><title>{esc(title)}</title>"
        f"<style>{CSS}</style><script>{HEAD_JS}</script></head>\n<body>\n{body}\n"
        f"<script>{script}\n{TAIL_JS}</script>\n</body></html>\n"
    )


def _header(title: str, subtitle: str, link_html: str = "") -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    link = f" · {link_html}" if link_html else ""
    return f"<header><h1>{esc(title)}</h1><div class=sub>{esc(subtitle)} · written {stamp}{link}</div></header>"


def _cards(items: list[tuple[str, str, bool]]) -> str:
    return "<div class=cards>" + "".join(
        f"<div class=\"card{' bad' if bad else ''}\"><b>{esc(v)}</b><span>{esc(k)}</span></div>" for k, v, bad in items
    ) + "</div>"


def _kv_table(rows: list[tuple[str, str]]) -> str:
    if not rows:
        return "<p class=dim>none</p>"
    return "<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows) + "</table>"


def _flatten(value, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        rows = []
        for k, v in value.items():
            rows += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return rows
    if isinstance(value, (list, tuple)) and not any(isinstance(x, (dict, list)) for x in value):
        return [(prefix, ", ".join(map(str, value)))]
    if isinstance(value, (list, tuple)):
        return [(prefix, json.dumps(value, ensure_ascii=False))]
    return [(prefix, "null" if value is None else str(value))]


# ----------------------------------------------------------------------------------------------
# describe runs

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
        ends = [_num(c.get("end")) for c in self.clips] + [_num(c.get("duration")) for c in self.clips]
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
    records = read_jsonl(Path(out_dir) / DESCRIPTIONS)
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
            v.clips.sort(key=lambda r: (_num(r.get("start")) or 0.0, r["clip"]))
    return [videos[k] for k in sorted(videos)]


def describe_summary(videos: list[VideoEntry]) -> dict:
    clips = [c for v in videos for c in v.clips]
    words = [len(str(c.get("description") or "").split()) for c in clips]
    gen = [_num((c.get("timings") or {}).get("generate_s")) if isinstance(c.get("timings"), dict) else None
           for c in clips]
    # decode_s is the video's one decode pass, repeated on each of its clips: count it once per video
    dec = [max((_num(c["timings"].get("decode_s")) or 0.0 for c in v.clips if isinstance(c.get("timings"), dict)),
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


EAGER_THUMBS = 48  # the first screenful of thumbnails loads with the page; the rest as it scrolls into view


def _clip_thumbs(out_dir: Path, video: str, rec: dict, budget: list[int]) -> str:
    times = rec.get("frame_times") if isinstance(rec.get("frame_times"), list) else []
    n = len(times)
    if not n:  # no timestamps recorded: show whatever thumbnails exist
        while n < 64 and (out_dir / thumbnail_relpath(video, rec["clip"], n)).is_file():
            n += 1
    parts = []
    for i in range(n):
        t = _num(times[i]) if i < len(times) else None
        label = f"{t:.2f} s" if t is not None else f"frame {i}"
        rel = thumbnail_relpath(video, rec["clip"], i)
        if (out_dir / rel).is_file():
            attr = "src" if budget[0] > 0 else "data-src"
            budget[0] -= 1
            parts.append(f"<img {attr}=\"{esc(href(rel))}\" alt=\"\" title=\"{label}\">")
        else:
            parts.append(f"<span class=ph title=\"no thumbnail ({label})\">{esc(label)}</span>")
    return "<div class=sheet>" + "".join(parts) + "</div>" if parts else ""


def _subtitle_links(out_dir: Path, video: str) -> str:
    rel = Path(video)
    links = []
    for ext in ("srt", "vtt"):
        for name in (rel.stem, rel.name):
            p = rel.parent / f"{name}.{ext}"
            if (out_dir / p).is_file():
                links.append(f"<a href=\"{esc(href(p.as_posix()))}\">{ext}</a>")
                break
    return (" <span class=dim>" + " · ".join(links) + "</span>") if links else ""


def _error_html(rec: dict) -> str:
    tags = "".join(f"<span class=\"tag{' grain' if k == 'grain' else ''}\">{esc(rec[k])}</span>"
                   for k in ("model", "grain") if rec.get(k) is not None)
    clip = f" (clip {esc(rec['clip'])})" if isinstance(rec.get("clip"), int) else ""
    return (f"<div class=err><b>error</b>{clip} at stage <code>{esc(rec.get('stage') or 'unknown')}</code>: "
            f"<span class=reason>{esc(rec.get('error'))}</span>{tags}</div>")


def _video_html(out_dir: Path, vi: int, entry: VideoEntry, many_variants: bool, budget: list[int]) -> str:
    dur = entry.duration
    n = len(entry.clips)
    meta = f"{n} clip{'s' if n != 1 else ''}" + (f" · {fmt_duration(dur)}" if dur else "")
    if entry.errors:
        meta += f" · {len(entry.errors)} error{'s' if len(entry.errors) != 1 else ''}"
    out = [(f"<section class=video id=v{vi} data-path=\"{esc(entry.video)}\">"
            f"<h2>{esc(entry.video)} <span class=\"dim sub\">{meta}</span>{_subtitle_links(out_dir, entry.video)}</h2>")]
    for e in entry.errors:
        out.append(_error_html(e))
    for var in entry.variants:
        out.append("<div class=variant>")
        if many_variants or len(entry.variants) > 1:
            out.append(f"<div class=dim>{esc(var.model)} · {esc(var.grain)}"
                       f"{' · settings ' + esc(var.settings) if var.settings else ''}</div>")
        segs = []
        suffix = f"_{entry.variants.index(var)}" if len(entry.variants) > 1 else ""
        for rec in var.clips:
            cid = f"v{vi}c{rec['clip']}{suffix}"
            s, e = _num(rec.get("start")) or 0.0, _num(rec.get("end"))
            e = s if e is None else e
            left = 100 * s / dur if dur else 0.0
            width = max(0.3, 100 * (e - s) / dur) if dur else 100.0 / max(1, len(var.clips))
            tip = f"clip {rec['clip']}: {fmt_time(s)} – {fmt_time(e)} ({e - s:.2f} s)"
            segs.append(f"<a class=seg href=\"#{cid}\" style=\"left:{left:.3f}%;width:{width:.3f}%\" "
                        f"title=\"{esc(tip)}\">{rec['clip']}</a>")
        out.append("<div class=tl>" + "".join(segs) + "</div><div class=tlinfo></div>")
        for rec in var.clips:
            s, e = _num(rec.get("start")), _num(rec.get("end"))
            timings = rec.get("timings") if isinstance(rec.get("timings"), dict) else {}
            extra = []
            if s is not None and e is not None:
                extra.append(f"{e - s:.2f} s")
            if isinstance(rec.get("tokens"), int):
                extra.append(f"{rec['tokens']} tokens")
            if _num(timings.get("generate_s")) is not None:
                extra.append(f"gen {timings['generate_s']:.2f} s")
            tags = "".join(f"<span class=\"tag{' grain' if k == 'grain' else ''}\">{esc(rec[k])}</span>"
                           for k in ("model", "grain") if rec.get(k) is not None)
            out.append(
                f"<article class=clip id=v{vi}c{rec['clip']}{suffix}><div class=ch><b>clip {rec['clip']}</b> "
                f"<span class=t>{fmt_time(s)} – {fmt_time(e)}</span> <span class=dim>({', '.join(extra)})</span>{tags}"
                f"</div>{_clip_thumbs(out_dir, entry.video, rec, budget)}<p class=desc>{esc(rec.get('description'))}</p></article>")
        out.append("</div>")
    out.append("</section>")
    return "\n".join(out)


DESCRIBE_JS = r"""
(function(){
var q=document.getElementById('q'),mode=document.getElementById('mode'),count=document.getElementById('count'),
root=document.documentElement,errBox=document.getElementById('errors');
function low(el){return el?el.textContent.toLowerCase():''}
var vids=[].map.call(document.querySelectorAll('section.video'),function(v){var p=(v.getAttribute('data-path')||'').toLowerCase();
return{el:v,vars:v.querySelectorAll('.variant'),
clips:[].map.call(v.querySelectorAll('.clip'),function(c){return{el:c,t:p+'\n'+low(c.querySelector('.desc')),
seg:v.querySelector('.seg[href="#'+c.id+'"]')}}),
errs:[].map.call(v.querySelectorAll('.err'),function(e){return{el:e,t:p+'\n'+low(e)}})}});
var rows=[].map.call(document.querySelectorAll('tr.errrow'),function(r){return{el:r,t:low(r)}});
var total=0;vids.forEach(function(v){total+=v.clips.length});
function match(t,terms){for(var i=0;i<terms.length;i++){if(t.indexOf(terms[i])<0)return false}return true}
function apply(){var terms=q.value.toLowerCase().split(/\s+/).filter(Boolean),m=mode.value,nv=0,nc=0,ne=0,nr=0;
vids.forEach(function(v){var any=false;
v.clips.forEach(function(c){var s=m!=='errors'&&match(c.t,terms);c.el.hidden=!s;if(c.seg)c.seg.classList.toggle('off',!s);
if(s){nc++;any=true}});
v.errs.forEach(function(e){var s=m!=='ok'&&match(e.t,terms);e.el.hidden=!s;if(s){ne++;any=true}});
[].forEach.call(v.vars,function(b){b.hidden=!b.querySelector('.clip:not([hidden])')});
v.el.hidden=!any;if(any)nv++});
rows.forEach(function(r){var s=m!=='ok'&&match(r.t,terms);r.el.hidden=!s;if(s)nr++});
if(errBox)errBox.hidden=!nr;
count.textContent=nv+' video'+(nv===1?'':'s')+' · '+nc+' of '+total+' clips · '+ne+' error'+(ne===1?'':'s')+' shown';
root.setAttribute('data-visible-videos',nv);root.setAttribute('data-visible-clips',nc);
root.setAttribute('data-visible-errors',ne);if(window.__reveal)window.__reveal()}
var timer;q.addEventListener('input',function(){clearTimeout(timer);timer=setTimeout(apply,60)});
mode.addEventListener('change',apply);
document.addEventListener('keydown',function(e){if(e.key==='/'&&document.activeElement!==q){e.preventDefault();q.focus()}});
function info(seg){var box=seg.parentNode.nextElementSibling;if(box)box.textContent=seg.title}
document.addEventListener('mouseover',function(e){var s=e.target.closest&&e.target.closest('.seg');if(s)info(s)});
document.addEventListener('click',function(e){var s=e.target.closest&&e.target.closest('.seg');if(!s)return;
[].forEach.call(s.parentNode.children,function(x){x.classList.toggle('sel',x===s)});info(s)});
window.__selftest=function(p){q.value=p.selftest||'';mode.value=p.mode||'all';apply()};
apply();
})();
"""


def write_describe_report(out_dir: Path, output: Path | None = None) -> Path:
    """Write OUT_DIR/report.html for a describe run (descriptions.jsonl + thumbs/ beside it)."""
    out_dir = Path(out_dir)
    videos = load_describe_run(out_dir)
    s = describe_summary(videos)
    many = len({(v.model, v.grain, v.prompt, v.settings) for e in videos for v in e.variants}) > 1
    words = ("–" if s["words_mean"] is None
             else f"{s['words_mean']:.1f} ({s['words_min']}–{s['words_max']})")
    cards = _cards([
        ("videos", str(s["videos"]), False), ("clips", str(s["clips"]), False),
        ("errors", str(s["errors"]), bool(s["errors"])),
        ("words per description: mean (min–max)", words, False),
        ("generation time (sum)", fmt_duration(s["generate_s"]), False),
        ("decode time (sum)", fmt_duration(s["decode_s"]), False),
        ("generated tokens", str(s["tokens"]), False),
        ("model · grain", f"{', '.join(s['models']) or '–'} · {', '.join(s['grains']) or '–'}", False),
    ])
    body = [_header(f"tarsier describe — {out_dir.resolve().name}", f"{DESCRIPTIONS} in {out_dir}",
                    f"<a href=\"{EVAL_PAGE}\">AutoDQ scores of these descriptions</a>"
                    if _is_eval_dir(out_dir) and (out_dir / EVAL_PAGE).is_file() else ""), cards]
    body.append(
        "<div class=toolbar><input id=q type=search placeholder=\"Search paths and descriptions (press /)\" "
        "aria-label=search autocomplete=off><select id=mode aria-label=\"show\"><option value=all>clips and errors"
        "</option><option value=errors>errors only</option><option value=ok>hide errors</option></select>"
        "<span id=count></span></div>")
    body.append("<main>")
    errs = [(vi, e) for vi, v in enumerate(videos) for e in v.errors]
    if errs:
        rows = "".join(
            f"<tr class=errrow><td><a href=\"#v{vi}\">{esc(e.get('video'))}</a></td><td><code>{esc(e.get('stage'))}"
            f"</code></td><td>{esc(e.get('error'))}</td><td>{esc(e.get('model'))}</td></tr>" for vi, e in errs)
        body.append(f"<section class=box id=errors><h2>Errors ({len(errs)})</h2><table><tr><th>video</th>"
                    f"<th>stage</th><th>reason</th><th>model</th></tr>{rows}</table></section>")
    if not videos:
        body.append("<section class=box><p class=dim>No records in descriptions.jsonl yet.</p></section>")
    budget = [EAGER_THUMBS]
    for vi, entry in enumerate(videos):
        body.append(_video_html(out_dir, vi, entry, many, budget))
    body.append("</main>")
    path = Path(output) if output else out_dir / REPORT_NAME
    _atomic_write_text(path, page(f"tarsier describe — {out_dir.resolve().name}", "\n".join(body), DESCRIBE_JS))
    return path


# ----------------------------------------------------------------------------------------------
# training runs

def _checkpoints(run_dir: Path) -> list[dict]:
    found = []
    cdir = run_dir / "checkpoints"
    # a folder still being written (name.tmp) is not a checkpoint yet
    cands = sorted(p for p in cdir.iterdir() if p.is_dir() and not p.name.endswith(".tmp")) if cdir.is_dir() else []
    if (run_dir / "final").is_dir():
        cands.append(run_dir / "final")
    for p in cands:
        files = [f for f in p.rglob("*") if f.is_file()]
        step = None
        if p.name.startswith("step-") and p.name[5:].isdigit():
            step = int(p.name[5:])
        found.append({
            "name": p.relative_to(run_dir).as_posix(), "step": step, "files": len(files),
            "bytes": sum(f.stat().st_size for f in files),
            "mtime": max((f.stat().st_mtime for f in files), default=p.stat().st_mtime),
            "has_config": (p / "config.json").is_file(),
        })
    return found


def _config_link(ck: dict) -> str:
    if not ck["has_config"]:
        return ""
    return f"<a href=\"{esc(href(ck['name']))}/config.json\">config.json</a>"


def fill_stages(rows: list[dict]) -> list[dict]:
    """Copies of the rows with "stage" set: a row without one (an eval row, say) belongs to the stage
    logged before it ("train" when none was)."""
    out, stage = [], None
    for r in rows:
        if r.get("stage") is not None:
            stage = str(r["stage"])
        out.append({**r, "stage": stage or "train"})
    return out


def training_summary(rows: list[dict]) -> dict:
    rows = fill_stages(rows)
    train = [r for r in rows if _num(r.get("loss")) is not None]
    evals = [r for r in rows if _num(r.get("eval_loss")) is not None]
    last = train[-1] if train else {}
    best = min(train, key=lambda r: r["loss"]) if train else {}
    sps = [_num(r.get("samples_per_s")) for r in train[-20:]]
    sps = [x for x in sps if x is not None]
    elapsed = [_num(r.get("elapsed_s")) for r in rows if _num(r.get("elapsed_s")) is not None]
    stages: dict[str, list[dict]] = {}
    for r in train:
        stages.setdefault(str(r.get("stage") or "train"), []).append(r)
    stepped = [r for r in rows if isinstance(r.get("step"), int)]
    return {
        "step": stepped[-1]["step"] if stepped else None, "stage": stepped[-1]["stage"] if stepped else None,
        "last": last, "best": best,
        "eval_last": evals[-1] if evals else {}, "eval_best": min(evals, key=lambda r: r["eval_loss"]) if evals else {},
        "samples_per_s": sum(sps) / len(sps) if sps else None,
        "elapsed_s": max(elapsed) if elapsed else None, "stages": stages,
    }


def write_training_report(run_dir: Path, output: Path | None = None, curves: bool = True) -> Path:
    """Write RUN_DIR/report.html: loss and lr curves (refreshed via trainers.plots.write_curves),
    final numbers, per-stage table, run arguments (run.json), checkpoints, the last logged rows."""
    run_dir = Path(run_dir)
    rows = read_jsonl(run_dir / METRICS)
    notes = []
    pngs: list[Path] = []
    if curves and rows:
        try:
            from tarsier.trainers.plots import write_curves

            pngs = write_curves(run_dir, strict=True)
        except ImportError as exc:  # matplotlib missing: the page still works without pictures
            notes.append(f"curves not drawn: {type(exc).__name__}: {exc}")
    pngs = pngs or [p for p in (run_dir / "loss.png", run_dir / "lr.png") if p.is_file()]
    if curves and rows and any("reward_margin" in r for r in rows):   # a DPO run: its implicit rewards too
        from contextlib import suppress

        with suppress(ImportError):
            from tarsier.trainers.plots import write_reward_curves

            write_reward_curves(run_dir)
    pngs += [p for p in (run_dir / "rewards.png",) if p.is_file() and p not in pngs]
    s = training_summary(rows)
    last, best = s["last"], s["best"]
    cards = _cards([
        ("last logged step", "–" if s["step"] is None else f"{s['step']} ({s['stage']})", False),
        ("last loss", fmt_num(last.get("loss")), False),
        (f"lowest loss ({best.get('stage', '')} step {best.get('step', '–')})", fmt_num(best.get("loss")), False),
    ] + ([("last eval loss", fmt_num(s["eval_last"].get("eval_loss")), False)] if s["eval_last"] else []) + [
        ("learning rate now", fmt_num(last.get("lr"), 3), False),
        ("samples/s (last 20 logs)", fmt_num(s["samples_per_s"], 3), False),
        ("elapsed", fmt_duration(s["elapsed_s"]), False),
    ])
    body = [_header(f"tarsier training run — {run_dir.resolve().name}", f"{METRICS} in {run_dir}"), cards]
    body += [f"<p class=banner>{esc(n)}</p>" for n in notes]
    body.append("<main>")
    if not rows:
        body.append("<section class=box><p class=dim>No metrics logged yet.</p></section>")
    elif pngs:
        imgs = "".join(f"<img src=\"{esc(href(p.name))}\" alt=\"{esc(p.stem)} curve\" width=580>" for p in pngs)
        body.append(f"<section class=box><h2>Curves</h2><div class=curves>{imgs}</div></section>")
    if s["stages"]:
        trs = []
        for name, rs in s["stages"].items():
            sp = [x for x in (_num(r.get("samples_per_s")) for r in rs) if x is not None]
            trs.append(
                f"<tr><td>{esc(name)}</td><td class=n>{esc(rs[0].get('step'))}–{esc(rs[-1].get('step'))}</td>"
                f"<td class=n>{len(rs)}</td><td class=n>{fmt_num(rs[0]['loss'])}</td><td class=n>{fmt_num(rs[-1]['loss'])}"
                f"</td><td class=n>{fmt_num(min(r['loss'] for r in rs))}</td>"
                f"<td class=n>{fmt_num(sum(sp) / len(sp), 3) if sp else '–'}</td></tr>")
        body.append("<section class=box><h2>Stages</h2><table><tr><th>stage</th><th class=n>steps</th><th class=n>logs"
                    "</th><th class=n>first loss</th><th class=n>last loss</th><th class=n>lowest loss</th>"
                    "<th class=n>samples/s</th></tr>" + "".join(trs) + "</table></section>")
    evals = [r for r in rows if _num(r.get("eval_loss")) is not None]
    if evals:
        trs = "".join(f"<tr><td class=n>{esc(r.get('step'))}</td><td>{esc(r.get('stage') or '')}</td>"
                      f"<td class=n>{fmt_num(r['eval_loss'])}</td></tr>" for r in evals[-20:])
        body.append("<section class=box><h2>Evaluation loss</h2><table><tr><th class=n>step</th><th>stage</th>"
                    f"<th class=n>eval loss</th></tr>{trs}</table></section>")
    args = _read_json(run_dir / "run.json")
    body.append("<section class=box><h2>Run arguments <span class=\"dim sub\">run.json</span></h2>"
                + (_kv_table(_flatten(args)) if isinstance(args, dict) else "<p class=dim>run.json not found</p>")
                + "</section>")
    cks = _checkpoints(run_dir)
    if cks:
        trs = "".join(
            f"<tr><td><a href=\"{esc(href(c['name']))}/\">{esc(c['name'])}</a></td>"
            f"<td class=n>{c['step'] if c['step'] is not None else ''}</td><td class=n>{c['files']}</td>"
            f"<td class=n>{c['bytes'] / 1e6:.1f} MB</td><td>{time.strftime('%Y-%m-%d %H:%M', time.gmtime(c['mtime']))}"
            f"</td><td>{_config_link(c)}</td></tr>" for c in cks)
        body.append(f"<section class=box><h2>Checkpoints ({len(cks)})</h2><table><tr><th>folder</th><th class=n>step"
                    "</th><th class=n>files</th><th class=n>size</th><th>written (UTC)</th><th></th></tr>"
                    f"{trs}</table></section>")
    else:
        body.append("<section class=box><h2>Checkpoints</h2><p class=dim>none yet</p></section>")
    if rows:
        keys = ["step", "stage", "loss", "eval_loss", "lr", "samples_per_s", "elapsed_s"]
        keys = [k for k in keys if any(k in r for r in rows)]
        trs = "".join("<tr>" + "".join(
            f"<td class=n>{esc(r.get(k)) if k in ('step', 'stage') else fmt_num(r.get(k))}</td>" for k in keys)
            + "</tr>" for r in fill_stages(rows)[-10:])
        body.append("<section class=box><h2>Last logged rows</h2><table><tr>"
                    + "".join(f"<th class=n>{esc(k)}</th>" for k in keys) + f"</tr>{trs}</table></section>")
    body.append("</main>")
    path = Path(output) if output else run_dir / REPORT_NAME
    _atomic_write_text(path, page(f"tarsier training — {run_dir.resolve().name}", "\n".join(body)))
    return path


# ----------------------------------------------------------------------------------------------
# AutoDQ evaluations

def _judge_name(report: dict) -> str:
    judge = report.get("judge")
    if isinstance(judge, dict):
        return str(judge.get("name") or "unknown judge")
    return str(judge) if judge else "unknown judge"


def write_eval_charts(eval_dir: Path) -> list[Path]:
    """EVAL_DIR/categories.png: recall / precision / F1 per category and overall (percent)."""
    from matplotlib.figure import Figure

    eval_dir = Path(eval_dir)
    report = _read_json(eval_dir / EVAL_REPORT)
    if not isinstance(report, dict):
        return []
    cats = report.get("categories") if isinstance(report.get("categories"), dict) else {}
    groups = [(name, c) for name, c in cats.items() if isinstance(c, dict)]
    if isinstance(report.get("overall"), dict):
        groups.append(("overall", report["overall"]))
    if not groups:
        return []
    metrics = [("recall", "R", "#4f86e0"), ("precision", "P", "#f0a43a"), ("f1", "F1", "#3a9a5b")]
    fig = Figure(figsize=(min(14.0, max(6.5, 1.15 * len(groups) + 1.5)), 3.8))
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(metrics)
    for j, (key, label, color) in enumerate(metrics):
        xs = [i + (j - 1) * width for i in range(len(groups))]
        vals = [100 * (_num(c.get(key)) or 0.0) for _, c in groups]
        bars = ax.bar(xs, vals, width * 0.95, label=label, color=color)
        for bar, (_, c) in zip(bars, groups):
            v = _num(c.get(key))
            ax.annotate("–" if v is None else f"{100 * v:.1f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7, xytext=(0, 1), textcoords="offset points")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{name}\n(n={c.get('n', '?')})" for name, c in groups], fontsize=8)
    top = max([100 * (_num(c.get(k)) or 0) for _, c in groups for k, _, _ in metrics] + [10])
    ax.set_ylim(0, min(100, top * 1.18 + 2))
    ax.set_ylabel("%")
    ax.set_title(f"AutoDQ per category — judge {_judge_name(report)}", fontsize=10)
    ax.legend(fontsize=8, ncols=3, loc="upper left", frameon=False)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    fig.tight_layout()
    return [save_figure(fig, eval_dir / EVAL_CHART)]


def _events_html(judgements, events, title: str) -> str:
    items = []
    if isinstance(judgements, list) and judgements:
        for j in judgements:
            if not isinstance(j, dict):
                continue
            lab = str(j.get("label") or "unjudged")
            shown = {"entailment": "matched", "neutral": "unmatched (neutral)",
                     "contradiction": "unmatched (contradiction)"}.get(lab, lab)
            items.append(f"<li class=\"{esc(lab)}\"><span class=lab>{esc(shown)}</span>{esc(j.get('event'))}</li>")
    elif isinstance(events, list):
        items = [f"<li>{esc(e)}</li>" for e in events]
    n_ok = sum(1 for j in judgements or [] if isinstance(j, dict) and j.get("label") == "entailment")
    count = ("" if not items else f"{n_ok}/{len(items)} matched" if judgements
             else f"{len(items)} event{'' if len(items) == 1 else 's'}, not judged")
    return (f"<div><h3>{esc(title)} <span class=\"dim sub\">{count}</span></h3>"
            + (f"<ul class=ev>{''.join(items)}</ul>" if items else "<p class=dim>no events</p>") + "</div>")


def _sample_frames(eval_dir: Path, video) -> str:
    """The frames of the video's first clip, when a describe run with thumbnails shares the folder."""
    if not isinstance(video, str) or not video or not (eval_dir / THUMBS_DIR).is_dir():
        return ""
    imgs = []
    for i in range(64):
        rel = thumbnail_relpath(video, 0, i)
        if not (eval_dir / rel).is_file():
            break
        imgs.append(f"<img data-src=\"{esc(href(rel))}\" alt=\"\">")
    return "<div class=sheet>" + "".join(imgs) + "</div>" if imgs else ""


def _sample_html(i: int, s: dict, eval_dir: Path) -> str:
    status = str(s.get("status") or "ok")
    head = (f"<b>{esc(s.get('idx'))}</b> <span class=tag>{esc(s.get('category'))}</span> "
            f"<span class=st-{esc(status)}>{esc(status)}</span> · R {fmt_pct(s.get('recall'))} · "
            f"P {fmt_pct(s.get('precision'))}" + (f" · <span class=dim>{esc(s.get('video'))}</span>" if s.get("video") else ""))
    note = f"<div class=note>{esc(s.get('note'))}</div>" if s.get("note") else ""
    src = s.get("ref_events_source")
    ref_title = "Reference events → judged against the prediction (recall)" + (
        " · extracted by the judge" if src == "extracted" else "")
    texts = (f"<details><summary>reference and predicted descriptions</summary><div class=cols><div><h3>Reference"
             f"</h3><p class=desc>{esc(s.get('reference'))}</p></div><div><h3>Prediction</h3><p class=desc>"
             f"{esc(s.get('prediction')) if s.get('prediction') is not None else '<i>none</i>'}</p></div></div></details>")
    return (f"<article class=sample id=s{i} data-category=\"{esc(s.get('category'))}\" data-status=\"{esc(status)}\">"
            f"<div class=ch>{head}</div>{note}{_sample_frames(eval_dir, s.get('video'))}<div class=cols>"
            + _events_html(s.get("recall_judgements"), s.get("ref_events"), ref_title)
            + _events_html(s.get("precision_judgements"), s.get("pred_events"),
                           "Predicted events → judged against the reference (precision)")
            + f"</div>{texts}</article>")


def _score_table(groups: dict, first: str, overall: dict | None = None) -> str:
    cols = ["f1", "precision", "recall"]
    counts = ["n", "scored", "failed", "missing"]
    trs = []
    items = list(groups.items()) + ([("overall", overall)] if overall else [])
    for name, c in items:
        if not isinstance(c, dict):
            continue
        bold = name == "overall" and overall is not None
        cells = "".join(f"<td class=n>{'<b>' if bold else ''}{fmt_pct(c.get(k))}{'</b>' if bold else ''}</td>" for k in cols)
        cells += "".join(f"<td class=n>{esc(c.get(k, '–'))}</td>" for k in counts)
        trs.append(f"<tr><td>{'<b>' if bold else ''}{esc(name)}{'</b>' if bold else ''}</td>{cells}</tr>")
    return (f"<table><tr><th>{esc(first)}</th><th class=n>F1</th><th class=n>P</th><th class=n>R</th><th class=n>n</th>"
            "<th class=n>scored</th><th class=n>failed</th><th class=n>missing</th></tr>" + "".join(trs) + "</table>")


EVAL_JS = r"""
(function(){
var q=document.getElementById('q'),cat=document.getElementById('cat'),st=document.getElementById('status'),
count=document.getElementById('count'),root=document.documentElement;
var items=[].map.call(document.querySelectorAll('article.sample'),function(a){return{el:a,t:a.textContent.toLowerCase(),
c:a.getAttribute('data-category'),s:a.getAttribute('data-status')}});
function match(t,terms){for(var i=0;i<terms.length;i++){if(t.indexOf(terms[i])<0)return false}return true}
function apply(){var terms=q.value.toLowerCase().split(/\s+/).filter(Boolean),c=cat.value,s=st.value,n=0;
items.forEach(function(it){var v=(!c||it.c===c)&&(!s||it.s===s)&&match(it.t,terms);it.el.hidden=!v;if(v)n++});
count.textContent=n+' of '+items.length+' samples shown';root.setAttribute('data-visible-samples',n);if(window.__reveal)window.__reveal()}
var timer;q.addEventListener('input',function(){clearTimeout(timer);timer=setTimeout(apply,60)});
cat.addEventListener('change',apply);st.addEventListener('change',apply);
document.addEventListener('keydown',function(e){if(e.key==='/'&&document.activeElement!==q){e.preventDefault();q.focus()}});
window.__selftest=function(p){q.value=p.selftest||'';cat.value=p.category||'';st.value=p.status||'';apply()};
apply();
})();
"""


def eval_page_name(eval_dir: Path) -> str:
    """report.html; eval.html when a describe run shares the folder (`tarsier eval bench`), whose
    page is report.html."""
    return EVAL_PAGE if (Path(eval_dir) / DESCRIPTIONS).is_file() else REPORT_NAME


def evaluation_report_html(eval_dir: Path, output: Path | None = None, charts: bool = True) -> Path:
    """Write EVAL_DIR/report.html from report.json and samples.jsonl (written by evaluation.report):
    judge, overall and per-category scores with a bar chart, bucket tables, and every sample's
    reference / predicted events with their judgements (matched in green, unmatched in grey/red)."""
    eval_dir = Path(eval_dir)
    report = _read_json(eval_dir / EVAL_REPORT)
    if not isinstance(report, dict):
        raise FileNotFoundError(f"no readable {EVAL_REPORT} in {eval_dir}")
    if report.get("task") in TASK_COLUMNS:
        return task_report_html(eval_dir, report, output)
    notes = []
    if charts:
        try:
            write_eval_charts(eval_dir)
        except ImportError as exc:
            notes.append(f"chart not drawn: {exc}")
    samples = read_jsonl(eval_dir / EVAL_SAMPLES)
    if not samples and isinstance(report.get("samples"), list):
        samples = [s for s in report["samples"] if isinstance(s, dict)]
    judge = report.get("judge") if isinstance(report.get("judge"), dict) else {"name": _judge_name(report)}
    name = _judge_name(report)
    overall = report.get("overall") if isinstance(report.get("overall"), dict) else {}
    cats = report.get("categories") if isinstance(report.get("categories"), dict) else {}
    cards = _cards([
        ("judge", name, False), ("F1", fmt_pct(overall.get("f1")), False),
        ("precision", fmt_pct(overall.get("precision")), False), ("recall", fmt_pct(overall.get("recall")), False),
        ("samples", str(overall.get("n", len(samples))), False),
        ("failed (judge)", str(overall.get("failed", "–")), bool(overall.get("failed"))),
        ("missing (no description)", str(overall.get("missing", "–")), bool(overall.get("missing"))),
    ])
    body = [_header(f"AutoDQ evaluation — {eval_dir.resolve().name}", f"{EVAL_REPORT} in {eval_dir}"
                    + (f" · created {report['created']}" if report.get("created") else ""),
                    f"<a href=\"{REPORT_NAME}\">the descriptions scored here</a>"
                    if (eval_dir / DESCRIPTIONS).is_file() else ""), cards]
    warn = (judge.get("note") or "approximate judge") if judge.get("approximate") else None
    body.append(f"<p class=banner><b>Judge: {esc(name)}.</b> "
                + (f"<b>Approximate.</b> {esc(warn.rstrip('.'))}. " if warn else "")
                + "Scores from different judges are not comparable.</p>")
    body += [f"<p class=banner>{esc(n)}</p>" for n in notes]
    body.append("<main>")
    chart = eval_dir / EVAL_CHART
    body.append("<section class=box><h2>Per category <span class=\"dim sub\">percent; overall = unweighted mean of "
                "the category means, F1 = 2PR/(P+R) of those means</span></h2>"
                + (f"<img class=chart src=\"{href(EVAL_CHART)}\" alt=\"per-category recall, precision, F1\">"
                   if chart.is_file() else "")
                + _score_table(cats, "category", overall or None) + "</section>")
    buckets = report.get("buckets") if isinstance(report.get("buckets"), dict) else {}
    if buckets:
        parts = "".join(f"<div><h3>by {esc(dim)}</h3>{_score_table(groups, dim)}</div>"
                        for dim, groups in buckets.items() if isinstance(groups, dict))
        body.append(f"<section class=box><h2>Buckets</h2><div class=cols>{parts}</div></section>")
    info = []
    for key in ("metric", "version", "counts", "inputs"):
        if key in report:
            info += _flatten(report[key], key)
    info += _flatten({k: v for k, v in judge.items() if k != "note"}, "judge")
    policy = report.get("policy") if isinstance(report.get("policy"), dict) else {}
    body.append("<section class=box><h2>Run</h2><div class=cols><div>" + _kv_table(info) + "</div><div><h3>policy</h3>"
                + _kv_table([(k, str(v)) for k, v in policy.items()]) + "</div></div></section>")
    cat_names = list(cats) + sorted({str(s.get("category")) for s in samples} - set(cats))
    statuses = sorted({str(s.get("status") or "ok") for s in samples})
    body.append(
        "<div class=toolbar><input id=q type=search placeholder=\"Search samples: id, video, events, text (press /)\" "
        "aria-label=search autocomplete=off><select id=cat aria-label=category><option value=\"\">all categories</option>"
        + "".join(f"<option value=\"{esc(c)}\">{esc(c)}</option>" for c in cat_names)
        + "</select><select id=status aria-label=status><option value=\"\">any status</option>"
        + "".join(f"<option value=\"{esc(x)}\">{esc(x)}</option>" for x in statuses)
        + "</select><span id=count></span></div>")
    body.append(f"<section class=box id=samples><h2>Samples ({len(samples)})</h2>"
                + ("".join(_sample_html(i, s, eval_dir) for i, s in enumerate(samples)) or "<p class=dim>samples.jsonl not found</p>")
                + "</section></main>")
    path = Path(output) if output else eval_dir / eval_page_name(eval_dir)
    _atomic_write_text(path, page(f"AutoDQ — {name} — {eval_dir.resolve().name}", "\n".join(body), EVAL_JS))
    return path


# Benchmark tasks beside AutoDQ (evaluation/tasks.py): multiple choice, open-ended QA, captioning

TASK_COLUMNS = {   # (title, [(report key, header, format)])
    "mcq": ("Multiple-choice accuracy", [("accuracy", "accuracy", "pct"), ("n", "n", ""), ("correct", "correct", ""),
                                         ("wrong", "wrong", ""), ("invalid", "invalid", ""), ("missing", "missing", "")]),
    "qa": ("Open-ended QA", [("accuracy", "accuracy", "pct"), ("score", "score 0-5", "num"), ("n", "n", ""),
                             ("scored", "judged", ""), ("failed", "failed", ""), ("missing", "missing", "")]),
    "caption": ("Captioning", [("cider", "CIDEr", "num"), ("bleu4", "BLEU-4", "pct"), ("n", "n", ""),
                               ("scored", "scored", ""), ("missing", "missing", "")]),
}
TASK_STATUS_CLASS = {"correct": "ok", "wrong": "failed", "invalid": "failed", "missing": "missing", "ok": "ok",
                     "failed": "failed"}


def _task_cell(value, kind: str) -> str:
    if kind == "pct":
        return fmt_pct(value)
    if kind == "num":
        return "–" if _num(value) is None else f"{value:.3f}"
    return esc(value if value is not None else "–")


def _task_sample_html(i: int, s: dict, task: str) -> str:
    status = str(s.get("status") or "ok")
    verdict = ""
    if task == "mcq":
        verdict = f" · chose {esc(s.get('choice') or '–')}, reference {esc(s.get('reference'))}"
    elif task == "qa":
        verdict = (f" · judge: {esc(s.get('verdict') or '–')}, score {esc(s.get('score') if s.get('score') is not None else '–')}")
    elif task == "caption":
        verdict = f" · CIDEr {'–' if _num(s.get('cider')) is None else format(s['cider'], '.3f')}"
    head = (f"<b>{esc(s.get('idx'))}</b> <span class=tag>{esc(s.get('category'))}</span> "
            f"<span class=st-{TASK_STATUS_CLASS.get(status, 'ok')}>{esc(status)}</span>{verdict}"
            + (f" · <span class=dim>{esc(s.get('video'))}</span>" if s.get("video") else ""))
    options = s.get("options") if isinstance(s.get("options"), list) else []
    opts = "".join(f"<li class=\"{'entailment' if o.get('letter') == s.get('reference') else ''}\">"
                   f"<span class=lab>{esc(o.get('letter'))}</span>{esc(o.get('text'))}</li>"
                   for o in options if isinstance(o, dict))
    refs = s.get("references") if task == "caption" else [s.get("reference")]
    answer = s.get("answer")
    error = (s.get("extra") or {}).get("error") if isinstance(s.get("extra"), dict) else None
    return (f"<article class=sample id=s{i} data-category=\"{esc(s.get('category'))}\" data-status=\"{esc(status)}\">"
            f"<div class=ch>{head}</div>" + (f"<div class=note>{esc(error)}</div>" if error else "")
            + f"<div class=cols><div><h3>Question</h3><p class=desc>{esc(s.get('question'))}</p>"
            + (f"<ul class=ev>{opts}</ul>" if opts else "") + "</div><div><h3>Answer</h3><p class=desc>"
            + (esc(answer) if answer is not None else "<i>none</i>") + "</p><h3>Reference</h3>"
            + "".join(f"<p class=desc>{esc(r)}</p>" for r in refs or [] if r) + "</div></div></article>")


def task_report_html(eval_dir: Path, report: dict, output: Path | None = None) -> Path:
    """The page of a multiple-choice / open-ended QA / captioning report: the judge, per-sub-task
    table, and every question with its options, the answer, the reference and the verdict."""
    task = report["task"]
    title, columns = TASK_COLUMNS[task]
    samples = read_jsonl(eval_dir / EVAL_SAMPLES)
    name = _judge_name(report)
    overall = report.get("overall") if isinstance(report.get("overall"), dict) else {}
    cats = report.get("categories") if isinstance(report.get("categories"), dict) else {}
    cards = [("judge", name, False)] + [(header, _task_cell(overall.get(key), kind), False)
                                        for key, header, kind in columns[:2]]
    if task == "mcq":
        cards.append(("mean over questions", fmt_pct(overall.get("accuracy_questions")), False))
    cards += [("questions", str(overall.get("n", len(samples))), False),
              ("missing", str(overall.get("missing", "–")), bool(overall.get("missing")))]
    body = [_header(f"{title} — {eval_dir.resolve().name}", f"{EVAL_REPORT} in {eval_dir}"
                    + (f" · created {report['created']}" if report.get("created") else "")), _cards(cards)]
    judge = report.get("judge") if isinstance(report.get("judge"), dict) else {}
    body.append(f"<p class=banner><b>Judge: {esc(name)}.</b> {esc(judge.get('note') or '')} "
                "Scores from different judges are not comparable.</p><main>")
    heads = "".join(f"<th class=n>{esc(h)}</th>" for _, h, _ in columns)
    trs = []
    for label, c in list(cats.items()) + [("overall", overall)]:
        if isinstance(c, dict):
            cells = "".join(f"<td class=n>{_task_cell(c.get(k), kind)}</td>" for k, _, kind in columns)
            trs.append(f"<tr><td>{'<b>overall</b>' if label == 'overall' else esc(label)}</td>{cells}</tr>")
    note = ("overall accuracy = mean of the sub-task accuracies (the mean over questions is on the card)"
            if task == "mcq" else "overall: over all questions" if task == "qa" else "overall: over all videos")
    body.append(f"<section class=box><h2>Per sub-task <span class=\"dim sub\">{esc(note)}</span></h2><table>"
                f"<tr><th>sub-task</th>{heads}</tr>{''.join(trs)}</table></section>")
    info = []
    for key in ("metric", "task", "version", "counts", "inputs", "timing"):
        if key in report:
            info += _flatten(report[key], key)
    policy = report.get("policy") if isinstance(report.get("policy"), dict) else {}
    body.append("<section class=box><h2>Run</h2><div class=cols><div>" + _kv_table(info) + "</div><div><h3>policy</h3>"
                + _kv_table([(k, str(v)) for k, v in policy.items()]) + "</div></div></section>")
    statuses = sorted({str(s.get("status") or "ok") for s in samples})
    body.append(
        "<div class=toolbar><input id=q type=search placeholder=\"Search questions, answers, references (press /)\" "
        "aria-label=search autocomplete=off><select id=cat aria-label=category><option value=\"\">all sub-tasks</option>"
        + "".join(f"<option value=\"{esc(c)}\">{esc(c)}</option>" for c in cats)
        + "</select><select id=status aria-label=status><option value=\"\">any status</option>"
        + "".join(f"<option value=\"{esc(x)}\">{esc(x)}</option>" for x in statuses)
        + "</select><span id=count></span></div>")
    body.append(f"<section class=box id=samples><h2>Questions ({len(samples)})</h2>"
                + ("".join(_task_sample_html(i, s, task) for i, s in enumerate(samples))
                   or "<p class=dim>samples.jsonl not found</p>") + "</section></main>")
    path = Path(output) if output else eval_dir / eval_page_name(eval_dir)
    _atomic_write_text(path, page(f"{title} — {name} — {eval_dir.resolve().name}", "\n".join(body), EVAL_JS))
    return path


# ----------------------------------------------------------------------------------------------

KINDS = ("describe", "train", "eval")


def _is_eval_dir(folder: Path) -> bool:
    path = Path(folder) / EVAL_REPORT
    rep = _read_json(path) if path.is_file() else None
    return isinstance(rep, dict) and ("categories" in rep or "overall" in rep or rep.get("metric") == "AutoDQ")


def detect_kinds(folder: Path) -> list[str]:
    """Every kind of result the folder holds: describe (descriptions.jsonl), train (metrics.jsonl or
    run.json), eval (an AutoDQ report.json). `tarsier eval bench` puts describe + eval in one folder."""
    folder = Path(folder)
    kinds = []
    if (folder / DESCRIPTIONS).is_file():
        kinds.append("describe")
    if (folder / METRICS).is_file() or (folder / "run.json").is_file():
        kinds.append("train")
    if _is_eval_dir(folder):
        kinds.append("eval")
    return kinds


def detect_kind(folder: Path) -> str | None:
    """The main kind of the folder (the first of detect_kinds), or None."""
    kinds = detect_kinds(folder)
    return kinds[0] if kinds else None


def write_report(folder: Path, kind: str | None = None, output: Path | None = None) -> Path:
    """The page of one kind of result (default: the folder's main kind)."""
    folder = Path(folder)
    kind = kind or detect_kind(folder)
    if kind == "describe":
        return write_describe_report(folder, output)
    if kind == "train":
        return write_training_report(folder, output)
    if kind == "eval":
        return evaluation_report_html(folder, output)
    raise ValueError(f"{folder} holds no {DESCRIPTIONS}, {METRICS} or AutoDQ {EVAL_REPORT}")


def write_reports(folder: Path) -> list[Path]:
    """The pages of every kind of result the folder holds (report.html, plus eval.html beside a
    describe run), cross-linked."""
    kinds = detect_kinds(folder)
    written = {k: write_report(folder, k) for k in sorted(kinds, key=lambda k: k != "eval")}  # eval first: linked
    return [written[k] for k in kinds]
