"""Stage-0 towers side by side: which small open_clip tower learns to tell the world's shapes apart?

Trains nano's stage-0 tower (`tarsier.trainers.tower.pretrain_tower`, same rendered frames, same loss,
same steps) once per architecture, given to it as a config override of nano's preset, and prints the
held-out read-out of each: identity presence, colour and shape presence (precision / recall),
position+size error and seconds of training.

    python experiments/nano/tower_arch.py --heldout BENCH [--steps 1000] [--arch vit-p8 resnet-w32 ...]

BENCH: a `tarsier synth` folder of another seed (its decoded frames are the held-out set).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

# vision geometry (+ spatial_pool giving the same 2x2 cells) of each candidate, on 64-px frames
ARCHS = {
    "vit-p8": ({"patch_size": 8, "width": 128, "layers": 2, "heads": 4, "feature_layer": -1, "resnet_blocks": None}, 4),
    "vit-p8-4blocks": ({"patch_size": 8, "width": 128, "layers": 4, "heads": 4, "feature_layer": -1, "resnet_blocks": None}, 4),
    "vit-p4": ({"patch_size": 4, "width": 128, "layers": 2, "heads": 4, "feature_layer": -1, "resnet_blocks": None}, 8),
    "resnet-w16": ({"patch_size": 16, "width": 256, "heads": 8, "resnet_blocks": [1, 1, 1]}, 2),
    "resnet-w32": ({"patch_size": 16, "width": 512, "heads": 8, "resnet_blocks": [1, 1, 1]}, 2),   # nano's
}
KEYS = ("presence_precision", "presence_recall", "colour_precision", "colour_recall", "shape_precision",
        "shape_recall", "position_size_mae", "seconds")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heldout", required=True, type=Path)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--scenes", type=int, default=10000)
    ap.add_argument("--arch", nargs="+", choices=sorted(ARCHS), default=["vit-p8", "resnet-w32"])
    a = ap.parse_args()

    from tarsier.trainers.tower import TowerArgs, pretrain_tower

    rows = {}
    for arch in a.arch:
        vision, pool = ARCHS[arch]
        with tempfile.TemporaryDirectory() as out:
            metrics = pretrain_tower(TowerArgs(out=out, steps=a.steps, scenes=a.scenes, heldout=str(a.heldout)),
                                     log=lambda m: None,
                                     config_overrides={"vision": vision, "projector": {"spatial_pool": pool}})
        rows[arch] = {k: metrics[k] for k in KEYS}
        print(json.dumps({"arch": arch, **rows[arch]}), flush=True)
    print(f"\n{a.steps} steps each | presence P / R | colour P / R | shape P / R | pos+size MAE | train s")
    for arch, m in rows.items():
        print(f"{arch:15s} | {m['presence_precision']:.2f} / {m['presence_recall']:.2f} | "
              f"{m['colour_precision']:.2f} / {m['colour_recall']:.2f} | {m['shape_precision']:.2f} / "
              f"{m['shape_recall']:.2f} | {m['position_size_mae']:.2f} | {m['seconds']:.0f}")


if __name__ == "__main__":
    main()
