#!/usr/bin/env python
"""The studies of docs/studies/: variants of the studies' base config (recipes/configs/studies_base.yaml, the first
main job's: tiny model, synthetic Waterbirds at 64x64, 1200 steps), each trained once and evaluated with the
protocol of recipes/eval_probe.py.

    python tools/run_studies.py                       # every study (24 variants, ~13 min each on 2 CPU cores)
    python tools/run_studies.py --study free_nats     # one study
    python tools/run_studies.py --steps 300 --out /tmp/studies   # a quick look

Runs go to --runs (default runs/studies/<variant>) and are reused: a variant whose study.json matches its spec is
not retrained, so an interrupted sweep continues where it stopped; a world model's row of an older evaluation
protocol (PROTOCOL) is re-evaluated from its export. Each study writes <out>/<study>.md (table),
.json (numbers) and .png (bars). Single seed per variant; the `seeds` study measures the seed-to-seed spread.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hrssm._io import atomic_write_json, atomic_write_text
from hrssm.cli import cli_main
from hrssm.evaluation import DFR_PROBE as DFR
from hrssm.evaluation import ERM_PROBE as ERM
from hrssm.evaluation import KNN_PROBE as KNN
from hrssm.evaluation import PLACE_PROBE as PLACE
from hrssm.report import RECON_KEYS

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = 3  # the evaluation protocol's version: cached rows of another protocol are re-evaluated (3: the latents'
# z is the global posterior's class probabilities; 2: its one-hot mode)
BASE = ROOT / "recipes" / "configs" / "studies_base.yaml"  # the first main job's config, which every row varies

_SIMCLR = ["--model.encoder.stem", "conv", "--views.grayscale", "0.5", "--views.paste", "0.7",
           "--model.loss.contrastive", "simclr", "--model.loss.contrastive_input", "tokens",
           "--model.loss.contrastive_scale", "20000"]  # object views + SimCLR on the encoder's mean patch token
# SimCLR's own views (its paper: crops and colour are what make instance discrimination learn): crops of 30-100% of
# the image, colour jitter 0.4, 20% gray, half the views pasted over another background; temperature 0.2
_SIMCLR_STRONG = ["--model.encoder.stem", "conv", "--model.encoder.pool", "mean", "--views.crop_scale", "[0.3, 1.0]",
                  "--views.brightness", "0.4", "--views.contrast", "0.4", "--views.saturation", "0.4",
                  "--views.grayscale", "0.2", "--views.paste", "0.5", "--model.loss.contrastive", "simclr",
                  "--model.loss.contrastive_input", "tokens", "--model.loss.contrastive_scale", "20000",
                  "--model.loss.simclr_temperature", "0.2"]

# variant -> (label, overrides of studies_base.yaml, kind)
VARIANTS: dict[str, tuple[str, list[str], str]] = {
    "default": ("default: T=4 augment, global+local, recon, free nats 1 / 0.1", [], "wm"),
    "seed1": ("default, seed 1", ["--seed", "1"], "wm"),
    "free_nats_0": ("free nats 0 (global 0, local 0 per cell)",
                    ["--model.loss.free_nats_global", "0", "--model.loss.free_nats_local", "0"], "wm"),
    "free_nats_3": ("free nats 3 (global 3, local 0.3 per cell)",
                    ["--model.loss.free_nats_global", "3", "--model.loss.free_nats_local", "0.3"], "wm"),
    "global_only": ("global level only (rssm.local_grid=0)", ["--model.rssm.local_grid", "0"], "wm"),
    "T1_repeat": ("T=1 (one view)", ["--views.num_views", "1", "--views.mode", "repeat"], "wm"),
    "T1_augment": ("T=1 augment (one augmented view)", ["--views.num_views", "1"], "wm"),
    "T4_repeat": ("T=4 repeat", ["--views.mode", "repeat"], "wm"),
    "T8_repeat": ("T=8 repeat", ["--views.num_views", "8", "--views.mode", "repeat"], "wm"),
    "T8_augment": ("T=8 augment", ["--views.num_views", "8"], "wm"),
    "recon_barlow": ("reconstruction + Barlow Twins on z", ["--model.loss.contrastive", "barlow",
                                                        "--model.loss.contrastive_input", "z"], "wm"),
    "norm_pix": ("reconstruction of per-patch normalized pixels (MAE's norm-pix loss: edges over flat colour)",
                 ["--model.loss.recon_type", "normalized_patch"], "wm"),
    "simclr_only": ("contrastive only (SimCLR on z, no decoder)",
                    ["--model.loss.objective", "latent_prediction", "--model.loss.latent_pred_scale", "0",
                     "--model.loss.contrastive", "simclr", "--model.loss.contrastive_input", "z"], "wm"),
    "latent_prediction": ("reconstruction-free (latent prediction, EMA target)",
                          ["--model.loss.objective", "latent_prediction"], "wm"),
    "conv_stem": ("convolutional stem (encoder.stem=conv: stride-2 3x3 convolutions instead of a patch projection)",
                  ["--model.encoder.stem", "conv"], "wm"),
    "encoder_depth4": ("encoder 4 blocks deep (tiny has 2)", ["--model.encoder.depth", "4"], "wm"),
    "object_views": ("conv stem + object views (views.grayscale 0.5, views.paste 0.7: the centre disk over another "
                     "image's background)", ["--model.encoder.stem", "conv", "--views.grayscale", "0.5",
                                             "--views.paste", "0.7"], "wm"),
    "object_views_simclr": ("object views + SimCLR on the mean patch tokens (contrastive_scale 2e4: the encoder's "
                            "gradient from reconstruction is ~5e4 x SimCLR's at scale 1)",
                            _SIMCLR, "wm"),
    "simclr_mean_pool": ("object views + SimCLR on the mean token, which the global posterior reads (encoder.pool "
                         "mean): SimCLR's features reach z", _SIMCLR + ["--model.encoder.pool", "mean"], "wm"),
    "simclr_mean_pool_all": ("as simclr_mean_pool, SimCLR over all B x T views (loss.contrastive_pairs all: 63 "
                             "candidates, 3 positives per view)",
                             _SIMCLR + ["--model.encoder.pool", "mean", "--model.loss.contrastive_pairs", "all"], "wm"),
    "simclr_z_mean_pool": ("object views + SimCLR on the global latent z (contrastive_input z, scale 2e4), whose "
                           "posterior reads the mean token (encoder.pool mean): z itself must carry what views share",
                           ["--model.encoder.stem", "conv", "--views.grayscale", "0.5", "--views.paste", "0.7",
                            "--model.loss.contrastive", "simclr", "--model.loss.contrastive_input", "z",
                            "--model.loss.contrastive_scale", "20000", "--model.encoder.pool", "mean"], "wm"),
    "decoder_conv_head": ("decoder with a convolutional head (decoder.conv_channels 16: two 3x3 convolutions over "
                          "the unpatchified output, across patch borders)", ["--model.decoder.conv_channels", "16"],
                          "wm"),
    "simclr_strong_views": ("SimCLR on the mean token (as simclr_mean_pool) with strong views: crops 0.3-1, colour "
                            "jitter 0.4, grayscale 0.2, paste 0.5, temperature 0.2", _SIMCLR_STRONG, "wm"),
    "vae_beta1": ("plain VAE (beta 1), same encoder / decoder, T=1", [], "vae:1.0"),
    "vae_beta0.1": ("plain VAE (beta 0.1 = the world model's posterior KL weight), T=1", [], "vae:0.1"),
}

STUDIES: dict[str, tuple[str, list[str]]] = {
    "seeds": ("Seed-to-seed spread of the default (how large a difference has to be to mean something)",
              ["default", "seed1"]),
    "free_nats": ("Free nats sweep", ["free_nats_0", "default", "free_nats_3"]),
    "hierarchy": ("Hierarchy on / off", ["default", "global_only"]),
    "objective": ("Reconstruction vs contrastive vs reconstruction-free",
                  ["default", "recon_barlow", "simclr_only", "latent_prediction"]),
    "recon_weighting": ("Reconstruction target: pixels vs per-patch normalized pixels", ["default", "norm_pix"]),
    "vae_baseline": ("World model vs a plain VAE of similar size", ["default", "T1_repeat", "vae_beta1",
                                                                     "vae_beta0.1"]),
    "encoder": ("Encoder: patch vs convolutional stem, 2 vs 4 blocks", ["default", "conv_stem", "encoder_depth4"]),
    "object_views": ("Views that keep the object and change its background (grayscale, paste), with and without "
                     "SimCLR on the encoder's tokens", ["default", "conv_stem", "object_views", "object_views_simclr"]),
    "simclr_pool": ("SimCLR's gain into the exported latents: the global posterior reads the SimCLR-trained mean "
                    "token; SimCLR over all views", ["object_views_simclr", "simclr_mean_pool",
                                                     "simclr_mean_pool_all", "simclr_z_mean_pool"]),
    "decoder_seams": ("The block grid in reconstructions: a linear vs a convolutional decoder head",
                      ["default", "decoder_conv_head"]),
    "strong_views": ("SimCLR's own views (strong crops and colour jitter) instead of the world model's mild ones",
                     ["simclr_mean_pool", "simclr_strong_views"]),
    "sequence": ("Sequence length and views: T = 1 / 4 / 8, repeat vs augment",
                 ["T1_repeat", "T1_augment", "T4_repeat", "default", "T8_repeat", "T8_augment"]),
}


def run_variant(name: str, args, pixels: dict) -> dict:
    """Train (or reuse) one variant and evaluate it beside its random-init floor; the row is cached in
    <runs>/<name>/study.json. A world-model row of another evaluation protocol is re-evaluated from its export.
    pixels: `pixel_row`, for the margin in the progress line."""
    label, overrides, kind = VARIANTS[name]
    run_dir = Path(args.runs) / name
    spec = {"overrides": overrides, "kind": kind, "steps": args.steps, "data": str(args.data),
            "protocol": PROTOCOL, "seeds": args.probe_seeds}
    cache = run_dir / "study.json"
    if cache.exists():
        row = json.loads(cache.read_text())
        if row.get("spec") == spec:
            if kind == "wm":  # a row from an older harness: add what it lacks from its export
                _backfill(name, row, run_dir, cache, args)
            return row
        if kind == "wm" and {**row.get("spec", {}), "protocol": PROTOCOL} == spec and _has_export(run_dir):
            print(f"== {name}: re-evaluating its export (protocol {row['spec'].get('protocol')} -> {PROTOCOL})",
                  flush=True)
            model = _load_export(run_dir)
            row.update(_evaluate_world_model(model, _splits(args.data, model.cfg.image_size), args), spec=spec,
                       label=label)
            atomic_write_json(cache, row)
            print(f"   {_cells(row, pixels)}", flush=True)
            return row
    from hrssm.evaluation import standard_probes
    from hrssm.train_config import TrainConfig

    common = ["--output_dir", str(run_dir), "--data.source", str(args.data), "--optim.max_steps", str(args.steps),
              "--log.trackers", "[]", "--log.progress", "false", "--log.images_every", str(args.steps),
              "--checkpoint.every", str(args.steps)]
    cfg = TrainConfig.load(BASE, common + overrides)
    print(f"== {name}: {label}", flush=True)
    start = time.perf_counter()
    splits = _splits(args.data, cfg.model_config().image_size)
    row = {"name": name, "label": label, "spec": spec}
    if kind == "wm":
        from hrssm.trainer import train

        result = train(cfg, overwrite=True)  # a stale run of this variant (another spec, or killed) is redone
        model, metrics = result.model.eval(), result.metrics
        row["train_seconds"] = round(time.perf_counter() - start, 1)
        row.update(_evaluate_world_model(model, splits, args))
    else:
        from hrssm.baselines import ViTVAE, train_vae, vae_features

        beta = float(kind.split(":")[1])
        model, metrics = train_vae(cfg, beta=beta)
        row["train_seconds"] = round(time.perf_counter() - start, 1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            random_vae = ViTVAE(cfg.model_config(), beta).eval()
        feats = {"trained": {s: vae_features(model, d, with_recon_metrics=(s == "test")) for s, d in splits.items()},
                 "random init": {s: vae_features(random_vae, d) for s, d in splits.items()}}
        probes = {k: standard_probes(f, tuple(range(args.probe_seeds))) for k, f in feats.items()}
        row.update(params=sum(p.numel() for p in model.parameters()),
                   reconstruction={k: float(feats["trained"]["test"][k]) for k in RECON_KEYS
                                   if k in feats["trained"]["test"]},
                   probes={k: v.to_dict() for k, v in probes["trained"].items()},
                   random_init={k: v.to_dict() for k, v in probes["random init"].items()})
    row.update(kl_global_raw=metrics.get("kl_global_raw"), kl_local_raw=metrics.get("kl_local_raw"))
    atomic_write_json(cache, row)
    print(f"   {_cells(row, pixels)}", flush=True)
    return row


def _evaluate_world_model(model, splits: dict, args) -> dict:
    """The row entries of a trained world model: params, reconstruction metrics, the standard probes of its latents
    and of its random-init twin's, and the token probes."""
    from hrssm.evaluation import standard_probes
    from hrssm.report import RANDOM_INIT, TRAINED, feature_sets

    feats = feature_sets(model, splits, floors=True, progress=False)
    probes = {k: standard_probes(feats[k], tuple(range(args.probe_seeds))) for k in (TRAINED, RANDOM_INIT)}
    return {"params": sum(p.numel() for n, p in model.named_parameters() if not n.startswith("target_encoder")),
            "reconstruction": {k: float(feats[TRAINED]["test"][k]) for k in RECON_KEYS if k in feats[TRAINED]["test"]},
            "probes": {k: v.to_dict() for k, v in probes[TRAINED].items()},
            "random_init": {k: v.to_dict() for k, v in probes[RANDOM_INIT].items()},
            "tokens": token_probes(model, splits, args.probe_seeds)}


