"""Every training objective in one place: reconstruction, balanced KL with free nats, contrastive, latent prediction.

The KL balance (DreamerV3's dyn / rep terms, each clipped at the free nats) is `balanced_kl`; `WorldModel._kl_term`
applies it once per level. Weights live in `hrssm.config.LossConfig`.

Scale matters: reconstruction is a squared error *summed* over pixels and channels per image (a Gaussian
log-likelihood, as in Dreamer) so that it is not drowned by a KL measured in nats. Averaging it per pixel instead
shrinks it by H*W*C and the KL wins: the classic road to a gray mean image.

Every loss is computed in float32, whatever the dtype of its inputs (bf16 under mixed precision): a squared error
summed over 150k pixels or a cross-correlation matrix in bf16 would lose most of its digits.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from vit_decoder.layers import patchify

from .distributions import categorical_kl


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "sse",
                        patch_size: int = 16) -> torch.Tensor:
    """Per-image loss (N,) for images (N, C, H, W) in [-0.5, 0.5].

    "sse": squared error summed over pixels and channels. "normalized_patch": the same against targets normalized
    per patch (MAE's norm-pix loss; it hides mean colour, so judge reconstructions with "sse").
    """
    pred, target = pred.float(), target.float()
    if kind == "sse":
        return (pred - target).pow(2).flatten(1).sum(dim=1)
    if kind == "normalized_patch":
        t = patchify(target, patch_size)
        t = (t - t.mean(dim=-1, keepdim=True)) / (t.var(dim=-1, keepdim=True) + 1e-6).sqrt()
        return (patchify(pred, patch_size) - t).pow(2).flatten(1).sum(dim=1)
    raise ValueError(f"unknown reconstruction loss {kind!r}")


def balanced_kl(post: torch.Tensor, prior: torch.Tensor, dyn_scale: float, rep_scale: float, free_nats: float,
                kl_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = categorical_kl
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """DreamerV3 KL balancing: dyn * max(free, KL(sg(q)||p)) + rep * max(free, KL(q||sg(p))).

    post, prior: distribution parameters for `kl_fn` (categorical log-probabilities (..., S, C) by default, or
    `gaussian_kl`'s (..., 2, D)). Returns (loss, raw KL), both of shape (...): the KL is summed over
    the latent and clipped per element (per image and step, or per cell), so below the floor there is no gradient.
    """
    dyn = kl_fn(post.detach(), prior)
    rep = kl_fn(post, prior.detach())
    loss = dyn_scale * dyn.clamp(min=free_nats) + rep_scale * rep.clamp(min=free_nats)
    return loss, rep.detach()


def _standardize(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean(dim=0)) / (x.std(dim=0) + 1e-5)


def barlow_twins_loss(a: torch.Tensor, b: torch.Tensor, off_diagonal_weight: float = 5e-3) -> torch.Tensor:
    """Barlow Twins on two batches of projections (N, D): the cross-correlation matrix pushed to identity."""
    if a.shape[0] < 2:
        raise ValueError("Barlow Twins needs a batch of at least 2")
    a, b = a.float(), b.float()
    c = _standardize(a).T @ _standardize(b) / a.shape[0]
    on = (torch.diagonal(c) - 1).pow(2).sum()
    off = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return on + off_diagonal_weight * off


def simclr_loss(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """NT-Xent: each row of `a` must pick its own row of `b` (and vice versa) among all 2N - 1 others."""
    n = a.shape[0]
    if n < 2:
        raise ValueError("SimCLR needs a batch of at least 2")
    x = F.normalize(torch.cat([a, b]).float(), dim=-1)
    sim = x @ x.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=x.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(x.device)
    return F.cross_entropy(sim, target)


def latent_prediction_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BYOL-style 2 - 2 cos(pred, sg(target)), per row (...)."""
    return 2 - 2 * F.cosine_similarity(pred.float(), target.detach().float(), dim=-1)
