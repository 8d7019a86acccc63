"""The ``augment`` view transform: random resized crop, horizontal flip and colour jitter for a batch of views at once.

What a view is (the definition is `reference_augment`, the first implementation: `affine_grid` + `grid_sample` and the
jitter step by step; tests and benchmarks/bench_data.py compare against it): per view, 8 uniforms pick a crop (area
fraction in ``crop_scale``, log aspect ratio uniform in ``crop_ratio``, centre such that the crop stays inside the
image), a horizontal flip (u < 0.5) and brightness, contrast and saturation factors in [1 - s, 1 + s]. The crop is
resampled bilinearly to the image size (pixel centres, ``align_corners=False``); then, in [0, 1] pixels, brightness
scales, contrast pulls towards the view's mean and saturation towards each pixel's luma; the result is clamped.
Two optional steps use 4 more uniforms per view (``u`` of shape (B, T, 12)): ``grayscale`` (u[8] < p: the view is
turned to its luma, i.e. saturation 0) and ``paste`` (u[9] < p: the view's centre disk, radius ``paste_radius`` of the
half side, shifted by u[10], u[11], is pasted onto view t of another image of the batch, image i - t - 1: the
object stays, the background around it changes; `paste_backgrounds`). A 13th, u[12], draws the ``hue`` rotation: the
colours turned about the gray axis by (2 u[12] - 1) x hue of a full turn, before the brightness step (gray stays
gray, so it commutes with the gray offsets of brightness and contrast and folds into the colour matrix).

`augment` makes the same views (to ~1e-4) an order of magnitude faster per CPU core, on any device:

- the crop is axis-aligned, so bilinear resampling is separable: two 2-tap passes of whole-row copies
  (`index_select` on the base images stored column-major, then on the column-resampled view) and two `lerp`s,
  instead of a per-pixel `grid_sample`;
- the jitter is affine per pixel up to the final clamp: it folds into one 3x3 colour matrix and an offset per view
  (`colour_transform`), applied by one batched matmul that writes the output;
- uint8 images are gathered as uint8 (4x fewer bytes) and converted per view;
- views go through in chunks that stay in cache (one view at a time at 224 on CPU, ~80 on an accelerator), with
  workspaces reused from chunk to chunk: the only full-size allocation is the output itself.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F

from .preprocess import PIXEL_MAX, PIXEL_MIN

if TYPE_CHECKING:
    from .views import ViewConfig

N_PARAMS = 8  # uniforms per view: area, log-ratio, x, y, flip, brightness, contrast, saturation
N_EXTRA = 4  # more uniforms per view, drawn after those 8: grayscale, paste, paste shift x, paste shift y
HUE = N_PARAMS + N_EXTRA  # the 13th uniform, drawn after those 12: the hue rotation
N_UNIFORMS = HUE + 1
PASTE_SHIFT_X, PASTE_SHIFT_Y = (-0.1, 0.1), (-0.05, 0.15)  # where the pasted disk's centre goes, in [-1, 1] units
PASTE_EDGE = 40.0  # the disk's soft edge: sigmoid((radius - distance) * PASTE_EDGE)
LUMA = (0.299, 0.587, 0.114)  # sums to 1: the luma of a grey pixel is its value
# Pixels per pass: on CPU about one 256 x 256 view, so a chunk's workspaces stay in cache (one view at 224, 16 at
# 64, 64 at 32); on an accelerator ~4M (80 views at 224), enough to fill it.
_PIXELS_PER_PASS = {"cpu": 2**16}
_DEFAULT_PIXELS_PER_PASS = 2**22


class Taps(NamedTuple):
    """Where each output row (or column) of each view samples the source: the two source indices and the weight of
    the second, all (V, N)."""

    first: torch.Tensor  # int64
    second: torch.Tensor  # int64
    weight: torch.Tensor  # float32 in [0, 1)


def crop_taps(u: torch.Tensor, cfg: ViewConfig, height: int, width: int) -> tuple[Taps, Taps]:
    """The columns (V, width) and rows (V, height) that each view's crop and flip sample, from uniforms u (V, 8)."""
    lo, hi = cfg.crop_scale
    area = lo + (hi - lo) * u[:, 0]
    log_lo, log_hi = math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])
    ratio = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])
    crop_w = torch.sqrt(area * ratio).clamp(max=1.0)  # crop size / image size
    crop_h = torch.sqrt(area / ratio).clamp(max=1.0)
    centre_x = (2 * u[:, 2] - 1) * (1 - crop_w)  # in [-1, 1] coordinates, the crop kept inside the image
    centre_y = (2 * u[:, 3] - 1) * (1 - crop_h)
    scale_x = torch.where(u[:, 4] < 0.5, -crop_w, crop_w) if cfg.flip else crop_w
    return _axis_taps(centre_x, scale_x, width), _axis_taps(centre_y, crop_h, height)


