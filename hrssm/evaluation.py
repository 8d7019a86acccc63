"""Probes of frozen features, scored by group: the protocol every representation number of hrssm goes through.

Features of train / validation / test (`encode_dataset`, or any `{"features", "label", "place", "group"}` dict)
are read by five probes, each with its hyperparameter chosen by worst-group accuracy on held-out data, never on test:

- `DFR_PROBE`, the headline: DFR(Val) exactly as the reference code (`dfr_evaluate_spurious.py`, Kirichenko et al.
  2022): validation shuffled and cut in two halves; C tuned on one half with a probe fit on the other, group-balanced
  half (scaler fit there); then a scaler fit on **train**, and `refits` (20) logistic regressions, each on a fresh
  group-balanced subsample of the **whole** validation set, averaged into one classifier that scores test.
  L1 penalty, liblinear, C in `DFR_C_GRID` as published (`penalty="l2"` / another grid as options).
- `DFR_HALF_PROBE`: the earlier, simpler variant: fit on a group-balanced subset of one validation half (stratified
  halves), C chosen on the other half, no refits. L2 penalty, C in `C_GRID`.
- `ERM_PROBE`: fit on train (95% background-correlated on Waterbirds), C chosen on validation: how much the
  representation invites the shortcut.
- `KNN_PROBE`: k-nearest-neighbour vote (k = 20, cosine similarity, weights exp(sim / 0.07) as in DINO /
  solo-learn) among a group-balanced subsample of validation; no fitted weights at all.
- `PLACE_PROBE`: the background (place) fit on train: how much of the spurious feature the features carry.

Reproducible on any machine: every fit and every BLAS call runs under one thread (liblinear for L1, lbfgs for L2),
seeded. Probes that subsample run once per probe seed; a `ProbeResult` holds every seed's scores and reports their
mean and spread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .data import GROUP_NAMES, LABEL_NAMES, PLACE_NAMES, preprocess
from .diagnostics import image_metrics
from .latents import dataset_latents, decode_latents
from .metrics.group_accuracy import group_metrics

# Inverse regularization strengths. C_GRID: the L2 probes (standardized features), small C first.
C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
# The reference DFR grid for Waterbirds (C_OPTIONS of dfr_evaluate_spurious.py), in its order.
DFR_C_GRID = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)
PROBE_SEEDS = (0, 1, 2, 3, 4)
DFR_REFITS = 20
KNN_K, KNN_TEMPERATURE = 20, 0.07

DFR_PROBE = "bird, DFR (reference: tuned on val halves, 20 balanced refits)"
DFR_HALF_PROBE = "bird, DFR (half of validation)"
ERM_PROBE = "bird, fit on train"
KNN_PROBE = "bird, kNN (k=20) on balanced validation"
PLACE_PROBE = "background, fit on train"
PROBES = (DFR_PROBE, DFR_HALF_PROBE, ERM_PROBE, KNN_PROBE, PLACE_PROBE)  # `standard_probes`' names, in its order


def wilds_group_names() -> list[str]:
    """WILDS' names of the Waterbirds groups (`y:landbird_background:land`, ...), in group-id order."""
    return [f"y:{y}_background:{p}" for y in LABEL_NAMES for p in PLACE_NAMES]


# -- features -------------------------------------------------------------------------------------------------------


