"""Instruction templates as plain text files; this module only finds them."""
from __future__ import annotations

from importlib import resources

GRAINS = ("brief", "fine")   # prompts/<grain>.txt: the project's description instructions


def read(name: str) -> str:
    """Text of prompts/<name>.txt (name may contain '/' for sub-folders), stripped."""
    path = resources.files(__name__).joinpath(*f"{name}.txt".split("/"))
    if not path.is_file():
        raise FileNotFoundError(f"no prompt template named {name!r}")
    return path.read_text(encoding="utf-8").strip()
