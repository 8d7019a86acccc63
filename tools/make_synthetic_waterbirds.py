#!/usr/bin/env python
"""Generate the synthetic Waterbirds twin offline: a save_to_disk dataset (and optionally the original folder layout).

    python tools/make_synthetic_waterbirds.py --out data/synthetic_waterbirds_64 --image-size 64 --scale 1
    python tools/make_synthetic_waterbirds.py --out data/wb224 --image-size 224 --folder data/wb224_folder \
        --contact-sheet docs/synthetic_waterbirds.png

Same seed, same bytes. Group counts are the real Waterbirds ones times --scale (each group keeps at least 1 image).
"""

from __future__ import annotations

import argparse
import sys
import time

from hrssm.cli import cli_main
from hrssm.data import synthetic
from hrssm.data.contact_sheet import contact_sheet
from hrssm.data.schema import SPLITS, scaled_group_counts


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="save_to_disk directory to write")
    p.add_argument("--image-size", type=int, default=64, help="square image side in pixels (default 64)")
    p.add_argument("--scale", type=float, default=1.0, help="real group counts x this (1 = 11,788 images)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folder", default=None, help="also write the original layout (metadata.csv + JPEGs) here")
    p.add_argument("--contact-sheet", default=None, help="also save a PNG of samples per group (train split)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: CPU count, at most 8)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.quiet:
        import datasets

        datasets.disable_progress_bars()

    counts = {s: scaled_group_counts(s, args.scale) for s in SPLITS}
    print(f"Synthetic Waterbirds {args.image_size}x{args.image_size}, scale {args.scale}, seed {args.seed}:")
    print(synthetic.group_table(counts))
    start = time.perf_counter()
    columns = synthetic.generate(args.image_size, args.scale, args.seed, args.workers, progress=not args.quiet)
    dd = synthetic.write_save_to_disk(columns, args.out, overwrite=args.overwrite)
    if args.folder:
        synthetic.write_original_folder(columns, args.folder, overwrite=args.overwrite)
    print(f"wrote {sum(len(d) for d in dd.values())} images to {args.out}"
          + (f" and {args.folder}" if args.folder else "") + f" in {time.perf_counter() - start:.1f} s")
    if args.contact_sheet:
        contact_sheet(dd["train"]).save(args.contact_sheet)
        print(f"contact sheet: {args.contact_sheet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