def _pixel_centres(size: int, like: torch.Tensor) -> torch.Tensor:
    """(size,) centres of the pixels of a side in [-1, 1] coordinates (align_corners=False), on `like`'s device."""
    return (2 * torch.arange(size, device=like.device, dtype=like.dtype) + 1) / size - 1


def _axis_taps(centre: torch.Tensor, scale: torch.Tensor, size: int) -> Taps:
    """Output pixel j sits at x_j = (2j + 1) / size - 1 in [-1, 1]; the crop maps it to scale * x_j + centre, which
    is source pixel ((scale * x_j + centre) + 1) * size / 2 - 0.5. The crop stays inside the image, so that is within
    [-0.5, size - 0.5], where grid_sample's reflection padding reduces to clamping the coordinate to the image."""
    x = _pixel_centres(size, centre)
    src = ((scale[:, None] * x + centre[:, None]) + 1) * (size / 2) - 0.5
    src = src.clamp(0, size - 1)
    first = src.floor()
    index = first.long()
    return Taps(index, (index + 1).clamp(max=size - 1), src - first)


def colour_transform(u: torch.Tensor, cfg: ViewConfig, scale: float, offset: float
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The colour jitter of each view as ``clamp(M p + k_mean * mean(p) + k_const)`` on resampled pixels p.

    Pixels in [0, 1] are ``scale * p + offset`` (uint8: 1/255, 0; hrssm floats: 1, 0.5). Brightness b, contrast c
    and saturation s act in [0, 1] as x -> b x; x -> c (x - mean) + mean; x -> s (x - luma) + luma, then -0.5;
    expanded (the luma weights sum to 1) that is M = scale * b c (s I + (1 - s) 1 luma^T), k_mean = scale * b (1 - c)
    and k_const = b * offset - 0.5. Returns M (V, 3, 3), k_mean (V,), k_const (V,).
    """
    def factor(k: int, amount: float) -> torch.Tensor:
        return 1 + amount * (2 * u[:, k] - 1)

    b, c, s = factor(5, cfg.brightness), factor(6, cfg.contrast), factor(7, cfg.saturation)
    if u.shape[-1] > N_PARAMS and cfg.grayscale > 0:
        s = torch.where(u[:, N_PARAMS] < cfg.grayscale, torch.zeros_like(s), s)  # luma(x) = x at saturation 0
    eye = torch.eye(3, device=u.device, dtype=u.dtype)
    luma = u.new_tensor(LUMA).expand(3, 3)  # every row: the luma weights
    bc = (scale * b * c)[:, None, None]
    matrix = bc * (s[:, None, None] * eye + (1 - s)[:, None, None] * luma)
    if u.shape[-1] > HUE and cfg.hue > 0:
        matrix = matrix @ hue_rotation(u[:, HUE], cfg.hue)
    return matrix, scale * b * (1 - c), b * offset - 0.5


def hue_rotation(u: torch.Tensor, hue: float) -> torch.Tensor:
    """(V, 3, 3) rotations of RGB about the gray axis (1, 1, 1) by (2 u - 1) x hue of a full turn, for uniforms u
    (V,) (Rodrigues' formula): a hue shift that keeps gray pixels, and the distance of every colour to gray."""
    angle = (2 * u - 1) * hue * 2 * math.pi
    cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
    axis = u.new_full((3,), 3 ** -0.5)
    cross = u.new_tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]]) * 3 ** -0.5  # [axis]_x
    return cos * torch.eye(3, device=u.device, dtype=u.dtype) + (1 - cos) * torch.outer(axis, axis) + sin * cross


