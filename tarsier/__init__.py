"""tarsier: fine-grained, time-aligned video descriptions.

    import tarsier
    model = tarsier.load("tarsier2-recap-7b")
    summary = tarsier.describe(["videos/"], model=model, output_dir="captions/", formats=("jsonl", "srt"))
    print(summary.videos_ok, "videos described ->", summary.jsonl)   # one JSON record per clip

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


def describe(inputs, options=None, **keywords):
    """Describe videos (paths, folders, globs): writes OUTPUT_DIR/descriptions.jsonl (one record per
    clip) and the asked formats, and returns a DescribeSummary (counts, errors, the JSONL's path).
    `options` is a tarsier.engine.options.DescribeOptions, or give its fields by name (model, grain,
    output_dir, formats, workers, ...) and `progress`: see tarsier.engine.describe.describe."""
    from tarsier.engine.describe import describe as _describe

    return _describe(inputs, options, **keywords)


__all__ = ["load", "describe", "__version__"]
