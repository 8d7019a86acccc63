#!/usr/bin/env python
"""How strong reconstruction's gradient on the encoder's tokens is against SimCLR's, in the first training steps, and
the `loss.contrastive_scale` that gives a model the balance the `tiny` preset's 2e4 gives it.

    python tools/gradient_balance.py --preset base --batch-size 8 --steps 40     # base vs tiny, same batch and steps
    python tools/gradient_balance.py --preset tiny --model.image_size 32          # model keys as in hrssm-train

Reconstruction is a sum over pixels and SimCLR a mean over images, so their balance moves with the image size, the
token count and the decoder: a contrastive scale tuned at 64 px means little at 224. Each model trains `--steps`
AdamW steps (lr 1e-3) with `loss.contrastive_scale = 1` on synthetic twin images in the main job's SimCLR views (two
views: crops of 0.3-1 of the area, colour jitter 0.4, grayscale 0.2, object paste 0.5); every 5th step the norm of
the gradient reaching the encoder's tokens from reconstruction (`grad_encoder_from_recon`) is divided by
SimCLR's. The median of those ratios, target over reference, times tiny's scale (2e4) is the suggested scale. The
ratios swing by 10x from step to step: read the result to an order of magnitude.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import warnings

import torch

from hrssm._config_utils import merge
from hrssm.cli import cli_main
from hrssm.commands.config_args import model_overrides
from hrssm.config import ModelConfig
from hrssm.data import synthetic
from hrssm.data.views import ViewConfig, make_views
from hrssm.world_model import WorldModel

REFERENCE = "tiny"  # the preset whose contrastive_scale was chosen on validation (issue 12)
SIMCLR_VIEWS = ViewConfig(num_views=2, mode="augment", crop_scale=(0.3, 1.0), brightness=0.4, contrast=0.4,
                          saturation=0.4, grayscale=0.2, paste=0.5)


def gradient_ratios(cfg: ModelConfig, batch_size: int, steps: int, seed: int = 0) -> list[float]:
    """Reconstruction's gradient norm on the encoder tokens over SimCLR's (at scale 1), every 5th of `steps`."""
    if cfg.loss.contrastive == "none" or cfg.loss.contrastive_input != "tokens":
        raise ValueError("the balance is measured for a contrastive loss on the tokens: set "
                         "--model.loss.contrastive simclr --model.loss.contrastive_input tokens")
    if cfg.loss.objective != "reconstruction":
        raise ValueError(f"the balance is reconstruction's against the contrastive term; model.loss.objective="
                         f"{cfg.loss.objective!r} has no reconstruction: use --model.loss.objective reconstruction")
    cfg = ModelConfig.from_dict(merge(cfg.to_dict(), {"loss": {"contrastive_scale": 1.0}}))
    n = 4 * batch_size
    images = synthetic.train_images(n, cfg.image_size, scale=max(0.01, n / 4795), seed=seed)
    torch.manual_seed(seed)
    model = WorldModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    ratios = []
    for step in range(steps):
        idx = torch.randint(0, images.shape[0], (batch_size,), generator=gen)
        views, actions = make_views(images[idx], SIMCLR_VIEWS, generator=gen)
        measure = step % 5 == 4
        out = model(views, actions, mean_image=images.mean(0), grad_diagnostics=measure)
        if measure:  # grad_encoder_from_recon: every term but the KL, SimCLR's (scale 1, ~1e-3 of it) included
            _, tokens = model.encoder(views.flatten(0, 1))
            simclr = model._contrastive(model._mean_tokens(tokens, views))[0]
            g_simclr = torch.autograd.grad(simclr, tokens)[0]
            ratios.append(float(out.metrics["grad_encoder_from_recon"]) / float(g_simclr.norm()))
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
    return ratios


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--preset", default="base")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=40, help="training steps per model (a ratio every 5th)")
    p.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    args, rest = p.parse_known_args(argv)
    if args.steps < 5:
        raise ValueError(f"--steps={args.steps}: the ratio is read every 5th step, use --steps 5 or more")
    target = ModelConfig.preset(args.preset, **model_overrides(rest))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = gradient_ratios(ModelConfig.preset(REFERENCE), args.batch_size, args.steps)
        got = gradient_ratios(target, args.batch_size, args.steps)
    ref_median, got_median = statistics.median(ref), statistics.median(got)
    ref_scale = ModelConfig.preset(REFERENCE).loss.contrastive_scale
    result = {"preset": args.preset, "overrides": rest, "image_size": target.image_size,
              "batch_size": args.batch_size, "steps": args.steps, "reference": REFERENCE,
              "reference_ratios": ref, "ratios": got, "reference_median": ref_median, "median": got_median,
              "suggested_contrastive_scale": ref_scale * got_median / ref_median,
              "configured_contrastive_scale": target.loss.contrastive_scale}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"reconstruction / SimCLR gradient on the encoder tokens, {args.steps} steps of batch {args.batch_size}")
    for name, size, ratios in ((REFERENCE, 64, ref), (args.preset, target.image_size, got)):
        print(f"  {name:<6}{size:>4} px  median {statistics.median(ratios):10.3g}   "
              f"(min {min(ratios):.3g}, max {max(ratios):.3g})")
    print(f"suggested loss.contrastive_scale: {result['suggested_contrastive_scale']:.3g} "
          f"({REFERENCE}'s {ref_scale:g} x the ratio of medians); configured: "
          f"{target.loss.contrastive_scale:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
