#!/usr/bin/env python
"""Evaluate an exported hrssm model on Waterbirds: linear probes, worst-group accuracy, latent maps, a report.

    python recipes/eval_probe.py --model runs/demo/export --data data/synthetic_waterbirds_64 [--out runs/demo/eval]

1. encodes train / validation / test (deterministic latents, one view each)
   and, as floors, the same images through a random-init model of the same config and as raw 32x32 pixels
2. probes (hrssm/evaluation.py; hyperparameters chosen on validation worst-group accuracy, never on test): the
   bird by DFR as published (Kirichenko et al. 2022; the headline), by DFR on half of validation, fit on train
   (the shortcut), by kNN on balanced validation; the background (place)
3. prints average, worst-group and adjusted-average accuracy (mean ± std over probe seeds) for the model and its
   floors, and every probe's per-group accuracies; metrics: hrssm/metrics/group_accuracy.py (an `evaluate` module)
4. writes eval.json, report.md and the pictures (test reconstructions, per-group bars, t-SNE / UMAP of test latents)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import hrssm
from hrssm.cli import cli_main
from hrssm.report import evaluate_model


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="export folder, run folder or hub repo id")
    p.add_argument("--data", required=True, help="Waterbirds source (hub id, save_to_disk dir, original folder)")
    p.add_argument("--out", default=None, help="output folder (default: eval/ beside the export)")
    p.add_argument("--no-pictures", action="store_true", help="skip the PNGs (t-SNE takes ~30 s on 2 cores)")
    p.add_argument("--no-floors", action="store_true", help="skip the random-init and raw-pixel floors")
    p.add_argument("--seeds", type=int, default=5, help="probe seeds (validation splits, balanced subsamples)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else Path(args.model).resolve().parent / "eval"
    model = hrssm.load_world_model(args.model, device=args.device)
    result = evaluate_model(model, args.data, out, pictures=not args.no_pictures, batch_size=args.batch_size,
                            floors=not args.no_floors, seeds=tuple(range(args.seeds)),
                            report_intro=[f"Model: `{args.model}`; data: `{args.data}`.", ""])
    print("\n" + result.table + "\n")
    print(f"report: {out / 'report.md'}   numbers: {out / 'eval.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
