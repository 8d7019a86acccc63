#!/usr/bin/env python
"""Decode saved latents back to images, as a PNG grid (8 per row).

    python tools/decode_latents.py runs/demo/latents_test.npz --model runs/demo/export --out grid.png --n 64
"""

from __future__ import annotations

import argparse
import sys

import hrssm
from hrssm.cli import cli_main
from hrssm.latents import decode_latents, load_latents
from hrssm.viz import image_grid


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("latents", help=".npz written by tools/export_latents.py")
    p.add_argument("--model", required=True, help="the export that encoded them (folder or hub repo id)")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--n", type=int, default=64, help="how many latents to decode")
    p.add_argument("--per-row", type=int, default=8)
    args = p.parse_args(argv)
    arrays, meta = load_latents(args.latents)
    model = hrssm.load_world_model(args.model)
    images = decode_latents(model, arrays, meta, n=args.n).clamp(-0.5, 0.5)
    rows = -(-len(images) // args.per_row)
    grid = images.new_zeros(rows * args.per_row, *images.shape[1:])  # black tiles fill the last row
    grid[: len(images)] = images
    image_grid(grid.reshape(rows, args.per_row, *images.shape[1:])).save(args.out)
    print(f"decoded {min(args.n, len(arrays['h']))} latents to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
