"""Benchmark rows in the "messages" format upstream publishes, for every task type.

One row per question (TVBench, MVBench, ...), per open-ended question (MSVD-QA, ...), per video to
caption (MSVD, MSR-VTT, VATEX: one or more reference captions) or per DREAM-1K video:

    {"messages": [
        {"role": "user", "content": [{"type": "video", "video": {"video_file": "<placeholder>"}},
                                     {"type": "text", "text": "Question: ...\\n(A) ...\\n(B) ..."}]},
        {"role": "assistant", "content": [{"type": "text", "text": " Answer: ("},
                                          {"type": "text", "text": "", "reference": "A"}]}],
     "dataset": "TVBench/Action Antonym", "task": "video/QA", "idx": 0, "vid": "action_antonym/x.avi"}

* the user turn's text is the prompt, exactly as the model gets it;
* the assistant turn's `text` items before the reference are the answer prefix, forced as the
  start of the answer (" Answer: (" for TVBench);
* `reference` is the option letter (mcq), the answer text (qa), one caption or a list of captions
  (caption: several `reference` items also add up), or the description (dream);
* `dataset` names the sub-task: the part after the first "/" ("Action Antonym").

The task comes from `--task` or, row by row, from `task`: "mcq", "qa", "caption", "dream", or the
upstream names: "video/QA" (mcq when the prompt lists lettered options and the reference is one
letter, qa otherwise), "video/caption" and "video/description" (dream for DREAM-1K datasets, else
caption). Every bad row is reported as `file:line: reason` before any model runs (BenchFileError).
The rows are read with common/messages.py (read_lines, read_turns), the one reader of the format.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from tarsier.common.messages import is_placeholder, read_lines, read_turns, video_stem

TASKS = ("mcq", "qa", "caption", "dream")
UPSTREAM_TASKS = {"video/qa": "qa?", "qa": "qa", "mcq": "mcq", "multiple-choice": "mcq", "video/mcq": "mcq",
                  "video/caption": "caption?", "caption": "caption?", "video/description": "caption?",
                  "describe": "caption?", "dream": "dream", "video/dream": "dream"}

# "(A) text", "A. text", "A) text", "A: text" at the start of a line
_OPTION_RE = re.compile(r"^\s*\(?([A-Z])(?:\)|\.|:)\s*(.*\S)?\s*$")


class BenchFileError(ValueError):
    """A benchmark file has bad rows; `problems` holds one `file:line: reason` per row."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        more = "" if len(problems) <= 20 else f"\n... and {len(problems) - 20} more"
        super().__init__(f"{len(problems)} bad benchmark row(s):\n" + "\n".join(problems[:20]) + more)


@dataclass
class BenchRow:
    idx: str
    task: str                          # mcq | qa | caption | dream
    dataset: str                       # as written ("TVBench/Action Antonym")
    prompt: str                        # the user turn's text, exactly
    prefix: str = ""                   # forced start of the answer
    reference: str | None = None       # letter (mcq), answer (qa), description (dream)
    references: list[str] = field(default_factory=list)   # captions (caption)
    options: list[tuple[str, str]] = field(default_factory=list)   # (letter, text) parsed from the prompt
    video_file: str | None = None      # None for "<placeholder>"
    vid: str | None = None
    line: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def subtask(self) -> str:
        name = self.dataset.strip()
        return (name.split("/", 1)[1] if "/" in name else name) or "all"

    @property
    def video(self) -> str | None:
        """The path of the video relative to the videos folder: video_file, else vid."""
        return self.video_file or self.vid

    @property
    def video_key(self) -> str | None:
        return video_stem(self.video) if self.video else None


def parse_options(prompt: str) -> list[tuple[str, str]]:
    """Lettered options of a prompt: consecutive lines "(A) ...", "A. ...", from A on."""
    found: list[tuple[str, str]] = []
    for line in prompt.splitlines():
        m = _OPTION_RE.match(line)
        if m and ord(m.group(1)) - ord("A") == len(found):
            found.append((m.group(1), (m.group(2) or "").strip()))
    return found


