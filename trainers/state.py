"""Trainer state (optimizer, scheduler, RNG, data position) as safetensors + JSON.

torch.save would pickle; the project never unpickles, so tensors go to safetensors and the rest
to JSON. Enough to continue a run exactly where it stopped."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from tarsier.common.files import save_safetensors

STATE_JSON = "trainer_state.json"
OPTIM_NAME = "optimizer.safetensors"
RNG_NAME = "rng.safetensors"


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for pid, st in sd["state"].items():
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for pid, scal in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(scal)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    np_state = np.random.get_state()
    meta = {
        "python": _to_json(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    random.setstate(_from_json(meta["python"]))
    n = meta["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))


def save_trainer_state(folder: Path, *, optimizer, scheduler, step: int, data_state: dict, extra: dict) -> None:
    opt_tensors, opt_meta = optimizer_to_flat(optimizer)
    save_safetensors(folder / OPTIM_NAME, opt_tensors)
    rng_tensors, rng_meta = rng_state()
    save_safetensors(folder / RNG_NAME, rng_tensors)
    state = {
        "step": step,
        "optimizer": opt_meta,
        "scheduler": scheduler.state_dict(),
        "rng": rng_meta,
        "data": data_state,
        **extra,
    }
    (folder / STATE_JSON).write_text(json.dumps(state) + "\n", encoding="utf-8")


def load_trainer_state(folder: Path, *, optimizer, scheduler) -> dict:
    state = json.loads((folder / STATE_JSON).read_text(encoding="utf-8"))
    optimizer_from_flat(optimizer, load_file(str(folder / OPTIM_NAME)), state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(load_file(str(folder / RNG_NAME)), state["rng"])
    return state


def _to_json(obj):
    if isinstance(obj, tuple):
        return {"__tuple__": [_to_json(x) for x in obj]}
    return obj


def _from_json(obj):
    if isinstance(obj, dict) and "__tuple__" in obj:
        return tuple(_from_json(x) for x in obj["__tuple__"])
    if isinstance(obj, list):
        return [_from_json(x) for x in obj]
    return obj