def encode_dataset(model, ds, batch_size: int = 128, with_recon_metrics: bool = False,
                   max_recon_images: int = 1024, progress: bool = False, desc: str = "encoding",
                   features: str = "latents") -> dict[str, np.ndarray]:
    """`hrssm.latents.dataset_latents` (features, h, z, z_probs, s, label, place, group, img_id) of every image;
    `features` ("latents", "global" or "tokens", see `Encoder.encode`) says what the `features` array holds.

    With `with_recon_metrics` (and a pixel decoder), also the reconstruction metrics of the first
    `max_recon_images` images decoded from those latents: recon_std_ratio, psnr, psnr_mean_image, psnr_gain,
    seam_ratio.
    """
    out = dataset_latents(model, ds, batch_size, progress=progress, desc=desc, features=features)
    if with_recon_metrics and getattr(model, "decoder", None) is not None:
        n = min(len(ds), max_recon_images)
        recon = decode_latents(model, out, n=n, batch_size=batch_size)
        target = preprocess(ds[:n]["image"], **model.cfg.preprocessing())
        metrics = image_metrics(recon, target, patch_size=model.cfg.encoder.patch_size)
        out.update({k: np.asarray(float(v)) for k, v in metrics.items()})
    return out


def pixel_features(ds, size: int = 32, batch_size: int = 512) -> dict[str, np.ndarray]:
    """The raw-pixel floor: every image resized to `size` x `size`, flattened (N, 3 * size * size) in [-0.5, 0.5]."""
    parts = [preprocess(ds[i : i + batch_size]["image"], size).flatten(1).numpy()
             for i in range(0, len(ds), batch_size)]
    out = {"features": np.concatenate(parts).astype(np.float32)}
    for key in ("label", "place", "group", "img_id"):
        out[key] = np.asarray(ds[key], dtype=np.int64)
    return out


# -- scores ---------------------------------------------------------------------------------------------------------


@dataclass
class GroupScores:
    """Accuracies of one set of predictions on one split."""

    average: float  # accuracy over all images
    per_group: list[float]  # accuracy of each group (nan for an empty group), in GROUP_NAMES order
    worst_group: float
    adjusted_average: float  # per-group accuracies weighted by the train group proportions
    group_counts: list[int]

    def wilds(self) -> dict[str, float]:
        """WILDS-style keys: acc_avg, adj_acc_avg, acc_wg, acc_y:..._background:... per group."""
        out = {"acc_avg": self.average, "adj_acc_avg": self.adjusted_average, "acc_wg": self.worst_group}
        out.update({f"acc_{name}": acc for name, acc in zip(wilds_group_names(), self.per_group)})
        return out


def group_accuracies(pred: np.ndarray, y: np.ndarray, groups: np.ndarray, train_groups: np.ndarray,
                     num_groups: int = 4) -> GroupScores:
    """Average, per-group, worst-group and adjusted-average accuracy (empty groups skipped): the computation of the
    project's `evaluate` metric (hrssm/metrics/group_accuracy.py)."""
    m = group_metrics(pred, y, groups, train_groups, num_groups)
    return GroupScores(average=m["accuracy"], per_group=m["group_accuracy"], worst_group=m["worst_group_accuracy"],
                       adjusted_average=m["adjusted_accuracy"], group_counts=m["group_counts"])


PALETTE_KEYS = ("acc_wg", "acc_own_palette", "acc_other_palette", "acc_wg_other_palette")


def palette_scores(pred: np.ndarray, y: np.ndarray, groups: np.ndarray, own: np.ndarray) -> dict[str, float]:
    """Shape or colour? Accuracies of predictions `pred` (N,) on the synthetic twin split by which palette each bird
    was coloured from (`own`, (N,) bool: `hrssm.data.synthetic.own_palette`): the worst group of all birds, the
    accuracy on own-palette birds, on other-palette birds (only their shape tells their class), and the worst group
    among other-palette birds (nan where there are none). A colour reader scores high on the first and below 0.5 on
    the second."""
    ok = np.asarray(pred) == np.asarray(y)
    own = np.asarray(own, dtype=bool)
    present = np.unique(groups)
    return {"acc_wg": float(min(ok[groups == g].mean() for g in present)),
            "acc_own_palette": float(ok[own].mean()) if own.any() else float("nan"),
            "acc_other_palette": float(ok[~own].mean()) if (~own).any() else float("nan"),
            "acc_wg_other_palette": float(min((ok[(groups == g) & ~own].mean() for g in present
                                               if ((groups == g) & ~own).any()), default=float("nan")))}


