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

`VideoInput.rel` is the '/'-separated path relative to the common ancestor folder of all input roots
(a folder input is its own root; a file's root is its parent folder), so a/x.mp4 and b/x.mp4 never
collide and, with a single folder input, rel is relative to that folder.
"""
from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import TextIO

from engine.types import VideoInput

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

    roots = [str(r) for r, files in groups if files]
    if not roots:
        return [], problems
    common = Path(os.path.commonpath(roots)) if len(roots) > 1 else Path(roots[0])

    videos: list[VideoInput] = []
    seen: set[str] = set()
    for _root, files in groups:
        for f in files:
            real = _realpath(f)
            if real in seen:
                continue
            seen.add(real)
            try:
                rel = f.relative_to(common).as_posix()
            except ValueError:  # cannot happen with a common ancestor, but never crash
                rel = f.name
            videos.append(VideoInput(path=f, rel=rel))
    return videos, problems
