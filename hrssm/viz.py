"""Pictures a person would rather look at than read: image grids (views, reconstructions)."""

from __future__ import annotations

import torch
from PIL import Image

from .data.preprocess import to_uint8


def image_grid(images: torch.Tensor, pad: int = 2) -> Image.Image:
    """(R, C, 3, H, W) float images in [-0.5, 0.5] (or uint8) -> one PIL image, rows x columns, white padding."""
    if images.ndim != 5:
        raise ValueError(f"image_grid takes (rows, cols, 3, H, W), got shape {tuple(images.shape)}")
    u8 = images if images.dtype == torch.uint8 else to_uint8(images)
    r, c, _, h, w = u8.shape
    canvas = torch.full((3, r * (h + pad) + pad, c * (w + pad) + pad), 255, dtype=torch.uint8)
    for i in range(r):
        for j in range(c):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            canvas[:, y : y + h, x : x + w] = u8[i, j]
    return Image.fromarray(canvas.permute(1, 2, 0).cpu().numpy())
