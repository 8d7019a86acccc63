"""Still images -> short sequences of views with no-op actions, so an RSSM's transition model has something to learn.

``repeat`` gives T identical views (the prior can then predict every step after the first, so the KL at t > 0 goes
to ~0: useful as a control). ``augment`` gives T different views: random resized crop, horizontal flip and mild
colour jitter, all batched in torch (`hrssm.data.augment`). ``edit`` gives counterfactual sequences (rows need a
`counterfactual` image: the same bird on the other background, see `hrssm.data.counterfactual`): the action after
each step is a concept edit, +1 "make the background water", -1 "make it land", 0 no-op, and the next view is the
image with that background, so the transition model learns the edit. The randomness of a sample is keyed by
(seed, epoch, img_id), so its views do not depend on batch composition, DataLoader workers, resuming or the device.

Where views are made: `ViewCollator` turns dataset rows into a *base batch* (uint8 images, their keys, and what the
keys decide: crop/jitter uniforms, edit sequences, actions). `views_from_base` turns a base batch into views on
whatever device it lives on. The collator calls it itself (views made in the DataLoader workers), or, with
``base_only=True``, leaves it to the training step (views made on the accelerator from 4x-smaller uint8 batches).
Both give the same views for the same keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from .._config_utils import Config, integer, number
from .augment import N_EXTRA, N_PARAMS, augment, reference_augment
from .preprocess import _to_float, check_pixel_range, uint8_batch

__all__ = ["ViewCollator", "ViewConfig", "augment", "edit_sequence", "edit_views", "make_views", "reference_augment",
           "view_uniforms", "views_from_base"]


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
    grayscale: float = 0.0  # probability that a view is turned to gray (colour alone cannot match its views)
    hue: float = 0.0  # hue turned about the gray axis by up to this fraction of a full turn either way (SimCLR: 0.1)
    # probability that a view's centre disk (the object) is pasted onto another image's view (a new background)
    paste: float = 0.0
    paste_radius: float = 0.55  # radius of the pasted disk, a fraction of the half side (0.55: 55% of the width)

    def validate(self) -> None:
        self.check(integer, "num_views", "action_dim")
        self.check(number, "brightness", "contrast", "saturation", high=1)
        self.check(number, "grayscale", "paste", high=1, high_closed=True)  # probabilities
        self.check(number, "hue", high=0.5, high_closed=True)  # half a turn either way covers every hue
        self.check(number, "paste_radius", low_open=True, high=1.5)
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"views.crop_scale={self.crop_scale} must satisfy 0 < low <= high <= 1")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"views.crop_ratio={self.crop_ratio} must satisfy 0 < low <= high")


def view_uniforms(keys: Sequence[Sequence[int]], num_views: int) -> torch.Tensor:
    """(B, T, 13) float32 uniforms in [0, 1), one independent stream per key (e.g. (seed, epoch, img_id)): the 8 of
    the crop and jitter, then the 4 of grayscale and paste, then the hue's (each drawn after the others, so the
    earlier ones are what they always were)."""
    def draw(key: Sequence[int]) -> np.ndarray:
        rng = np.random.default_rng([int(k) for k in key])
        first = rng.random((num_views, N_PARAMS))
        return np.concatenate([first, rng.random((num_views, N_EXTRA)), rng.random((num_views, 1))], axis=1)

    return torch.from_numpy(np.stack([draw(key) for key in keys])).float()


def make_views(images: torch.Tensor, cfg: ViewConfig, keys: Sequence[Sequence[int]] | None = None,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, 3, H, W), uint8 or float in [-0.5, 0.5] -> views (B, T, 3, H, W) float32 in [-0.5, 0.5] and no-op
    actions (B, T, action_dim) of zeros, on the images' device.

    In ``augment`` mode the randomness comes from `keys` (one integer tuple per image) when given, else from
    `generator` (or torch's global RNG).
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got shape {tuple(images.shape)}")
    if images.dtype != torch.uint8:
        check_pixel_range(images)
    b, t = images.shape[0], cfg.num_views
    actions = torch.zeros(b, t, cfg.action_dim, device=images.device)
    if cfg.mode == "repeat":
        return _float_pixels(images).unsqueeze(1).repeat(1, t, 1, 1, 1), actions
    if keys is not None:
        if len(keys) != b:
            raise ValueError(f"got {len(keys)} keys for {b} images")
        u = view_uniforms(keys, t)
    else:
        u = torch.rand(b, t, N_PARAMS + N_EXTRA, generator=generator)
        u = torch.cat([u, torch.rand(b, t, 1, generator=generator)], dim=-1)  # the hue's, after the first 12
    return augment(images, u, cfg), actions


def edit_sequence(places: torch.Tensor, keys: Sequence[Sequence[int]], cfg: ViewConfig
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The keyed edits of counterfactual sequences: places (B,) of the own images -> own (B, T) bool (view t shows
    the own image, else the counterfactual) and actions (B, T, action_dim) (actions[:, t, 0] is the edit after t)."""
    b, t = len(keys), cfg.num_views
    edits = np.stack([np.random.default_rng([*map(int, key), 7]).integers(-1, 2, t - 1) for key in keys]) if t > 1 \
        else np.zeros((b, 0), np.int64)
    own_place = np.asarray(places, dtype=np.int64)
    place, own = own_place.copy(), [np.ones(b, bool)]
    for step in range(t - 1):
        e = edits[:, step]
        place = np.where(e > 0, 1, np.where(e < 0, 0, place))
        own.append(place == own_place)
    actions = torch.zeros(b, t, cfg.action_dim)
    actions[:, : t - 1, 0] = torch.from_numpy(edits).float()
    return torch.from_numpy(np.stack(own, axis=1)), actions


