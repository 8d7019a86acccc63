"""Evaluate a trained world model on a Waterbirds split: latent features, reconstruction quality, a linear probe.

Images are encoded as sequences of one view (T = 1) in eval mode (`WorldModel.encode_latents`): the global
posterior mode and the local posterior means are used, so encoding is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .data import preprocess
from .diagnostics import image_metrics
from .latents import dataset_latents, decode_latents
from .metrics.group_accuracy import group_metrics
from .world_model import WorldModel


def encode_dataset(model: WorldModel, ds, batch_size: int = 128, with_recon_metrics: bool = False,
                   max_recon_images: int = 1024) -> dict[str, np.ndarray]:
    """`hrssm.latents.dataset_latents` (features, h, z, s, label, place, group, img_id) of every image.

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


# Inverse L2 strengths tried by the probes (features are standardized), chosen by worst-group accuracy.
C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


@dataclass
class ProbeResult:
    average: float  # accuracy over all test images
    per_group: list[float]  # accuracy of each group (nan for an empty group)
    worst_group: float
    adjusted_average: float  # per-group accuracies weighted by the train group proportions
    group_counts: list[int]
    C: float | None = None  # the chosen inverse regularization strength
    selection_worst_group: float | None = None  # worst-group accuracy on the selection set that chose C
    probe: object = field(default=None, repr=False)  # the fitted scikit-learn pipeline (`.predict`, `[-1].coef_`)

    def row(self) -> dict[str, float]:
        return {"average": self.average, "worst_group": self.worst_group, "adjusted_average": self.adjusted_average}

    def to_dict(self) -> dict:
        return {**self.row(), "per_group": self.per_group, "group_counts": self.group_counts, "C": self.C,
                "selection_worst_group": self.selection_worst_group}


def fit_logistic(x: np.ndarray, y: np.ndarray, C: float = 1.0, seed: int = 0):
    """A logistic-regression probe on standardized features (scikit-learn, L2, lbfgs); `.predict`, `.coef_`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(y)) < 2:
        raise ValueError(f"a probe needs both classes in its fit set, got only {np.unique(y).tolist()}")
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed)).fit(x, y)


def group_accuracies(pred: np.ndarray, y: np.ndarray, groups: np.ndarray, train_groups: np.ndarray,
                     num_groups: int = 4) -> ProbeResult:
    """Average, per-group, worst-group and adjusted-average accuracy (empty groups are skipped); the computation of
    the project's `evaluate` metric (hrssm/metrics/group_accuracy.py)."""
    m = group_metrics(pred, y, groups, train_groups, num_groups)
    return ProbeResult(average=m["accuracy"], per_group=m["group_accuracy"], worst_group=m["worst_group_accuracy"],
                       adjusted_average=m["adjusted_accuracy"], group_counts=m["group_counts"])


def _rows(data: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    n = len(data["group"])
    return {k: v[idx] for k, v in data.items() if isinstance(v, np.ndarray) and v.ndim >= 1 and len(v) == n}


def balanced_subset(data: dict[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    """Every group downsampled to the smallest one (DFR's group-balanced refit set, Kirichenko et al. 2022)."""
    groups = data["group"]
    present = [g for g in np.unique(groups)]
    n = min(int((groups == g).sum()) for g in present)
    rng = np.random.default_rng(seed)
    return _rows(data, np.sort(np.concatenate([rng.choice(np.flatnonzero(groups == g), n, replace=False)
                                               for g in present])))


def split_halves(data: dict[str, np.ndarray], seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Two disjoint halves of `data`, each with half of every group (the DFR fit / tuning split of validation)."""
    rng = np.random.default_rng(seed)
    first = []
    for g in np.unique(data["group"]):
        idx = rng.permutation(np.flatnonzero(data["group"] == g))
        first.append(idx[: (len(idx) + 1) // 2])
    mask = np.zeros(len(data["group"]), bool)
    mask[np.concatenate(first)] = True
    return _rows(data, np.flatnonzero(mask)), _rows(data, np.flatnonzero(~mask))


def _select(fit: dict, select: dict, test: dict, target: str, train_groups: np.ndarray, grid) -> ProbeResult:
    """Fit one probe per C on `fit`, keep the one with the best worst-group accuracy on `select`, score it on `test`."""
    if not grid:
        raise ValueError("the C grid of a probe is empty")
    best, best_wg, best_c = None, -1.0, None
    for c in grid:
        probe = fit_logistic(fit["features"], fit[target], c)
        wg = group_accuracies(probe.predict(select["features"]), select[target], select["group"], train_groups)
        if wg.worst_group > best_wg:  # ties keep the stronger regularization (grid order: small C first)
            best, best_wg, best_c = probe, wg.worst_group, c
    r = group_accuracies(best.predict(test["features"]), test[target], test["group"], train_groups)
    r.C, r.selection_worst_group, r.probe = best_c, best_wg, best
    return r


def train_probe(train: dict, val: dict, test: dict, target: str = "label", grid=C_GRID) -> ProbeResult:
    """Fit on train; C chosen by worst-group accuracy on validation; scored on test (standard ERM probe)."""
    return _select(train, val, test, target, train["group"], grid)


def dfr_probe(val: dict, test: dict, train_groups: np.ndarray, target: str = "label", grid=C_GRID,
              seed: int = 0) -> ProbeResult:
    """DFR-style (Kirichenko et al. 2022): fit on a group-balanced subset of one half of validation, C chosen by
    worst-group accuracy on the other half, scored on test (adjusted average weighted by `train_groups`)."""
    fit_half, tune_half = split_halves(val, seed)
    return _select(balanced_subset(fit_half, seed), tune_half, test, target, train_groups, grid)


def linear_probe(train: dict[str, np.ndarray], test: dict[str, np.ndarray], target: str = "label",
                 C: float = 1.0) -> ProbeResult:
    """Fit one logistic regression on `train` features for `target` and score it on `test` by group."""
    probe = fit_logistic(train["features"], train[target], C)
    r = group_accuracies(probe.predict(test["features"]), test[target], test["group"], train["group"])
    r.C, r.probe = C, probe
    return r


ERM_PROBE = "bird (label), fit on train"
DFR_PROBE = "bird (label), DFR: balanced val half, tuned on the other"
PLACE_PROBE = "background (place), fit on train"
PROBES = (ERM_PROBE, DFR_PROBE, PLACE_PROBE)  # the names of `standard_probes`, in its order


def standard_probes(feats: dict[str, dict[str, np.ndarray]], grid=C_GRID) -> dict[str, ProbeResult]:
    """The evaluation protocol on {"train", "validation", "test"} features: the three probes of `PROBES`."""
    train, val, test = feats["train"], feats["validation"], feats["test"]
    return {
        ERM_PROBE: train_probe(train, val, test, "label", grid),
        DFR_PROBE: dfr_probe(val, test, train["group"], "label", grid),
        PLACE_PROBE: train_probe(train, val, test, "place", grid),
    }


def probe_table(probes: dict[str, ProbeResult], group_names) -> str:
    """A markdown table: average, worst group, adjusted average, chosen C, per-group accuracies."""
    lines = ["| probe | average | worst group | adjusted average | C | " + " | ".join(group_names) + " |",
             "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in group_names) + " |"]
    for name, r in probes.items():
        lines.append(f"| {name} | {r.average:.3f} | {r.worst_group:.3f} | {r.adjusted_average:.3f} | {r.C:g} | "
                     + " | ".join(f"{a:.3f}" for a in r.per_group) + " |")
    return "\n".join(lines)
