"""Evaluate a trained world model on a Waterbirds split: latent features, reconstruction quality, a linear probe.

Images are encoded as sequences of one view (T = 1) in eval mode (`WorldModel.encode_latents`): the global
posterior mode and the local posterior means are used, so encoding is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .data import preprocess
from .diagnostics import image_metrics
from .latents import dataset_latents, decode_latents
from .metrics.group_accuracy import group_metrics
from .world_model import WorldModel


def encode_dataset(model: WorldModel, ds, batch_size: int = 128, with_recon_metrics: bool = False,
                   max_recon_images: int = 1024) -> dict[str, np.ndarray]:
    """`hrssm.latents.dataset_latents` (features, h, z, local, label, place, group, img_id) of every image.

    With `with_recon_metrics`, also the reconstruction metrics of the first `max_recon_images` images decoded from
    those latents (against the mean image of those images): recon_std_ratio, psnr, psnr_mean_image, psnr_gain.
    """
    out = dataset_latents(model, ds, batch_size, progress=False)
    if with_recon_metrics and model.decoder is not None:
        n = min(len(ds), max_recon_images)
        recon = decode_latents(model, out, n=n, batch_size=batch_size)
        target = preprocess(ds[:n]["image"], model.cfg.image_size)
        out.update({k: np.asarray(float(v)) for k, v in image_metrics(recon, target).items()})
    return out


@dataclass
class ProbeResult:
    average: float  # accuracy over all test images
    per_group: list[float]  # accuracy of each group (nan for an empty group)
    worst_group: float
    adjusted_average: float  # per-group accuracies weighted by the train group proportions
    group_counts: list[int]

    def row(self) -> dict[str, float]:
        return {"average": self.average, "worst_group": self.worst_group, "adjusted_average": self.adjusted_average}


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, steps: int = 200) -> tuple[np.ndarray, ...]:
    """Binary logistic regression with L2 on standardized features (L-BFGS). Returns (w, b, mean, std)."""
    xt = torch.as_tensor(x, dtype=torch.float64)
    mean, std = xt.mean(0), xt.std(0).clamp(min=1e-6)
    xt = (xt - mean) / std
    yt = torch.as_tensor(y, dtype=torch.float64)
    w = torch.zeros(xt.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), b.detach().numpy(), mean.numpy(), std.numpy()


def predict_logistic(params: tuple[np.ndarray, ...], x: np.ndarray) -> np.ndarray:
    w, b, mean, std = params
    return (((x - mean) / std) @ w + b > 0).astype(np.int64)


def group_accuracies(pred: np.ndarray, y: np.ndarray, groups: np.ndarray, train_groups: np.ndarray,
                     num_groups: int = 4) -> ProbeResult:
    """Average, per-group, worst-group and adjusted-average accuracy (empty groups are skipped); the computation of
    the project's `evaluate` metric (hrssm/metrics/group_accuracy.py)."""
    m = group_metrics(pred, y, groups, train_groups, num_groups)
    return ProbeResult(average=m["accuracy"], per_group=m["group_accuracy"], worst_group=m["worst_group_accuracy"],
                       adjusted_average=m["adjusted_accuracy"], group_counts=m["group_counts"])


def balanced_subset(data: dict[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    """Every group downsampled to the smallest one (DFR's group-balanced refit set, Kirichenko et al. 2022)."""
    groups = data["group"]
    present = [g for g in np.unique(groups)]
    n = min(int((groups == g).sum()) for g in present)
    rng = np.random.default_rng(seed)
    idx = np.sort(np.concatenate([rng.choice(np.flatnonzero(groups == g), n, replace=False) for g in present]))
    return {k: v[idx] for k, v in data.items() if isinstance(v, np.ndarray) and v.ndim >= 1 and len(v) == len(groups)}


def linear_probe(train: dict[str, np.ndarray], test: dict[str, np.ndarray], target: str = "label",
                 l2: float = 1e-3) -> ProbeResult:
    """Fit a logistic regression on `train` features for `target` and score it on `test` by group."""
    params = fit_logistic(train["features"], train[target], l2)
    return group_accuracies(predict_logistic(params, test["features"]), test[target], test["group"], train["group"])