def _has_export(run_dir: Path) -> bool:
    return (run_dir / "export" / "config.json").is_file()


def _load_export(run_dir: Path):
    """The world model a variant exported, in eval mode, on the GPU when there is one."""
    from hrssm.export import load_world_model

    return load_world_model(run_dir / "export", "cuda" if torch.cuda.is_available() else "cpu").eval()


def _backfill(name: str, row: dict, run_dir: Path, cache: Path, args) -> None:
    """Add what a cached world-model row of an older harness lacks (the encoder-token probes, the seam ratio of its
    reconstructions) from its export, without retraining; n/a in the table when the export is gone."""
    # a model without a pixel decoder has no reconstruction metrics (an empty dict): nothing to add there
    lacks_tokens = "tokens" not in row
    lacks_seams = bool(row["reconstruction"]) and "seam_ratio" not in row["reconstruction"]
    if not (lacks_tokens or lacks_seams):
        return
    from hrssm.evaluation import encode_dataset

    if not _has_export(run_dir):
        print(f"   {name}: cached row without its export ({run_dir / 'export'}): what it lacks is n/a", flush=True)
        return
    print(f"   {name}: cached row; adding from its export:" + " encoder tokens" * lacks_tokens
          + " seam ratio" * lacks_seams, flush=True)
    model = _load_export(run_dir)
    splits = _splits(args.data, model.cfg.image_size)
    if lacks_tokens:
        row["tokens"] = token_probes(model, splits, args.probe_seeds)
    if lacks_seams:  # (undefined for a patch as large as the image: then it stays n/a)
        test = encode_dataset(model, splits["test"], with_recon_metrics=True)
        if "seam_ratio" in test:
            row["reconstruction"]["seam_ratio"] = float(test["seam_ratio"])
    atomic_write_json(cache, row)


