"""A PNG contact sheet of a Waterbirds dataset: one row of samples per group."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .schema import GROUP_NAMES


def contact_sheet(ds, per_group: int = 8, tile: int = 96, seed: int = 0) -> Image.Image:
    """Sample `per_group` images of each group of a Waterbirds `datasets.Dataset` into one labelled picture."""
    groups = np.asarray(ds["group"])
    rng = np.random.default_rng(seed)
    label_w = 150
    sheet = Image.new("RGB", (label_w + per_group * tile, len(GROUP_NAMES) * tile), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for g, name in enumerate(GROUP_NAMES):
        idx = np.flatnonzero(groups == g)
        draw.text((6, g * tile + tile // 2 - 14), f"{name}\nn = {len(idx)}", fill="black", font=font)
        for k, i in enumerate(rng.choice(idx, size=min(per_group, len(idx)), replace=False)):
            im = ds[int(i)]["image"].convert("RGB").resize((tile, tile), Image.Resampling.BICUBIC)
            sheet.paste(im, (label_w + k * tile, g * tile))
    return sheet
