"""Concepts in latent space: concept activation vectors (CAVs), TCAV scores with significance, edits, a reward.

A concept is a set of examples (e.g. images with `place == 1`) against random counterexamples. Its CAV is the normal
of a linear classifier separating their latent features (Kim et al. 2018, "Interpretability beyond feature
attribution: TCAV"). The TCAV score of a class is the share of that class's examples whose class logit grows along
the CAV (positive directional derivative); it is significant when the scores of CAVs learned against several random
sets differ from those of random-vs-random CAVs (two-sided t-test).

Edits move latents (`h`, `z`, `s`, as from `encode_latents`) along a CAV, or run a learned edit action through the
world model's prior (`imagine`, for a model trained with `views.mode=edit`). `plan_edits` searches edit amounts by
the cross-entropy method against a reward: remove the concept (its probe's logit towards 0) and keep the class.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .evaluation import fit_logistic

LogitFn = Callable[[torch.Tensor], torch.Tensor]  # features (N, D) -> class-1 logits (N,)


@dataclass
class CAV:
    direction: np.ndarray  # (D,) unit vector in raw feature space, pointing towards the concept
    gap: float  # distance between the concept's and the counterexamples' mean projections on `direction`
    accuracy: float  # held-out accuracy of the concept classifier (0.5 = the concept is not linearly there)


def learn_cav(concept: np.ndarray, counter: np.ndarray, C: float = 0.1, seed: int = 0) -> CAV:
    """Concept vs counterexample features (N, D), (M, D) -> CAV; a third of each set is held out for `accuracy`."""
    if len(concept) < 3 or len(counter) < 3:
        raise ValueError(f"a CAV needs at least 3 concept and 3 counterexamples, got {len(concept)} and "
                         f"{len(counter)}")
    rng = np.random.default_rng(seed)
    x = np.concatenate([concept, counter]).astype(np.float64)
    y = np.r_[np.ones(len(concept), np.int64), np.zeros(len(counter), np.int64)]
    held = np.zeros(len(y), bool)
    for cls in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == cls))
        held[idx[: len(idx) // 3]] = True
    probe = fit_logistic(x[~held], y[~held], C, seed)
    accuracy = float((probe.predict(x[held]) == y[held]).mean())
    scaler, lr = probe[0], probe[-1]
    direction = lr.coef_[0] / scaler.scale_  # the classifier's normal in raw feature space
    direction = direction / np.linalg.norm(direction)
    gap = float(np.mean(concept @ direction) - np.mean(counter @ direction))
    return CAV(direction, gap, accuracy)


def logit_gradients(logit_fn: LogitFn, features: np.ndarray) -> np.ndarray:
    """d logit / d features (N, D) of each example (autograd; any differentiable probe)."""
    x = torch.as_tensor(features, dtype=torch.float64).clone().requires_grad_(True)
    logit_fn(x).sum().backward()
    return x.grad.numpy()


def linear_logit_fn(probe) -> LogitFn:
    """The class-1 logit of a scikit-learn `StandardScaler + LogisticRegression` pipeline as a torch function."""
    scaler, lr = probe[0], probe[-1]
    mean, scale = (torch.as_tensor(a, dtype=torch.float64) for a in (scaler.mean_, scaler.scale_))
    w, b = torch.as_tensor(lr.coef_[0], dtype=torch.float64), float(lr.intercept_[0])
    return lambda x: ((x.to(torch.float64) - mean) / scale) @ w + b


def tcav_score(gradients: np.ndarray, cav: CAV) -> float:
    """Share of examples whose logit has a positive directional derivative along the CAV."""
    return float((gradients @ cav.direction > 0).mean())


@dataclass
class TCAVResult:
    score: float  # mean TCAV score over the CAVs learned against `runs` random sets
    scores: list[float]  # one per random set
    random_scores: list[float]  # random-vs-random CAVs: the null distribution
    p_value: float  # two-sided t-test, scores vs random_scores
    cav_accuracy: float  # mean held-out accuracy of the concept CAVs
    alpha: float = 0.05
    extra: dict = field(default_factory=dict)

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha


def concept_cavs(concept: np.ndarray, pool: np.ndarray, runs: int = 20, set_size: int | None = 200,
                 C: float = 0.1, seed: int = 0) -> tuple[list[CAV], list[CAV]]:
    """`runs` CAVs of the concept (M, D) against random sets drawn from `pool` (P, D), and as many random-vs-random
    CAVs (the null). Sets have min(set_size, M, P / 2) examples."""
    if runs < 2:
        raise ValueError(f"runs={runs}: the t-test needs at least 2 random sets")
    rng = np.random.default_rng(seed)
    n = min(set_size or len(concept), len(concept), len(pool) // 2)
    cavs, nulls = [], []
    for r in range(runs):
        picks = rng.permutation(len(pool))
        rand_a, rand_b = pool[picks[:n]], pool[picks[n : 2 * n]]
        cavs.append(learn_cav(concept[rng.choice(len(concept), n, replace=False)], rand_a, C, seed + r))
        nulls.append(learn_cav(rand_b, rand_a, C, seed + r))
    return cavs, nulls


def tcav_test(gradients: np.ndarray, cavs: list[CAV], nulls: list[CAV], alpha: float = 0.05) -> TCAVResult:
    """TCAV scores of `gradients` (N, D) (the class logit's, at the class's examples) for the concept CAVs and the
    random ones, and a two-sided (Welch) t-test between them."""
    from scipy.stats import ttest_ind

    s = np.asarray([tcav_score(gradients, c) for c in cavs])
    z = np.asarray([tcav_score(gradients, c) for c in nulls])
    if s.std() == 0 and z.std() == 0:  # both constant: equal -> nothing to see; different -> certain
        p = 1.0 if s.mean() == z.mean() else 0.0
    else:
        with warnings.catch_warnings():  # one constant sample: scipy warns about precision, the test still holds
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(ttest_ind(s, z, equal_var=False).pvalue)
    return TCAVResult(float(s.mean()), s.tolist(), z.tolist(), p, float(np.mean([c.accuracy for c in cavs])), alpha)


def tcav(gradients: np.ndarray, concept: np.ndarray, pool: np.ndarray, runs: int = 20, set_size: int | None = 200,
         C: float = 0.1, alpha: float = 0.05, seed: int = 0) -> TCAVResult:
    """TCAV with significance (Kim et al. 2018): `gradients` (N, D) of the class logit at the class's examples;
    `concept` (M, D) features of the concept; `pool` (P, D) features that random sets are drawn from (ideally
    without the concept's own examples)."""
    return tcav_test(gradients, *concept_cavs(concept, pool, runs, set_size, C, seed), alpha)


def tcav_by_class(logit_fn: LogitFn, features: np.ndarray, classes: np.ndarray, class_names, cavs: list[CAV],
                  nulls: list[CAV]) -> list[dict]:
    """TCAV of each class of a binary probe (`logit_fn`: class-1 logit; class 0's logit is its negative) at the
    examples of that class (`features` (N, D), `classes` (N,)). One JSON-ready row per class."""
    rows = []
    for cls, name in enumerate(class_names):
        x = features[classes == cls]
        sign = 1.0 if cls == 1 else -1.0
        r = tcav_test(logit_gradients(lambda f, s=sign: s * logit_fn(f), x), cavs, nulls)
        rows.append({"class": name, "score": r.score, "random_mean": float(np.mean(r.random_scores)),
                     "p_value": r.p_value, "significant": r.significant, "cav_accuracy": r.cav_accuracy,
                     "scores": r.scores, "random_scores": r.random_scores, "examples": len(x)})
    return rows


# -- edits ------------------------------------------------------------------------------------------------------------


def latents_to_features(lat: dict[str, torch.Tensor]) -> torch.Tensor:
    """{h, z, s} -> (B, D) features [h, z, s of every cell] (`HierarchicalRSSM.features`): the state the decoder
    reads, z one-hot (`Encoder.encode` exports z's class probabilities instead), so an edit decodes."""
    from .rssm import HierarchicalRSSM

    return HierarchicalRSSM.features(lat["h"], lat["z"], lat.get("s"))


def features_to_latents(features: torch.Tensor, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of `latents_to_features`, with the shapes of `like`."""
    h_dim, z_dim = like["h"].shape[-1], like["z"].shape[-1]
    out = {"h": features[..., :h_dim], "z": features[..., h_dim : h_dim + z_dim]}
    if like.get("s") is not None:
        out["s"] = features[..., h_dim + z_dim :].unflatten(-1, like["s"].shape[-2:])
    return out


def edit_along_cav(lat: dict[str, torch.Tensor], cav: CAV, amount: float | torch.Tensor) -> dict[str, torch.Tensor]:
    """Move latents by `amount` x the CAV's gap along its direction (amount 1 ~ from the counterexamples' mean to
    the concept's; negative amounts remove the concept). `amount` may be a (B,) tensor. The edited `z` is no longer
    one-hot: the decoder takes it as it is."""
    x = latents_to_features(lat)
    step = torch.as_tensor(cav.direction * cav.gap, dtype=x.dtype, device=x.device)
    amount = torch.as_tensor(amount, dtype=x.dtype, device=x.device)
    return features_to_latents(x + (amount[..., None] if amount.ndim else amount) * step, lat)


@torch.no_grad()
def edit_by_action(model, lat: dict[str, torch.Tensor], action: float | torch.Tensor,
                   steps: int = 1) -> dict[str, torch.Tensor]:
    """Run an edit action through the world model's prior from the posterior latents `lat` (T = 1 encoding):
    `steps` transitions with `action` (scalar or (B,)) in action channel 0, deterministic (prior modes / means).
    For a model trained with views.mode=edit: +1 makes the background water, -1 land, 0 is a no-op."""
    from .rssm import State

    b = lat["h"].shape[0]
    a = torch.zeros(b, steps, model.cfg.action_dim, dtype=lat["h"].dtype, device=lat["h"].device)
    a[..., 0] = torch.as_tensor(action, dtype=a.dtype, device=a.device).reshape(-1, 1).expand(b, steps)
    traj = model.rssm.imagine(State(lat["h"], lat["z"], lat.get("s")), a, sample=False)
    out = {"h": traj.h[:, -1], "z": traj.z[:, -1]}
    if traj.s is not None:
        out["s"] = traj.s[:, -1]
    return out


# -- reward and planning ----------------------------------------------------------------------------------------------


def concept_removal_reward(features: torch.Tensor, concept_logit: LogitFn, class_logit: LogitFn,
                           target: torch.Tensor, keep_weight: float = 1.0) -> torch.Tensor:
    """Reward (B,) of edited features: -|concept logit| (the concept probe can no longer tell) + keep_weight x
    log p(class = target) (the class survives the edit)."""
    c = concept_logit(features)
    k = class_logit(features)
    log_p = torch.nn.functional.logsigmoid(torch.where(target.bool(), k, -k))
    return -c.abs() + keep_weight * log_p


@torch.no_grad()
def plan_edits(reward_of_amount: Callable[[torch.Tensor], torch.Tensor], batch: int, low: float = -3.0,
               high: float = 3.0, population: int = 32, elites: int = 6, iterations: int = 6,
               seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy method over one edit amount per example. reward_of_amount: (B,) amounts -> (B,) rewards.
    Returns the best amounts (B,) and their rewards (B,)."""
    g = torch.Generator().manual_seed(seed)
    mean, std = torch.full((batch,), (low + high) / 2, dtype=torch.float64), torch.full(
        (batch,), (high - low) / 2, dtype=torch.float64)
    best_a, best_r = mean.clone(), reward_of_amount(mean).to(torch.float64)
    for _ in range(iterations):
        cand = (mean + std * torch.randn(population, batch, generator=g, dtype=torch.float64)).clamp(low, high)
        rewards = torch.stack([reward_of_amount(c).to(torch.float64) for c in cand])  # (P, B)
        top = rewards.topk(elites, dim=0).indices  # (E, B)
        elite = cand.gather(0, top)
        mean, std = elite.mean(0), elite.std(0).clamp(min=1e-3)
        r_best, i_best = rewards.max(0)
        better = r_best > best_r
        best_a = torch.where(better, cand[i_best, torch.arange(batch)], best_a)
        best_r = torch.where(better, r_best, best_r)
    return best_a, best_r
