"""The one home of the project's file primitives: atomic writes, the JSONL reader, the cache
directory. Everything a run leaves behind goes through here, so a crash leaves either the old
file or the new one, and every file gets the user's normal permissions."""
from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path


def _temporary_name(path: Path) -> Path:
    # Beside the target (same filesystem, so os.replace is atomic) and hidden; created by open(),
    # so it gets 0666 minus the umask like any other file, unlike tempfile.mkstemp's 0600.
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "wb", *, fsync: bool = True) -> Iterator:
    """Write `path` through a temporary file renamed into place when complete. On any error (a
    full disk included) the temporary file is removed and the error goes on up, naming `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    encoding = None if "b" in mode else "utf-8"
    try:
        with open(tmp, mode, encoding=encoding) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError):
            e.filename = str(path)   # the file the user asked for, not our temporary name
        raise


def normal_file_mode() -> int:
    """0666 minus the umask: the mode open() gives a new file."""
    try:   # Linux tells the umask without changing it
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def normal_permissions(path: str | Path) -> Path:
    """Give a file, or every file under a folder, the user's normal permissions (0666 minus the
    umask). For files written by libraries that create them 0600 through a temporary file
    (safetensors' save_file, transformers' and peft's save_pretrained), before the rename that
    publishes them."""
    path = Path(path)
    mode = normal_file_mode()
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
    for f in files:
        if f.stat().st_mode & 0o777 != mode:
            os.chmod(f, mode)
    return path


def save_safetensors(path: str | Path, tensors: dict, *, metadata: dict | None = None) -> Path:
    """safetensors' save_file, atomically (a temporary file renamed into place) and with the user's
    normal permissions (save_file alone creates the file 0600)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.chmod(tmp, normal_file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def atomic_write(path: str | Path, data: str | bytes, *, fsync: bool = True) -> Path:
    """Write all of `data` to `path` atomically (text as UTF-8)."""
    path = Path(path)
    with atomic_file(path, "wb" if isinstance(data, bytes) else "w", fsync=fsync) as f:
        f.write(data)
    return path


def atomic_write_json(path: str | Path, obj, *, indent: int | None = 2) -> Path:
    return atomic_write(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def read_jsonl(path: str | Path, *, strict: bool = False) -> Iterator[dict]:
    """The object records of a JSONL file, in order. Not strict (for our own outputs, which a kill
    may leave with a torn last line): a torn, corrupt or non-object line is skipped and a missing
    file is empty. Strict (for files a user hands us): such a line raises ValueError naming
    `file:line`."""
    path = Path(path)
    if not strict and not path.is_file():
        return
    with open(path, encoding="utf-8", errors="strict" if strict else "replace") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                if strict:
                    raise ValueError(f"{path}:{number}: not JSON ({e.msg})") from None
                continue
            if isinstance(record, dict):
                yield record
            elif strict:
                raise ValueError(f"{path}:{number}: not a JSON object")


def home_dir() -> Path:
    """Where tarsier keeps what it installs or caches (trained presets, the judge cache, feature
    caches): $TARSIER_HOME, else $XDG_CACHE_HOME/tarsier, else ~/.cache/tarsier. The old
    TARSIER_CACHE_DIR still works, with a deprecation warning."""
    if os.environ.get("TARSIER_HOME"):
        return Path(os.environ["TARSIER_HOME"])
    if os.environ.get("TARSIER_CACHE_DIR"):
        warnings.warn("TARSIER_CACHE_DIR is deprecated; set TARSIER_HOME instead", FutureWarning, stacklevel=2)
        return Path(os.environ["TARSIER_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tarsier"