def token_probes(model, splits: dict, probe_seeds: int) -> dict:
    """The headline bird probe on the encoder's mean patch token (`encode(features="tokens")`) of the trained model
    and of its random-init twin: {"trained": DFR probe, "random_init": DFR probe}."""
    from hrssm.evaluation import dfr_probe, encode_dataset
    from hrssm.report import random_init_encoder

    out = {}
    for key, encoder in (("trained", model), ("random_init", random_init_encoder(model.cfg))):
        f = {s: encode_dataset(encoder, d, features="tokens") for s, d in splits.items()}
        out[key] = dfr_probe(f["train"], f["validation"], f["test"], seeds=tuple(range(probe_seeds))).to_dict()
    return out


def _splits(data, image_size: int) -> dict:
    from hrssm.data import SPLITS, load_waterbirds

    return {s: load_waterbirds(data, s, image_size=image_size) for s in SPLITS}


def pixel_row(args) -> dict:
    """The raw-pixel floor (32x32), the same for every variant of one dataset; cached in <runs>/pixels.json."""
    from hrssm.evaluation import pixel_features, standard_probes

    cache = Path(args.runs) / "pixels.json"
    spec = {"data": str(args.data), "protocol": PROTOCOL, "seeds": args.probe_seeds}
    if cache.exists() and json.loads(cache.read_text()).get("spec") == spec:
        return json.loads(cache.read_text())
    feats = {s: pixel_features(d) for s, d in _splits(args.data, 32).items()}
    probes = standard_probes(feats, tuple(range(args.probe_seeds)))
    row = {"spec": spec, "probes": {k: v.to_dict() for k, v in probes.items()}}
    atomic_write_json(cache, row)
    return row


