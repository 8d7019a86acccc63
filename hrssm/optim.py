"""The optimizer and learning-rate schedule of every training run (the world model and the VAE baseline)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .train_config import OptimConfig


def make_optimizer(model: nn.Module, cfg: OptimConfig) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the trainable parameters of `model`, with weight decay on matrices only (not on biases and norms),
    and its schedule (`lr_lambda`): call `scheduler.step()` once per optimizer step."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)
    schedule = lr_lambda(cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    return optimizer, scheduler


def lr_lambda(warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    """Step -> learning-rate factor: a linear warmup over `warmup` steps, then a cosine from 1 to `min_ratio` at
    step `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
