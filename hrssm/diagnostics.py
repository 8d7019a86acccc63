"""Collapse diagnostics: is the decoder output gray, is the KL dead? And what to do about it.

The metrics are computed by `WorldModel.forward` (see `image_metrics`, `active_units`); the collapse verdict is
`diagnose_collapse`: it reads them and returns which signals fired with a message that names the numbers, the likely
causes and the fixes. During training `hrssm.trainer.CollapseWatch` runs it on every logged window.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def image_metrics(recon: torch.Tensor, target: torch.Tensor, mean_image: torch.Tensor | None = None,
                  patch_size: int | None = None) -> dict[str, torch.Tensor]:
    """recon_std_ratio, PSNR, the PSNR of the mean image (the floor to beat) and value ranges; images (N, C, H, W).

    recon_std_ratio: std of each decoded image over its pixels / std of its target, averaged (gray output -> ~0).
    mean_image: the dataset mean image (C, H, W); default: the mean of `target` (an optimistic floor).
    patch_size: also seam_ratio, `seam_score` of the reconstructions / that of the targets (1: no more seams at
    patch borders than the images have; 2: a block grid twice as sharp as the images' own edges there); absent when
    the patches have no inside (patch_size 1) or no border (as large as the image). With a per-patch normalized
    reconstruction target it compares normalized patches with raw images: read it with `recon_type="sse"`.
    """
    recon, target = recon.detach().float(), target.detach().float()
    seams = {}
    if patch_size is not None and has_seams(target, patch_size):
        seams["seam_ratio"] = seam_score(recon, patch_size) / seam_score(target, patch_size).clamp(min=1e-8)
    ratio = recon.flatten(1).std(dim=1) / target.flatten(1).std(dim=1).clamp(min=1e-6)
    floor_image = target.mean(dim=0, keepdim=True) if mean_image is None else mean_image[None].to(target)
    psnr = _psnr(recon, target)
    floor = _psnr(floor_image.expand_as(target), target)
    return {
        "recon_std_ratio": ratio.mean(),
        "psnr": psnr,
        "psnr_mean_image": floor,
        "psnr_gain": psnr - floor,
        "recon_min": recon.min(),
        "recon_max": recon.max(),
        "input_min": target.min(),
        "input_max": target.max(),
        **seams,
    }


def has_seams(images: torch.Tensor, patch_size: int) -> bool:
    """Whether a patch_size grid on images (..., H, W) has both borders and patch insides to compare."""
    return 1 < patch_size < min(images.shape[-2:])


def seam_score(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """How much sharper images (N, C, H, W) change across the borders of a patch_size grid than inside the patches:
    the mean absolute difference between neighbouring pixels on either side of a border / the same between
    neighbours inside a patch, averaged over columns and rows. About 1 for natural images and smooth
    reconstructions; a decoder that paints each patch on its own leaves a block grid (> 1).
    Needs 1 < patch_size < the image side."""
    if not has_seams(images, patch_size):
        raise ValueError(f"seam_score needs 1 < patch_size < the image side {min(images.shape[-2:])}, got patch_size "
                         f"{patch_size}: with patches of 1 pixel there is no inside, with one patch no border")
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().mean(dim=(0, 1, 2))  # (W - 1,) jump after column j
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().mean(dim=(0, 1, 3))  # (H - 1,) jump after row i
    ratios = []
    for jumps in (dx, dy):
        border = (torch.arange(jumps.shape[0], device=jumps.device) + 1) % patch_size == 0
        ratios.append(jumps[border].mean() / jumps[~border].mean().clamp(min=1e-8))
    return torch.stack(ratios).mean()


def _psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over images of 10 log10(1 / MSE): the pixel range of [-0.5, 0.5] is 1."""
    mse = (pred - target).pow(2).flatten(1).mean(dim=1).clamp(min=1e-10)
    return (-10 * torch.log10(mse)).mean()


def active_units(values: torch.Tensor, threshold: float = 0.01) -> torch.Tensor:
    """Share of latent units whose posterior statistic (categorical probabilities, Gaussian means) varies over the
    batch with variance > threshold (Burda et al. 2016). values (N, U...)."""
    v = values.detach().float().flatten(1)
    if v.shape[0] < 2:
        return v.new_tensor(float("nan"))
    return (v.var(dim=0) > threshold).float().mean()


@dataclass
class CollapseThresholds:
    min_std_ratio: float = 0.3  # decoded images with less than 30% of the target's contrast look gray
    min_psnr_gain_db: float = 1.0  # reconstructions should beat the mean image by more than this
    max_kl_floor_share: float = 0.95  # a KL below its free-nats floor this often carries no information


@dataclass
class CollapseReport:
    signals: list[str] = field(default_factory=list)
    message: str = ""

    @property
    def collapsed(self) -> bool:
        return bool(self.signals)


def diagnose_collapse(metrics: dict[str, float | torch.Tensor],
                      thresholds: CollapseThresholds | None = None) -> CollapseReport:
    """Read a metrics dict of `WorldModel.forward` (averaged over recent steps, ideally) and explain any collapse."""
    th = thresholds or CollapseThresholds()
    values = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, torch.Tensor)) and _scalar(v)}
    signals, lines, causes, fixes = [], [], [], []
    if "recon_std_ratio" in values and values["recon_std_ratio"] < th.min_std_ratio:
        signals.append("gray_output")
        lines.append(f"decoded images are nearly uniform: recon_std_ratio = {values['recon_std_ratio']:.3f} "
                     f"(< {th.min_std_ratio}; 1.0 = as much contrast as the input)")
    if "psnr_gain" in values and values["psnr_gain"] < th.min_psnr_gain_db:
        signals.append("no_better_than_mean_image")
        lines.append(f"PSNR {values.get('psnr', float('nan')):.2f} dB is only {values['psnr_gain']:.2f} dB above the "
                     f"mean image's {values.get('psnr_mean_image', float('nan')):.2f} dB (< {th.min_psnr_gain_db} dB)")
    for level in ("global", "local"):
        share = values.get(f"kl_{level}_floor_share")
        if share is not None and share >= th.max_kl_floor_share:
            signals.append(f"dead_kl_{level}")
            raw = values.get(f"kl_{level}_raw", float("nan"))
            lines.append(f"{level} KL is under its free-nats floor in {share:.0%} of steps (raw KL "
                         f"{raw:.3f} nats): the KL has no gradient, so the prior "
                         f"learns nothing and the {level} latent is unregularized (or, if the raw KL is ~0, unused)")
    if not signals:
        return CollapseReport()
    if "gray_output" in signals or "no_better_than_mean_image" in signals:
        causes += ["reconstruction too weak against the KL (a per-pixel mean instead of a per-image sum, or a small "
                   "loss.recon_scale)", "pixel range mismatch (inputs must be in [-0.5, 0.5], decoder output is "
                   f"unbounded; input range seen [{values.get('input_min', float('nan')):.2f}, "
                   f"{values.get('input_max', float('nan')):.2f}])", "too little decoder capacity, or too few steps"]
        fixes += ["raise loss.recon_scale (x10)", "keep loss.recon_type='sse'", "check the input range above",
                  "grow decoder.width / decoder.depth"]
    if any(s.startswith("dead_kl") for s in signals):
        causes += ["free nats too high for the latent: below the floor the KL gives no gradient at all",
                   "a posterior that collapsed onto the prior (raw KL ~0: the latent ignores the image)",
                   "identical views (views mode 'repeat') let the prior predict every step after t=0"]
        fixes += ["lower loss.free_nats_global / loss.free_nats_local (try 0 or 0.1)",
                  "use views mode 'augment' with num_views >= 4"]
    message = "\n".join(
        ["COLLAPSE DETECTED: " + ", ".join(signals), *("  - " + line for line in lines), "likely causes:",
         *("  - " + c for c in causes), "what to try:", *("  - " + f for f in fixes)]
    )
    return CollapseReport(signals, message)


def _scalar(v) -> bool:
    return not isinstance(v, torch.Tensor) or v.numel() == 1
