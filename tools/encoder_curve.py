#!/usr/bin/env python
"""How the encoder's bird reading grows while it trains alone on the config's contrastive objective: a learning curve
of the headline probe on the encoder's mean patch token, split by palette on the synthetic twin.

    python tools/encoder_curve.py --data data/synthetic_waterbirds_64 --steps 700 --every 350
    python tools/encoder_curve.py --data data/synthetic_waterbirds_64 --views.hue 0.2   # --section.key overrides

The encoder and projector train as in the contrastive warm-up (`optim.contrastive_warmup_steps`; the config's views,
at `optim.contrastive_warmup_image_size` when it is set, as demo.yaml's 32 px; its batch and optimizer, the
learning-rate schedule spanning --steps), with no RSSM and no decoder: about half the cost of
a world-model step, so a view or objective can be screened in minutes before a full run. At step 0 (the random init,
the floor) and every --every steps, DFR as published (docs/evaluation.md) is fit on the mean patch tokens of train /
validation / test, once per probe seed, and the table gets a row: the validation worst group that chose C (compare
settings on it, never on test), the test worst group and, on the synthetic twin as generated (`--twin-seed`), the
accuracy on own-palette and other-palette birds (tools/colour_vs_shape.py: only the shape tells the class of the
latter). Raw pixels get the same row once. Writes encoder_curve.json to --out, rewritten after every row. Runs on
the CPU (one process), as a quick screen; full runs go through hrssm-train.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from hrssm.cli import cli_main
from hrssm.commands import add_data_arguments, twin_test_palettes


def probe_row(feats: dict[str, dict[str, np.ndarray]], own: np.ndarray | None, seeds: tuple[int, ...]
              ) -> dict[str, float]:
    """DFR on feats {split: encode_dataset output} once per seed: the mean and std over seeds of the validation
    worst group that chose C (`val_wg`), the test worst group (`acc_wg`) and, with `own` (N_test,) palettes, the
    `palette_scores` keys."""
    from hrssm.evaluation import dfr_probe, mean_and_std, palette_scores

    runs = []
    for seed in seeds:
        r = dfr_probe(feats["train"], feats["validation"], feats["test"], seeds=(seed,))
        row = {"val_wg": r.selection_worst_group[0], "acc_wg": r.runs[0].worst_group}
        if own is not None:
            test = feats["test"]
            row |= palette_scores(r.probe.predict(test["features"]), test["label"], test["group"], own)
        runs.append(row)
    return mean_and_std(runs)


COLUMNS = {"val_wg": "validation: worst group (chose C)", "acc_wg": "test: worst group",
           "acc_own_palette": "own-palette birds", "acc_other_palette": "other-palette birds"}


def table(rows: list[dict]) -> str:
    """The rows (step or label, then mean ± std of each column present) as a markdown table."""
    keys = [k for k in COLUMNS if k in rows[0]]
    lines = ["| step | " + " | ".join(COLUMNS[k] for k in keys) + " |", "| --- |" + " --- |" * len(keys)]
    for r in rows:
        lines.append(f"| {r['step']} | " + " | ".join(f"{r[k]:.3f} ± {r[k + '_std']:.3f}" for k in keys) + " |")
    return "\n".join(lines)


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    add_data_arguments(p)
    p.add_argument("--config", default="recipes/configs/demo.yaml", help="training config (its model, views, "
                   "optim keys); it needs loss.contrastive on loss.contrastive_input: tokens")
    p.add_argument("--steps", type=int, default=700, help="encoder-only steps")
    p.add_argument("--every", type=int, default=350, help="probe every this many steps (and at step 0)")
    p.add_argument("--seeds", type=int, default=2, help="probe seeds")
    p.add_argument("--twin-seed", type=int, default=0, help="the seed the synthetic twin was made with (for the "
                   "palette split; skipped on other data)")
    p.add_argument("--out", default="runs/encoder_curve", help="folder for encoder_curve.json")
    args, overrides = p.parse_known_args(argv)  # the rest: --section.key VALUE overrides of --config
    if args.steps < 1 or args.every < 1:
        raise ValueError(f"--steps and --every must be positive, got {args.steps} and {args.every}")
    import torch
    from accelerate import Accelerator

    from hrssm._io import atomic_write_json
    from hrssm.data import SPLITS, load_waterbirds
    from hrssm.evaluation import encode_dataset, pixel_features
    from hrssm.optim import make_optimizer
    from hrssm.report import pixels_name
    from hrssm.train_config import TrainConfig
    from hrssm.trainer import make_data, warmup_views
    from hrssm.world_model import WorldModel

    # the schedule spans --steps; every step is a warm-up step (contrastive_only), whatever the config's split
    cfg = TrainConfig.load(args.config, [*overrides, "--data.source", args.data, "--optim.max_steps", str(args.steps),
                                         "--optim.contrastive_warmup_steps", "0"])
    torch.manual_seed(cfg.seed)
    model_cfg = cfg.model_config()
    model = WorldModel(model_cfg)
    if model.projector is None or model_cfg.loss.contrastive_input != "tokens":
        raise ValueError(f"{args.config} trains no contrastive term on the encoder's tokens: set "
                         "--model.loss.contrastive simclr (or barlow) and --model.loss.contrastive_input tokens")
    collate, loader, _ = make_data(cfg, model_cfg, Accelerator(cpu=True))
    optimizer, scheduler = make_optimizer(model, cfg.optim)
    splits = {s: load_waterbirds(args.data, s, revision=args.data_revision, **model_cfg.preprocessing())
              for s in SPLITS}
    own = twin_test_palettes(args.data, args.data_revision, args.twin_seed)
    seeds = tuple(range(args.seeds))
    result = {"config": args.config, "overrides": overrides, "data": args.data, "steps": args.steps,
              "seeds": args.seeds, "rows": []}
    out = Path(args.out) / "encoder_curve.json"

    def evaluate(step: int, seconds: float) -> None:
        model.eval()
        feats = {s: encode_dataset(model, d, features="tokens") for s, d in splits.items()}
        model.train()
        result["rows"].append({"step": step, "train_seconds": round(seconds, 2), **probe_row(feats, own, seeds)})
        atomic_write_json(out, result)
        print(table(result["rows"][-1:]).splitlines()[-1], flush=True)

    pixels = {s: pixel_features(d) for s, d in splits.items()}
    result["pixels"] = {"step": pixels_name(), **probe_row(pixels, own, seeds)}
    print(f"encoder-only {model_cfg.loss.contrastive} on the mean token, {args.steps} steps of "
          f"{cfg.optim.batch_size} images x {cfg.views.num_views} views; DFR on the token, {args.seeds} probe seeds:")
    print(table([result["pixels"]]))
    evaluate(0, 0.0)
    step, seconds, epoch = 0, 0.0, 0
    while step < args.steps:
        collate.set_epoch(epoch)  # new views every epoch, as the trainer draws them
        epoch += 1
        for batch in loader:
            start = time.perf_counter()
            views = warmup_views(batch["views"], cfg.optim)  # at optim.contrastive_warmup_image_size, if set
            loss = model(views, batch["actions"], contrastive_only=True).loss
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the contrastive loss is {loss.item()} at step {step + 1}: lower "
                                         "--optim.lr")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step, seconds = step + 1, seconds + time.perf_counter() - start
            if step % args.every == 0 or step == args.steps:
                evaluate(step, seconds)
            if step == args.steps:
                break
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
