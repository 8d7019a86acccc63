"""The optimizer and learning-rate schedule of every training run (the world model and the VAE baseline)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from .train_config import OptimConfig


def make_optimizer(model: nn.Module, cfg: OptimConfig, early: Iterable[nn.Parameter] | None = None,
                   ) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the trainable parameters of `model`, with weight decay on matrices only (not on biases and norms),
    and its schedule (`lr_lambda`): call `scheduler.step()` once per optimizer step.

    `early`: the parameters the contrastive warm-up trains (`WorldModel.contrastive_warmup_parameters`). With
    `cfg.contrastive_warmup_steps > 0` and `cfg.late_start_schedule`, every other parameter (the RSSM, the decoder)
    gets a schedule of its own that starts when it starts training (`late_start_lambda`), instead of joining the
    run's cosine at its low tail; the early ones keep the run's schedule."""
    late_start = cfg.late_start_schedule and cfg.contrastive_warmup_steps > 0 and early is not None
    trainable = [p for p in model.parameters() if p.requires_grad]
    if late_start:
        early_ids = {id(p) for p in early}
        parts = [[p for p in trainable if id(p) in early_ids], [p for p in trainable if id(p) not in early_ids]]
    else:
        parts = [trainable]
    groups = [group for part in parts for group in _decay_groups(part, cfg.weight_decay)]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)
    schedule = lr_lambda(cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
    if late_start:
        late = late_start_lambda(cfg.contrastive_warmup_steps, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
        schedule = [schedule, schedule, late, late]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    return optimizer, scheduler


def _decay_groups(params: list[nn.Parameter], weight_decay: float) -> list[dict]:
    """Two AdamW parameter groups of `params`: matrices with weight decay, biases and norms without."""
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


def lr_lambda(warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    """Step -> learning-rate factor: a linear warmup over `warmup` steps, then a cosine from 1 to `min_ratio` at
    step `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def late_start_lambda(start: int, warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    """The schedule of parameters that start training at step `start`: 0 before it, then `lr_lambda` over the
    `total - start` steps left, its linear warmup shortened to at most a fifth of them."""
    inner = lr_lambda(min(warmup, max(1, (total - start) // 5)), total - start, min_ratio)

    def factor(step: int) -> float:
        return 0.0 if step < start else inner(step - start)

    return factor
