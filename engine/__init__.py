"""The inference library: load a model, describe videos. Importable without the CLI.

Heavy imports (torch, transformers) happen inside the functions that need them."""
from __future__ import annotations


def load(name_or_path, device: str = "auto", dtype=None):
    """Rebuild a model from a preset name or a checkpoint folder (see engine.checkpoint)."""
    from engine.checkpoint import load as _load

    return _load(name_or_path, device=device, dtype=dtype)


def describe(inputs, **kwargs):
    """Describe videos (paths, folders, globs); see engine.describe.describe for the options."""
    from engine.describe import describe as _describe

    return _describe(inputs, **kwargs)


__all__ = ["load", "describe"]
