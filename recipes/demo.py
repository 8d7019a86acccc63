#!/usr/bin/env python
"""The main job, end to end on the embedded synthetic data (no network, ~5 minutes on a 2-core CPU):

    python recipes/demo.py [--section.key value ...]      # overrides go to recipes/configs/demo.yaml

1. makes the synthetic Waterbirds twin at 64x64 (once) in data/synthetic_waterbirds_64
2. trains recipes/configs/demo.yaml with Accelerate (resumes / reuses runs/demo if it is there)
3. loads the export (runs/demo/export) the way a user would, with WorldModel.from_pretrained
4. measures reconstructions of held-out test images against the mean-image floor
5. fits linear probes on the latent features and prints average / worst-group / adjusted accuracy
6. writes runs/demo/report.md with the pictures
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from hrssm.data import GROUP_NAMES, load_waterbirds, preprocess, synthetic
from hrssm.data.contact_sheet import contact_sheet
from hrssm.evaluation import balanced_subset, encode_dataset, linear_probe
from hrssm.train_config import TrainConfig
from hrssm.trainer import train
from hrssm.viz import image_grid
from hrssm.world_model import WorldModel

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "recipes" / "configs" / "demo.yaml"))
    p.add_argument("--fresh", action="store_true", help="train from scratch even if the run folder has checkpoints")
    args, overrides = p.parse_known_args(argv)
    start = time.perf_counter()
    cfg = TrainConfig.load(args.config, overrides)
    out = Path(cfg.output_dir)
    size = cfg.model_config().image_size

    data = Path(cfg.data.source)
    if not data.exists():
        print(f"[1/5] generating the synthetic Waterbirds twin ({size}x{size}) in {data}", flush=True)
        synthetic.write_save_to_disk(synthetic.generate(size, 1.0, seed=0, progress=False), data)
    else:
        print(f"[1/5] using {data}", flush=True)

    print(f"[2/5] training {args.config} -> {out} ({cfg.optim.max_steps} steps)", flush=True)
    result = train(cfg, resume=not args.fresh)

    print(f"[3/5] loading the export {result.export_dir}", flush=True)
    model = WorldModel.from_pretrained(result.export_dir)
    splits = {s: load_waterbirds(data, s, image_size=size) for s in ("train", "validation", "test")}

    print("[4/5] encoding train, validation and test images", flush=True)
    feats = {s: encode_dataset(model, ds, with_recon_metrics=(s == "test")) for s, ds in splits.items()}
    recon = {k: float(feats["test"][k]) for k in ("recon_std_ratio", "psnr", "psnr_mean_image", "psnr_gain")}
    _pictures(model, splits["test"], out)

    print("[5/5] linear probes on the latent features", flush=True)
    probes = {"bird (label), fit on train": linear_probe(feats["train"], feats["test"], "label"),
              "bird (label), fit on group-balanced validation (DFR-style)":
                  linear_probe(balanced_subset(feats["validation"]), feats["test"], "label", l2=0.1),
              "background (place), fit on train": linear_probe(feats["train"], feats["test"], "place")}

    lines = [f"Reconstruction of {min(1024, len(splits['test']))} held-out test images: recon_std_ratio "
             f"{recon['recon_std_ratio']:.3f}, PSNR {recon['psnr']:.2f} dB vs the mean image's "
             f"{recon['psnr_mean_image']:.2f} dB (+{recon['psnr_gain']:.2f} dB)", "",
             "| probe | average | worst group | adjusted average | " + " | ".join(GROUP_NAMES) + " |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in GROUP_NAMES) + " |"]
    for name, r in probes.items():
        lines.append(f"| {name} | {r.average:.3f} | {r.worst_group:.3f} | {r.adjusted_average:.3f} | "
                     + " | ".join(f"{a:.3f}" for a in r.per_group) + " |")
    table = "\n".join(lines)
    print("\n" + table + "\n")
    (out / "eval.json").write_text(json.dumps(
        {"reconstruction": recon, "probes": {k: {**v.row(), "per_group": v.per_group} for k, v in probes.items()},
         "train_steps": result.step, "train_metrics": result.metrics}, indent=2))
    _report(out, cfg, result, table)
    print(f"report: {out / 'report.md'}   pictures: {out / 'test_reconstructions.png'}, {out / 'images'}/")
    print(f"main job done in {time.perf_counter() - start:.0f} s")
    return 0


@torch.no_grad()
def _pictures(model: WorldModel, test, out: Path) -> None:
    """Held-out test images (top row) and their reconstructions from the latents (bottom row), per group."""
    idx = [int(i) for g in range(4) for i in torch.nonzero(torch.as_tensor(test["group"]) == g)[:2, 0]]
    x = preprocess([test[i]["image"] for i in idx], model.cfg.image_size)
    lat = model.encode_latents(x)
    recon = model.decode(lat["h"], lat["z"], lat.get("s"))
    image_grid(torch.stack([x, recon.clamp(-0.5, 0.5)])).save(out / "test_reconstructions.png")
    contact_sheet(test).save(out / "test_samples.png")


def _report(out: Path, cfg: TrainConfig, result, table: str) -> None:
    images = sorted((out / "images").glob("*.png"))
    last = images[-1].relative_to(out) if images else None
    text = [
        "# hrssm demo report", "",
        f"Model: preset `{cfg.model.get('preset', 'tiny')}`, {result.step} training steps on `{cfg.data.source}` "
        f"(config: `config.yaml`, metrics: `metrics.jsonl`, export: `export/`).", "",
        "## Results", "", table, "",
        "## Pictures", "",
        "Held-out test images (top) and their reconstructions from the latents (bottom), two per group:", "",
        "![test reconstructions](test_reconstructions.png)", "",
    ]
    if last:
        text += ["Training views: per sample, input views | reconstructions | prior imagination from the first "
                 "state (no-op actions):", "", f"![training views]({last})", ""]
    (out / "report.md").write_text("\n".join(text))


if __name__ == "__main__":
    sys.exit(main())