def _fmt(v, spec=".3f") -> str:
    return "n/a" if v is None else format(v, spec)


def _pm(probe: dict) -> str:
    return f"{probe['acc_wg']:.3f} ± {probe['acc_wg_std']:.3f}"


def _cells(row: dict, pixels: dict) -> str:
    """A row's table cells; its margin is over the best of its random init and the raw-pixel floor (`pixel_row`)."""
    r, p, f = row["reconstruction"], row["probes"], row["random_init"]
    floor = max(f[DFR]["acc_wg"], pixels["probes"][DFR]["acc_wg"])
    return " | ".join([
        _fmt(r.get("recon_std_ratio"), ".2f"), _fmt(r.get("psnr_gain"), ".2f"), _fmt(r.get("seam_ratio"), ".2f"),
        _fmt(row["kl_global_raw"], ".2f"), _fmt(row["kl_local_raw"], ".1f"),
        f"**{_pm(p[DFR])}**", _pm(f[DFR]), f"{p[DFR]['acc_wg'] - floor:+.3f}", f"{p[DFR]['acc_avg']:.3f}",
        f"{p[ERM]['acc_wg']:.3f} / {p[ERM]['adj_acc_avg']:.3f}", _pm(p[KNN]), f"{p[PLACE]['acc_avg']:.3f}",
        _tokens_cell(row), f"{row['params'] / 1e6:.2f} M", f"{row['train_seconds']:.0f}"])


