"""Encode a Waterbirds split with an exported model and save the latents to .npz (the `hrssm-export-latents`
command; tools/export_latents.py runs the same).

    hrssm-export-latents --model runs/demo/export --data data/synthetic_waterbirds_64 --split test \\
        --out runs/demo/latents_test.npz

Arrays: features, h, z, s, label, place, group, img_id, plus metadata (model, config and weights hashes,
preprocessing). Images are preprocessed as the export records (its `preprocess` config); --crop-fraction overrides
the crop.
"""

from __future__ import annotations

import sys

from ..cli import cli_main
from . import model_and_data_parser


@cli_main
def main(argv: list[str] | None = None) -> int:
    from .. import __version__, load
    from ..data import load_waterbirds
    from ..latents import dataset_latents, model_hashes, save_latents

    p = model_and_data_parser(__doc__)
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--crop-fraction", type=float, default=None,
                   help="override the export's crop fraction (default: the one it was trained with)")
    args = p.parse_args(argv)
    enc = load(args.model, device=args.device, revision=args.revision)
    prep = enc.cfg.preprocessing()
    if args.crop_fraction is not None:
        prep["crop_fraction"] = args.crop_fraction
    ds = load_waterbirds(args.data, args.split, revision=args.data_revision, **prep)
    arrays = dataset_latents(enc, ds, args.batch_size)
    meta = {"model": str(args.model), **model_hashes(enc), "data": str(args.data),
            "split": args.split, "hrssm_version": __version__,
            "preprocessing": {**prep, "pixel_range": list(enc.cfg.preprocess.pixel_range)},
            "features": "[h, z's class probabilities, s of every cell in row-major order]"}
    path = save_latents(args.out, arrays, meta)
    print(f"wrote {len(ds)} latents ({arrays['features'].shape[1]} features each) to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