def augment(images: torch.Tensor, u: torch.Tensor, cfg: ViewConfig, chunk: int | None = None) -> torch.Tensor:
    """Random resized crop + flip + colour jitter. images (B, 3, H, W): uint8, or float in [-0.5, 0.5]; u (B, T, 8)
    uniforms (`hrssm.data.views.view_uniforms`). Returns views (B, T, 3, H, W) float32 in [-0.5, 0.5] on the images'
    device. `chunk`: views per pass (default: about 64k pixels on CPU, 4M elsewhere; the views do not depend on it
    beyond float rounding)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got shape {tuple(images.shape)}")
    b, t = u.shape[:2]
    _check_uniforms(u, images.shape[0])
    if images.is_floating_point():
        images = images.float()  # float64 or bf16 pixels: computed in float32 like the rest
    _, c, h, w = images.shape
    device, n_views = images.device, b * t
    u = u.to(device, torch.float32).flatten(0, 1)  # (V, 8)
    cols, rows = crop_taps(u, cfg, h, w)
    scale, offset = (1 / 255, 0.0) if images.dtype == torch.uint8 else (1.0, 0.5)
    matrix, k_mean, k_const = colour_transform(u, cfg, scale, offset)
    # The images stored column-major, so that the column pass copies whole rows: (B*C*W, H).
    by_column = images.transpose(-1, -2).contiguous().view(b * c * w, h)
    step = chunk or max(1, _PIXELS_PER_PASS.get(device.type, _DEFAULT_PIXELS_PER_PASS) // (h * w))
    channel = torch.arange(c, device=device)
    image_of_view = torch.arange(b, device=device).repeat_interleave(t)
    col_index = (((image_of_view[:, None] * c + channel) * w)[:, None, :, None]
                 + torch.stack([cols.first, cols.second], 1)[:, :, None, :]).flatten(1)  # (V, 2*C*W) rows of by_column
    in_chunk = torch.arange(n_views, device=device) % step  # rows of the column-resampled chunk: (n*C*H, W)
    row_index = (((in_chunk[:, None] * c + channel) * h)[:, None, :, None]
                 + torch.stack([rows.first, rows.second], 1)[:, :, None, :]).flatten(1)  # (V, 2*C*H)
    col_weight, row_weight = cols.weight[:, None, :, None], rows.weight[:, None, :, None]  # (V, 1, W|H, 1)
    k_mean = k_mean / (c * h * w)
    out = torch.empty(n_views, c, h * w, device=device)
    # Workspaces reused by every chunk (no allocation in the loop): the gathered source columns, the columns
    # resampled (column-major, then row-major) and the gathered rows.
    gathered = torch.empty(step * 2 * c * w, h, dtype=images.dtype, device=device)
    columns = torch.empty(step, c, w, h, device=device)
    resampled = torch.empty(step, c, h, w, device=device)
    row_pairs = torch.empty(step * 2 * c * h, w, device=device)
    for start in range(0, n_views, step):
        views = slice(start, min(start + step, n_views))
        n = views.stop - views.start
        torch.index_select(by_column, 0, col_index[views].flatten(), out=gathered[: n * 2 * c * w])
        pair = gathered[: n * 2 * c * w].view(n, 2, c, w, h)
        torch.mul(pair[:, 0], 1 - col_weight[views], out=columns[:n])  # a (1 - w) + b w, uint8 read as float
        columns[:n].addcmul_(pair[:, 1], col_weight[views])  # (n, C, W, H): output columns
        resampled[:n].copy_(columns[:n].transpose(-1, -2))  # (n, C, H, W): source rows, output columns
        rows_flat = row_pairs[: n * 2 * c * h]
        torch.index_select(resampled[:n].view(n * c * h, w), 0, row_index[views].flatten(), out=rows_flat)
        pair = rows_flat.view(n, 2, c, h, w)
        view = pair[:, 0].lerp_(pair[:, 1], row_weight[views]).view(n, c, h * w)  # resampled, in input units
        bias = torch.addcmul(k_const[views], k_mean[views], view.sum((1, 2)))  # (n,)
        dst = out[views]
        torch.bmm(matrix[views], view, out=dst)
        dst.add_(bias[:, None, None]).clamp_(PIXEL_MIN, PIXEL_MAX)
    return paste_backgrounds(out.view(b, t, c, h, w), u.view(b, t, -1), cfg)


def _check_uniforms(u: torch.Tensor, batch: int) -> None:
    if u.ndim != 3 or u.shape[2] not in (N_PARAMS, N_PARAMS + N_EXTRA, N_UNIFORMS) or u.shape[0] != batch:
        raise ValueError(f"u must be (B, T, {N_UNIFORMS}) uniforms for B = {batch} images (or (B, T, "
                         f"{N_PARAMS + N_EXTRA}) without hue, (B, T, {N_PARAMS}) without grayscale / paste / hue), got "
                         f"shape {tuple(u.shape)}; make them with "
                         "hrssm.data.views.view_uniforms(keys, num_views)")


def paste_backgrounds(views: torch.Tensor, u: torch.Tensor, cfg: ViewConfig) -> torch.Tensor:
    """The ``paste`` step: views (B, T, C, H, W) -> the same with, where u[..., 9] < cfg.paste, the centre disk of
    view t of image i over view t of image i - t - 1 (its background). Unchanged without the extra uniforms, with
    paste 0 or with one image. u: (B, T, 12)."""
    b, t, _, h, w = views.shape
    if cfg.paste <= 0 or b < 2 or u.shape[-1] <= N_PARAMS:
        return views
    e = u[..., N_PARAMS:].to(views.device, views.dtype)  # (B, T, 4)
    ys, xs = _pixel_centres(h, views), _pixel_centres(w, views)
    cx = PASTE_SHIFT_X[0] + (PASTE_SHIFT_X[1] - PASTE_SHIFT_X[0]) * e[..., 2]
    cy = PASTE_SHIFT_Y[0] + (PASTE_SHIFT_Y[1] - PASTE_SHIFT_Y[0]) * e[..., 3]
    dist = ((xs - cx[..., None, None]) ** 2 + (ys[:, None] - cy[..., None, None]) ** 2).sqrt()  # (B, T, H, W)
    disk = torch.sigmoid((cfg.paste_radius - dist) * PASTE_EDGE)
    mask = torch.where((e[..., 1] < cfg.paste)[..., None, None], disk, torch.ones_like(disk))  # 1: the own view
    partners = torch.stack([views[:, k].roll(k + 1, dims=0) for k in range(t)], dim=1)
    return partners.lerp(views, mask[:, :, None])


def reference_augment(images: torch.Tensor, u: torch.Tensor, cfg: ViewConfig) -> torch.Tensor:
    """The definition of `augment` (its first implementation, ~10x slower per CPU core): one `grid_sample` of every
    view, then the hue turn and the jitter step by step (then grayscale and paste). images (B, 3, H, W) float in
    [-0.5, 0.5]; u (B, T, 13), (B, T, 12) or (B, T, 8) -> (B, T, 3, H, W)."""
    _check_uniforms(u, images.shape[0])
    b, t = u.shape[:2]
    _, c, h, w = images.shape
    u = u.to(images.device, images.dtype)
    lo, hi = cfg.crop_scale
    area = lo + (hi - lo) * u[..., 0]
    log_r = math.log(cfg.crop_ratio[0]) + (math.log(cfg.crop_ratio[1]) - math.log(cfg.crop_ratio[0])) * u[..., 1]
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
    if u.shape[-1] > HUE and cfg.hue > 0:
        x = torch.einsum("btij,btjhw->btihw", hue_rotation(u[..., HUE].flatten(), cfg.hue).view(b, t, 3, 3), x)

    def factor(k: int, amount: float) -> torch.Tensor:
        return (1 + amount * (2 * u[..., k] - 1))[..., None, None, None]

    x = x * factor(5, cfg.brightness)
    mean = x.mean(dim=(2, 3, 4), keepdim=True)
    x = (x - mean) * factor(6, cfg.contrast) + mean
    gray = (x * x.new_tensor(LUMA)[:, None, None]).sum(dim=2, keepdim=True)
    x = (x - gray) * factor(7, cfg.saturation) + gray
    if u.shape[-1] > N_PARAMS and cfg.grayscale > 0:
        to_gray = (u[..., N_PARAMS] < cfg.grayscale)[..., None, None, None]
        x = torch.where(to_gray, (x * x.new_tensor(LUMA)[:, None, None]).sum(dim=2, keepdim=True).expand_as(x), x)
    return paste_backgrounds((x - 0.5).clamp(PIXEL_MIN, PIXEL_MAX), u, cfg)