def mean_and_std(runs: list[dict[str, float]], keys: Sequence[str] | None = None) -> dict[str, float]:
    """{key: mean over the runs, key_std: their std} of each key (default: every key of the first run), e.g. of
    `palette_scores` over probe seeds."""
    keys = list(runs[0]) if keys is None else keys
    return {**{k: float(np.mean([r[k] for r in runs])) for k in keys},
            **{f"{k}_std": float(np.std([r[k] for r in runs])) for k in keys}}


def palette_table(rows: dict[str, list[dict[str, float]]], other_share: float) -> str:
    """Markdown table of `palette_scores`, one row per name, mean ± std over its runs (probe seeds or networks);
    other_share: the share of other-palette birds among the scored images."""
    def pm(runs: list[dict[str, float]], key: str) -> str:
        return f"{np.mean([r[key] for r in runs]):.3f} ± {np.std([r[key] for r in runs]):.3f}"

    lines = ["| features | bird: worst group | own-palette birds | other-palette birds "
             f"({other_share:.0%} of test) | other-palette birds: worst group |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {name} | " + " | ".join(pm(runs, k) for k in PALETTE_KEYS) + " |" for name, runs in rows.items()]
    return "\n".join(lines)


@dataclass
class ProbeResult:
    """One probe's test scores, one `GroupScores` per probe seed; the properties are means over the seeds."""

    name: str
    runs: list[GroupScores]
    hyper: list[float] = field(default_factory=list)  # chosen C (or k) per seed
    selection_worst_group: list[float] = field(default_factory=list)  # held-out worst group that chose it
    probe: object = field(default=None, repr=False)  # seed 0's classifier: `.predict`, `[0]` scaler, `[-1].coef_`

    def _mean(self, key: str) -> float:
        return float(np.mean([getattr(r, key) for r in self.runs]))

    def _std(self, key: str) -> float:
        return float(np.std([getattr(r, key) for r in self.runs]))

    @property
    def average(self) -> float:
        return self._mean("average")

    @property
    def worst_group(self) -> float:
        return self._mean("worst_group")

    @property
    def adjusted_average(self) -> float:
        return self._mean("adjusted_average")

    @property
    def worst_group_std(self) -> float:
        return self._std("worst_group")

    @property
    def average_std(self) -> float:
        return self._std("average")

    @property
    def per_group(self) -> list[float]:
        return np.nanmean(np.array([r.per_group for r in self.runs], dtype=float), axis=0).tolist()

    @property
    def group_counts(self) -> list[int]:
        return self.runs[0].group_counts

    @property
    def C(self) -> float | None:  # noqa: N802 (scikit-learn's name)
        """The hyperparameter of seed 0 (all seeds: `hyper`)."""
        return self.hyper[0] if self.hyper else None

    def to_dict(self) -> dict:
        """Means (WILDS keys and ours), spreads over the probe seeds, and every seed's scores."""
        mean = GroupScores(self.average, self.per_group, self.worst_group, self.adjusted_average, self.group_counts)
        return {**mean.wilds(), "acc_wg_std": self.worst_group_std, "acc_avg_std": self.average_std,
                "adj_acc_avg_std": self._std("adjusted_average"), "seeds": len(self.runs),
                "average": self.average, "worst_group": self.worst_group, "adjusted_average": self.adjusted_average,
                "per_group": self.per_group, "group_counts": self.group_counts, "hyper": self.hyper,
                "selection_worst_group": self.selection_worst_group,
                "runs": [r.wilds() for r in self.runs]}


# -- fitting --------------------------------------------------------------------------------------------------------


