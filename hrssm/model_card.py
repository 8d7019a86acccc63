"""The model card (README.md) of an export, built with `huggingface_hub.ModelCardData`.

    card = training_card(model, metrics, data="grodino/waterbirds", steps=1200)   # written by every export
    add_evaluation("runs/demo/export", eval_json, "runs/demo/eval", data=...)   # after an evaluation of the export

Metadata: license, library name, the mixin's tags and ours, `pipeline_tag: image-feature-extraction`, the training
dataset when it is a hub id, and after an evaluation `eval_results` (model-index): worst-group and adjusted-average
test accuracy of every probe, for the trained features and for each floor (random init, raw pixels) beside them.
The evaluation's pictures are copied into the export (``evaluation/``) and shown in the card, so they travel with a
push. The card reads the evaluation as `eval.json` writes it (`hrssm.report.EvalResult.to_dict`): WILDS-style keys
`acc_wg`, `adj_acc_avg` per probe under `features` (every feature set) or `probes` (the trained model only).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ._io import atomic_directory, atomic_write_text, is_hub_id

LICENSE = "apache-2.0"
PIPELINE_TAG = "image-feature-extraction"
TAGS = ["hrssm", "world-model", "rssm", "representation-learning", "waterbirds"]
MODEL_NAME = "hrssm world model"
PICTURES_DIR = "evaluation"  # inside the export
TRAINED = "trained"  # hrssm.report.TRAINED: the trained model's row among the floors
METRICS = (("acc_wg", "worst_group_accuracy", "worst-group accuracy"),
           ("adj_acc_avg", "adjusted_average_accuracy", "adjusted average accuracy"))
_BEGIN, _END = "<!-- hrssm:evaluation -->", "<!-- /hrssm:evaluation -->"


def training_card(model, metrics: dict[str, float] | None = None, data: str | None = None,
                  steps: int | None = None) -> ModelCard:
    """The card an export starts with: metadata (the class's mixin card data plus the dataset), architecture,
    preprocessing, training metrics, usage; an empty evaluation section that `add_evaluation` fills."""
    card_data = ModelCardData(**type(model)._hub_mixin_info.model_card_data.to_dict())
    card_data.tags = sorted(set(card_data.tags or []) | set(TAGS))
    if data and _is_hub_dataset(data):
        card_data.datasets = [data]
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{_training_text(model.cfg, metrics or {}, data, steps)}")


def add_evaluation(export_dir: str | os.PathLike, evaluation: dict[str, Any], eval_dir: str | os.PathLike,
                   data: str | None = None) -> ModelCard:
    """Put an evaluation of the export into its card: `eval_results` metadata and a results section with the
    pictures (copied from `eval_dir` into ``export_dir/evaluation/``). A second evaluation replaces the first."""
    export_dir, eval_dir = Path(export_dir), Path(eval_dir)
    if evaluation.get("model_features", "latents") != "latents":
        raise ValueError(f"this evaluation probed the model's {evaluation['model_features']!r}, not what encode() "
                         "returns by default (its latents): the card only records the latter; evaluate with the "
                         "default --features latents to update it")
    card = ModelCard.load(export_dir / "README.md")
    pictures = evaluation.get("pictures") or {}
    with atomic_directory(export_dir / PICTURES_DIR) as work:
        work.mkdir()
        for file in pictures.values():
            shutil.copy2(eval_dir / file, work / file)
    if not pictures:
        shutil.rmtree(export_dir / PICTURES_DIR, ignore_errors=True)
    card.data.eval_results = eval_results(evaluation, data)
    card.data.model_name = card.data.model_name or MODEL_NAME
    section = f"{_BEGIN}\n{_evaluation_text(evaluation, data)}\n{_END}"
    text = card.text
    card.text = (re.sub(f"{re.escape(_BEGIN)}.*?{re.escape(_END)}", lambda _: section, text, flags=re.S)
                 if _BEGIN in text else f"{text.rstrip()}\n\n{section}\n")
    atomic_write_text(export_dir / "README.md", str(card))
    return card


def eval_results(evaluation: dict[str, Any], data: str | None = None) -> list[EvalResult]:
    """One `EvalResult` per probe, metric (worst group, adjusted average) and feature set; the floors' names say
    which floor they are."""
    dataset_type = data if data and _is_hub_dataset(data) else "waterbirds"
    dataset_name = f"Waterbirds ({data})" if data else "Waterbirds"
    out = []
    for features, probes in _feature_sets(evaluation).items():
        for probe, scores in probes.items():
            for key, metric_type, label in METRICS:
                name = f"{label}, {probe}" + ("" if features == TRAINED else f" (floor: {features})")
                out.append(EvalResult(task_type="image-classification", task_name=f"frozen features: {probe}",
                                      dataset_type=dataset_type, dataset_name=dataset_name, dataset_split="test",
                                      metric_type=metric_type, metric_name=name,
                                      metric_value=round(float(scores[key]), 4)))
    return out


def _feature_sets(evaluation: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """{feature set: {probe: scores}}, the trained model first."""
    sets = evaluation.get("features") or {TRAINED: evaluation["probes"]}
    return {TRAINED: sets[TRAINED], **{k: v for k, v in sets.items() if k != TRAINED}}


def _is_hub_dataset(data: str) -> bool:
    return not Path(data).expanduser().exists() and is_hub_id(data)


def _pm(scores: dict[str, Any], key: str) -> str:
    """mean ± std over the probe seeds (the mean alone for a probe that ran once)."""
    std = scores.get(f"{key}_std")
    return f"{scores[key]:.3f}" if std is None or scores.get("seeds", 2) < 2 else f"{scores[key]:.3f} ± {std:.3f}"


def _evaluation_text(evaluation: dict[str, Any], data: str | None) -> str:
    sets = _feature_sets(evaluation)
    floors = [name for name in sets if name != TRAINED]
    sizes = evaluation.get("split_sizes") or {}
    lines = ["## Evaluation", "",
             f"Frozen features of `{data or 'Waterbirds'}`" + (f" ({sizes['test']} test images)" if "test" in sizes
                                                               else "")
             + ", read by linear and kNN probes whose hyperparameters are chosen on validation worst-group accuracy "
               "(hrssm's docs/evaluation.md). Test accuracy, mean ± std over probe seeds; the floors are the same "
               "probes on " + (", ".join(floors) if floors else "nothing (evaluated without floors)") + ".", "",
             "| probe | worst group | adjusted average |" + "".join(f" worst group: {f} |" for f in floors),
             "| --- | --- | --- |" + " --- |" * len(floors)]
    for probe, scores in sets[TRAINED].items():
        lines.append(f"| {probe} | {_pm(scores, 'acc_wg')} | {_pm(scores, 'adj_acc_avg')} |"
                     + "".join(f" {_pm(sets[f][probe], 'acc_wg') if probe in sets[f] else 'n/a'} |" for f in floors))
    recon = evaluation.get("reconstruction") or {}
    if recon:
        lines += ["", f"Held-out reconstructions: recon_std_ratio {recon['recon_std_ratio']:.3f}, PSNR "
                      f"{recon['psnr']:.2f} dB against the mean image's {recon['psnr_mean_image']:.2f} dB."]
    for name, file in (evaluation.get("pictures") or {}).items():
        lines += ["", f"{name}:", "", f"![{name}]({PICTURES_DIR}/{file})"]
    return "\n".join(lines)


def _training_text(cfg, metrics: dict[str, float], data: str | None, steps: int | None) -> str:
    keys = ("recon_std_ratio", "psnr", "psnr_mean_image", "psnr_gain", "kl_global_raw", "kl_local_raw")
    rows = "\n".join(f"| {k} | {metrics[k]:.4g} |" for k in keys if k in metrics)
    r, p = cfg.rssm, cfg.preprocess
    dim = r.deter + r.stoch * r.classes + r.local_grid**2 * r.local_dim
    e = cfg.encoder
    encoder = (f"a patch-ViT encoder of two streams, RGB and Sobel gradients ({e.depth} blocks, width {e.width // 2} "
               f"each" if e.input_filter == "rgb+sobel" else
               f"a patch-ViT encoder ({e.input_filter} input, {e.depth} blocks, width {e.width}")
    return f"""# hrssm world model

A hierarchical RSSM world model (global GRU + {r.stoch}x{r.classes} categorical latent, {r.local_grid}x{r.local_grid}
grid of {r.local_dim}-dim Gaussian local latents) with {encoder}, patch {e.patch_size}, {e.stem} stem) and a ViT
decoder, trained with hrssm on still images seen as sequences of views.

