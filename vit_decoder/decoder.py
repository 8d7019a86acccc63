"""A ViT decoder: a grid of latent tokens and/or a global context vector -> an image.

Each latent cell is projected to the (k x k) patch tokens it covers (k = patch grid / latent grid); the context
vector becomes one extra token every patch can attend to; fixed 2D sin-cos positions; pre-norm transformer blocks;
a linear layer to patch pixels; unpatchify (or, with `conv_channels`, a linear layer to that many channels per
pixel, unpatchify, then two 3x3 convolutions that see across patch borders). The output is unconstrained (no
sigmoid): it lives in the same space as the images it is trained on (hrssm uses [-0.5, 0.5]).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from .layers import Block, sincos_pos_embed_2d, unpatchify


@dataclass
class ViTDecoderConfig:
    image_size: int = 224
    patch_size: int = 16
    width: int = 512  # MAE's decoder: width 512, 8 blocks, 16 heads
    depth: int = 8
    heads: int = 16
    mlp_ratio: float = 4.0
    token_dim: int = 0  # width of each latent grid cell; 0 = no grid (patches start from a learned token)
    latent_grid: int = 0  # side of the latent grid; must divide image_size / patch_size
    context_dim: int = 0  # width of a global context vector (one extra token); 0 = none
    channels: int = 3
    attention: str = "auto"
    # 0: a linear layer from each token to its patch's pixels (MAE). > 0: a linear layer to this many channels per
    # pixel, then two 3x3 convolutions to the image, which see across patch borders (no seams at patch edges)
    conv_channels: int = 0

    def __post_init__(self) -> None:
        if self.conv_channels < 0:
            raise ValueError(f"decoder conv_channels must be >= 0 (0: a linear head), got {self.conv_channels}")
        if self.patch_size < 1 or self.image_size % self.patch_size:
            raise ValueError(f"decoder image_size {self.image_size} is not a multiple of patch_size "
                             f"{self.patch_size}: pick an image size divisible by the patch size")
        if self.width % self.heads or self.width % 4:
            raise ValueError(f"decoder width {self.width} must be divisible by heads ({self.heads}) and by 4")
        if (self.latent_grid > 0) != (self.token_dim > 0):
            raise ValueError("decoder token_dim and latent_grid must both be set (a latent grid) or both be 0")
        if self.latent_grid > 0 and self.grid % self.latent_grid:
            raise ValueError(f"latent grid {self.latent_grid} must divide the patch grid {self.grid} "
                             f"(= image_size / patch_size)")
        if self.token_dim == 0 and self.context_dim == 0:
            raise ValueError("the decoder needs an input: a latent grid (token_dim) or a context vector (context_dim)")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


def _init_weights(module: nn.Module) -> None:
    """MAE's initialisation: xavier-uniform linear layers, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class ViTDecoder(nn.Module):
    def __init__(self, cfg: ViTDecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg
        self.cell = c.grid // c.latent_grid if c.latent_grid else 0
        if c.latent_grid:
            self.token_proj = nn.Linear(c.token_dim, self.cell * self.cell * c.width)
        else:
            self.mask_token = nn.Parameter(torch.zeros(1, 1, c.width))
            nn.init.normal_(self.mask_token, std=0.02)
        if c.context_dim:
            self.context_proj = nn.Linear(c.context_dim, c.width)
        self.register_buffer("pos_embed", sincos_pos_embed_2d(c.width, c.grid)[None], persistent=False)
        self.blocks = nn.ModuleList(Block(c.width, c.heads, c.mlp_ratio, c.attention) for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.width)
        self.head = nn.Linear(c.width, c.patch_size * c.patch_size * (c.conv_channels or c.channels))
        self.conv_head: nn.Sequential | None = None
        if c.conv_channels:  # (B, conv_channels, H, W) -> (B, channels, H, W) across patch borders
            self.conv_head = nn.Sequential(nn.Conv2d(c.conv_channels, c.conv_channels, 3, padding=1), nn.GELU(),
                                           nn.Conv2d(c.conv_channels, c.channels, 3, padding=1))
        self.apply(_init_weights)
        # start from a flat image: contrast has to be learned, not noise unlearned
        last = self.head if self.conv_head is None else self.conv_head[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, tokens: torch.Tensor | None = None, context: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, latent_grid**2, token_dim) in row-major cell order; context (B, context_dim) -> (B, C, H, W)."""
        c = self.cfg
        if c.latent_grid:
            if tokens is None or tokens.shape[1:] != (c.latent_grid**2, c.token_dim):
                got = None if tokens is None else tuple(tokens.shape)
                raise ValueError(f"decoder expects tokens (B, {c.latent_grid**2}, {c.token_dim}), got {got}")
            x = rearrange(self.token_proj(tokens), "b (gh gw) (kh kw d) -> b (gh kh gw kw) d",
                          gh=c.latent_grid, kh=self.cell, kw=self.cell)
        else:
            batch = context.shape[0] if context is not None else tokens.shape[0]  # type: ignore[union-attr]
            x = self.mask_token.expand(batch, c.grid * c.grid, -1)
        x = x + self.pos_embed
        if c.context_dim:
            if context is None or context.shape[-1] != c.context_dim:
                raise ValueError(f"decoder expects a context of width {c.context_dim}")
            x = torch.cat([self.context_proj(context)[:, None], x], dim=1)
        for block in self.blocks:
            x = block(x)
        patches = self.head(self.norm(x))
        if c.context_dim:
            patches = patches[:, 1:]
        if self.conv_head is None:
            return unpatchify(patches, c.patch_size, c.channels)
        return self.conv_head(unpatchify(patches, c.patch_size, c.conv_channels))
