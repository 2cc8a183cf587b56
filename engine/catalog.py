"""What models exist here: presets (engine/presets/*.json) and trained checkpoints in the cache.
Reads JSON only, so `tarsier models` stays fast."""
from __future__ import annotations

import json

from tarsier.common.files import home_dir
from tarsier.engine import hf_layouts
from tarsier.engine.checkpoint import CONFIG_NAME, preset_names, read_preset, shipped_model_dir, trained_preset_dir


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
    # Checkpoints the user trained into the cache under other names; and a cache folder named like a preset
    # that ships its weights (an older `tarsier demo` installed its model as `nano`): `--model nano` no
    # longer reads it, so it is listed by its path, saying so.
    models_root = home_dir() / "models"
    known = {r["name"]: r for r in rows}
    if models_root.is_dir():
        for folder in sorted(models_root.iterdir()):
            if not (folder / CONFIG_NAME).is_file():
                continue
            shadowed = folder.name in known and known[folder.name]["kind"] == "trained" and (
                shipped_model_dir(folder.name) is not None)
            if folder.name in known and not shadowed:
                continue
            cfg = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
            note = (f"{folder.name} trained by an earlier `tarsier demo`; `--model {folder.name}` is the shipped "
                    f"model now (`tarsier demo` installs nano-demo; pass this path to use this one)"
                    if shadowed else cfg.get("name", ""))
            rows.append({"name": str(folder), "kind": "checkpoint", "layout": "videollm", "ready": True,
                         "description": note})
    return rows