def _tokens_cell(row: dict) -> str:
    t = row.get("tokens")
    return "n/a" if t is None else f"{_pm(t['trained'])} ({t['random_init']['acc_wg']:.3f})"


HEADER = ("| setting | recon std ratio | PSNR gain (dB) | seam ratio | KL global | KL local | bird, DFR: worst group | "
          "same config, random init: DFR worst group | margin over the best floor | bird, DFR: average | "
          "bird, fit on train: worst / adjusted avg | bird, kNN: worst group | background accuracy | "
          "encoder's mean token: bird DFR worst group (its random init) | params | train s |")


def write_study(study: str, rows: list[dict], pixels: dict, out: Path, command: str) -> None:
    title, _ = STUDIES[study]
    pp = pixels["probes"]
    lines = [f"# {title}", "", f"Made by `{command}` (tiny model unless the row says otherwise, synthetic "
             f"Waterbirds 64x64, {rows[0]['spec']['steps']} steps of batch 16; probes: docs/evaluation.md, "
             f"mean ± std over {rows[0]['spec']['seeds']} probe seeds; see docs/studies/README.md).", "",
             HEADER, "| " + " | ".join(["---"] * (HEADER.count(" | ") + 1)) + " |"]
    lines += [f"| {row['label']} | {_cells(row, pixels)} |" for row in rows]
    lines += [f"| *floor: raw pixels (32x32)* | | | | | | {_pm(pp[DFR])} | | | {pp[DFR]['acc_avg']:.3f} | "
              f"{pp[ERM]['acc_wg']:.3f} / {pp[ERM]['adj_acc_avg']:.3f} | {_pm(pp[KNN])} | "
              f"{pp[PLACE]['acc_avg']:.3f} | | | |"]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{study}.md", "\n".join(lines) + "\n")
    atomic_write_text(out / f"{study}.json", json.dumps({"title": title, "command": command, "rows": rows,
                                                         "pixels": pixels}, indent=2))
    _plot(title, rows, pixels, out / f"{study}.png")


