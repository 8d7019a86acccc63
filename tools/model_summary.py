#!/usr/bin/env python
"""Parameter counts per module and FLOPs per image (one view) of a model preset.

    python tools/model_summary.py --preset tiny
    python tools/model_summary.py --preset base --model.rssm.local_grid 14    # model keys as in hrssm-train

FLOPs are counted with torch.utils.flop_counter (matmuls, convolutions, attention), for the forward pass of the
training loss and for forward + backward, with 2 images of T = 2 views (reported per view).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

from hrssm.cli import cli_main
from hrssm.commands.config_args import model_overrides
from hrssm.config import ModelConfig
from hrssm.world_model import WorldModel


def summarize(cfg: ModelConfig, views: int = 2) -> dict:
    model = WorldModel(cfg)
    params = {name: sum(p.numel() for p in child.parameters() if p.requires_grad)
              for name, child in model.named_children()}
    batch = 2  # a contrastive loss needs two images to tell apart
    x = torch.rand(batch, views, cfg.channels, cfg.image_size, cfg.image_size) - 0.5
    a = torch.zeros(batch, views, cfg.action_dim)
    with FlopCounterMode(display=False) as fwd:
        out = model(x, a)
    with FlopCounterMode(display=False) as both:
        model(x, a).loss.backward()
    return {"params": params, "params_total": sum(params.values()),
            "gflops_forward_per_image": fwd.get_total_flops() / (batch * views) / 1e9,
            "gflops_train_step_per_image": both.get_total_flops() / (batch * views) / 1e9,
            "loss_finite": bool(torch.isfinite(out.loss))}


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--json", action="store_true")
    args, rest = p.parse_known_args(argv)
    cfg = ModelConfig.preset(args.preset, **model_overrides(rest))
    s = summarize(cfg)
    if args.json:
        print(json.dumps({"preset": args.preset, "image_size": cfg.image_size, **s}))
        return 0
    print(f"{args.preset}: {cfg.image_size}x{cfg.image_size}, patch {cfg.encoder.patch_size}, "
          f"local grid {cfg.rssm.local_grid}")
    for name, n in s["params"].items():
        print(f"  {name:<16}{n / 1e6:>9.3f} M")
    print(f"  {'total':<16}{s['params_total'] / 1e6:>9.3f} M")
    print(f"  forward       {s['gflops_forward_per_image']:.3f} GFLOP / image")
    print(f"  train step    {s['gflops_train_step_per_image']:.3f} GFLOP / image (forward + backward)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
