"""The evaluation protocol of a trained world model, written into a folder: probes, pictures, eval.json, report.md.

    from hrssm.report import evaluate_model
    result = evaluate_model(model, "data/synthetic_waterbirds_64", "runs/demo")   # prints nothing; returns the table

Used by `recipes/eval_probe.py` and by the main job (`recipes/demo.py`).
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ._io import atomic_write_text
from .data import GROUP_NAMES, SPLITS, load_waterbirds, preprocess
from .data.contact_sheet import contact_sheet
from .evaluation import C_GRID, ProbeResult, encode_dataset, probe_table, standard_probes
from .viz import image_grid
from .world_model import WorldModel

RECON_KEYS = ("recon_std_ratio", "psnr", "psnr_mean_image", "psnr_gain")


@dataclass
class EvalResult:
    probes: dict[str, ProbeResult]
    reconstruction: dict[str, float]  # empty for a model without a pixel decoder
    table: str  # markdown: the reconstruction line and the probe table
    pictures: dict[str, str] = field(default_factory=dict)  # name -> file in the output folder
    sizes: dict[str, int] = field(default_factory=dict)  # images per split

    def to_dict(self) -> dict:
        return {"reconstruction": self.reconstruction, "probes": {k: v.to_dict() for k, v in self.probes.items()},
                "pictures": self.pictures, "split_sizes": self.sizes}


def evaluate_model(model: WorldModel, data: str | os.PathLike, out_dir: str | os.PathLike, *, pictures: bool = True,
                   latent_maps: tuple[str, ...] = ("tsne", "umap"), grid=C_GRID, batch_size: int = 128,
                   report_intro: list[str] | None = None, extra_json: dict | None = None,
                   progress=print) -> EvalResult:
    """Encode train / validation / test of `data` (any `load_waterbirds` source), fit the probes, measure held-out
    reconstructions, draw the pictures, and write `eval.json` and `report.md` into `out_dir`.

    latent_maps: "tsne" always works (scikit-learn); "umap" is drawn when umap-learn is installed, else skipped.
    report_intro: markdown lines put before the results; extra_json: more entries for eval.json.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    size = model.cfg.image_size
    splits = {s: load_waterbirds(data, s, image_size=size) for s in SPLITS}
    progress(f"encoding {', '.join(f'{s} ({len(d)})' for s, d in splits.items())}")
    feats = {s: encode_dataset(model, d, batch_size, with_recon_metrics=(s == "test")) for s, d in splits.items()}
    recon = {k: float(feats["test"][k]) for k in RECON_KEYS if k in feats["test"]}
    progress("fitting the probes (C chosen on worst-group accuracy of the held-out selection set)")
    probes = standard_probes(feats, grid)

    lines = []
    if recon:
        lines += [f"Reconstruction of {min(1024, len(splits['test']))} held-out test images: recon_std_ratio "
                  f"{recon['recon_std_ratio']:.3f}, PSNR {recon['psnr']:.2f} dB vs the mean image's "
                  f"{recon['psnr_mean_image']:.2f} dB (+{recon['psnr_gain']:.2f} dB)", ""]
    table = "\n".join(lines + [probe_table(probes, GROUP_NAMES)])
    result = EvalResult(probes, recon, table, sizes={s: len(d) for s, d in splits.items()})

    if pictures:
        progress("drawing the pictures")
        result.pictures = _pictures(model, splits["test"], feats["test"], probes, out, latent_maps)
    _write_json(out / "eval.json", {**result.to_dict(), **(extra_json or {})})
    _write_report(out, result, report_intro or [])
    return result


def _pictures(model, test, test_feats, probes, out: Path, latent_maps) -> dict[str, str]:
    from .plots import METHOD_NAMES, group_accuracy_bars, latent_map

    files = {"Test samples, one row per group": "test_samples.png"}
    contact_sheet(test).save(out / "test_samples.png")
    if model.decoder is not None:
        files["Test images (top) and their reconstructions from the latents (bottom)"] = "test_reconstructions.png"
        reconstruction_grid(model, test).save(out / "test_reconstructions.png")
    files["Test accuracy per group of each probe"] = "group_accuracy.png"
    group_accuracy_bars(probes, out / "group_accuracy.png")
    for method in latent_maps:
        if method == "umap" and importlib.util.find_spec("umap") is None:
            continue  # optional: pip install umap-learn (the [viz] extra)
        files[f"{METHOD_NAMES[method]} of test latents, coloured by bird and by background"] = f"latents_{method}.png"
        latent_map(test_feats, out / f"latents_{method}.png", method)
    return files


@torch.no_grad()
def reconstruction_grid(model: WorldModel, ds, per_group: int = 2):
    """Images of `ds` (top row, `per_group` of each group) and their reconstructions from the latents (bottom)."""
    groups = np.asarray(ds["group"])
    idx = [int(i) for g in range(len(GROUP_NAMES)) for i in np.flatnonzero(groups == g)[:per_group]]
    x = preprocess([ds[i]["image"] for i in idx], model.cfg.image_size)
    lat = model.encode_latents(x)
    recon = model.decode(lat["h"], lat["z"], lat.get("s"))
    return image_grid(torch.stack([x, recon.clamp(-0.5, 0.5).to(x.dtype)]))


def _write_report(out: Path, result: EvalResult, intro: list[str]) -> None:
    text = ["# hrssm evaluation report", "", *intro, "## Results", "", result.table, "",
            "Probes: logistic regression on standardized latent features `[h, z, s of every cell]`. *fit on train*: "
            "C chosen by worst-group accuracy on validation. *DFR*: fit on a group-balanced half of validation, C "
            "chosen by worst-group accuracy on the other half (Kirichenko et al. 2022). Adjusted average: per-group "
            "test accuracies weighted by the train group proportions. Numbers: `eval.json`.", ""]
    if result.pictures:
        text += ["## Pictures", ""]
        for name, file in result.pictures.items():
            text += [f"{name}:", "", f"![{name}]({file})", ""]
    atomic_write_text(out / "report.md", "\n".join(text))


def _write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2))

