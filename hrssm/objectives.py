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


def _no_autocast(x: torch.Tensor) -> torch.autocast:
    """A context where mixed precision is off on x's device: a loss's matmuls stay in x's (fp32) precision."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def barlow_twins_loss(a: torch.Tensor, b: torch.Tensor, off_diagonal_weight: float = 5e-3) -> torch.Tensor:
    """Barlow Twins on two batches of projections (N, D): the cross-correlation matrix pushed to identity."""
    if a.shape[0] < 2:
        raise ValueError("Barlow Twins needs a batch of at least 2")
    a, b = a.float(), b.float()
    with _no_autocast(a):
        c = _standardize(a).T @ _standardize(b) / a.shape[0]
    on = (torch.diagonal(c) - 1).pow(2).sum()
    off = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return on + off_diagonal_weight * off


def simclr_loss(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """NT-Xent: each row of `a` must pick its own row of `b` (and vice versa) among all 2N - 1 others."""
    return multiview_simclr_loss(torch.stack([a, b], dim=1), temperature)


def multiview_simclr_loss(x: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """NT-Xent over V views of N images, x (N, V, D): each of the N*V projections must pick the other V - 1 views
    of its image among all N*V - 1 others (SupCon's multi-positive form, Khosla et al. 2020). V = 2 is SimCLR."""
    n, v = x.shape[:2]
    if n < 2 or v < 2:
        raise ValueError(f"SimCLR needs a batch of at least 2 images with at least 2 views each, got {n} x {v}: use "
                         "optim.batch_size >= 2 and views.num_views >= 2")
    z = F.normalize(x.reshape(n * v, -1).float(), dim=-1)  # row i * v + j: view j of image i
    self_mask = torch.eye(n * v, dtype=torch.bool, device=z.device)
    with _no_autocast(z):  # the similarities in fp32: bf16 keeps ~3 digits of cos / temperature
        log_prob = (z @ z.T / temperature).masked_fill(self_mask, float("-inf")).log_softmax(dim=-1)
    image = torch.arange(n, device=z.device).repeat_interleave(v)
    positive = (image[:, None] == image[None, :]) & ~self_mask
    return -log_prob.masked_fill(~positive, 0.0).sum(dim=-1).div(v - 1).mean()


def latent_prediction_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BYOL-style 2 - 2 cos(pred, sg(target)), per row (...)."""
    return 2 - 2 * F.cosine_similarity(pred.float(), target.detach().float(), dim=-1)
