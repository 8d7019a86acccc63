"""Hierarchical RSSM: a global DreamerV3-style level and a grid of local latents conditioned on it (top-down).

Per step t (the state at t = 0 is the learned initial state, no transition):

    global  h_t = GRU(h_{t-1}, [z_{t-1}, a_{t-1}])    prior p(z_t | h_t)    posterior q(z_t | h_t, e_t)
    local   c_t = mixer(prev(s_{t-1}) + ctx(h_t, z_t) + pos)                    (one hidden vector per cell)
            prior p(s_t | c_t)                        posterior q(s_t | c_t, patch tokens of the cell at t)

e_t is the encoder's global embedding of view t: its CLS token or its mean patch token (`encoder.pool`).

Posterior logits are linear in the observation plus a linear top-down term from the state. As in DreamerV3, the
posterior step (`obs_step`) is the prior step of each level (`_global_prior`, `_local_prior`, which `img_step` samples
from) followed by that level's posterior; `observe` and `imagine` loop over them and stack the `Step`s once.

z_t: `stoch` categoricals of `classes` classes, mixed with 1% uniform and sampled with straight-through gradients
(DreamerV3). s_t: per cell, a diagonal Gaussian of `local_dim` dimensions, reparameterized: categorical local latents
learned several times slower in our overfit runs (docs/model.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vit_decoder.layers import Block

from .config import RSSMConfig
from .distributions import gaussian_params, gaussian_sample, straight_through_sample, unimix_log_probs


def mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, out))


@dataclass
class State:
    """The latent state at one time step: h (B, deter), z (B, stoch*classes), s (B, cells, local) or None."""

    h: torch.Tensor
    z: torch.Tensor
    s: torch.Tensor | None = None


@dataclass
class Step(State):
    """One step of `obs_step` / `img_step`: the state and the distributions it came from. Priors are always there;
    posteriors only when the step observed a view; the local ones only with a local level."""

    prior_global: torch.Tensor | None = None  # (B, stoch, classes) log-probabilities
    post_global: torch.Tensor | None = None
    prior_local: torch.Tensor | None = None  # (B, cells, 2, local_dim): [mean, std]
    post_local: torch.Tensor | None = None


@dataclass
class Trajectory:
    """States over time (B, T, ...) with the log-probabilities of priors and (when observed) posteriors."""

    h: torch.Tensor
    z: torch.Tensor
    s: torch.Tensor | None
    prior_global: torch.Tensor  # (B, T, stoch, classes)
    post_global: torch.Tensor | None  # None for imagined trajectories
    prior_local: torch.Tensor | None  # (B, T, cells, 2, local_dim): [mean, std]
    post_local: torch.Tensor | None

    @classmethod
    def stack(cls, steps: list[Step]) -> Trajectory:
        """The steps stacked along time (dim 1); a field that no step has stays None."""
        def along_time(name: str) -> torch.Tensor | None:
            values = [getattr(step, name) for step in steps]
            return None if values[0] is None else torch.stack(values, dim=1)

        # The field names from the annotations (not dataclasses.fields: torch.compile cannot trace it on a class).
        return cls(**{name: along_time(name) for name in cls.__annotations__})

    def state(self, t: int) -> State:
        return State(self.h[:, t], self.z[:, t], None if self.s is None else self.s[:, t])


class HierarchicalRSSM(nn.Module):
    def __init__(self, cfg: RSSMConfig, embed_dim: int, action_dim: int, cell_input_dim: int = 0,
                 attention: str = "auto") -> None:
        super().__init__()
        self.cfg, self.action_dim = cfg, action_dim
        self.z_dim = cfg.stoch * cfg.classes
        self.initial_h = nn.Parameter(torch.zeros(cfg.deter))
        self.transition_in = nn.Sequential(nn.Linear(self.z_dim + action_dim, cfg.hidden), nn.LayerNorm(cfg.hidden),
                                           nn.SiLU())
        self.gru = nn.GRUCell(cfg.hidden, cfg.deter)
        self.prior_global = mlp(cfg.deter, cfg.hidden, self.z_dim)
        # Posteriors are linear in the observation plus a top-down term from the state: the encoder is already deep,
        # and an MLP here made the latents learn several times slower (docs/model.md).
        self.post_global_obs = nn.Linear(embed_dim, self.z_dim)
        self.post_global_state = nn.Linear(cfg.deter, self.z_dim)
        self.cells = cfg.local_grid**2
        self.s_dim = cfg.local_dim if cfg.local_grid else 0
        if cfg.local_grid:
            if cell_input_dim <= 0:
                raise ValueError("a local level needs the width of a cell's patch tokens (cell_input_dim)")
            hl = cfg.local_hidden
            self.local_prev = nn.Linear(self.s_dim, hl)
            self.local_context = nn.Linear(cfg.deter + self.z_dim, hl)
            self.cell_pos = nn.Parameter(torch.zeros(1, self.cells, hl))
            nn.init.normal_(self.cell_pos, std=0.02)
            self.local_mixer = nn.ModuleList(Block(hl, cfg.local_heads, 2.0, attention)
                                             for _ in range(cfg.local_mixer_depth))
            self.local_norm = nn.LayerNorm(hl)
            self.prior_local = mlp(hl, hl, 2 * self.s_dim)
            self.post_local_obs = nn.Linear(cell_input_dim, 2 * self.s_dim)
            self.post_local_state = nn.Linear(hl, 2 * self.s_dim)

    @property
    def feature_dim(self) -> int:
        return self.cfg.deter + self.z_dim + self.cells * self.s_dim

    def initial(self, batch: int) -> State:
        """The state before any transition: learned h, zero latents."""
        h = torch.tanh(self.initial_h).expand(batch, -1)
        z = h.new_zeros(batch, self.z_dim)
        s = h.new_zeros(batch, self.cells, self.s_dim) if self.cfg.local_grid else None
        return State(h, z, s)

    # -- one step: the prior step of each level; the posterior step adds the observation ----------------------------

    def img_step(self, prev: State, action: torch.Tensor, sample: bool = True) -> Step:
        """Prior step: transition under action (B, A), then each level's prior, sampled top-down."""
        h, prior_g = self._global_prior(prev, action)
        z = straight_through_sample(prior_g, sample).flatten(-2)
        if not self.cfg.local_grid:
            return Step(h, z, None, prior_g)
        _, prior_l = self._local_prior(prev, h, z)
        return Step(h, z, gaussian_sample(prior_l, sample), prior_g, prior_local=prior_l)

    def obs_step(self, prev: State, action: torch.Tensor | None, embed: torch.Tensor, cells: torch.Tensor | None,
                 sample: bool = True) -> Step:
        """Posterior step: each level's prior step, then its posterior from the observation, sampled top-down.

        embed (B, E) the view's global embedding (the encoder's CLS or mean token); cells (B, cells, cell_input_dim)
        its patch tokens per cell (None without a local level); action (B, A) taken after `prev`, None at t = 0 (no
        transition: `prev` is `initial`).
        """
        h, prior_g = self._global_prior(prev, action)
        post_g = self._categorical(self.post_global_obs(embed) + self.post_global_state(h))
        z = straight_through_sample(post_g, sample).flatten(-2)
        if not self.cfg.local_grid:
            return Step(h, z, None, prior_g, post_g)
        hidden, prior_l = self._local_prior(prev, h, z)
        post_l = gaussian_params(self.post_local_obs(cells) + self.post_local_state(hidden), self.cfg.local_min_std)
        return Step(h, z, gaussian_sample(post_l, sample), prior_g, post_g, prior_l, post_l)

    def _global_prior(self, prev: State, action: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """h (B, deter) = GRU(prev, action) (prev.h itself when action is None) and p(z | h) (B, stoch, classes)."""
        h = prev.h if action is None else self.gru(self.transition_in(torch.cat([prev.z, action], dim=-1)), prev.h)
        return h, self._categorical(self.prior_global(h))

    def _local_prior(self, prev: State, h: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The cells' hidden vectors (B, cells, local_hidden), from prev.s and the global state of this step, and
        p(s | hidden) (B, cells, 2, local_dim)."""
        x = self.local_prev(prev.s) + self.local_context(torch.cat([h, z], dim=-1))[:, None] + self.cell_pos
        for block in self.local_mixer:
            x = block(x)
        hidden = self.local_norm(x)
        return hidden, gaussian_params(self.prior_local(hidden), self.cfg.local_min_std)

    def _categorical(self, logits: torch.Tensor) -> torch.Tensor:
        return unimix_log_probs(logits.unflatten(-1, (self.cfg.stoch, self.cfg.classes)), self.cfg.unimix)

    # -- sequences ------------------------------------------------------------------------------------------------

    def observe(self, embed: torch.Tensor, cells: torch.Tensor | None, actions: torch.Tensor,
                sample: bool = True) -> Trajectory:
        """Posterior states for a sequence. embed (B, T, E); cells (B, T, cells, cell_input_dim); actions (B, T, A),
        where actions[:, t] is taken after step t (so the last action is unused)."""
        if self.cfg.local_grid and cells is None:
            raise ValueError("this RSSM has a local level: pass the patch tokens of each cell, cells (B, T, cells, "
                             "cell_input_dim) (hrssm.encoder.tokens_to_cells)")
        state: State = self.initial(embed.shape[0])
        steps = []
        for t in range(embed.shape[1]):
            state = self.obs_step(state, None if t == 0 else actions[:, t - 1], embed[:, t],
                                  None if cells is None else cells[:, t], sample)
            steps.append(state)
        return Trajectory.stack(steps)

    def imagine(self, start: State, actions: torch.Tensor, sample: bool = True) -> Trajectory:
        """Prior rollout from `start`: actions (B, T, A); step t applies actions[:, t] to the previous state."""
        state, steps = start, []
        for t in range(actions.shape[1]):
            state = self.img_step(state, actions[:, t], sample)
            steps.append(state)
        return Trajectory.stack(steps)

    @staticmethod
    def features(h: torch.Tensor, z: torch.Tensor, s: torch.Tensor | None) -> torch.Tensor:
        """Flat features [h, z, s of every cell in row-major order] with any leading shape.

        (Averaging s over cells, the first choice, washed out small objects: a bird probe fell to chance.)
        """
        parts = [h, z] + ([s.flatten(-2)] if s is not None else [])
        return torch.cat(parts, dim=-1)
