"""Pre-norm transformer blocks, fixed 2D sin-cos positions, patchify / unpatchify (as in MAE)."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from .attention import attention


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, backend: str = "auto") -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by heads {heads}")
        self.heads, self.backend = heads, backend
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        return self.proj(rearrange(attention(q, k, v, self.backend), "b h n d -> b n (h d)"))


class Block(nn.Module):
    """x + attn(norm(x)); x + mlp(norm(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, backend: str = "auto") -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, backend)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def sincos_pos_embed_2d(dim: int, grid: int, span: int | None = None) -> torch.Tensor:
    """Fixed 2D sin-cos position embedding (grid*grid, dim), rows then columns (MAE's layout).

    span: the grid the positions are measured in (default `grid`): a grid x grid layout of patch centres stretched
    over span x span patches, so an image shown at another size gets the positions of the same image points (the
    sin-cos counterpart of interpolating a learned position embedding)."""
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs a width divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    pos = torch.arange(grid, dtype=torch.float64)
    if span is not None and span != grid:
        pos = (pos + 0.5) * (span / grid) - 0.5  # patch centres, in units of the span grid's patches
    ys, xs = torch.meshgrid(pos, pos, indexing="ij")

    def embed(pos: torch.Tensor) -> torch.Tensor:
        out = pos.reshape(-1, 1) * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)

    return torch.cat([embed(xs), embed(ys)], dim=1).float()


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, (H/p)*(W/p), p*p*C), patches in row-major order."""
    return rearrange(images, "b c (h p) (w q) -> b (h w) (p q c)", p=patch, q=patch)


def unpatchify(patches: torch.Tensor, patch: int, channels: int = 3) -> torch.Tensor:
    """Inverse of :func:`patchify` for square images."""
    grid = int(round(patches.shape[1] ** 0.5))
    if grid * grid != patches.shape[1]:
        raise ValueError(f"{patches.shape[1]} patches do not form a square grid")
    return rearrange(patches, "b (h w) (p q c) -> b c (h p) (w q)", h=grid, p=patch, q=patch, c=channels)
