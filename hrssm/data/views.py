"""Still images -> short sequences of views with no-op actions, so an RSSM's transition model has something to learn.

``repeat`` gives T identical views (the prior can then predict every step after the first, so the KL at t > 0 goes
to ~0: useful as a control). ``augment`` gives T different views: random resized crop, horizontal flip and mild
colour jitter, all batched in torch. ``edit`` gives counterfactual sequences (rows need a `counterfactual` image:
the same bird on the other background, see `hrssm.data.counterfactual`): the action after each step is a concept
edit, +1 "make the background water", -1 "make it land", 0 no-op, and the next view is the image with that
background, so the transition model learns the edit. The randomness of a sample is keyed by (seed, epoch, img_id),
so its views do not depend on batch composition, DataLoader workers or resuming.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from .._config_utils import Config, integer, number
from .preprocess import PIXEL_MAX, PIXEL_MIN, check_pixel_range, preprocess

_N_PARAMS = 8  # uniforms per view: area, log-ratio, x, y, flip, brightness, contrast, saturation
_LUMA = (0.299, 0.587, 0.114)


@dataclass
class ViewConfig(Config):
    """How a still image becomes a sequence of views."""

    section: ClassVar[str] = "views"
    num_views: int = 4  # views per image: the sequence length T
    mode: Literal["repeat", "augment", "edit"] = "augment"  # identical views, augmented ones, or concept edits
    action_dim: int = 1  # size of an action (default: the model's action_dim)
    crop_scale: tuple[float, float] = (0.7, 1.0)  # area fraction of the random resized crop
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect ratio range of the crop
    flip: bool = True  # random horizontal flips
    brightness: float = 0.1  # multiplicative factor drawn from [1 - b, 1 + b]
    contrast: float = 0.1  # contrast factor drawn from [1 - c, 1 + c]
    saturation: float = 0.1  # saturation factor drawn from [1 - s, 1 + s]

    def validate(self) -> None:
        self.check(integer, "num_views", "action_dim")
        self.check(number, "brightness", "contrast", "saturation", high=1)
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"views.crop_scale={self.crop_scale} must satisfy 0 < low <= high <= 1")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"views.crop_ratio={self.crop_ratio} must satisfy 0 < low <= high")


def view_uniforms(keys: Sequence[Sequence[int]], num_views: int) -> torch.Tensor:
    """(B, T, 8) uniforms in [0, 1), one independent stream per key (e.g. (seed, epoch, img_id))."""
    return torch.from_numpy(
        np.stack([np.random.default_rng([int(k) for k in key]).random((num_views, _N_PARAMS)) for key in keys])
    ).float()


def augment(images: torch.Tensor, u: torch.Tensor, cfg: ViewConfig) -> torch.Tensor:
    """Apply random resized crop + flip + colour jitter. images (B, 3, H, W) in [-0.5, 0.5]; u (B, T, 8).

    Returns (B, T, 3, H, W). One `grid_sample` call for the whole batch of views.
    """
    b, t = u.shape[:2]
    _, c, h, w = images.shape
    u = u.to(images.device, images.dtype)
    lo, hi = cfg.crop_scale
    area = lo + (hi - lo) * u[..., 0]
    log_r = np.log(cfg.crop_ratio[0]) + (np.log(cfg.crop_ratio[1]) - np.log(cfg.crop_ratio[0])) * u[..., 1]
    ratio = torch.exp(log_r)
    cw = torch.sqrt(area * ratio).clamp(max=1.0)  # crop width / image width
    ch = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (2 * u[..., 2] - 1) * (1 - cw)  # crop centre in [-1, 1] coordinates, crop kept inside the image
    cy = (2 * u[..., 3] - 1) * (1 - ch)
    sign = torch.where(u[..., 4] < 0.5, -1.0, 1.0) if cfg.flip else torch.ones_like(cw)
    theta = torch.zeros(b, t, 2, 3, dtype=images.dtype, device=images.device)
    theta[..., 0, 0], theta[..., 0, 2] = cw * sign, cx
    theta[..., 1, 1], theta[..., 1, 2] = ch, cy
    grid = F.affine_grid(theta.reshape(b * t, 2, 3), [b * t, c, h, w], align_corners=False)
    src = images.unsqueeze(1).expand(b, t, c, h, w).reshape(b * t, c, h, w)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    x = (out + 0.5).reshape(b, t, c, h, w)  # colour jitter in [0, 1]
    def factor(k: int, amount: float) -> torch.Tensor:
        return (1 + amount * (2 * u[..., k] - 1))[..., None, None, None]
    x = x * factor(5, cfg.brightness)
    mean = x.mean(dim=(2, 3, 4), keepdim=True)
    x = (x - mean) * factor(6, cfg.contrast) + mean
    gray = (x * x.new_tensor(_LUMA)[:, None, None]).sum(dim=2, keepdim=True)
    x = (x - gray) * factor(7, cfg.saturation) + gray
    return (x - 0.5).clamp(PIXEL_MIN, PIXEL_MAX)


def make_views(images: torch.Tensor, cfg: ViewConfig, keys: Sequence[Sequence[int]] | None = None,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, 3, H, W) in [-0.5, 0.5] -> views (B, T, 3, H, W) and no-op actions (B, T, action_dim) of zeros.

    In ``augment`` mode the randomness comes from `keys` (one integer tuple per image) when given, else from
    `generator` (or torch's global RNG).
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got shape {tuple(images.shape)}")
    check_pixel_range(images)
    b, t = images.shape[0], cfg.num_views
    actions = images.new_zeros(b, t, cfg.action_dim)
    if cfg.mode == "repeat":
        return images.unsqueeze(1).repeat(1, t, 1, 1, 1), actions
    if keys is not None:
        if len(keys) != b:
            raise ValueError(f"got {len(keys)} keys for {b} images")
        u = view_uniforms(keys, t)
    else:
        u = torch.rand(b, t, _N_PARAMS, generator=generator)
    return augment(images, u, cfg), actions


def edit_views(images: torch.Tensor, counterfactuals: torch.Tensor, places: torch.Tensor, cfg: ViewConfig,
               keys: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Counterfactual sequences: images / counterfactuals (B, 3, H, W) (own / other background), places (B,).

    Each sample draws T - 1 edits from {-1, 0, +1} (keyed like the augmentations); actions[:, t, 0] is the edit
    taken after step t (the last is 0), and view t + 1 shows the background that edit sets (+1 water, -1 land).
    """
    b, t = images.shape[0], cfg.num_views
    edits = np.stack([np.random.default_rng([*map(int, key), 7]).integers(-1, 2, t - 1) for key in keys]) if t > 1 \
        else np.zeros((b, 0), np.int64)
    place = places.numpy().astype(np.int64).copy()
    own = place.copy()
    views = [images]
    for step in range(t - 1):
        e = edits[:, step]
        place = np.where(e > 0, 1, np.where(e < 0, 0, place))
        pick = torch.from_numpy(place == own)[:, None, None, None]
        views.append(torch.where(pick, images, counterfactuals))
    actions = images.new_zeros(b, t, cfg.action_dim)
    actions[:, : t - 1, 0] = torch.from_numpy(edits).to(images.dtype)
    return torch.stack(views, dim=1), actions


