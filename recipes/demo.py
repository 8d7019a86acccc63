#!/usr/bin/env python
"""The main job, end to end on the embedded synthetic data (no network).

    python recipes/demo.py [--data data/synthetic_waterbirds_64] [--out runs/demo]

Today: makes the synthetic Waterbirds twin (once), loads every split through `hrssm.data.load_waterbirds`, checks the
group structure, and writes a contact sheet and a grid of training view sequences. Training, export and the probe
table join this job as they are built.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hrssm.data import SPLITS, ViewCollator, ViewConfig, load_waterbirds, synthetic
from hrssm.data.contact_sheet import contact_sheet
from hrssm.data.schema import scaled_group_counts
from hrssm.viz import image_grid


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/synthetic_waterbirds_64", help="synthetic dataset folder (made if missing)")
    p.add_argument("--out", default="runs/demo", help="run folder for pictures and reports")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--scale", type=float, default=1.0, help="synthetic group counts x scale (1 = real counts)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    if not Path(args.data).exists():
        print(f"[1/3] generating the synthetic Waterbirds twin in {args.data} ...")
        columns = synthetic.generate(args.image_size, args.scale, args.seed)
        synthetic.write_save_to_disk(columns, args.data)
    else:
        print(f"[1/3] using the existing dataset {args.data}")

    print("[2/3] loading every split through hrssm.data.load_waterbirds")
    data = load_waterbirds(args.data, split=None, image_size=args.image_size)
    counts = {s: tuple(int(c) for c in np.bincount(data[s]["group"], minlength=4)) for s in SPLITS}
    print(synthetic.group_table(counts))
    expected = {s: scaled_group_counts(s, args.scale) for s in SPLITS}
    if counts != expected:
        print(f"warning: group counts differ from the Waterbirds table x {args.scale}: {expected}", file=sys.stderr)

    print("[3/3] pictures")
    contact_sheet(data["train"]).save(out / "contact_sheet.png")
    collate = ViewCollator(args.image_size, ViewConfig(num_views=4, mode="augment"), seed=args.seed)
    batch = collate([data["train"][i] for i in range(8)])
    image_grid(batch["views"]).save(out / "views.png")
    print(f"  {out / 'contact_sheet.png'}: samples of each group")
    print(f"  {out / 'views.png'}: 8 training images (rows) as 4 augmented views (columns), "
          f"tensor {tuple(batch['views'].shape)} in [{batch['views'].min():.2f}, {batch['views'].max():.2f}]")
    print(f"done in {time.perf_counter() - start:.1f} s (torch {torch.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
