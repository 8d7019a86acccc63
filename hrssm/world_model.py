"""The world model: views -> ViT encoder -> hierarchical RSSM -> ViT decoder / prediction heads -> losses + metrics.

The encoder and decoder run on all B*T views as one batch; only the recurrent core loops over time (hrssm/rssm.py).
Nothing goes from the encoder to the decoder except through the latents, so saved latents decode to the image.

`WorldModel.forward` sums named loss terms, each a method returning (weighted loss, metrics): `_kl_term` once per
level (the KL balance and free nats: `hrssm.objectives.balanced_kl`), `_pixel_loss` or `_latent_prediction`, and
`_contrastive`. The collapse verdict on those metrics is `hrssm.diagnostics.diagnose_collapse`.
"""

import copy
import itertools
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from vit_decoder import ViTDecoder

from . import objectives
from .config import ModelConfig, decoder_config
from .diagnostics import active_units, image_metrics
from .distributions import categorical_kl, gaussian_kl
from .encoder import EncodesImages, TwoStreamEncoder, ViTEncoder, build_encoder, mean_patch_token, tokens_to_cells
from .export import HubMixin
from .rssm import HierarchicalRSSM, State, Trajectory, mlp

LossTerm = tuple[torch.Tensor, dict[str, torch.Tensor]]  # (weighted 0-dim loss, its metrics)


def _detached(metrics: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: value.detach() for name, value in metrics.items()}


@dataclass
class WorldModelOutput:
    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]  # detached 0-dim tensors (no host sync until someone reads them)
    recon: torch.Tensor | None  # (B, T, C, H, W), None without a pixel decoder
    trajectory: Trajectory | None  # None for a contrastive-only step


def build_encoder_and_rssm(cfg: ModelConfig) -> tuple[ViTEncoder | TwoStreamEncoder, HierarchicalRSSM]:
    """The ViT encoder and the hierarchical RSSM of `cfg` (shared by WorldModel and the exported Encoder)."""
    width, k = cfg.encoder.width, cfg.cell_patches
    return (build_encoder(cfg.image_size, cfg.encoder, cfg.channels, cfg.attention),
            HierarchicalRSSM(cfg.rssm, width, cfg.action_dim, k * k * width, cfg.attention))


