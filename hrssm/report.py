"""The evaluation protocol of a trained world model, written into a folder: probes, pictures, eval.json, report.md.

    from hrssm.report import evaluate_model
    result = evaluate_model(model, "data/synthetic_waterbirds_64", "runs/demo")   # prints nothing; returns the table

Used by `recipes/eval_probe.py` and by the main job (`recipes/demo.py`).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ._io import atomic_write_json, atomic_write_text
from .data import GROUP_NAMES, SPLITS, load_waterbirds, preprocess
from .data.contact_sheet import contact_sheet
from .encoder import FEATURE_SHORT_NAMES, FEATURES, check_features
from .evaluation import (
    DFR_PROBE,
    PROBE_SEEDS,
    ProbeResult,
    encode_dataset,
    floors_table,
    pixel_features,
    probe_table,
    standard_probes,
)
from .latents import with_features
from .viz import image_grid
from .world_model import WorldModel

RECON_KEYS = ("recon_std_ratio", "psnr", "psnr_mean_image", "psnr_gain", "seam_ratio")
TRAINED = "trained"
RANDOM_INIT = "random init (same config, seed 0)"
ENCODED = (TRAINED, RANDOM_INIT)  # the feature sets a model encodes (the others, raw pixels, are images)
PIXEL_SIZE = 32


def pixels_name(size: int = PIXEL_SIZE) -> str:
    return f"raw pixels ({size}x{size})"


@dataclass
class EvalResult:
    probes: dict[str, ProbeResult]  # the trained model's probes
    reconstruction: dict[str, float]  # empty for a model without a pixel decoder
    table: str  # markdown: the reconstruction line, the floors table and the trained model's probe table
    floors: dict[str, dict[str, ProbeResult]] = field(default_factory=dict)  # feature set -> probes (trained too)
    pictures: dict[str, str] = field(default_factory=dict)  # name -> file in the output folder
    sizes: dict[str, int] = field(default_factory=dict)  # images per split
    model_features: str = "latents"  # what the model's features were: one of `encoder.FEATURES`
    also: dict[str, EvalResult] = field(default_factory=dict)  # evaluate_model(also=...): feature set -> its result

    @property
    def margin(self) -> float:
        """Headline DFR worst group of the trained model minus the best of its floors (nan without floors)."""
        others = [p[DFR_PROBE].worst_group for name, p in self.floors.items() if name != TRAINED]
        return self.probes[DFR_PROBE].worst_group - max(others) if others else float("nan")

    def to_dict(self) -> dict:
        return {"reconstruction": self.reconstruction, "probes": {k: v.to_dict() for k, v in self.probes.items()},
                "features": {name: {k: v.to_dict() for k, v in p.items()} for name, p in self.floors.items()},
                "dfr_worst_group_margin_over_floors": self.margin, "pictures": self.pictures,
                "split_sizes": self.sizes, "model_features": self.model_features}


def random_init_encoder(cfg, seed: int = 0):
    """An `hrssm.Encoder` of `cfg` with freshly initialized weights (seeded, the global RNG left as it was)."""
    from .export import Encoder

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Encoder(cfg).eval()


def feature_sets(model, splits: dict, batch_size: int = 128, floors: bool = True,
                 pixel_size: int = PIXEL_SIZE, progress: bool = True, features: str = "latents"
                 ) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """{feature set: {split: features}}: the model's `features` (one of `encoder.FEATURES`, `Encoder.encode`; with
    held-out reconstruction metrics on test) and, with `floors`, the same features of a random-init model of the
    same config and raw pixels, for the same images."""
    out = {TRAINED: {s: encode_dataset(model, d, batch_size, with_recon_metrics=(s == "test"), progress=progress,
                                       desc=f"encoding {s}", features=features) for s, d in splits.items()}}
    if floors:
        rand = random_init_encoder(model.cfg).to(next(model.parameters()).device)
        out[RANDOM_INIT] = {s: encode_dataset(rand, d, batch_size, progress=progress, features=features,
                                              desc=f"encoding {s}, random init") for s, d in splits.items()}
        out[pixels_name(pixel_size)] = {s: pixel_features(d, pixel_size) for s, d in splits.items()}
    return out


def evaluate_model(model: WorldModel, data: str | os.PathLike, out_dir: str | os.PathLike, *, pictures: bool = True,
                   latent_maps: tuple[str, ...] = ("tsne", "umap"), floors: bool = True,
                   seeds: Sequence[int] = PROBE_SEEDS, batch_size: int = 128, report_intro: list[str] | None = None,
                   extra_json: dict | None = None, progress=print, data_revision: str | None = None,
                   features: str = "latents", also: Sequence[str] = ()) -> EvalResult:
    """Encode train / validation / test of `data` (any `load_waterbirds` source), fit the probes on the model's
    features and on its floors (random init, raw pixels), measure held-out reconstructions, draw the pictures, and
    write `eval.json` and `report.md` into `out_dir`.

    latent_maps: "tsne" always works (scikit-learn); "umap" is drawn when umap-learn is installed, else skipped.
    report_intro: markdown lines put before the results; extra_json: more entries for eval.json; data_revision: a
    hub dataset's branch, tag or commit. Images are preprocessed as the model records (`model.cfg.preprocess`).
    features: what is probed, for the model and its random-init floor alike: "latents" ([h, p(z), s], the default),
    "global" ([h, p(z)]) or "tokens" (the encoder's mean patch token); see `Encoder.encode`.
    also: more feature sets probed from the same encoding pass (no second encoding), each with its floors into
    `out_dir/eval_{name}/` (eval.json, report.md, no pictures) and into the result's `also[name]`.
    """
    for name in (features, *also):
        check_features(name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = {s: load_waterbirds(data, s, revision=data_revision, **model.cfg.preprocessing()) for s in SPLITS}
    progress(f"encoding {', '.join(f'{s} ({len(d)})' for s, d in splits.items())} ({features})"
             + (": the model, a random-init model of its config, raw pixels" if floors else ""))
    feats = feature_sets(model, splits, batch_size, floors, progress=progress is not None, features=features)
    result = _probe_and_report(feats, {s: len(d) for s, d in splits.items()}, features, seeds, progress)
    if pictures:
        progress("drawing the pictures")
        result.pictures = _pictures(model, splits["test"], feats[TRAINED]["test"], result.probes, out, latent_maps,
                                    FEATURE_SHORT_NAMES[features])
    _write_results(out, result, report_intro or [], extra_json)
    for name in also:
        progress(f"the same probes and floors on {name!r}: {FEATURES[name]}")
        other = {set_name: {s: with_features(d, name) if set_name in ENCODED else d for s, d in per_split.items()}
                 for set_name, per_split in feats.items()}
        result.also[name] = _probe_and_report(other, result.sizes, name, seeds, progress)
        (out / f"eval_{name}").mkdir(exist_ok=True)
        _write_results(out / f"eval_{name}", result.also[name], [f"The model of `../report.md`, its {name!r} features "
                                                                  f"({FEATURES[name]}).", ""], extra_json)
    return result


def _probe_and_report(feats: dict[str, dict[str, dict[str, np.ndarray]]], sizes: dict[str, int], features: str,
                      seeds: Sequence[int], progress) -> EvalResult:
    """The probes on every feature set of `feats` (`feature_sets`' output) and the result's markdown table."""
    recon = {k: float(feats[TRAINED]["test"][k]) for k in RECON_KEYS if k in feats[TRAINED]["test"]}
    progress(f"fitting the probes ({len(seeds)} probe seeds; hyperparameters chosen on validation worst group)")
    results = {name: standard_probes(f, seeds) for name, f in feats.items()}

    lines = []
    if recon:
        lines += [f"Reconstruction of {min(1024, sizes['test'])} held-out test images: recon_std_ratio "
                  f"{recon['recon_std_ratio']:.3f}, PSNR {recon['psnr']:.2f} dB vs the mean image's "
                  f"{recon['psnr_mean_image']:.2f} dB (+{recon['psnr_gain']:.2f} dB)"
                  + (f", seam ratio {recon['seam_ratio']:.2f} (1: no block grid at patch borders)"
                     if "seam_ratio" in recon else ""), ""]
    spread = f"mean ± std over {len(seeds)} probe seeds" if len(seeds) > 1 else "one probe seed"
    what = "" if features == "latents" else f" ({FEATURES[features]}, for the model and its random init)"
    lines += [f"Test accuracy ({spread}) of the trained features{what} and their floors:", "", floors_table(results),
              ""]
    result = EvalResult(results[TRAINED], recon, "", results, sizes=sizes, model_features=features)
    if len(results) > 1:
        lines += [f"Bird, DFR worst group: {result.margin:+.3f} over the best floor.", ""]
    lines += ["Every probe on the trained features:", "", probe_table(results[TRAINED], GROUP_NAMES)]
    result.table = "\n".join(lines)
    return result


def _write_results(out: Path, result: EvalResult, intro: list[str], extra_json: dict | None) -> None:
    atomic_write_json(out / "eval.json", {**result.to_dict(), **(extra_json or {})})
    _write_report(out, result, intro)


def _pictures(model, test, test_feats, probes, out: Path, latent_maps, what: str = "latents") -> dict[str, str]:
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
        files[f"{METHOD_NAMES[method]} of test {what}, coloured by bird and by background"] = f"latents_{method}.png"
        latent_map(test_feats, out / f"latents_{method}.png", method)
    return files


@torch.no_grad()
def reconstruction_grid(model: WorldModel, ds, per_group: int = 2):
    """Images of `ds` (top row, `per_group` of each group) and their reconstructions from the latents (bottom)."""
    groups = np.asarray(ds["group"])
    idx = [int(i) for g in range(len(GROUP_NAMES)) for i in np.flatnonzero(groups == g)[:per_group]]
    x = preprocess([ds[i]["image"] for i in idx], **model.cfg.preprocessing())
    lat = model.encode_latents(x)
    recon = model.decode(lat["h"], lat["z"], lat.get("s"))
    return image_grid(torch.stack([x, recon.clamp(-0.5, 0.5).to(x.dtype)]))


def _write_report(out: Path, result: EvalResult, intro: list[str]) -> None:
    text = ["# hrssm evaluation report", "", *intro, "## Results", "", result.table, "",
            "Probes (hrssm/evaluation.py, docs/evaluation.md) on standardized features; every hyperparameter is chosen "
            "by worst-group accuracy on validation data, never on test. *DFR (reference)*: Kirichenko et al. 2022 as "
            "their code: C tuned on validation halves, then 20 logistic regressions (L1) on group-balanced subsamples "
            "of the whole validation set, averaged. *DFR (half of validation)*: fit on a balanced half, C chosen on "
            "the other. *fit on train*: the shortcut-prone ERM probe. *kNN*: a weighted 20-nearest-neighbour vote "
            "among balanced validation images. Floors: the same probes on a randomly initialised model of the same "
            "config and on raw pixels. Adjusted average: per-group test accuracies weighted by the train group "
            "proportions. Every number, with WILDS-style keys: `eval.json`.", ""]
    if result.pictures:
        text += ["## Pictures", ""]
        for name, file in result.pictures.items():
            text += [f"{name}:", "", f"![{name}]({file})", ""]
    atomic_write_text(out / "report.md", "\n".join(text))
