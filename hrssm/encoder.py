"""Patch ViT encoder: (N, 3, H, W) in [-0.5, 0.5] -> global embedding (N, D) and patch tokens (N, P, D).

The global embedding (what the RSSM's global posterior reads) is the CLS token (`pool="cls"`) or the mean patch
token (`pool="mean"`).

With ``input_filter="sobel"`` the encoder sees the horizontal and vertical Sobel gradients of the image's luma and
their magnitude instead of its RGB pixels (DeepCluster, Caron et al. 2018): edges and shapes, no colour. With
``input_filter="rgb+sobel"`` it is two streams of half the width, one on the pixels and one on the Sobel gradients,
whose tokens are concatenated (`TwoStreamEncoder`; as CMC's L / ab streams, Tian et al. 2019): the contrastive loss
trains each stream on its own, so the colour shortcut the RGB stream can take does not starve the shape stream.

The patch tokens come from a linear patch embedding (`stem="patch"`, ViT) or from a convolutional stem
(`stem="conv"`, Xiao et al. 2021): both give one token per patch_size x patch_size patch, row-major.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from vit_decoder.layers import Block, sincos_pos_embed_2d

from ._torch import eval_mode
from .config import EncoderConfig
from .rssm import HierarchicalRSSM


def conv_stem(channels: int, width: int, patch_size: int) -> nn.Sequential:
    """log2(patch_size) stride-2 3x3 convolutions, channels doubling up to `width` (GroupNorm + GELU between):
    (N, channels, H, W) -> (N, width, H / patch_size, W / patch_size). GroupNorm keeps every image independent of
    its batch (encoding is per image)."""
    n = patch_size.bit_length() - 1
    widths = [channels] + [width >> (n - 1 - i) for i in range(n)]
    layers: list[nn.Module] = []
    for i in range(n):
        layers.append(nn.Conv2d(widths[i], widths[i + 1], kernel_size=3, stride=2, padding=1))
        if i < n - 1:
            layers += [nn.GroupNorm(math.gcd(8, widths[i + 1]), widths[i + 1]), nn.GELU()]
    return nn.Sequential(*layers)


class SobelFilter(nn.Module):
    """(N, 3, H, W) RGB in [-0.5, 0.5] -> (N, 3, H, W): the x and y Sobel gradients of the luma and their magnitude
    (replicate padding: a flat image has zero gradients everywhere). No parameters."""

    def __init__(self) -> None:
        super().__init__()
        from .data.augment import LUMA

        k = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
        self.register_buffer("kernels", torch.stack([k, k.T])[:, None], persistent=False)  # (2, 1, 3, 3)
        self.register_buffer("luma", torch.tensor(LUMA)[None, :, None, None], persistent=False)  # (1, 3, 1, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        luma = (images * self.luma.to(images.dtype)).sum(1, keepdim=True)  # (N, 1, H, W)
        grad = nn.functional.conv2d(nn.functional.pad(luma, (1, 1, 1, 1), mode="replicate"),
                                    self.kernels.to(images.dtype))  # (N, 2, H, W)
        return torch.cat([grad, grad.pow(2).sum(1, keepdim=True).add(1e-6).sqrt()], dim=1)


class ViTEncoder(nn.Module):
    """One ViT stream on the pixels or (`cfg.input_filter="sobel"`) on their Sobel gradients."""

    streams = 1  # token parts the contrastive loss trains apart (TwoStreamEncoder: 2)

    def __init__(self, image_size: int, cfg: EncoderConfig, channels: int = 3, attention: str = "auto") -> None:
        super().__init__()
        if cfg.input_filter == "rgb+sobel":
            raise ValueError("input_filter='rgb+sobel' is two streams: build it with `build_encoder` "
                             "(a TwoStreamEncoder)")
        self.cfg, self.grid = cfg, image_size // cfg.patch_size
        self.input_filter = SobelFilter() if cfg.input_filter == "sobel" else nn.Identity()
        self.patch_embed = (conv_stem(channels, cfg.width, cfg.patch_size) if cfg.stem == "conv" else
                            nn.Conv2d(channels, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        nn.init.normal_(self.cls_token, std=0.02)
        self.register_buffer("pos_embed", sincos_pos_embed_2d(cfg.width, self.grid)[None], persistent=False)
        self._other_positions: dict[tuple, torch.Tensor] = {}  # (grid, device, dtype) -> positions of other sizes
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads, cfg.mlp_ratio, attention) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (N, C, H, W) -> global embedding (N, D) (CLS or mean patch token, `cfg.pool`), patch tokens
        (N, P, D). H = W = the model's image size, or another multiple of the patch size (e.g. the contrastive
        warm-up's smaller views, `optim.contrastive_warmup_image_size`): the positions then cover the same image."""
        x = self.patch_embed(self.input_filter(images))  # (N, D, H / p, W / p)
        x = x.flatten(2).transpose(1, 2) + self._positions(x.shape[-1])  # (N, P, D), row-major patches
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        tokens = x[:, 1:]
        return (x[:, 0] if self.cfg.pool == "cls" else tokens.mean(1)), tokens

    def _positions(self, grid: int) -> torch.Tensor:
        """(1, grid * grid, D) positions of a grid x grid token layout over the whole image."""
        if grid == self.grid:
            return self.pos_embed
        key = (grid, self.pos_embed.device, self.pos_embed.dtype)  # made once per size and device: no copy a step
        if key not in self._other_positions:
            self._other_positions[key] = sincos_pos_embed_2d(self.cfg.width, grid, span=self.grid)[None].to(
                self.pos_embed)
        return self._other_positions[key]


