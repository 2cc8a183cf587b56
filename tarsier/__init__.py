"""tarsier: fine-grained, time-aligned video descriptions.

    import tarsier
    model = tarsier.load("tarsier2-recap-7b")
    for record in tarsier.describe(["videos/"], model=model):
        print(record["video"], record["description"])

The packages beneath (`tarsier.engine` the inference library, `tarsier.trainers`,
`tarsier.evaluation`, `tarsier.reports`, `tarsier.cli`) are laid out in docs/architecture.md.
Heavy imports (torch, transformers) happen inside the functions that need them, so
`import tarsier` is cheap."""
from __future__ import annotations

__version__ = "0.1.0"


def load(name_or_path, device: str = "auto", dtype=None):
    """A model from a preset name (`tarsier models`), a hub id or a checkpoint folder."""
    from tarsier.engine.checkpoint import load as _load

    return _load(name_or_path, device=device, dtype=dtype)


def describe(inputs, **options):
    """Describe videos (paths, folders, globs); yields one record per clip.
    The options are those of tarsier.engine.describe.describe."""
    from tarsier.engine.describe import describe as _describe

    return _describe(inputs, **options)


__all__ = ["load", "describe", "__version__"]
