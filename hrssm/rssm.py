"""Hierarchical RSSM: a global DreamerV3-style level and a grid of local latents conditioned on it (top-down).

Per step t (the state at t = 0 is the learned initial state, no transition):

    global  h_t = GRU(h_{t-1}, [z_{t-1}, a_{t-1}])    prior p(z_t | h_t)    posterior q(z_t | h_t, cls_t)
    local   c_t = mixer(prev(s_{t-1}) + ctx(h_t, z_t) + pos)                    (one hidden vector per cell)
            prior p(s_t | c_t)                        posterior q(s_t | c_t, patch tokens of the cell at t)

Posterior logits are linear in the observation plus a linear top-down term from the state.

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
class Trajectory:
    """States over time (B, T, ...) with the log-probabilities of priors and (when observed) posteriors."""

    h: torch.Tensor
    z: torch.Tensor
    s: torch.Tensor | None
    prior_global: torch.Tensor  # (B, T, stoch, classes)
    post_global: torch.Tensor | None  # None for imagined trajectories
    prior_local: torch.Tensor | None  # (B, T, cells, 2, local_dim): [mean, std]
    post_local: torch.Tensor | None

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

    # -- pieces of a step -----------------------------------------------------------------------------------------

    def initial(self, batch: int) -> State:
        """The state before any transition: learned h, zero latents."""
        h = torch.tanh(self.initial_h).expand(batch, -1)
        z = h.new_zeros(batch, self.z_dim)
        s = h.new_zeros(batch, self.cells, self.s_dim) if self.cfg.local_grid else None
        return State(h, z, s)

    def transition(self, prev: State, action: torch.Tensor) -> torch.Tensor:
        return self.gru(self.transition_in(torch.cat([prev.z, action], dim=-1)), prev.h)

    def _categorical(self, logits: torch.Tensor, stoch: int, classes: int) -> torch.Tensor:
        return unimix_log_probs(logits.unflatten(-1, (stoch, classes)), self.cfg.unimix)

    def local_hidden(self, prev_s: torch.Tensor, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x = self.local_prev(prev_s) + self.local_context(torch.cat([h, z], dim=-1))[:, None] + self.cell_pos
        for block in self.local_mixer:
            x = block(x)
        return self.local_norm(x)

    # -- sequences ------------------------------------------------------------------------------------------------

    def observe(self, embed: torch.Tensor, cells: torch.Tensor | None, actions: torch.Tensor,
                sample: bool = True) -> Trajectory:
        """Posterior states for a sequence. embed (B, T, E); cells (B, T, cells, cell_input_dim); actions (B, T, A),
        where actions[:, t] is taken after step t (so the last action is unused)."""
        c = self.cfg
        batch, steps = embed.shape[:2]
        out: dict[str, list[torch.Tensor]] = {k: [] for k in ("h", "z", "s", "pg", "qg", "pl", "ql")}
        state = self.initial(batch)
        for t in range(steps):
            h = state.h if t == 0 else self.transition(state, actions[:, t - 1])
            prior_g = self._categorical(self.prior_global(h), c.stoch, c.classes)
            post_g = self._categorical(self.post_global_obs(embed[:, t]) + self.post_global_state(h), c.stoch,
                                       c.classes)
            z = straight_through_sample(post_g, sample).flatten(-2)
            s = None
            if c.local_grid:
                assert cells is not None and state.s is not None
                hid = self.local_hidden(state.s, h, z)
                prior_l = gaussian_params(self.prior_local(hid), c.local_min_std)
                post_l = gaussian_params(self.post_local_obs(cells[:, t]) + self.post_local_state(hid), c.local_min_std)
                s = gaussian_sample(post_l, sample)
                out["s"].append(s), out["pl"].append(prior_l), out["ql"].append(post_l)
            out["h"].append(h), out["z"].append(z), out["pg"].append(prior_g), out["qg"].append(post_g)
            state = State(h, z, s)
        return self._stack(out, observed=True)

    def imagine(self, start: State, actions: torch.Tensor, sample: bool = True) -> Trajectory:
        """Prior rollout from `start`: actions (B, T, A); step t applies actions[:, t] to the previous state."""
        c = self.cfg
        out: dict[str, list[torch.Tensor]] = {k: [] for k in ("h", "z", "s", "pg", "qg", "pl", "ql")}
        state = start
        for t in range(actions.shape[1]):
            h = self.transition(state, actions[:, t])
            prior_g = self._categorical(self.prior_global(h), c.stoch, c.classes)
            z = straight_through_sample(prior_g, sample).flatten(-2)
            s = None
            if c.local_grid:
                assert state.s is not None
                prior_l = gaussian_params(self.prior_local(self.local_hidden(state.s, h, z)), c.local_min_std)
                s = gaussian_sample(prior_l, sample)
                out["s"].append(s), out["pl"].append(prior_l)
            out["h"].append(h), out["z"].append(z), out["pg"].append(prior_g)
            state = State(h, z, s)
        return self._stack(out, observed=False)

    @staticmethod
    def _stack(out: dict[str, list[torch.Tensor]], observed: bool) -> Trajectory:
        def stack(key: str) -> torch.Tensor | None:
            return torch.stack(out[key], dim=1) if out[key] else None

        return Trajectory(h=stack("h"), z=stack("z"), s=stack("s"), prior_global=stack("pg"),  # type: ignore[arg-type]
                          post_global=stack("qg") if observed else None, prior_local=stack("pl"),
                          post_local=stack("ql") if observed else None)

    @staticmethod
    def features(h: torch.Tensor, z: torch.Tensor, s: torch.Tensor | None) -> torch.Tensor:
        """Flat features [h, z, s of every cell in row-major order] with any leading shape.

        (Averaging s over cells, the first choice, washed out small objects: a bird probe fell to chance.)
        """
        parts = [h, z] + ([s.flatten(-2)] if s is not None else [])
        return torch.cat(parts, dim=-1)