def _one_thread():
    """Every BLAS / OpenMP pool at one thread: the same sums in the same order on every machine."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1)


def _logistic(C: float, penalty: str, seed: int):
    """Logistic regression with an "l1" penalty (liblinear, as the reference DFR code) or "l2" (lbfgs: 5-10x
    faster on thousands of rows; deterministic under one thread). scikit-learn >= 1.8 names the penalty by
    `l1_ratio`."""
    import inspect

    from sklearn.linear_model import LogisticRegression

    if penalty == "l2":
        return LogisticRegression(C=C, solver="lbfgs", max_iter=2000, random_state=seed)
    if penalty != "l1":
        raise ValueError(f"probe penalty must be 'l1' or 'l2', got {penalty!r}")
    modern = inspect.signature(LogisticRegression).parameters["penalty"].default == "deprecated"
    kind = {"l1_ratio": 1.0} if modern else {"penalty": "l1"}
    return LogisticRegression(C=C, solver="liblinear", max_iter=1000, random_state=seed, **kind)


def fit_logistic(x: np.ndarray, y: np.ndarray, C: float = 1.0, seed: int = 0, penalty: str = "l2"):
    """A `StandardScaler + LogisticRegression` pipeline fit on (x, y) under one thread: `.predict`, `[-1].coef_`."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(y)) < 2:
        raise ValueError(f"a probe needs both classes in its fit set, got only {np.unique(y).tolist()}")
    with _one_thread():
        return make_pipeline(StandardScaler(), _logistic(C, penalty, seed)).fit(x, y)


def _rows(data: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    n = len(data["group"])
    return {k: v[idx] for k, v in data.items() if isinstance(v, np.ndarray) and v.ndim >= 1 and len(v) == n}


def balanced_indices(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of a group-balanced subsample: every present group cut to the smallest one's size, at random."""
    present = np.unique(groups)
    n = min(int((groups == g).sum()) for g in present)
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(groups == g))[:n] for g in present]))


