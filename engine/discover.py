"""Find the videos to work on: files, folders (walked), globs, or "-" (paths read from stdin).

Rules:
- stable, sorted order (inputs in the order given; inside a folder or glob, sorted by relative path);
- hidden files and hidden folders (name starting with ".") are skipped in walks and globs, but a
  hidden file named explicitly is taken;
- explicitly named files are taken whatever their extension (a text file named explicitly becomes a
  per-video error later); folder walks and globs keep only `extensions` (case-insensitive);
- symlinked folders are followed once (realpaths tracked, so loops end); the same file (by realpath)
  is never listed twice;
- inputs that do not exist, match nothing, or vanish while being walked are reported as problems
  (input_as_given, one-line message), never raised.

`VideoInput.rel` (the record key and the output layout) is the '/'-separated path relative to the
video's own input root (a folder input is its own root; a file's root is its parent folder; a root
inside another root belongs to the outer one, so `find /data | describe -` keeps the tree). With one
root, rel is relative to it; with several, it is prefixed by the root's folder name, with as many
parent folder names as it takes to tell two roots of one name apart (/a/clips, /b/clips -> a/clips/...,
b/clips/...). Never relative to the roots' common ancestor, which for /tmp/x and /work/y is '/'.
"""
from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import TextIO

from tarsier.common.types import VideoInput

DEFAULT_EXTENSIONS = ("mp4", "mov", "mkv", "webm", "avi", "wmv", "m4v", "gif")

_GLOB_CHARS = set("*?[")


def _norm_exts(extensions) -> frozenset[str]:
    return frozenset(e.lower().lstrip(".") for e in (extensions or ()) if e)


def _ext_ok(name: str, exts: frozenset[str]) -> bool:
    if not exts:
        return True
    _, dot, ext = name.rpartition(".")
    return bool(dot) and ext.lower() in exts


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _realpath(p: Path) -> str:
    """The path with symlinks resolved; the path itself if that fails (a loop, a vanished parent)."""
    try:
        return os.path.realpath(p)
    except OSError:
        return str(p)


def _walk(root: Path, exts: frozenset[str], recursive: bool, problems: list, given: str) -> list[Path]:
    """Sorted video files under `root` (absolute, not resolved), following symlinked dirs once."""
    out: list[Path] = []
    seen_dirs: set[str] = set()

    def visit(d: Path) -> None:
        real = _realpath(d)
        if real in seen_dirs:
            return
        seen_dirs.add(real)
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except FileNotFoundError:
            problems.append((given, f"folder vanished while walking: {d}"))
            return
        except NotADirectoryError:
            problems.append((given, f"not a folder any more: {d}"))
            return
        except PermissionError:
            problems.append((given, f"permission denied: {d}"))
            return
        except OSError as e:
            problems.append((given, f"cannot read folder {d}: {e.strerror or e}"))
            return
        for e in entries:
            if _is_hidden(e.name):
                continue
            p = d / e.name
            try:
                is_dir = e.is_dir()  # follows symlinks
                is_file = not is_dir and e.is_file()
            except OSError:
                continue
            if is_dir:
                if recursive:
                    visit(p)
            elif is_file and _ext_ok(e.name, exts):
                out.append(p)

    visit(root)
    return out


def _read_stdin_list(stdin: TextIO | None) -> list[str]:
    if stdin is None:
        import sys

        stdin = sys.stdin
    return [line.strip() for line in stdin if line.strip()]


def discover(
    inputs: list[str],
    extensions=DEFAULT_EXTENSIONS,
    recursive: bool = True,
    stdin: TextIO | None = None,
) -> tuple[list[VideoInput], list[tuple[str, str]]]:
    exts = _norm_exts(extensions)
    problems: list[tuple[str, str]] = []

    # Expand "-" (once; a second "-" reads an exhausted stream and adds nothing).
    expanded: list[str] = []
    for item in inputs:
        if item == "-":
            expanded.extend(_read_stdin_list(stdin))
        else:
            expanded.append(item)

    # Each group: (root folder, files found). Roots decide `rel`.
    groups: list[tuple[Path, list[Path]]] = []
    for given in expanded:
        p = Path(os.path.expanduser(given))
        absp = Path(os.path.abspath(p))
        if os.path.isdir(absp):
            files = _walk(absp, exts, recursive, problems, given)
            if not files and not any(g == given for g, _ in problems):
                problems.append((given, "no video files found in folder"))
            groups.append((absp, files))
        elif os.path.isfile(absp):
            groups.append((absp.parent, [absp]))
        elif os.path.lexists(absp) and not os.path.exists(absp):
            problems.append((given, "broken symbolic link"))
        elif any(c in given for c in _GLOB_CHARS):
            matches = sorted(glob.glob(os.path.expanduser(given), recursive=recursive))
            files: list[Path] = []
            for m in matches:
                # glob's own rule skips hidden names unless the pattern spells the dot (".*"),
                # so a pattern under a hidden folder (~/.cache/*.mp4) still works
                mp = Path(os.path.abspath(m))
                if mp.is_dir():
                    continue
                if mp.is_file() and _ext_ok(mp.name, exts):
                    files.append(mp)
            if not files:
                problems.append((given, "no video files match this pattern"))
                continue
            root = Path(os.path.commonpath([str(f.parent) for f in files]))
            groups.append((root, files))
        else:
            problems.append((given, "no such file or folder"))

    roots = [r for r, files in groups if files]
    if not roots:
        return [], problems
    outer = _outer_roots(roots)
    prefixes = _root_prefixes(sorted(set(outer.values()))) if len(set(outer.values())) > 1 else {}

    videos: list[VideoInput] = []
    seen: set[str] = set()
    for root, files in groups:
        for f in files:
            real = _realpath(f)
            if real in seen:
                continue
            seen.add(real)
            base = outer.get(root, root)
            try:
                rel = f.relative_to(base).as_posix()
            except ValueError:  # cannot happen (a file lies under its root), but never crash
                rel = f.name
            prefix = prefixes.get(base)
            videos.append(VideoInput(path=f, rel=f"{prefix}/{rel}" if prefix else rel))
    return videos, problems


def _outer_roots(roots: list[Path]) -> dict[Path, Path]:
    """Each root -> the outermost root that contains it (itself when none does)."""
    out = {}
    for r in roots:
        containing = [o for o in roots if o == r or r.is_relative_to(o)]
        out[r] = min(containing, key=lambda p: len(p.parts))
    return out


def _root_prefixes(roots: list[Path]) -> dict[Path, str]:
    """The shortest trailing folder names that tell the roots apart: /a/clips and /b/clips -> a/clips
    and b/clips, /x/one and /y/two -> one and two."""
    out: dict[Path, str] = {}
    depth = 1
    todo = list(roots)
    while todo:
        names = {r: "/".join(r.parts[1:][-depth:]) or "root" for r in todo}
        counts: dict[str, int] = {}
        for n in names.values():
            counts[n] = counts.get(n, 0) + 1
        longest = max(len(r.parts) for r in todo)
        for r in list(todo):
            if counts[names[r]] == 1 or depth >= longest:
                out[r] = names[r]
                todo.remove(r)
        depth += 1
    return out