class ViewCollator:
    """`collate_fn` for a DataLoader over a Waterbirds dataset: rows -> a batch of view sequences.

    Returns ``{"views": (B, T, 3, S, S) float32 in [-0.5, 0.5], "actions": (B, T, A), "label", "place", "group",
    "img_id": (B,) int64}``. Call :meth:`set_epoch` each epoch so augmentations differ between epochs.
    """

    def __init__(self, image_size: int, views: ViewConfig | None = None, seed: int = 0,
                 crop_fraction: float = 1.0) -> None:
        self.image_size, self.views = image_size, views or ViewConfig()
        self.seed, self.crop_fraction = seed, crop_fraction
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        images = preprocess([r["image"] for r in rows], self.image_size, self.crop_fraction)
        img_ids = [int(r["img_id"]) for r in rows]
        keys = [(self.seed, self.epoch, i) for i in img_ids]
        if self.views.mode == "edit":
            if "counterfactual" not in rows[0]:
                raise ValueError("views.mode='edit' needs counterfactual pairs (a `counterfactual` image column): "
                                 "train on the synthetic twin (the trainer adds the column, "
                                 "hrssm.data.counterfactual.add_counterfactuals) or add the column yourself")
            cf = preprocess([r["counterfactual"] for r in rows], self.image_size, self.crop_fraction)
            places = torch.tensor([int(r["place"]) for r in rows])
            views, actions = edit_views(images, cf, places, self.views, keys)
        else:
            views, actions = make_views(images, self.views, keys=keys)
        batch = {"views": views, "actions": actions, "img_id": torch.tensor(img_ids, dtype=torch.int64)}
        for name in ("label", "place", "group"):
            if name in rows[0]:
                batch[name] = torch.tensor([int(r[name]) for r in rows], dtype=torch.int64)
        return batch
