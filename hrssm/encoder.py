"""Patch ViT encoder: (N, 3, H, W) in [-0.5, 0.5] -> CLS embedding (N, D) and patch tokens (N, P, D)."""

from __future__ import annotations

import torch
from torch import nn

from vit_decoder.layers import Block, sincos_pos_embed_2d

from .config import EncoderConfig


class ViTEncoder(nn.Module):
    def __init__(self, image_size: int, cfg: EncoderConfig, channels: int = 3, attention: str = "auto") -> None:
        super().__init__()
        self.cfg, self.grid = cfg, image_size // cfg.patch_size
        self.patch_embed = nn.Conv2d(channels, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        nn.init.normal_(self.cls_token, std=0.02)
        self.register_buffer("pos_embed", sincos_pos_embed_2d(cfg.width, self.grid)[None], persistent=False)
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads, cfg.mlp_ratio, attention) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.patch_embed(images).flatten(2).transpose(1, 2) + self.pos_embed  # (N, P, D), row-major patches
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return x[:, 0], x[:, 1:]


def tokens_to_cells(tokens: torch.Tensor, grid: int, cell: int) -> torch.Tensor:
    """(N, P, D) row-major patch tokens -> (N, grid*grid, cell*cell*D): the tokens of each local cell concatenated."""
    from einops import rearrange

    return rearrange(tokens, "n (gh kh gw kw) d -> n (gh gw) (kh kw d)", gh=grid, kh=cell, kw=cell)
