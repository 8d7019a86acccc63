#!/usr/bin/env python
"""How well do exports reconstruct held-out images? The reconstruction figures of `hrssm-eval`, on any split.

    python tools/recon_quality.py --model runs/a/export runs/b/export --data data/synthetic_waterbirds_64

Each image is encoded once (deterministic latents, the export's own preprocessing) and decoded from those latents,
as `hrssm-eval` does on test: recon_std_ratio (1: as much contrast as the images; ~0: gray), PSNR, the PSNR of the
split's mean image (the floor to beat), their difference (psnr_gain) and seam_ratio (1: no block grid at patch
borders). The default split is validation, where settings are chosen; `--split test` gives `hrssm-eval`'s figures.
Prints a table, writes recon_quality.json to --out.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hrssm.cli import cli_main
from hrssm.commands import model_and_data_parser

KEYS = ("recon_std_ratio", "psnr", "psnr_mean_image", "psnr_gain", "seam_ratio")


def recon_quality(model, ds, images: int = 1024, batch_size: int = 128) -> dict[str, float]:
    """The reconstruction metrics (`KEYS`) of a WorldModel on the first `images` images of `ds` (a Waterbirds split
    preprocessed as the model records), computed as `hrssm-eval` computes them."""
    from hrssm.evaluation import encode_dataset

    if getattr(model, "decoder", None) is None:
        raise ValueError("this model has no pixel decoder (loss.objective='latent_prediction'): it has no "
                         "reconstructions to measure")
    n = min(images, len(ds))
    out = encode_dataset(model, ds.select(range(n)), batch_size, with_recon_metrics=True, max_recon_images=n)
    return {key: float(out[key]) for key in KEYS if key in out}


def table(results: dict[str, dict[str, float]]) -> str:
    lines = ["| model | " + " | ".join(KEYS) + " |", "| --- |" + " --- |" * len(KEYS)]
    for name, metrics in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{metrics[k]:.3f}" if k in metrics else "–" for k in KEYS) + " |")
    return "\n".join(lines)


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = model_and_data_parser(__doc__, many_models=True)
    p.add_argument("--split", default="validation", choices=("train", "validation", "test"))
    p.add_argument("--images", type=int, default=1024, help="how many images of the split (the first ones)")
    p.add_argument("--out", default="recon_quality", help="folder for recon_quality.json")
    args = p.parse_args(argv)
    if args.images < 1:
        p.error(f"--images must be >= 1, got {args.images}")
    from hrssm import load_world_model
    from hrssm._io import atomic_write_json
    from hrssm.data import load_waterbirds

    results: dict[str, dict[str, float]] = {}
    for source in args.model:
        model = load_world_model(source, device=args.device, revision=args.revision)
        ds = load_waterbirds(args.data, args.split, revision=args.data_revision, **model.cfg.preprocessing())
        results[source] = recon_quality(model, ds, args.images, args.batch_size)
    images = min(args.images, len(ds))  # the split may hold fewer than --images
    print(f"reconstruction of the first {images} {args.split} images")
    print(table(results))
    out = atomic_write_json(Path(args.out) / "recon_quality.json",
                            {"split": args.split, "images": images, "models": results})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