def _task_of(row: dict, forced: str | None, options, references) -> tuple[str | None, str | None]:
    """(task, problem)."""
    if forced:
        return forced, None
    raw = str(row.get("task") or "").strip()
    dataset = str(row.get("dataset") or "")
    if not raw:
        return None, "no task (set `task` in the row or pass --task)"
    guess = UPSTREAM_TASKS.get(raw.lower())
    if guess is None:
        return None, f"unknown task {raw!r} (known: {', '.join(TASKS)}, video/QA, video/caption)"
    if guess == "qa?":
        one_letter = len(references) == 1 and isinstance(references[0], str) and \
            re.fullmatch(r"\(?[A-Za-z]\)?", references[0].strip()) is not None
        return ("mcq" if options and one_letter else "qa"), None
    if guess == "caption?":
        return ("dream" if dataset.upper().startswith("DREAM") else "caption"), None
    return guess, None


def parse_row(row: dict, *, task: str | None = None, line: int = 0) -> tuple[BenchRow | None, list[str]]:
    """A BenchRow, or None and the reasons it is bad."""
    if not isinstance(row, dict) or "messages" not in row:
        return None, ["not a messages-format row (no `messages`)"]
    turns = read_turns(row)
    prompt, prefix, refs, video = turns.prompt, turns.prefix, turns.references, turns.video
    problems = []
    if prompt is None:
        problems.append("no user text (the question or instruction)")
    options = parse_options(prompt or "")
    kind, why = _task_of(row, task, options, refs)
    if why:
        problems.append(why)
    idx = row.get("idx", row.get("id"))
    if idx is None:
        problems.append("no idx")
    if not refs or not all(isinstance(r, str) and r.strip() for r in refs):
        problems.append("no reference")
    vid = row.get("vid")
    vid = str(vid) if vid is not None and str(vid).strip() else None
    if is_placeholder(video):
        video = None
    out = BenchRow(idx=str(idx), task=kind or "", dataset=str(row.get("dataset") or ""), prompt=prompt or "",
                   prefix=prefix, options=options, video_file=video if isinstance(video, str) else None,
                   vid=vid, line=line, extra=dict(row.get("extra_info") or {}))
    if not problems:
        if kind == "mcq":
            letter = refs[0].strip().strip("()").upper()
            if len(refs) != 1 or not re.fullmatch(r"[A-Z]", letter):
                problems.append(f"reference {refs[0]!r} is not one option letter")
            elif not options:
                problems.append("the prompt lists no lettered options ((A) ..., A. ...)")
            elif ord(letter) - ord("A") >= len(options):
                problems.append(f"reference letter {letter} is beyond the {len(options)} options "
                                f"(A-{options[-1][0]})")
            out.reference = letter
        elif kind == "caption":
            out.references = [r.strip() for r in refs]
        else:
            if len(refs) != 1:
                problems.append(f"{len(refs)} references; a {kind} row has one")
            out.reference = refs[0].strip()
    if not out.video:
        if kind != "dream" and not problems:
            problems.append("no video (neither video_file nor vid)")
    return (None, problems) if problems else (out, [])


def load_bench(path: str | Path, *, task: str | None = None, videos: str | Path | None = None,
               limit: int | None = None) -> list[BenchRow]:
    """Every row of a benchmark file; raises BenchFileError listing every bad row as
    `file:line: reason` (with `videos`, a row whose video file is not there is bad too)."""
    path = Path(path)
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    rows: list[BenchRow] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for n, raw, err in read_lines(path):
        if limit and len(rows) + len(problems) >= limit:
            break
        if raw is None:
            problems.append(f"{path}:{n}: {err}")
            continue
        row, why = parse_row(raw, task=task, line=n)
        if row is not None and row.idx in seen:
            why = [f"duplicate idx {row.idx} (first on line {seen[row.idx]})"]
        if row is not None and videos is not None and row.video and not (Path(videos) / row.video).is_file():
            why = [f"missing video {Path(videos) / row.video}"]
        if why:
            problems.extend(f"{path}:{n}: {w}" for w in why)
            continue
        seen[row.idx] = n
        rows.append(row)
    if problems:
        raise BenchFileError(problems)
    if not rows:
        raise BenchFileError([f"{path}: no benchmark rows"])
    return rows
