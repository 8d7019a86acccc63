"""Baselines for the studies: a plain VAE with the same ViT encoder and ViT decoder as a world model config.

No recurrence, no learned prior: a global Gaussian latent from the encoder's global embedding (`encoder.pool`) and
(when `rssm.local_grid` > 0) a Gaussian latent per grid cell from that cell's patch tokens, both with a fixed N(0, I)
prior. Same reconstruction loss (`loss.recon_scale` x summed squared error) and free nats per level as the world
model; `beta` scales the KL.
"""

from __future__ import annotations

import torch
from torch import nn

from vit_decoder import ViTDecoder

from . import objectives
from ._torch import eval_mode
from .config import ModelConfig, decoder_config
from .data.preprocess import preprocess
from .diagnostics import image_metrics
from .distributions import gaussian_kl, gaussian_params, gaussian_sample, standard_normal_like
from .encoder import build_encoder, tokens_to_cells


class ViTVAE(nn.Module):
    """A plain VAE of about the size of `WorldModel(cfg)` (same encoder and decoder; global latent of `rssm.deter`
    dims, local latents of `rssm.local_dim` per cell). `encode(images)` gives the posterior means as features."""

    def __init__(self, cfg: ModelConfig, beta: float = 1.0) -> None:
        super().__init__()
        self.cfg, self.beta = cfg, beta
        width, rssm_cfg = cfg.encoder.width, cfg.rssm
        self.encoder = build_encoder(cfg.image_size, cfg.encoder, cfg.channels, cfg.attention)
        self.global_head = nn.Linear(width, 2 * rssm_cfg.deter)
        self.local_head = (nn.Linear(cfg.cell_patches**2 * width, 2 * rssm_cfg.local_dim) if rssm_cfg.local_grid
                           else None)
        local_dim = rssm_cfg.local_dim if rssm_cfg.local_grid else 0
        self.decoder = ViTDecoder(decoder_config(cfg, local_dim, rssm_cfg.local_grid, rssm_cfg.deter))

    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """images (N, C, H, W) -> global (N, 2, G) and local (N, cells, 2, S) [mean, std] (None without a grid)."""
        embed, tokens = self.encoder(images)
        g = gaussian_params(self.global_head(embed), self.cfg.rssm.local_min_std)
        if self.local_head is None:
            return g, None
        cells = tokens_to_cells(tokens, self.cfg.rssm.local_grid, self.cfg.cell_patches)
        return g, gaussian_params(self.local_head(cells), self.cfg.rssm.local_min_std)

    def decode(self, g: torch.Tensor, s: torch.Tensor | None) -> torch.Tensor:
        return self.decoder(s, g)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The negative ELBO (with free nats) of a batch of images (N, C, H, W) in [-0.5, 0.5], and metrics."""
        loss_cfg = self.cfg.loss
        g, s = self.posterior(images)
        recon = self.decode(gaussian_sample(g), None if s is None else gaussian_sample(s))
        rec = objectives.reconstruction_loss(recon, images, loss_cfg.recon_type, self.cfg.encoder.patch_size).mean()
        kl_g = gaussian_kl(g, standard_normal_like(g))  # (N,)
        loss = loss_cfg.recon_scale * rec + self.beta * kl_g.clamp(min=loss_cfg.free_nats_global).mean()
        metrics = {"recon_loss": rec.detach(), "kl_global_raw": kl_g.mean().detach()}
        if s is not None:
            kl_l = gaussian_kl(s, standard_normal_like(s))  # (N, cells)
            loss = loss + self.beta * kl_l.clamp(min=loss_cfg.free_nats_local).sum(-1).mean()
            metrics["kl_local_raw"] = kl_l.sum(-1).mean().detach()
        metrics.update({k: v for k, v in image_metrics(recon, images).items() if k in ("recon_std_ratio", "psnr_gain")})
        metrics["loss"] = loss.detach()
        return loss, metrics

    @torch.no_grad()
    def encode(self, images) -> torch.Tensor:
        """(N, G + cells * S) features: the posterior means [global, every cell in row-major order]."""
        g, s = self._means(images)
        return g if s is None else torch.cat([g, s.flatten(1)], dim=-1)

    @torch.no_grad()
    def reconstruct(self, images) -> torch.Tensor:
        """Decode the posterior means (deterministic)."""
        return self.decode(*self._means(images))

    def _means(self, images):
        with eval_mode(self):
            param = next(self.parameters())
            g, s = self.posterior(preprocess(images, **self.cfg.preprocessing()).to(param.device, param.dtype))
        return g[..., 0, :], None if s is None else s[..., 0, :]


def train_vae(cfg, beta: float = 1.0, progress: bool = False) -> tuple[ViTVAE, dict[str, float]]:
    """Train a `ViTVAE` of `cfg.model_config()` on `cfg.data` with the optimizer and schedule of `cfg.optim` (one
    process, one plain image per sample: views are forced to T = 1, mode "repeat"). Returns the model and the mean
    metrics of the last `cfg.log.every` steps."""
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from .data import ViewCollator, ViewConfig, load_waterbirds
    from .optim import make_optimizer

    set_seed(cfg.seed)
    model_cfg = cfg.model_config()
    ds = load_waterbirds(cfg.data.source, cfg.data.split, cache_dir=cfg.data.cache_dir, revision=cfg.data.revision,
                         **model_cfg.preprocessing())
    collate = ViewCollator(model_cfg.image_size, ViewConfig(num_views=1, mode="repeat"), seed=cfg.seed,
                           crop_fraction=model_cfg.preprocess.crop_fraction)
    loader = DataLoader(ds, batch_size=cfg.optim.batch_size, shuffle=True, drop_last=True, collate_fn=collate,
                        generator=torch.Generator().manual_seed(cfg.seed))
    model = ViTVAE(model_cfg, beta)
    opt, sched = make_optimizer(model, cfg.optim)
    step, window = 0, []
    bar = tqdm(total=cfg.optim.max_steps, desc="train VAE", disable=not progress)
    while step < cfg.optim.max_steps:
        for batch in loader:
            loss, metrics = model(batch["views"][:, 0])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"VAE loss is {loss.item()} at step {step}; lower optim.lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
            opt.step()
            sched.step()
            step += 1
            bar.update(1)
            window = [*window[-(cfg.log.every - 1):], metrics]
            if step >= cfg.optim.max_steps:
                break
    bar.close()
    model.eval()
    return model, {k: float(torch.stack([w[k] for w in window]).mean()) for k in window[-1]}


def vae_features(model: ViTVAE, ds, batch_size: int = 128, with_recon_metrics: bool = False,
                 max_recon_images: int = 1024) -> dict:
    """Like `hrssm.evaluation.encode_dataset` for a VAE: features (posterior means), label, place, group, img_id
    and, with `with_recon_metrics`, recon_std_ratio / psnr / psnr_mean_image / psnr_gain / seam_ratio of the first
    images."""
    import numpy as np

    feats = [model.encode(ds[i : i + batch_size]["image"]).float().cpu() for i in range(0, len(ds), batch_size)]
    out = {"features": torch.cat(feats).numpy()}
    for key in ("label", "place", "group", "img_id"):
        out[key] = np.asarray(ds[key], dtype=np.int64)
    if with_recon_metrics:
        n = min(len(ds), max_recon_images)
        target = preprocess(ds[:n]["image"], **model.cfg.preprocessing())
        recon = torch.cat([model.reconstruct(target[i : i + batch_size]) for i in range(0, n, batch_size)])
        metrics = image_metrics(recon, target, patch_size=model.cfg.encoder.patch_size)
        out.update({k: np.asarray(float(v)) for k, v in metrics.items()})
    return out