class TwoStreamEncoder(nn.Module):
    """`input_filter="rgb+sobel"`: a ViT stream on the pixels (`rgb`) and one on their Sobel gradients (`sobel`), each
    `cfg.width / 2` wide with the rest of `cfg`; their outputs concatenated along the features, RGB first, so the
    encoder's interface is ViTEncoder's: global embedding (N, width), patch tokens (N, P, width)."""

    streams = 2

    def __init__(self, image_size: int, cfg: EncoderConfig, channels: int = 3, attention: str = "auto") -> None:
        super().__init__()
        self.cfg, self.grid = cfg, image_size // cfg.patch_size
        half = dataclasses.replace(cfg, width=cfg.width // 2, input_filter="rgb")
        self.rgb = ViTEncoder(image_size, half, channels, attention)
        self.sobel = ViTEncoder(image_size, dataclasses.replace(half, input_filter="sobel"), channels, attention)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (N, 3, H, W) -> global embedding (N, D), patch tokens (N, P, D): [RGB stream, Sobel stream]."""
        (rgb_embed, rgb_tokens), (sobel_embed, sobel_tokens) = self.rgb(images), self.sobel(images)
        return torch.cat([rgb_embed, sobel_embed], -1), torch.cat([rgb_tokens, sobel_tokens], -1)


def build_encoder(image_size: int, cfg: EncoderConfig, channels: int = 3, attention: str = "auto"
                  ) -> ViTEncoder | TwoStreamEncoder:
    """The encoder `cfg` describes: a ViTEncoder, or a TwoStreamEncoder for `input_filter="rgb+sobel"`."""
    cls = TwoStreamEncoder if cfg.input_filter == "rgb+sobel" else ViTEncoder
    return cls(image_size, cfg, channels, attention)


def tokens_to_cells(tokens: torch.Tensor, grid: int, cell: int) -> torch.Tensor:
    """(N, P, D) row-major patch tokens -> (N, grid*grid, cell*cell*D): the tokens of each local cell concatenated."""
    from einops import rearrange

    return rearrange(tokens, "n (gh kh gw kw) d -> n (gh gw) (kh kw d)", gh=grid, kh=cell, kw=cell)


# what `encode` can return, and what each is (for messages, help texts and reports)
FEATURES = {
    "latents": "[h, p(z), s] of the RSSM posterior, the state the decoder reads with z's class probabilities",
    "global": "[h, p(z)], the global level of the posterior: the latents without the local cells",
    "tokens": "the encoder's mean patch token",
}
FEATURE_SHORT_NAMES = {"latents": "latents", "global": "global latents", "tokens": "mean patch tokens"}  # for titles


def check_features(features: str) -> str:
    """`features` if it is one of FEATURES, else a ValueError that lists them."""
    if features not in FEATURES:
        raise ValueError(f"features must be one of {tuple(FEATURES)} ("
                         + "; ".join(f"{k!r}: {v}" for k, v in FEATURES.items()) + f"), got {features!r}")
    return features


def mean_patch_token(patch_tokens: torch.Tensor) -> torch.Tensor:
    """Patch tokens (..., P, D) -> their mean (..., D): the "tokens" feature set and SimCLR's
    `loss.contrastive_input: tokens`, one rule for both."""
    return patch_tokens.mean(-2)


def select_features(features: str, parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """The `features` (one of FEATURES) of encoded parts {h, z_probs, s (absent without a local level), tokens
    (needed for "tokens")} as `encode_latents` returns them: (B, D). The one rule for what each feature set holds."""
    if check_features(features) == "tokens":
        return parts["tokens"]
    return HierarchicalRSSM.features(parts["h"], parts["z_probs"], parts.get("s") if features == "latents" else None)


class EncodesImages:
    """`encode_latents` / `encode` for any module with `encoder`, `rssm` and `cfg` (WorldModel, export.Encoder)."""

    @torch.no_grad()
    def encode_latents(self, images, tokens: bool = False) -> dict[str, torch.Tensor]:
        """Posterior latents of each image seen once (T = 1, deterministic: categorical mode, Gaussian mean).

        images: uint8 or float in [-0.5, 0.5] (see hrssm.data.preprocess); resized / cropped as the model's
        recorded preprocessing says (`cfg.preprocess`: what training applied).
        Returns the state the decoder reads: h (B, deter), z (B, stoch * classes) one-hot (each group's most likely
        class), s (B, cells, local_dim) (absent without a local level); z_probs (B, stoch * classes), the global
        posterior's class probabilities (z's mean, what `encode` exports: the one-hot mode keeps only which class
        wins); and with `tokens` also tokens (B, width): the encoder's mean patch token, from the same forward pass.
        """
        with eval_mode(self):
            embed, patch_tokens = self._encoder_pass(images)  # (B, D), (B, P, D)
            cells = None
            if self.cfg.rssm.local_grid:
                cells = tokens_to_cells(patch_tokens, self.cfg.rssm.local_grid, self.cfg.cell_patches)[:, None]
            actions = embed.new_zeros(embed.shape[0], 1, self.cfg.action_dim)
            traj = self.rssm.observe(embed[:, None], cells, actions, sample=False)
        out = {"h": traj.h[:, 0], "z": traj.z[:, 0], "z_probs": traj.post_global[:, 0].exp().flatten(-2)}
        if traj.s is not None:
            out["s"] = traj.s[:, 0]
        if tokens:
            out["tokens"] = mean_patch_token(patch_tokens)
        return out

    def _encoder_pass(self, images) -> tuple[torch.Tensor, torch.Tensor]:
        """The ViT encoder on images preprocessed as recorded: global embedding (B, D), patch tokens (B, P, D)."""
        from .data.preprocess import preprocess

        param = next(self.parameters())
        return self.encoder(preprocess(images, **self.cfg.preprocessing()).to(param.device, param.dtype))

    @torch.no_grad()
    def encode(self, images, features: str = "latents") -> torch.Tensor:
        """(B, D) features of each image seen once. features="latents" (default): the posterior's means [h, z's
        class probabilities, s of every cell in row-major order] (D = `feature_dim`; `encode_latents` has the parts);
        "global": [h, z's class probabilities], the image-level part of the latents (D = deter + stoch * classes);
        "tokens": the encoder's mean patch token (D = encoder width), the input of
        `loss.contrastive_input="tokens"`."""
        if check_features(features) == "tokens":
            with eval_mode(self):
                return mean_patch_token(self._encoder_pass(images)[1])
        return select_features(features, self.encode_latents(images))
