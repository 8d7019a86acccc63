"""The world model: views -> ViT encoder -> hierarchical RSSM -> ViT decoder / prediction heads -> losses + metrics.

The encoder and decoder run on all B*T views as one batch; only the recurrent core loops over time. Nothing goes
from the encoder to the decoder except through the latents, so saved latents decode to the image.
"""

import copy
import warnings
from dataclasses import dataclass

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from vit_decoder import ViTDecoder, ViTDecoderConfig

from . import objectives as O
from .config import ModelConfig
from .diagnostics import active_units, image_metrics
from .distributions import gaussian_kl
from .encoder import EncodesImages, ViTEncoder, tokens_to_cells
from .rssm import HierarchicalRSSM, State, Trajectory, mlp


@dataclass
class WorldModelOutput:
    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]  # detached 0-dim tensors (no host sync until someone reads them)
    recon: torch.Tensor | None  # (B, T, C, H, W), None without a pixel decoder
    trajectory: Trajectory


def build_encoder_and_rssm(cfg: ModelConfig) -> tuple[ViTEncoder, HierarchicalRSSM]:
    """The ViT encoder and the hierarchical RSSM of `cfg` (shared by WorldModel and the exported Encoder)."""
    e, k = cfg.encoder, cfg.cell_patches
    return (ViTEncoder(cfg.image_size, e, cfg.channels, cfg.attention),
            HierarchicalRSSM(cfg.rssm, e.width, cfg.action_dim, k * k * e.width, cfg.attention))