def edit_views(images: torch.Tensor, counterfactuals: torch.Tensor, places: torch.Tensor, cfg: ViewConfig,
               keys: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Counterfactual sequences: images / counterfactuals (B, 3, H, W) (own / other background), places (B,).

    Each sample draws T - 1 edits from {-1, 0, +1} (keyed like the augmentations, `edit_sequence`); actions[:, t, 0]
    is the edit taken after step t (the last is 0), and view t + 1 shows the background that edit sets (+1 water,
    -1 land). Views come back as float32 in [-0.5, 0.5].
    """
    own, actions = edit_sequence(places.cpu(), keys, cfg)
    return _edit_pixels(images, counterfactuals, own.to(images.device)), actions.to(images.device)


def _edit_pixels(images: torch.Tensor, counterfactuals: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) own and other images, own (B, T) -> views (B, T, 3, H, W) float32."""
    return _float_pixels(torch.where(own[:, :, None, None, None], images[:, None], counterfactuals[:, None]))


def _float_pixels(x: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [-0.5, 0.5]; float stays as it is."""
    return _to_float(x) if x.dtype == torch.uint8 else x


def views_from_base(batch: dict[str, torch.Tensor], cfg: ViewConfig, chunk: int | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """A base batch of `ViewCollator(base_only=True)` -> views (B, T, 3, S, S) float32 and actions (B, T, A), on the
    batch's device (the same views for the same keys on every device, up to float rounding)."""
    images = batch["images"]
    if cfg.mode == "augment":
        views = augment(images, batch["view_params"], cfg, chunk)
    elif cfg.mode == "edit":
        views = _edit_pixels(images, batch["counterfactuals"], batch["own_view"])
    else:
        views = _float_pixels(images).unsqueeze(1).repeat(1, cfg.num_views, 1, 1, 1)
    return views, batch["actions"]


class ViewCollator:
    """`collate_fn` for a DataLoader over a Waterbirds dataset: rows -> a batch of view sequences.

    Returns ``{"views": (B, T, 3, S, S) float32 in [-0.5, 0.5], "actions": (B, T, A), "label", "place", "group",
    "img_id": (B,) int64}``. With ``base_only=True`` it returns the base batch instead, for `views_from_base` to turn
    into views later (on the accelerator): ``"images"`` (B, 3, S, S) uint8, ``"keys"`` (B, 3) int64 (seed, epoch,
    img_id), ``"actions"``, in augment mode ``"view_params"`` (B, T, 13) float32, in edit mode ``"counterfactuals"``
    (B, 3, S, S) uint8 and ``"own_view"`` (B, T) bool, and the labels. Call :meth:`set_epoch` each epoch so
    augmentations differ between epochs.
    """

    def __init__(self, image_size: int, views: ViewConfig | None = None, seed: int = 0,
                 crop_fraction: float = 1.0, base_only: bool = False, interpolation: str = "bilinear") -> None:
        self.image_size, self.views = image_size, views or ViewConfig()
        self.seed, self.crop_fraction, self.base_only = seed, crop_fraction, base_only
        self.interpolation = interpolation
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.base_batch(rows)
        if self.base_only:
            return batch
        batch["views"], batch["actions"] = views_from_base(batch, self.views)
        for name in ("images", "keys", "view_params", "counterfactuals", "own_view"):
            batch.pop(name, None)
        return batch

    def base_batch(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Decoded uint8 images and everything their keys decide (see the class docstring)."""
        cfg, t = self.views, self.views.num_views
        img_ids = [int(r["img_id"]) for r in rows]
        keys = [(self.seed, self.epoch, i) for i in img_ids]
        batch = {"images": self._resized([r["image"] for r in rows]), "keys": torch.tensor(keys, dtype=torch.int64),
                 "img_id": torch.tensor(img_ids, dtype=torch.int64)}
        if cfg.mode == "edit":
            if "counterfactual" not in rows[0]:
                raise ValueError("views.mode='edit' needs counterfactual pairs (a `counterfactual` image column): "
                                 "train on the synthetic twin (the trainer adds the column, "
                                 "hrssm.data.counterfactual.add_counterfactuals) or add the column yourself")
            batch["counterfactuals"] = self._resized([r["counterfactual"] for r in rows])
            batch["own_view"], batch["actions"] = edit_sequence([int(r["place"]) for r in rows], keys, cfg)
        else:
            batch["actions"] = torch.zeros(len(rows), t, cfg.action_dim)
            if cfg.mode == "augment":
                batch["view_params"] = view_uniforms(keys, t)
        for name in ("label", "place", "group"):
            if name in rows[0]:
                batch[name] = torch.tensor([int(r[name]) for r in rows], dtype=torch.int64)
        return batch

    def _resized(self, images: list[Any]) -> torch.Tensor:
        """Decoded images -> (B, 3, S, S) uint8, resized / center-cropped as `hrssm.data.preprocess` does."""
        return uint8_batch(images, self.image_size, self.crop_fraction, self.interpolation)
