"""What models exist here: presets (engine/presets/*.json) and trained checkpoints in the cache.
Reads JSON only, so `tarsier models` stays fast."""
from __future__ import annotations

import json

from tarsier.common.files import home_dir
from tarsier.engine import hf_layouts
from tarsier.engine.checkpoint import CONFIG_NAME, preset_names, read_preset, trained_preset_dir


def _human(n: float) -> str:
    for unit in ("", "K", "M", "B"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}T"


def list_models() -> list[dict]:
    rows = []
    for name in preset_names():
        preset = read_preset(name)
        kind = preset["kind"]
        row = {"name": name, "kind": kind, "description": preset.get("description", ""),
               "layout": preset.get("layout", "videollm"), "hub_id": preset.get("repo", "")}
        if kind == "random":
            row["ready"] = True
        elif kind == "trained":
            folder = trained_preset_dir(name)
            row["ready"] = (folder / CONFIG_NAME).is_file()
            row["path"] = str(folder)
        else:
            row.update(hf_layouts.catalog_row(name, preset))
        if "params" in preset:
            row["params"] = _human(preset["params"])
        rows.append(row)
    # Checkpoints the user trained into the cache under other names.
    models_root = home_dir() / "models"
    known = {r["name"] for r in rows}
    if models_root.is_dir():
        for folder in sorted(models_root.iterdir()):
            if folder.name in known or not (folder / CONFIG_NAME).is_file():
                continue
            cfg = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
            rows.append({"name": str(folder), "kind": "checkpoint", "layout": "videollm", "ready": True,
                         "description": cfg.get("name", "")})
    return rows