def _plot(title: str, rows: list[dict], pixels: dict, path: Path) -> None:
    from hrssm.plots import pyplot, save_figure, wrap_label

    plt = pyplot()
    panels = [("PSNR gain over the mean image (dB)", lambda r: r["reconstruction"].get("psnr_gain"), None),
              ("bird, DFR: worst group (random init: gray)", lambda r: r["probes"][DFR]["acc_wg"],
               lambda r: r["random_init"][DFR]["acc_wg"]),
              ("bird, fit on train: worst group", lambda r: r["probes"][ERM]["acc_wg"],
               lambda r: r["random_init"][ERM]["acc_wg"]),
              ("background probe: accuracy", lambda r: r["probes"][PLACE]["acc_avg"], None)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2 + 0.3 * len(rows)))
    y = np.arange(len(rows))
    for ax, (name, get, floor) in zip(axes, panels):
        raw = [get(r) for r in rows]
        values = [v if v is not None else 0.0 for v in raw]
        errors = [r["probes"][DFR]["acc_wg_std"] for r in rows] if "DFR" in name else None
        ax.barh(y, values, height=0.6 if floor else 0.8, xerr=errors, color="tab:blue", capsize=2)
        if floor:
            ax.barh(y + 0.3, [floor(r) for r in rows], height=0.25, color="tab:gray")
            if "DFR" in name:
                ax.axvline(pixels["probes"][DFR]["acc_wg"], color="black", ls=":", lw=1, label="raw pixels")
                ax.legend(fontsize=7, loc="lower right")
        if "accuracy" in name or "worst" in name:
            ax.set_xlim(0, 1.1)
        labels = [wrap_label(r["label"], 30) if ax is axes[0] else "" for r in rows]
        ax.set_yticks(y, labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(name, fontsize=9)
        for i, (v, r) in enumerate(zip(values, raw)):
            ax.text(v, i, f" {v:.2f}" if r is not None else " n/a (no decoder)", va="center", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", nargs="+", default=["all"], choices=["all", *STUDIES])
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--data", default=str(ROOT / "data" / "synthetic_waterbirds_64"),
                   help="a Waterbirds source (made at 64x64 if this default folder is missing)")
    p.add_argument("--runs", default=str(ROOT / "runs" / "studies"))
    p.add_argument("--out", default=str(ROOT / "docs" / "studies"))
    p.add_argument("--probe-seeds", type=int, default=5)
    args = p.parse_args(argv)
    studies = list(STUDIES) if "all" in args.study else args.study
    if not Path(args.data).exists() and args.data == p.get_default("data"):
        from hrssm.data import synthetic

        print(f"generating the synthetic Waterbirds twin (64x64) in {args.data}", flush=True)
        synthetic.write_save_to_disk(synthetic.generate(64, 1.0, seed=0, progress=False), args.data)
    command = "python tools/run_studies.py" + (f" --steps {args.steps}" if args.steps != 1200 else "")
    pixels = pixel_row(args)
    for study in studies:
        rows = [run_variant(v, args, pixels) for v in STUDIES[study][1]]
        write_study(study, rows, pixels, Path(args.out), command + f" --study {study}")
        print(f"wrote {Path(args.out) / study}.md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
