"""The one pixel convention of hrssm, used by training, export, encoding and decoding alike.

Images are RGB, resized (antialiased ``interpolation``: bilinear or bicubic) so the shorter side is
``image_size / crop_fraction``, center-cropped to ``image_size x image_size``, and mapped to float32 in
**[-0.5, 0.5]** (``x / 255 - 0.5``). A model records its settings (`hrssm.config.PreprocessConfig`); its
`encode()` applies them (``preprocess(images, **cfg.preprocessing())``). An image that already is
``image_size x image_size`` is taken as preprocessed and left as it is. Decoders output the same
space (no sigmoid), so a range mismatch, a classic cause of gray reconstructions, cannot creep in.

Layout conventions: PIL images and NumPy arrays are HWC (or HW for grayscale); torch tensors are CHW / BCHW.
High-bit-depth grayscale images (16-bit PNG ``I;16``, 32-bit ``I``, float ``F``) are scaled to 8 bits
(`to_rgb8`), not clipped to white as PIL's ``convert("RGB")`` does. Float input must be finite.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image as PILImage

PIXEL_MIN, PIXEL_MAX = -0.5, 0.5
INTERPOLATIONS = ("bilinear", "bicubic")  # antialiased `F.interpolate` modes
_RANGE_TOL = 1e-4
_WIDE_MODES = ("I", "F")  # PIL modes of 32-bit integer and float pixels (and every "I;16..." mode)


def is_high_bit_depth(mode: str) -> bool:
    """True for PIL modes whose pixels do not fit 8 bits (16-bit PNGs open as "I;16", "I;16B" or "I")."""
    return mode in _WIDE_MODES or mode.startswith("I;16")


def to_rgb8(image: PILImage.Image) -> PILImage.Image:
    """An 8-bit RGB version of a PIL image. High-bit-depth grayscale is scaled (65535 -> 255); 32-bit and float
    images whose values fit 0-255 keep them."""
    if is_high_bit_depth(image.mode):
        arr = np.asarray(image).astype(np.float64)
        if image.mode.startswith("I;16") or arr.max(initial=0) > 255:
            arr = arr / 257.0  # 16 bits -> 8 bits: 65535 / 255 = 257
        image = PILImage.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))  # mode "L"
    return image if image.mode == "RGB" else image.convert("RGB")


def to_uint8_chw(image: Any) -> torch.Tensor:
    """One image (PIL, HWC/HW NumPy uint8, or CHW uint8 tensor) as an RGB uint8 tensor of shape (3, H, W)."""
    if isinstance(image, PILImage.Image):
        arr = np.asarray(to_rgb8(image))  # read-only HWC
        return torch.from_numpy(arr.transpose(2, 0, 1).copy())  # one copy into CHW (the loader's hot path)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"NumPy images must be uint8 HWC, got dtype {image.dtype}; convert with .astype(np.uint8)")
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
            raise ValueError(f"NumPy images must be HW or HWC with 1, 3 or 4 channels, got shape {image.shape}")
        return _rgb_channels(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8:
            raise TypeError(f"to_uint8_chw takes uint8 tensors, got {image.dtype}")
        if image.ndim == 2:
            image = image[None]
        if image.ndim != 3 or image.shape[0] not in (1, 3, 4):
            raise ValueError(f"image tensors must be CHW with 1, 3 or 4 channels, got shape {tuple(image.shape)}")
        return _rgb_channels(image)
    raise TypeError(f"unsupported image type {type(image).__name__}: pass a PIL image, a NumPy array or a torch tensor")


def _rgb_channels(chw: torch.Tensor) -> torch.Tensor:
    if chw.shape[0] == 1:
        chw = chw.expand(3, -1, -1)
    return chw[:3].contiguous()  # RGBA: alpha dropped, as PIL's convert("RGB") does


def resize_center_crop(x: torch.Tensor, image_size: int, crop_fraction: float = 1.0,
                       interpolation: str = "bilinear") -> torch.Tensor:
    """Resize (..., C, H, W) so the shorter side is ``image_size / crop_fraction`` and center-crop a square.

    Antialiased `interpolation` (bilinear or bicubic). uint8 in gives uint8 out (rounded); float in gives float out.
    An input that is already ``image_size`` square is returned unchanged, so the function is idempotent.
    """
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    if not 0 < crop_fraction <= 1:
        raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation={interpolation!r} must be one of {', '.join(INTERPOLATIONS)}")
    h, w = x.shape[-2:]
    if h == w == image_size:
        return x
    short = max(image_size, round(image_size / crop_fraction))
    new_h, new_w = (short, max(short, round(w * short / h))) if h <= w else (max(short, round(h * short / w)), short)
    lead = x.shape[:-3]
    y = x.reshape(-1, *x.shape[-3:]).float()
    if (new_h, new_w) != (h, w):
        y = F.interpolate(y, size=(new_h, new_w), mode=interpolation, antialias=True, align_corners=False)
    top, left = (new_h - image_size) // 2, (new_w - image_size) // 2
    y = y[..., top : top + image_size, left : left + image_size]
    if x.dtype == torch.uint8:
        y = y.round().clamp(0, 255).to(torch.uint8)
    return y.reshape(*lead, *y.shape[-3:]).contiguous()


def preprocess(images: Any, image_size: int, crop_fraction: float = 1.0, interpolation: str = "bilinear"
               ) -> torch.Tensor:
    """Images -> float32 tensor (B, 3, image_size, image_size) in [-0.5, 0.5] (a model's settings:
    ``preprocess(images, **model.cfg.preprocessing())``).

    Accepts a PIL image, a list of PIL images / NumPy HWC arrays / CHW tensors (sizes may differ), a uint8 tensor
    (3, H, W) or (B, 3, H, W), or a float tensor already in [-0.5, 0.5] (e.g. the output of this function). Float
    input outside [-0.5, 0.5] raises: that is the [0, 1] vs [-0.5, 0.5] mismatch that makes decoders go gray.
    """
    if isinstance(images, torch.Tensor):
        x = images if images.ndim == 4 else images[None]
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"image tensors must be (3, H, W) or (B, 3, H, W), got shape {tuple(images.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.dtype == torch.uint8:
            return _to_float(resize_center_crop(x, image_size, crop_fraction, interpolation))
        if not torch.is_floating_point(x):
            raise TypeError(f"image tensors must be uint8 or float, got {x.dtype}")
        if x.shape[0] == 0:
            raise ValueError(f"preprocess needs at least one image, got an empty batch of shape {tuple(x.shape)}")
        check_pixel_range(x, "input images")
        return resize_center_crop(x.float(), image_size, crop_fraction, interpolation).clamp(PIXEL_MIN, PIXEL_MAX)
    if isinstance(images, (PILImage.Image, np.ndarray)):
        images = [images]
    if not isinstance(images, Sequence) or len(images) == 0:
        raise ValueError("preprocess needs at least one image")
    return _to_float(uint8_batch(images, image_size, crop_fraction, interpolation))


def uint8_batch(images: Sequence[Any], image_size: int, crop_fraction: float = 1.0, interpolation: str = "bilinear"
                ) -> torch.Tensor:
    """A list of images (PIL / NumPy HWC / CHW uint8 tensors, sizes may differ) -> (B, 3, image_size, image_size)
    uint8, resized and center-cropped as `preprocess` does (its float output is this batch / 255 - 0.5)."""
    return torch.stack([resize_center_crop(to_uint8_chw(im), image_size, crop_fraction, interpolation)
                        for im in images])


def _to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255.0 - 0.5


def check_pixel_range(x: torch.Tensor, what: str = "images") -> None:
    """Raise a clear error if float pixels (B, ...) are NaN/inf (naming the rows) or outside hrssm's [-0.5, 0.5]."""
    lo, hi = float(x.min()), float(x.max())  # (NaN propagates through min and max)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        check_finite(x, what)
    if lo < PIXEL_MIN - _RANGE_TOL or hi > PIXEL_MAX + _RANGE_TOL:
        hint = " They look like [0, 1] pixels: subtract 0.5." if lo >= -_RANGE_TOL and hi <= 1 + _RANGE_TOL else ""
        raise ValueError(
            f"{what} must be float in [-0.5, 0.5] (hrssm's pixel convention), "
            f"got values in [{lo:.3f}, {hi:.3f}].{hint} "
            "Or pass uint8 images and let hrssm.data.preprocess convert them."
        )


def check_finite(x: torch.Tensor, what: str = "images") -> None:
    """Raise a ValueError naming the rows of `x` (B, ...) that hold NaN or inf values."""
    bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1) if x.ndim else ~torch.isfinite(x)[None]
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten().tolist()
        shown = ", ".join(map(str, rows[:10])) + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")
        raise ValueError(f"{what}: row{'s' if len(rows) > 1 else ''} {shown} (of {x.shape[0]}) hold NaN or inf "
                         "values: drop or repair them")


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float pixels in [-0.5, 0.5] (any leading shape, CHW last) -> uint8, clamped and rounded."""
    return ((x.detach().float() + 0.5) * 255.0).round().clamp(0, 255).to(torch.uint8)


def to_pil(x: torch.Tensor) -> PILImage.Image:
    """One float image (3, H, W) in [-0.5, 0.5] or a uint8 CHW tensor -> PIL RGB image."""
    u8 = x if x.dtype == torch.uint8 else to_uint8(x)
    return PILImage.fromarray(u8.permute(1, 2, 0).cpu().numpy())
