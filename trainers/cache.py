"""The frozen-tower feature cache, managed like the Hugging Face cache (`tarsier cache`).

Layout: ROOT/<fingerprint>/<xx>/<key>.safetensors, one folder per vision tower and frame count
(trainers/data.py), and ROOT/<fingerprint>/cache.json saying which model and which datasets filled it.
cache.json is rewritten whenever a training run or `train cache-features` uses the folder, so its time is
the folder's last use: `--older-than` removes what no run has read for that long. Folders written before
cache.json existed are listed with their newest file's time and an unknown model."""
from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from tarsier.common.files import atomic_write, home_dir

META = "cache.json"


def default_root() -> Path:
    return home_dir() / "features"


def record_use(folder: Path, model: str, frames: int, dataset: str | None) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = _read_meta(folder) or {"model": model, "frames": frames, "datasets": [], "created": time.time()}
    meta["model"], meta["frames"] = model, frames
    if dataset and dataset not in meta["datasets"]:
        meta["datasets"].append(dataset)
    meta["last_used"] = time.time()
    atomic_write(folder / META, json.dumps(meta, indent=1) + "\n")


def _read_meta(folder: Path) -> dict | None:
    try:
        return json.loads((folder / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@dataclass
class Entry:
    folder: Path
    model: str
    frames: int | None
    datasets: list[str] = field(default_factory=list)
    clips: int = 0
    size: int = 0                   # bytes
    last_used: float = 0.0          # epoch seconds


def entries(root: Path | None = None) -> list[Entry]:
    """Every tower folder under the cache root, most recently used first."""
    root = Path(root) if root is not None else default_root()
    if not root.is_dir():
        return []
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = [f for f in folder.rglob("*.safetensors") if f.is_file()]
        meta = _read_meta(folder) or {}
        newest = max((f.stat().st_mtime for f in files), default=folder.stat().st_mtime)
        out.append(Entry(folder=folder, model=meta.get("model", "unknown (no cache.json)"),
                         frames=meta.get("frames"), datasets=list(meta.get("datasets", [])), clips=len(files),
                         size=sum(f.stat().st_size for f in files),
                         last_used=float(meta.get("last_used", newest))))
    return sorted(out, key=lambda e: -e.last_used)


def parse_age(text: str) -> float:
    """'30d', '12h', '90m', '45s', '2w' (or a bare number of days) -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text or "")
    if not m:
        raise ValueError(f"--older-than {text!r}: give a number with a unit, e.g. 30d, 12h, 90m, 2w")
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "": 86400}[m.group(2)]
    return float(m.group(1)) * unit


def remove(root: Path | None = None, older_than: float | None = None, everything: bool = False,
           dry_run: bool = False, now: float | None = None) -> list[Entry]:
    """Delete the tower folders last used more than `older_than` seconds ago (or all); returns them."""
    if older_than is None and not everything:
        raise ValueError("say what to remove: --older-than AGE or --all")
    now = time.time() if now is None else now
    chosen = [e for e in entries(root) if everything or now - e.last_used > older_than]
    if not dry_run:
        for e in chosen:
            shutil.rmtree(e.folder, ignore_errors=True)
    return chosen


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
