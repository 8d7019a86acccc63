#!/usr/bin/env python
"""How an hrssm training step grows with image size (tokens) at fixed T, and with T at a fixed size.

    python benchmarks/bench_scaling.py --quick          # CPU: sizes 64..192, T 1..8 at 64, about a minute
    python benchmarks/bench_scaling.py --sizes 64 128 224 320 --views-list 1 2 4 8 --views-size 224

The goal is step time roughly linear in pixels at fixed patch size (encoder, local level and decoder are per
token; attention is quadratic in tokens, which shows at large sizes) and linear in T (one batched encoder/decoder
pass over B*T views; only the recurrent core loops over T). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train_step import BATCH_OF_TWO, model_config, time_steps, write_results  # noqa: E402

from hrssm.world_model import WorldModel  # noqa: E402


def run(size: int, views: int, args) -> dict:
    torch.manual_seed(0)
    cfg = model_config(size, args.preset)
    model = WorldModel(cfg)
    v = torch.rand(args.batch, views, 3, size, size) - 0.5
    a = torch.zeros(args.batch, views, 1)
    t = time_steps(model, v, a, args.steps, args.warmup, None)
    return {"size": size, "views": views, "tokens": (size // cfg.encoder.patch_size) ** 2, "step_s": t.seconds,
            "ms_per_view": 1000 * t.seconds / (args.batch * views), "peak_mb": t.peak_mb}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="base")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 224, 320])
    p.add_argument("--views-list", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--views-size", type=int, default=128, help="image size of the T sweep")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="benchmarks/results/bench_scaling.json")
    args = p.parse_args(argv)
    if args.batch < 2:
        p.error(f"--batch {args.batch}: {BATCH_OF_TWO}")
    warnings.filterwarnings("ignore", message="sequences of length 1")  # T = 1 is measured on purpose
    if args.quick:
        args.sizes, args.views_list, args.views_size = [64, 128, 192], [1, 2, 4, 8], 64
    by_size = [run(s, 2, args) for s in args.sizes]
    by_views = [run(args.views_size, t, args) for t in args.views_list]
    base = by_size[0]
    print(f"{'size':>5} {'tokens':>7} {'step s':>8} {'ms/view':>8} {'x time':>7} {'x pixels':>9} {'peak MB':>8}")
    for r in by_size:
        print(f"{r['size']:>5} {r['tokens']:>7} {r['step_s']:>8.3f} {r['ms_per_view']:>8.1f} "
              f"{r['step_s'] / base['step_s']:>7.2f} {(r['size'] / base['size']) ** 2:>9.2f} {r['peak_mb']:>8.0f}")
    print(f"\nT sweep at {args.views_size}x{args.views_size}, batch {args.batch}:")
    print(f"{'T':>3} {'step s':>8} {'ms/view':>8} {'x time':>7}")
    for r in by_views:
        ratio = r["step_s"] / by_views[0]["step_s"]
        print(f"{r['views']:>3} {r['step_s']:>8.3f} {r['ms_per_view']:>8.1f} {ratio:>7.2f}")
    write_results(args.out, {"preset": args.preset, "batch": args.batch, "by_size": by_size, "by_views": by_views,
                             "threads": torch.get_num_threads()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