class WorldModel(nn.Module, EncodesImages, HubMixin):
    """The full world model. `save_pretrained` / `from_pretrained` / `push_to_hub` come from huggingface_hub's
    mixin and write / read the hrssm export (`hrssm.export.HubMixin`).

    Modules that the configured objectives do not use are None (never absent).
    (No `from __future__ import annotations` in this module: the hub mixin reads the `config` annotation to
    rebuild the dataclass.)
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg = config
        rssm_cfg = cfg.rssm
        self.encoder, self.rssm = build_encoder_and_rssm(cfg)
        context_dim = rssm_cfg.deter + self.rssm.z_dim
        self.decoder: ViTDecoder | None = None  # reconstruction
        # latent prediction: an EMA copy of the encoder gives targets
        self.target_encoder: ViTEncoder | TwoStreamEncoder | None = None
        self.predictor: nn.Module | None = None  # latent prediction: features -> the next view's target embedding
        self.local_predictor: nn.Module | None = None  # latent prediction: a cell's latent -> its target tokens
        self.projector: nn.Module | None = None  # contrastive: tokens or z -> the space the loss compares
        # contrastive on the tokens of a two-stream encoder: the Sobel stream's own projector (`projector` takes the
        # RGB stream's), so each stream gets its own loss
        self.sobel_projector: nn.Module | None = None
        if cfg.loss.objective == "reconstruction":
            self.decoder = ViTDecoder(decoder_config(cfg, self.rssm.s_dim, rssm_cfg.local_grid, context_dim))
        else:
            self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
            self.predictor = mlp(self.rssm.feature_dim, rssm_cfg.hidden, cfg.encoder.width)
            if rssm_cfg.local_grid:
                self.local_predictor = mlp(self.rssm.s_dim + context_dim, rssm_cfg.local_hidden, cfg.encoder.width)
        if cfg.loss.contrastive != "none":
            by_stream = cfg.loss.contrastive_input == "tokens" and self.encoder.streams == 2
            source_dim = (self.rssm.z_dim if cfg.loss.contrastive_input == "z"
                          else cfg.encoder.width // self.encoder.streams)
            self.projector = mlp(source_dim, rssm_cfg.hidden, cfg.loss.contrastive_dim)
            if by_stream:
                self.sobel_projector = mlp(source_dim, rssm_cfg.hidden, cfg.loss.contrastive_dim)
        self._warned_single_step = False

    # -- pieces -----------------------------------------------------------------------------------------------------

    def encode_views(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """views (B, T, C, H, W) -> global embedding (B, T, D) (CLS or mean token, `encoder.pool`), patch tokens
        (B*T, P, D), cell inputs (B, T, cells, k*k*D)."""
        b, t = views.shape[:2]
        embed, tokens = self.encoder(views.flatten(0, 1))
        cells = self._cells(tokens).unflatten(0, (b, t)) if self.cfg.rssm.local_grid else None
        return embed.unflatten(0, (b, t)), tokens, cells

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
        """(B, T, F) features [h, z, s of every cell] (the state; `encode` exports z's probabilities instead)."""
        return self.rssm.features(trajectory.h, trajectory.z, trajectory.s)

    @torch.no_grad()
    def update_ema(self) -> None:
        """Move the target encoder towards the online one (call after each optimizer step; no-op without one)."""
        if self.target_encoder is not None:
            momentum = self.cfg.loss.ema_momentum
            for target, online in zip(self.target_encoder.parameters(), self.encoder.parameters()):
                target.lerp_(online.detach(), 1 - momentum)

    # -- training ---------------------------------------------------------------------------------------------------

    def forward(self, views: torch.Tensor, actions: torch.Tensor, mean_image: torch.Tensor | None = None,
                grad_diagnostics: bool = False, contrastive_only: bool = False) -> WorldModelOutput:
        """Every loss term and diagnostic for a batch of view sequences. views (B, T, C, H, W) in [-0.5, 0.5].

        The loss is the sum of `terms`: a new objective is one more method returning (weighted loss, metrics).
        contrastive_only: the encoder and projector on the contrastive term alone, no RSSM, no decoder (the encoder
        warm-up, `optim.contrastive_warmup_steps`; its output has no trajectory). With B = 1 or T = 1 there is no
        contrastive term (training refuses optim.batch_size < 2 and views.num_views < 2 with a contrastive loss:
        `TrainConfig.validate`).
        """
        self._check_inputs(views, actions, any_size=contrastive_only)
        if contrastive_only:
            return self._forward_contrastive(views)
        self._warn_if_single_step(views.shape[1])
        embed, tokens, cells = self.encode_views(views)
        traj = self.rssm.observe(embed, cells, actions, sample=self.training)
        recon = None if self.decoder is None else self.decode(traj.h, traj.z, traj.s)  # (B, T, C, H, W)
        free_nats = self.cfg.loss.free_nats_global, self.cfg.loss.free_nats_local
        kl_terms = [self._kl_term("global", traj.post_global, traj.prior_global, free_nats[0])]
        if traj.post_local is not None:
            kl_terms.append(self._kl_term("local", traj.post_local, traj.prior_local, free_nats[1]))
        terms = kl_terms + [self._pixel_loss(views, recon, mean_image) if recon is not None
                            else self._latent_prediction(views, traj)]
        if self.projector is not None and min(views.shape[:2]) > 1:  # one image or one view: nothing to compare
            terms.append(self._contrastive(traj.z if self.cfg.loss.contrastive_input == "z"
                                           else self._mean_tokens(tokens, views)))
        loss = sum(term for term, _ in terms)
        metrics = {name: value for _, term_metrics in terms for name, value in term_metrics.items()}
        if grad_diagnostics:
            loss_kl = sum(term for term, _ in kl_terms)
            metrics.update(self._encoder_grad_norms(tokens, embed, loss_kl, loss - loss_kl))
        metrics["loss"] = loss
        return WorldModelOutput(loss, _detached(metrics), recon, traj)

    def _forward_contrastive(self, views: torch.Tensor) -> WorldModelOutput:
        """The contrastive term on the mean patch tokens of views (B, T, C, H, W): encoder and projector only."""
        if self.projector is None or self.cfg.loss.contrastive_input != "tokens":
            raise ValueError("contrastive_only needs loss.contrastive (barlow or simclr) on loss.contrastive_input="
                             f"'tokens', got contrastive={self.cfg.loss.contrastive!r}, "
                             f"contrastive_input={self.cfg.loss.contrastive_input!r}")
        _, tokens = self.encoder(views.flatten(0, 1))
        loss, metrics = self._contrastive(self._mean_tokens(tokens, views))
        return WorldModelOutput(loss, _detached({**metrics, "loss": loss}), None, None)

    def contrastive_warmup_parameters(self) -> list[nn.Parameter]:
        """The parameters `forward(contrastive_only=True)` trains: the encoder and the projector(s). The optimizer
        gives the others a schedule that starts after the warm-up (`optim.late_start_schedule`)."""
        modules = [m for m in (self.encoder, self.projector, self.sobel_projector) if m is not None]
        return [p for m in modules for p in m.parameters()]

    @staticmethod
    def _mean_tokens(tokens: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """Patch tokens (B*T, N, W) of views (B, T, C, H, W) -> their mean per view (B, T, W), the contrastive input
        `loss.contrastive_input: tokens`."""
        return mean_patch_token(tokens).unflatten(0, views.shape[:2])

    def _kl_term(self, level: str, post: torch.Tensor, prior: torch.Tensor, free_nats: float) -> LossTerm:
        """The balanced KL of one level with free nats (objectives.balanced_kl) and its diagnostics.

        global: categorical log-probabilities (B, T, stoch, classes), free nats per image and step. local: Gaussians
        (B, T, cells, 2, dim), free nats per cell, the KL summed over the cells.
        """
        loss_cfg = self.cfg.loss
        kl_fn, stats = (categorical_kl, post.exp()) if level == "global" else (gaussian_kl, post[..., 0, :])
        kl, raw = objectives.balanced_kl(post, prior, loss_cfg.kl_dyn_scale, loss_cfg.kl_rep_scale, free_nats, kl_fn)
        per_cell = raw.dim() > 2  # the local level: its KL is summed over the cells

        def over_cells(x: torch.Tensor) -> torch.Tensor:
            return x.sum(-1) if per_cell else x

        loss = over_cells(kl).mean()
        metrics = {f"kl_{level}_loss": loss, f"kl_{level}_raw": over_cells(raw).mean(),
                   f"kl_{level}_floor_share": (raw <= free_nats + 0.01).float().mean(),
                   f"active_{level}": active_units(stats.flatten(0, raw.dim() - 1)),
                   **{f"kl_{level}/t{t}": over_cells(raw[:, t]).mean() for t in range(raw.shape[1])}}
        if per_cell:
            metrics[f"kl_{level}_raw_per_cell"] = raw.mean()
        return loss, metrics

    def _pixel_loss(self, views: torch.Tensor, recon: torch.Tensor, mean_image: torch.Tensor | None) -> LossTerm:
        """recon_scale x the per-image reconstruction loss of recon (B, T, C, H, W), and the image metrics."""
        target, pred = views.flatten(0, 1), recon.flatten(0, 1)
        loss_cfg = self.cfg.loss
        rec = objectives.reconstruction_loss(pred, target, loss_cfg.recon_type, self.cfg.encoder.patch_size).mean()
        return loss_cfg.recon_scale * rec, {"recon_loss": rec, **image_metrics(pred, target, mean_image,
                                                                                   self.cfg.encoder.patch_size)}

    def _latent_prediction(self, views: torch.Tensor, traj: Trajectory) -> LossTerm:
        """Predict the EMA target encoder's global embedding of the next view (cyclic) and its cell tokens of the
        same view."""
        b, steps = views.shape[:2]
        with torch.no_grad():
            target_embed, target_tokens = self.target_encoder(views.flatten(0, 1))
        target_g = target_embed.unflatten(0, (b, steps)).roll(-1, dims=1)
        loss = objectives.latent_prediction_loss(self.predictor(self.features(traj)), target_g).mean()
        if traj.s is not None:
            k, width = self.cfg.cell_patches, self.cfg.encoder.width
            target_l = self._cells(target_tokens).unflatten(-1, (k * k, width)).mean(-2).unflatten(0, (b, steps))
            ctx = torch.cat([traj.h, traj.z], dim=-1)[:, :, None].expand(-1, -1, traj.s.shape[2], -1)
            pred_l = self.local_predictor(torch.cat([traj.s, ctx], dim=-1))
            loss = loss + objectives.latent_prediction_loss(pred_l, target_l).mean()
        flat = views.flatten(0, 1)
        return self.cfg.loss.latent_pred_scale * loss, {"latent_pred_loss": loss, "input_min": flat.min(),
                                                         "input_max": flat.max()}

    def _contrastive(self, source: torch.Tensor) -> LossTerm:
        """Barlow Twins or SimCLR between the views of each image (consecutive ones or all, `loss.contrastive_pairs`),
        on the projection of source (B, T, F): the global latents z or the mean patch tokens
        (`loss.contrastive_input`). A two-stream encoder's tokens: one loss per stream, summed (each stream is
        trained as if it were alone; `contrastive_loss/rgb`, `contrastive_loss/sobel`)."""
        if source.shape[1] < 2:
            raise ValueError(f"loss.contrastive={self.cfg.loss.contrastive!r} compares the views of an image, got "
                             f"{source.shape[1]} per image: use views.num_views >= 2")
        if self.sobel_projector is None:
            con = self._contrastive_loss(self.projector(source))
            return self.cfg.loss.contrastive_scale * con, {"contrastive_loss": con}
        rgb, sobel = source.chunk(2, dim=-1)  # (B, T, F / 2) each: TwoStreamEncoder puts RGB first
        parts = {"rgb": self._contrastive_loss(self.projector(rgb)),
                 "sobel": self._contrastive_loss(self.sobel_projector(sobel))}
        con = parts["rgb"] + parts["sobel"]
        return self.cfg.loss.contrastive_scale * con, {"contrastive_loss": con,
                                                       **{f"contrastive_loss/{k}": v for k, v in parts.items()}}

    def _contrastive_loss(self, proj: torch.Tensor) -> torch.Tensor:
        """The unweighted contrastive loss between the views of projections proj (B, T, D)."""
        loss_cfg, steps = self.cfg.loss, proj.shape[1]
        if loss_cfg.contrastive == "simclr" and loss_cfg.contrastive_pairs == "all":
            con = objectives.multiview_simclr_loss(proj, loss_cfg.simclr_temperature)
        else:
            pairs = (itertools.combinations(range(steps), 2) if loss_cfg.contrastive_pairs == "all"
                     else zip(range(steps - 1), range(1, steps)))
            con = torch.stack([
                objectives.barlow_twins_loss(proj[:, i], proj[:, j], loss_cfg.barlow_lambda)
                if loss_cfg.contrastive == "barlow" else
                objectives.simclr_loss(proj[:, i], proj[:, j], loss_cfg.simclr_temperature) for i, j in pairs
            ]).mean()
        return con

    def _encoder_grad_norms(self, tokens, embed, loss_kl, loss_rest) -> dict[str, torch.Tensor]:
        """Norm of the gradient reaching the encoder output from the KL vs from the other objectives."""
        out = {}
        # the mean token is computed from the tokens: their gradient already holds its share (no double count)
        outputs = [tokens] if self.cfg.encoder.pool == "mean" else [embed, tokens]
        for name, part in (("kl", loss_kl), ("recon" if self.decoder is not None else "objective", loss_rest)):
            grads = torch.autograd.grad(part, outputs, retain_graph=True, allow_unused=True)
            out[f"grad_encoder_from_{name}"] = torch.sqrt(sum((g.pow(2).sum() for g in grads if g is not None),
                                                              torch.zeros((), device=embed.device)))
        return out

    def _warn_if_single_step(self, steps: int) -> None:
        if steps == 1 and self.training and not self._warned_single_step:
            warnings.warn("sequences of length 1: the transition model (rssm.gru, rssm.transition_in) gets no "
                          "training signal and the prior only learns an unconditional guess; use views.num_views >= 2 "
                          "(mode 'augment')", stacklevel=3)
            self._warned_single_step = True

    def _check_inputs(self, views: torch.Tensor, actions: torch.Tensor, any_size: bool = False) -> None:
        """any_size: square views of any multiple of the patch size up to image_size are fine (the encoder alone
        reads them: the contrastive warm-up)."""
        c = self.cfg
        want = (c.channels, c.image_size, c.image_size)
        size = views.shape[-1] if views.ndim == 5 else 0
        if any_size and 0 < size <= c.image_size and size % c.encoder.patch_size == 0:
            want = (c.channels, size, size)
        if views.ndim != 5 or tuple(views.shape[2:]) != want:
            smaller = (f" (a contrastive-only step also takes square views of a multiple of "
                       f"{c.encoder.patch_size} below it)" if any_size else "")
            raise ValueError(f"views must be (B, T, {want[0]}, {want[1]}, {want[2]}) for this model "
                             f"(image_size={c.image_size}){smaller}, got {tuple(views.shape)}; preprocess images "
                             f"with hrssm.data.preprocess(images, {c.image_size})")
        if actions.shape != (*views.shape[:2], c.action_dim):
            raise ValueError(f"actions must be (B, T, {c.action_dim}) = {(*views.shape[:2], c.action_dim)}, "
                             f"got {tuple(actions.shape)}")
        if not torch.is_floating_point(views):
            raise TypeError(f"views must be float in [-0.5, 0.5], got {views.dtype}; use hrssm.data.preprocess")
