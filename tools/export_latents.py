#!/usr/bin/env python
"""Encode a Waterbirds split with an exported model and save the latents to .npz.

    python tools/export_latents.py --model runs/demo/export --data data/synthetic_waterbirds_64 --split test \
        --out runs/demo/latents_test.npz

Arrays: features, h, z, s, label, place, group, img_id, plus metadata (model, config and weights hashes,
preprocessing).
"""

from __future__ import annotations

import argparse
import sys

import hrssm
from hrssm.cli import cli_main
from hrssm.data import load_waterbirds
from hrssm.latents import dataset_latents, model_hashes, save_latents


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="export folder, run folder or hub repo id")
    p.add_argument("--data", required=True, help="Waterbirds source (hub id, save_to_disk dir, original folder)")
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--crop-fraction", type=float, default=1.0)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    enc = hrssm.load(args.model, device=args.device)
    size = enc.cfg.image_size
    ds = load_waterbirds(args.data, args.split, image_size=size, crop_fraction=args.crop_fraction)
    arrays = dataset_latents(enc, ds, args.batch_size)
    meta = {"model": str(args.model), **model_hashes(enc), "data": str(args.data),
            "split": args.split, "hrssm_version": hrssm.__version__,
            "preprocessing": {"image_size": size, "crop_fraction": args.crop_fraction, "pixel_range": [-0.5, 0.5]},
            "features": "[h, z, s of every cell in row-major order]"}
    path = save_latents(args.out, arrays, meta)
    print(f"wrote {len(ds)} latents ({arrays['features'].shape[1]} features each) to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
