#!/usr/bin/env python
"""The supervised reference: how well a network finds the bird when it is trained with labels.

    python tools/supervised_reference.py --data data/synthetic_waterbirds_64 --config recipes/configs/demo.yaml
    python tools/supervised_reference.py --data data/synthetic_waterbirds_64 --model.image_size 64 \\
        --model.encoder.patch_size 8            # config overrides, as hrssm-train takes them
    python tools/supervised_reference.py --data data/synthetic_waterbirds_64 --arch cnn --image-size 64

Trains on a random half of the test split (its background is independent of the bird: no shortcut) and scores the
other half, for each of --seeds seeds (`hrssm.supervised_reference`). `--arch encoder` (default) is the config's ViT
encoder at the config's image size with a linear head: the ceiling its self-supervised export can approach with a
linear probe. `--arch cnn` is issue 12's small 4-layer CNN at --image-size. On the synthetic twin (as generated,
`--twin-seed`) the bird's accuracy is also split by palette, as tools/colour_vs_shape.py splits a probe's: birds
coloured from their own class's palette, and from the other's (only the shape tells those). Prints the tables and
writes supervised_reference.json to --out. Time per step of 128 images on a 2-core CPU (matmul ~120 GFLOP/s): ~0.5 s for
demo_rgb32.yaml's encoder at 32 px, ~0.57 s for it at 64 px with patch 8, ~1.7 s for the CNN at 64 px; 1500 steps a
seed by default.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from hrssm.cli import cli_main
from hrssm.commands import add_data_arguments, twin_test_palettes


def table(result: dict) -> str:
    """The result as a markdown table: one row, mean ± std over the seeds."""
    from hrssm.data.schema import GROUP_NAMES
    from hrssm.evaluation import wilds_group_names

    runs = result["runs"]

    def pm(key: str) -> str:
        values = [r[key] for r in runs]
        return f"{np.mean(values):.3f} ± {np.std(values):.3f}"

    groups = [f"acc_{name}" for name in wilds_group_names()]  # GroupScores.wilds' keys, in GROUP_NAMES' order
    header = "| network | input | steps | target | worst group | average | " + " | ".join(GROUP_NAMES) + " |"
    return "\n".join([header, "| --- " * (6 + len(groups)) + "|",
                      f"| {result['network']} | {result['image_size']} px | {result['steps']} | {result['target']} | "
                      f"{pm('acc_wg')} | {pm('acc_avg')} | " + " | ".join(pm(g) for g in groups) + " |"])


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    add_data_arguments(p)
    p.add_argument("--config", default="recipes/configs/demo.yaml",
                   help="training config whose encoder --arch encoder trains (its model.* keys)")
    p.add_argument("--arch", default="encoder", choices=("encoder", "cnn"))
    p.add_argument("--image-size", type=int, default=None,
                   help="input side for --arch cnn (default 64); --arch encoder takes the config's model.image_size")
    p.add_argument("--target", default="label", choices=("label", "place"), help="the bird, or the background")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seeds", type=int, default=3, help="how many random halves (one network each)")
    p.add_argument("--twin-seed", type=int, default=0, help="the seed the synthetic twin was made with (for the "
                   "palette split; skipped on other data)")
    p.add_argument("--out", default="runs/supervised_reference", help="folder for supervised_reference.json")
    args, overrides = p.parse_known_args(argv)  # the rest: --section.key VALUE overrides of --config
    from hrssm._io import atomic_write_json
    from hrssm.data import load_waterbirds, preprocess
    from hrssm.supervised_reference import ReferenceSettings, supervised_reference
    from hrssm.train_config import TrainConfig

    settings = ReferenceSettings(arch=args.arch, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                 target=args.target)
    cfg = None
    if overrides and args.arch != "encoder":
        raise ValueError(f"config overrides {overrides} are for --arch encoder (the config's encoder)")
    if args.arch == "encoder":
        if args.image_size is not None:
            raise ValueError("--image-size is for --arch cnn; the encoder's input size is the config's "
                             "model.image_size (edit the config)")
        cfg = TrainConfig.load(args.config, overrides).model_config()
        e = cfg.encoder
        size = cfg.image_size
        network = (f"{Path(args.config).stem}'s encoder ({e.depth} blocks, width {e.width}, patch {e.patch_size}, "
                   f"{e.stem} stem)")
        pp = cfg.preprocessing()
    else:
        size = args.image_size or 64
        network, pp = "4-layer CNN", {"image_size": size}
    ds = load_waterbirds(args.data, "test", revision=args.data_revision, **pp)
    images = preprocess(ds["image"], **pp)  # (N, 3, S, S) in [-0.5, 0.5]
    labels = {key: np.asarray(ds[key], dtype=np.int64) for key in ("label", "place", "group")}
    print(f"training {args.seeds} x {network} at {size} px for {args.steps} steps on half of {len(ds)} test images")
    own = twin_test_palettes(args.data, args.data_revision, args.twin_seed) if args.target == "label" else None
    runs = supervised_reference(images, labels, settings, tuple(range(args.seeds)), cfg, progress=True)
    result = {"network": network, "arch": args.arch, "image_size": size, "steps": args.steps,
              "batch_size": args.batch_size, "lr": args.lr, "target": args.target, "data": args.data,
              "config": args.config if cfg is not None else None, "overrides": overrides,
              "runs": [{"seed": seed, **r.scores.wilds()} for seed, r in enumerate(runs)],
              "acc_wg": float(np.mean([r.scores.worst_group for r in runs])),
              "acc_wg_std": float(np.std([r.scores.worst_group for r in runs]))}
    print(table(result))
    if own is not None:
        from hrssm.evaluation import palette_scores, palette_table

        result["palette"] = [palette_scores(r.pred, labels["label"][r.scored], labels["group"][r.scored],
                                            own[r.scored]) for r in runs]
        print(palette_table({network: result["palette"]}, float((~own).mean())))
    print(f"wrote {atomic_write_json(Path(args.out) / 'supervised_reference.json', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