class WorldModel(nn.Module, EncodesImages, PyTorchModelHubMixin, library_name="hrssm",
                 tags=["world-model", "rssm", "representation-learning", "waterbirds"]):
    """The full world model. `save_pretrained` / `from_pretrained` / `push_to_hub` come from huggingface_hub.

    (No `from __future__ import annotations` in this module: the hub mixin reads the `config` annotation to
    rebuild the dataclass.)
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg = config
        e, r = cfg.encoder, cfg.rssm
        self.encoder, self.rssm = build_encoder_and_rssm(cfg)
        context_dim = r.deter + self.rssm.z_dim
        feat = self.rssm.feature_dim
        self.decoder: ViTDecoder | None = None
        if cfg.loss.objective == "reconstruction":
            d = cfg.decoder
            self.decoder = ViTDecoder(ViTDecoderConfig(
                image_size=cfg.image_size, patch_size=e.patch_size, width=d.width, depth=d.depth, heads=d.heads,
                mlp_ratio=d.mlp_ratio, token_dim=self.rssm.s_dim, latent_grid=r.local_grid, context_dim=context_dim,
                channels=cfg.channels, attention=cfg.attention))
        else:  # latent prediction: an EMA copy of the encoder gives the targets
            self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
            self.predictor = mlp(feat, r.hidden, e.width)
            if r.local_grid:
                self.local_predictor = mlp(self.rssm.s_dim + context_dim, r.local_hidden, e.width)
        if cfg.loss.contrastive != "none":
            self.projector = mlp(self.rssm.z_dim, r.hidden, cfg.loss.contrastive_dim)
        self._warned_single_step = False

    # -- pieces -----------------------------------------------------------------------------------------------------

    def encode_views(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """views (B, T, C, H, W) -> CLS (B, T, D), patch tokens (B*T, P, D), cell inputs (B, T, cells, k*k*D)."""
        b, t = views.shape[:2]
        cls, tokens = self.encoder(views.flatten(0, 1))
        cells = self._cells(tokens).unflatten(0, (b, t)) if self.cfg.rssm.local_grid else None
        return cls.unflatten(0, (b, t)), tokens, cells

    def _cells(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens_to_cells(tokens, self.cfg.rssm.local_grid, self.cfg.cell_patches)

    def observe(self, views: torch.Tensor, actions: torch.Tensor, sample: bool | None = None) -> Trajectory:
        """Posterior states of a sequence of views (B, T, C, H, W) with actions (B, T, A)."""
        self._check_inputs(views, actions)
        embed, _, cells = self.encode_views(views)
        return self.rssm.observe(embed, cells, actions, self.training if sample is None else sample)

    def imagine(self, start: State, actions: torch.Tensor, sample: bool | None = None) -> Trajectory:
        """Prior rollout from `start` (e.g. `trajectory.state(-1)`) under actions (B, T, A)."""
        return self.rssm.imagine(start, actions, self.training if sample is None else sample)

    def decode(self, h: torch.Tensor, z: torch.Tensor, s: torch.Tensor | None = None) -> torch.Tensor:
        """Latents with any leading shape (..., deter), (..., Z), (..., cells, S) -> images (..., C, H, W)."""
        if self.decoder is None:
            raise RuntimeError("this model has no pixel decoder (loss.objective='latent_prediction')")
        lead = h.shape[:-1]
        tokens = None if s is None else s.reshape(-1, *s.shape[-2:])
        images = self.decoder(tokens, torch.cat([h, z], dim=-1).reshape(-1, h.shape[-1] + z.shape[-1]))
        return images.reshape(*lead, *images.shape[1:])

    def features(self, trajectory: Trajectory) -> torch.Tensor:
        """(B, T, F) features [h, z, s of every cell] (what a probe reads)."""
        return self.rssm.features(trajectory.h, trajectory.z, trajectory.s)

    @torch.no_grad()
    def update_ema(self) -> None:
        """Move the target encoder towards the online one (call after each optimizer step; no-op without one)."""
        if hasattr(self, "target_encoder"):
            m = self.cfg.loss.ema_momentum
            for tp, p in zip(self.target_encoder.parameters(), self.encoder.parameters()):
                tp.lerp_(p.detach(), 1 - m)

    # -- training -----------------------------------------------------------------------------------------------------

    def forward(self, views: torch.Tensor, actions: torch.Tensor, mean_image: torch.Tensor | None = None,
                grad_diagnostics: bool = False) -> WorldModelOutput:
        """Every loss term and diagnostic for a batch of view sequences. views (B, T, C, H, W) in [-0.5, 0.5]."""
        self._check_inputs(views, actions)
        cfg, lc = self.cfg, self.cfg.loss
        b, steps = views.shape[:2]
        if steps == 1 and self.training and not self._warned_single_step:
            warnings.warn("sequences of length 1: the transition model (rssm.gru, rssm.transition_in) gets no "
                          "training signal and the prior only learns an unconditional guess; use views.num_views >= 2 "
                          "(mode 'augment')", stacklevel=2)
            self._warned_single_step = True
        embed, tokens, cells = self.encode_views(views)
        traj = self.rssm.observe(embed, cells, actions, sample=self.training)
        flat = views.flatten(0, 1)
        m: dict[str, torch.Tensor] = {}

        kl_g, raw_g = O.balanced_kl(traj.post_global, traj.prior_global, lc.kl_dyn_scale, lc.kl_rep_scale,
                                    lc.free_nats_global)  # (B, T)
        loss_kl = kl_g.mean()
        m.update(kl_global_loss=kl_g.mean(), kl_global_raw=raw_g.mean(),
                 kl_global_floor_share=(raw_g <= lc.free_nats_global + 0.01).float().mean(),
                 active_global=active_units(traj.post_global.exp().flatten(0, 1)))
        for t in range(steps):
            m[f"kl_global/t{t}"] = raw_g[:, t].mean()
        if traj.post_local is not None:
            kl_l, raw_l = O.balanced_kl(traj.post_local, traj.prior_local, lc.kl_dyn_scale, lc.kl_rep_scale,
                                        lc.free_nats_local, kl_fn=gaussian_kl)  # (B, T, cells), free nats per cell
            loss_kl = loss_kl + kl_l.sum(-1).mean()
            m.update(kl_local_loss=kl_l.sum(-1).mean(), kl_local_raw=raw_l.sum(-1).mean(),
                     kl_local_raw_per_cell=raw_l.mean(),
                     kl_local_floor_share=(raw_l <= lc.free_nats_local + 0.01).float().mean(),
                     active_local=active_units(traj.post_local[..., 0, :].flatten(0, 2)))
            for t in range(steps):
                m[f"kl_local/t{t}"] = raw_l[:, t].sum(-1).mean()
        loss = loss_kl

        recon = None
        if self.decoder is not None:
            recon = self.decode(traj.h, traj.z, traj.s)  # (B, T, C, H, W)
            rec = O.reconstruction_loss(recon.flatten(0, 1), flat, lc.recon_type, cfg.encoder.patch_size).mean()
            loss = loss + lc.recon_scale * rec
            m["recon_loss"] = rec.detach()
            m.update(image_metrics(recon.flatten(0, 1), flat, mean_image))
        else:
            pred_loss = self._latent_prediction(views, traj)
            loss = loss + lc.latent_pred_scale * pred_loss
            m["latent_pred_loss"] = pred_loss.detach()
            m.update(input_min=flat.min(), input_max=flat.max())

        if lc.contrastive != "none":
            if steps < 2:
                raise ValueError("loss.contrastive needs at least 2 views per image (views.num_views >= 2)")
            proj = self.projector(traj.z)  # (B, T, D)
            pair_losses = [
                O.barlow_twins_loss(proj[:, t], proj[:, t + 1], lc.barlow_lambda) if lc.contrastive == "barlow"
                else O.simclr_loss(proj[:, t], proj[:, t + 1], lc.simclr_temperature) for t in range(steps - 1)
            ]
            con = torch.stack(pair_losses).mean()
            loss = loss + lc.contrastive_scale * con
            m["contrastive_loss"] = con.detach()

        if grad_diagnostics:
            m.update(self._encoder_grad_norms(tokens, embed, loss_kl, loss - loss_kl))
        m["loss"] = loss.detach()
        m = {k: v.detach() for k, v in m.items()}
        return WorldModelOutput(loss=loss, metrics=m, recon=recon, trajectory=traj)

    def _latent_prediction(self, views: torch.Tensor, traj: Trajectory) -> torch.Tensor:
        """Predict the EMA target encoder's CLS of the next view (cyclic) and its cell tokens of the same view."""
        b, steps = views.shape[:2]
        with torch.no_grad():
            t_cls, t_tokens = self.target_encoder(views.flatten(0, 1))
        target_g = t_cls.unflatten(0, (b, steps)).roll(-1, dims=1)
        loss = O.latent_prediction_loss(self.predictor(self.features(traj)), target_g).mean()
        if traj.s is not None:
            k, d = self.cfg.cell_patches, self.cfg.encoder.width
            target_l = self._cells(t_tokens).unflatten(-1, (k * k, d)).mean(-2).unflatten(0, (b, steps))
            ctx = torch.cat([traj.h, traj.z], dim=-1)[:, :, None].expand(-1, -1, traj.s.shape[2], -1)
            pred_l = self.local_predictor(torch.cat([traj.s, ctx], dim=-1))
            loss = loss + O.latent_prediction_loss(pred_l, target_l).mean()
        return loss

    def _encoder_grad_norms(self, tokens, embed, loss_kl, loss_rest) -> dict[str, torch.Tensor]:
        """Norm of the gradient reaching the encoder output from the KL vs from the other objectives."""
        out = {}
        for name, part in (("kl", loss_kl), ("recon" if self.decoder is not None else "objective", loss_rest)):
            grads = torch.autograd.grad(part, [embed, tokens], retain_graph=True, allow_unused=True)
            out[f"grad_encoder_from_{name}"] = torch.sqrt(sum((g.pow(2).sum() for g in grads if g is not None),
                                                              torch.zeros((), device=embed.device)))
        return out

    def _check_inputs(self, views: torch.Tensor, actions: torch.Tensor) -> None:
        c = self.cfg
        want = (c.channels, c.image_size, c.image_size)
        if views.ndim != 5 or tuple(views.shape[2:]) != want:
            raise ValueError(f"views must be (B, T, {want[0]}, {want[1]}, {want[2]}) for this model "
                             f"(image_size={c.image_size}), got {tuple(views.shape)}; preprocess images with "
                             f"hrssm.data.preprocess(images, {c.image_size})")
        if actions.shape != (*views.shape[:2], c.action_dim):
            raise ValueError(f"actions must be (B, T, {c.action_dim}) = {(*views.shape[:2], c.action_dim)}, "
                             f"got {tuple(actions.shape)}")
        if not torch.is_floating_point(views):
            raise TypeError(f"views must be float in [-0.5, 0.5], got {views.dtype}; use hrssm.data.preprocess")
