#!/usr/bin/env python
"""Does a probe read the bird from its shape or from its colour? The headline probe on the synthetic twin, split by
which palette each test bird was coloured from.

    python tools/colour_vs_shape.py --model runs/demo/export --data data/synthetic_waterbirds_64 [--features global]

The twin's two bird classes always differ by shape, and by colour for 75% of the birds: the other 25% are coloured
from the other class's palette (`hrssm.data.synthetic.own_palette`), so there only the shape tells the class. A probe
that reads shape scores the same on both kinds of bird; one that reads colour scores high on the first and below
chance (0.5) on the second, and its worst group cannot pass ~0.75 + 0.25 x (its other-palette accuracy). DFR as
published (docs/evaluation.md) is fit for the model's features (`--features`), its random-init twin and raw pixels,
once per probe seed, and its test accuracy is split by palette. Prints a table, writes colour_vs_shape.json to --out.
Needs the synthetic twin as generated (`--twin-seed`: the seed it was made with); the real Waterbirds has no
palettes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from hrssm.cli import cli_main
from hrssm.commands import default_output_dir, local_export, model_and_data_parser


def colour_vs_shape(feats: dict[str, dict[str, dict[str, np.ndarray]]], own_test: np.ndarray,
                    seeds: tuple[int, ...]) -> dict[str, list[dict[str, float]]]:
    """{feature set: [`palette_scores` per probe seed]} for every feature set of `feats` (`report.feature_sets`
    output), from the DFR probe of each probe seed; own_test: (N_test,) bool, `own_palette` of the test rows."""
    from hrssm.evaluation import dfr_probe, palette_scores

    out = {}
    for name, splits in feats.items():
        test = splits["test"]
        out[name] = [palette_scores(dfr_probe(splits["train"], splits["validation"], test, seeds=(seed,)).probe
                                    .predict(test["features"]), test["label"], test["group"], own_test)
                     for seed in seeds]
    return out


def summary(runs: list[dict[str, float]]) -> dict[str, float]:
    """{key: mean, key_std: std over the runs, seeds: how many}."""
    from hrssm.evaluation import PALETTE_KEYS, mean_and_std

    return {**mean_and_std(runs, PALETTE_KEYS), "seeds": len(runs)}


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = model_and_data_parser(__doc__)
    p.add_argument("--features", default="latents", help="what the model exports to the probe: latents, global or "
                   "tokens (`encode(features=...)`; the random init gets the same)")
    p.add_argument("--seeds", type=int, default=5, help="probe seeds (validation splits, balanced subsamples)")
    p.add_argument("--twin-seed", type=int, default=0, help="the seed the synthetic twin was made with (default 0, "
                   "tools/make_synthetic_waterbirds.py's)")
    p.add_argument("--out", default=None, help="folder for colour_vs_shape.json (default: eval_colour/ beside a "
                   "local export, else eval_colour-OWNER--NAME/ here)")
    args = p.parse_args(argv)
    import hrssm
    from hrssm._io import atomic_write_json
    from hrssm.data import SPLITS, load_waterbirds
    from hrssm.data.counterfactual import twin_palettes
    from hrssm.encoder import check_features
    from hrssm.evaluation import palette_table
    from hrssm.report import feature_sets

    check_features(args.features)
    own = twin_palettes(load_waterbirds(args.data, "test", revision=args.data_revision), "test", args.twin_seed)
    model = hrssm.load(args.model, device=args.device, revision=args.revision)
    splits = {s: load_waterbirds(args.data, s, revision=args.data_revision, **model.cfg.preprocessing())
              for s in SPLITS}
    feats = feature_sets(model, splits, args.batch_size, progress=False, features=args.features)
    runs = colour_vs_shape(feats, own, tuple(range(args.seeds)))
    other_share = float((~own).mean())
    print(palette_table(runs, other_share))
    out = Path(args.out) if args.out else default_output_dir(args.model, local_export(args.model), "eval_colour")
    payload = {"features": args.features, "other_palette_share": other_share,
               "results": {name: summary(r) for name, r in runs.items()}}
    print(f"wrote {atomic_write_json(out / 'colour_vs_shape.json', payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
