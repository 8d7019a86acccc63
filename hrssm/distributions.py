"""The two latent distributions of the RSSM, as tensors of parameters, with their samples and KLs.

- categorical (the global z, as in DreamerV3): log-probabilities (..., S, C) with unimix, straight-through one-hot
  samples, `categorical_kl` summed over the S categoricals;
- diagonal Gaussian (the local s, and the VAE baseline): stacked [mean, std] (..., 2, D), reparameterized samples,
  `gaussian_kl` summed over D (against N(0, I): `gaussian_kl(p, standard_normal_like(p))`).

Under mixed precision (bf16 autocast) the layers that produce logits run in bf16, but the distributions do not:
`unimix_log_probs` and `gaussian_params` return float32, so softmax, log, samples and KLs are computed in fp32.
"""

from __future__ import annotations

import torch


def unimix_log_probs(logits: torch.Tensor, unimix: float) -> torch.Tensor:
    """Log-probabilities (float32) of softmax(logits) mixed with `unimix` of the uniform, over the last axis."""
    probs = logits.float().softmax(dim=-1)
    if unimix > 0:
        probs = (1 - unimix) * probs + unimix / logits.shape[-1]
    return probs.log()


def straight_through_sample(log_probs: torch.Tensor, sample: bool = True) -> torch.Tensor:
    """One-hot sample (or mode if not `sample`) with straight-through gradients to the probabilities."""
    probs = log_probs.exp()
    if sample:
        # NaN/inf probabilities (diverged weights) would make multinomial raise; sampled as uniform instead, they
        # still turn the loss NaN, and the trainer's NaN guard skips the step and stops the run cleanly.
        finite = torch.nan_to_num(probs, nan=1.0, posinf=1.0).reshape(-1, probs.shape[-1])
        index = torch.multinomial(finite, 1).reshape(probs.shape[:-1])
    else:
        index = probs.argmax(dim=-1)
    one_hot = torch.nn.functional.one_hot(index, probs.shape[-1]).to(probs.dtype)
    return one_hot + probs - probs.detach()


def categorical_kl(lhs: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """KL(lhs || rhs) of log-probabilities (..., S, C), summed over the S categoricals: shape (...)."""
    return (lhs.exp() * (lhs - rhs)).sum(dim=(-2, -1))


def gaussian_params(raw: torch.Tensor, min_std: float) -> torch.Tensor:
    """Raw (..., 2D) -> stacked (..., 2, D) [mean, std] (float32) with std = softplus + min_std.

    (Starting from a small std was tried and is worse: with small prior and posterior stds the KL explodes and pulls
    the posterior mean onto the prior.)
    """
    mean, std = raw.float().chunk(2, dim=-1)
    return torch.stack([mean, torch.nn.functional.softplus(std) + min_std], dim=-2)


def gaussian_sample(params: torch.Tensor, sample: bool = True) -> torch.Tensor:
    """Reparameterized sample (or the mean) of a diagonal Gaussian given as (..., 2, D)."""
    mean, std = params.unbind(dim=-2)
    return mean + std * torch.randn_like(std) if sample else mean


def gaussian_kl(lhs: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """KL(lhs || rhs) of diagonal Gaussians (..., 2, D), summed over D: shape (...)."""
    m1, s1 = lhs.unbind(dim=-2)
    m2, s2 = rhs.unbind(dim=-2)
    return (torch.log(s2 / s1) + (s1.pow(2) + (m1 - m2).pow(2)) / (2 * s2.pow(2)) - 0.5).sum(dim=-1)


def standard_normal_like(params: torch.Tensor) -> torch.Tensor:
    """N(0, I) in the layout of `params` (..., 2, D): [mean 0, std 1]."""
    return torch.stack([torch.zeros_like(params[..., 0, :]), torch.ones_like(params[..., 1, :])], dim=-2)