def balanced_subset(data: dict[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    """Every group downsampled to the smallest one (DFR's group-balanced fit set)."""
    return _rows(data, balanced_indices(data["group"], np.random.default_rng(seed)))


def split_halves(data: dict[str, np.ndarray], seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Two disjoint halves of `data`, each with half of every group (the stratified split of `dfr_half_probe`)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(data["group"]), bool)
    for g in np.unique(data["group"]):
        idx = rng.permutation(np.flatnonzero(data["group"] == g))
        mask[idx[: (len(idx) + 1) // 2]] = True
    return _rows(data, np.flatnonzero(mask)), _rows(data, np.flatnonzero(~mask))


def _score(probe, data: dict, target: str, train_groups: np.ndarray) -> GroupScores:
    with _one_thread():
        pred = probe.predict(data["features"])
    return group_accuracies(pred, data[target], data["group"], train_groups)


def _select_c(fit: dict, select: dict, target: str, grid: Sequence[float], penalty: str, seed: int,
              train_groups: np.ndarray):
    """Fit one probe per C on `fit`; the first C (grid order) with the best worst group on `select` wins."""
    if not grid:
        raise ValueError("the C grid of a probe is empty")
    best = None
    for c in grid:
        probe = fit_logistic(fit["features"], fit[target], c, seed, penalty)
        wg = _score(probe, select, target, train_groups).worst_group
        if best is None or wg > best[1]:
            best = (probe, wg, c)
    return best


def train_probe(train: dict, val: dict, test: dict, target: str = "label", grid: Sequence[float] = C_GRID,
                name: str = ERM_PROBE) -> ProbeResult:
    """Fit on train; C chosen by worst-group accuracy on validation; scored on test (the standard ERM probe).
    Deterministic, so it runs once."""
    probe, wg, c = _select_c(train, val, target, grid, "l2", 0, train["group"])
    return ProbeResult(name, [_score(probe, test, target, train["group"])], [c], [wg], probe)


def dfr_half_probe(val: dict, test: dict, train_groups: np.ndarray, target: str = "label",
                   grid: Sequence[float] = C_GRID, seeds: Sequence[int] = PROBE_SEEDS) -> ProbeResult:
    """Fit on a group-balanced subset of one stratified half of validation, C chosen by worst-group accuracy on
    the other half, scored on test; once per seed."""
    runs, hyper, sel, first = [], [], [], None
    for seed in seeds:
        fit_half, tune_half = split_halves(val, seed)
        probe, wg, c = _select_c(balanced_subset(fit_half, seed), tune_half, target, grid, "l2", seed, train_groups)
        runs.append(_score(probe, test, target, train_groups))
        hyper.append(c), sel.append(wg)
        first = probe if first is None else first
    return ProbeResult(DFR_HALF_PROBE, runs, hyper, sel, first)


def dfr_probe(train: dict, val: dict, test: dict, target: str = "label", grid: Sequence[float] = DFR_C_GRID,
              penalty: str = "l1", refits: int = DFR_REFITS, seeds: Sequence[int] = PROBE_SEEDS) -> ProbeResult:
    """DFR(Val) as the reference `dfr_evaluate_spurious.py` (module docstring); once per probe seed."""
    runs, hyper, sel, first = [], [], [], None
    for seed in seeds:
        rng = np.random.default_rng(seed)
        idx = rng.permutation(len(val["group"]))
        tune, fit = _rows(val, idx[: len(idx) // 2]), _rows(val, idx[len(idx) // 2 :])
        _, wg, c = _select_c(_rows(fit, balanced_indices(fit["group"], rng)), tune, target, grid, penalty, seed,
                             train["group"])
        probe = _averaged_refits(train, val, target, c, penalty, refits, rng, seed)
        runs.append(_score(probe, test, target, train["group"]))
        hyper.append(c), sel.append(wg)
        first = probe if first is None else first
    return ProbeResult(DFR_PROBE, runs, hyper, sel, first)


def _averaged_refits(train: dict, val: dict, target: str, C: float, penalty: str, refits: int,
                     rng: np.random.Generator, seed: int):
    """A scaler fit on train + the mean of `refits` logistic regressions, each fit on a fresh group-balanced
    subsample of the whole of `val`, as one scikit-learn pipeline."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    with _one_thread():
        scaler = StandardScaler().fit(train["features"])
        x_val = scaler.transform(val["features"])
        coefs, intercepts = [], []
        for _ in range(refits):
            idx = balanced_indices(val["group"], rng)
            lr = _logistic(C, penalty, seed).fit(x_val[idx], val[target][idx])
            coefs.append(lr.coef_), intercepts.append(lr.intercept_)
        lr.coef_, lr.intercept_ = np.mean(coefs, axis=0), np.mean(intercepts, axis=0)
    return make_pipeline(scaler, lr)


class KNNProbe:
    """Weighted k-nearest-neighbour vote on standardized, L2-normalized features (DINO's weighted kNN)."""

    def __init__(self, k: int = KNN_K, temperature: float = KNN_TEMPERATURE) -> None:
        self.k, self.temperature = k, temperature

    def fit(self, x: np.ndarray, y: np.ndarray, scaler) -> KNNProbe:
        self.scaler, self.y = scaler, np.asarray(y)
        self.bank = self._embed(x)
        return self

    def _embed(self, x: np.ndarray) -> np.ndarray:
        z = self.scaler.transform(x)
        return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)

    def predict(self, x: np.ndarray, batch: int = 1024) -> np.ndarray:
        k = min(self.k, len(self.y))
        classes = np.unique(self.y)
        out = []
        for start in range(0, len(x), batch):
            sim = self._embed(x[start : start + batch]) @ self.bank.T
            top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            weight = np.exp(np.take_along_axis(sim, top, 1) / self.temperature)
            votes = np.stack([(weight * (self.y[top] == c)).sum(1) for c in classes], axis=1)
            out.append(classes[votes.argmax(1)])
        return np.concatenate(out)


def knn_probe(train: dict, val: dict, test: dict, target: str = "label", k: int = KNN_K,
              seeds: Sequence[int] = PROBE_SEEDS) -> ProbeResult:
    """kNN among a group-balanced subsample of validation (a fresh one per seed), scaler fit on train."""
    from sklearn.preprocessing import StandardScaler

    with _one_thread():
        scaler = StandardScaler().fit(train["features"])
    runs, first = [], None
    for seed in seeds:
        idx = balanced_indices(val["group"], np.random.default_rng(seed))
        with _one_thread():
            probe = KNNProbe(k).fit(val["features"][idx], val[target][idx], scaler)
        runs.append(_score(probe, test, target, train["group"]))
        first = probe if first is None else first
    return ProbeResult(KNN_PROBE, runs, [float(k)] * len(runs), [], first)


def standard_probes(feats: dict[str, dict[str, np.ndarray]], seeds: Sequence[int] = PROBE_SEEDS,
                    dfr_penalty: str = "l1", dfr_grid: Sequence[float] = DFR_C_GRID) -> dict[str, ProbeResult]:
    """The protocol on {"train", "validation", "test"} features: the probes of `PROBES`, in that order."""
    train, val, test = feats["train"], feats["validation"], feats["test"]
    return {
        DFR_PROBE: dfr_probe(train, val, test, "label", dfr_grid, dfr_penalty, seeds=seeds),
        DFR_HALF_PROBE: dfr_half_probe(val, test, train["group"], "label", seeds=seeds),
        ERM_PROBE: train_probe(train, val, test, "label"),
        KNN_PROBE: knn_probe(train, val, test, "label", seeds=seeds),
        PLACE_PROBE: train_probe(train, val, test, "place", name=PLACE_PROBE),
    }


# -- tables ---------------------------------------------------------------------------------------------------------


def _pm(r: ProbeResult, key: str) -> str:
    mean, std = getattr(r, key), r._std(key)
    return f"{mean:.3f}" if len(r.runs) == 1 else f"{mean:.3f} ± {std:.3f}"


def floors_table(results: dict[str, dict[str, ProbeResult]]) -> str:
    """Markdown: one row per feature set (trained model and its floors), the headline numbers of every probe."""
    lines = ["| features | bird DFR: worst group | bird DFR: average | bird DFR: adjusted avg | "
             "bird DFR half-val: worst group | bird fit on train: worst / adjusted avg | bird kNN: worst group | "
             "background: accuracy |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, p in results.items():
        erm = p[ERM_PROBE]
        lines.append(f"| {name} | {_pm(p[DFR_PROBE], 'worst_group')} | {_pm(p[DFR_PROBE], 'average')} | "
                     f"{_pm(p[DFR_PROBE], 'adjusted_average')} | {_pm(p[DFR_HALF_PROBE], 'worst_group')} | "
                     f"{erm.worst_group:.3f} / {erm.adjusted_average:.3f} | {_pm(p[KNN_PROBE], 'worst_group')} | "
                     f"{p[PLACE_PROBE].average:.3f} |")
    return "\n".join(lines)


def probe_table(probes: dict[str, ProbeResult], group_names: Sequence[str] = GROUP_NAMES) -> str:
    """Markdown: every probe of one feature set with average, worst group (mean ± spread over probe seeds),
    adjusted average, chosen hyperparameter and per-group accuracies."""
    lines = ["| probe | average | worst group | adjusted average | C / k | " + " | ".join(group_names) + " |",
             "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in group_names) + " |"]
    for name, r in probes.items():
        hyper = ", ".join(f"{h:g}" for h in sorted(set(r.hyper)))
        lines.append(f"| {name} | {_pm(r, 'average')} | {_pm(r, 'worst_group')} | {r.adjusted_average:.3f} | "
                     f"{hyper} | " + " | ".join(f"{a:.3f}" for a in r.per_group) + " |")
    return "\n".join(lines)
