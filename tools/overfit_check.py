#!/usr/bin/env python
"""Overfit a model preset on N synthetic images and print reconstruction quality and the collapse verdict.

    python tools/overfit_check.py                                   # tiny, 64 images at 64x64, 800 steps
    python tools/overfit_check.py --model.loss.recon_scale 1        # the weak summed-SSE weight
    python tools/overfit_check.py --model.loss.free_nats_global 1e4 --model.loss.free_nats_local 1e4 \
        --model.loss.recon_scale 1e-4

Model keys are overridden as in training (--model.KEY VALUE; `hrssm-train --help` lists them).

With one view per image (--views 1, the default) the contrastive term is off: SimCLR compares distinct views.
A healthy model ends with recon_std_ratio > 0.7 and PSNR well above the mean image's (psnr_gain).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

from hrssm._config_utils import merge
from hrssm.cli import cli_main
from hrssm.commands.config_args import model_overrides
from hrssm.config import ModelConfig
from hrssm.data import ViewConfig, synthetic
from hrssm.sanity import overfit

KEYS = ("recon_std_ratio", "psnr", "psnr_mean_image", "psnr_gain", "kl_global_raw", "kl_local_raw",
        "kl_global_floor_share", "kl_local_floor_share", "active_global", "active_local")


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--views", type=int, default=1, help="views per image (T)")
    p.add_argument("--mode", default="repeat", choices=["repeat", "augment"])
    p.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    args, rest = p.parse_known_args(argv)
    single = {"loss": {"contrastive": "none"}} if args.views == 1 else {}  # SimCLR compares two distinct views
    cfg = ModelConfig.preset(args.preset, **merge(single, {"image_size": args.image_size, **model_overrides(rest)}))
    images = synthetic.train_images(args.images, args.image_size, scale=max(0.02, args.images / 4795))
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if args.views == 1 else "default")
        res = overfit(cfg, images, args.steps, args.batch_size, args.lr, ViewConfig(num_views=args.views,
                                                                                      mode=args.mode))
    seconds = time.perf_counter() - start
    if args.json:
        print(json.dumps({"overrides": rest, "steps": args.steps, "seconds": round(seconds, 1),
                          "train": {k: res.train.get(k) for k in KEYS}, "eval": {k: res.eval.get(k) for k in KEYS},
                          "collapse": res.report.signals}))
        return 0
    print(f"{args.preset} {args.image_size}px, {images.shape[0]} images, {args.steps} steps "
          f"({seconds:.0f} s), overrides {' '.join(rest) or 'none'}")
    print(f"{'metric':<22}{'train (last 20)':>16}{'eval':>10}")
    for k in KEYS:
        if k in res.train:
            print(f"{k:<22}{res.train[k]:>16.3f}{res.eval.get(k, float('nan')):>10.3f}")
    print(res.report.message or "no collapse signal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