## Preprocessing

What `encode()` applies (recorded in `config.json` under `preprocess`, with `image_size`): resize the shorter side to
{cfg.image_size} / {p.crop_fraction:g} = {round(cfg.image_size / p.crop_fraction)} px ({p.interpolation}, antialiased),
center-crop {cfg.image_size}x{cfg.image_size}, and map uint8 pixels x to x / 255 - 0.5 (range
[{p.pixel_range[0]:g}, {p.pixel_range[1]:g}]). An image already {cfg.image_size}x{cfg.image_size} is used as it is.

## Training

- data: {data or "unknown"}
- training steps: {steps if steps is not None else "unknown"}
- objective: {cfg.loss.objective}, recon_scale {cfg.loss.recon_scale}, free nats {cfg.loss.free_nats_global}
  (global) / {cfg.loss.free_nats_local} per cell (local)

Metrics at the end of training (averaged over the last log window, training views):

| metric | value |
| --- | --- |
{rows or "| (none recorded) | |"}

## Use

```python
import hrssm
enc = hrssm.load("THIS_FOLDER_OR_REPO")      # encoder + RSSM posterior; revision=, token=, cache_dir=, ...
features = enc.encode(images)                 # (B, {dim}) = [h, p(z), s of every cell]
tokens = enc.encode(images, features="tokens")  # (B, {cfg.encoder.width}): the encoder's mean patch token
model = hrssm.load_world_model("THIS_FOLDER_OR_REPO")   # full model, decoder included (= WorldModel.from_pretrained)
```

Images: uint8 (PIL, NumPy HWC, torch CHW / BCHW; preprocessed as above) or float in [-0.5, 0.5] at
{cfg.image_size}x{cfg.image_size}.

{_BEGIN}
{_END}
"""
