"""Evaluate a trained world model on a Waterbirds split: latent features, reconstruction quality, a linear probe.

Images are encoded as sequences of one view (T = 1) in eval mode: the global posterior mode and the local
posterior means are used, so encoding is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .data import preprocess
from .diagnostics import image_metrics
from .world_model import WorldModel


@torch.no_grad()
def encode_dataset(model: WorldModel, ds, batch_size: int = 128, crop_fraction: float = 1.0,
                   with_recon_metrics: bool = False, max_recon_images: int = 1024) -> dict[str, np.ndarray]:
    """Features (N, F) = [h, z, s of every cell] of every image, with label/place/group/img_id.

    With `with_recon_metrics`, also the reconstruction metrics of the first `max_recon_images` images (against the
    mean image of those images): keys recon_std_ratio, psnr, psnr_mean_image, psnr_gain.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    size = model.cfg.image_size
    feats, recons, targets = [], [], []
    try:
        for start in range(0, len(ds), batch_size):
            rows = ds[start : start + batch_size]
            x = preprocess(rows["image"], size, crop_fraction).to(device)
            views = x[:, None]
            traj = model.observe(views, views.new_zeros(x.shape[0], 1, model.cfg.action_dim), sample=False)
            feats.append(model.features(traj)[:, 0].float().cpu())
            if with_recon_metrics and model.decoder is not None and sum(len(t) for t in targets) < max_recon_images:
                recons.append(model.decode(traj.h, traj.z, traj.s)[:, 0].float().cpu())
                targets.append(x.float().cpu())
    finally:
        model.train(was_training)
    out = {"features": torch.cat(feats).numpy()}
    for key in ("label", "place", "group", "img_id"):
        out[key] = np.asarray(ds[key])
    if recons:
        r, t = torch.cat(recons)[:max_recon_images], torch.cat(targets)[:max_recon_images]
        for k, v in image_metrics(r, t).items():
            out[k] = np.asarray(float(v))
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
    """Average, per-group, worst-group and adjusted-average accuracy (empty groups are skipped)."""
    correct = pred == y
    per_group, counts = [], []
    for g in range(num_groups):
        mask = groups == g
        counts.append(int(mask.sum()))
        per_group.append(float(correct[mask].mean()) if mask.any() else float("nan"))
    weights = np.bincount(train_groups, minlength=num_groups).astype(float)
    present = [g for g in range(num_groups) if counts[g] > 0]
    w = weights[present] / max(weights[present].sum(), 1e-12)
    return ProbeResult(
        average=float(correct.mean()) if len(correct) else float("nan"),
        per_group=per_group,
        worst_group=min(per_group[g] for g in present) if present else float("nan"),
        adjusted_average=float(sum(wi * per_group[g] for wi, g in zip(w, present))),
        group_counts=counts,
    )


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
