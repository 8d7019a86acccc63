"""Dataclass configs of the world model, and the presets `tiny` and `base`.

A field's comment is its meaning: `hrssm-train --help` lists every key with its default and that comment
(`hrssm._config_utils.describe`), so every field has one.

Every section validates itself on construction (hrssm/_config_utils.py, the config mechanism shared with TrainConfig
and ViewConfig); errors name the key, e.g. ``model.rssm.deter=0 must be a positive integer``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from vit_decoder import ViTDecoderConfig
from vit_decoder.attention import BACKENDS

from ._config_utils import Config, build, integer, merge, number, one_of
from ._config_utils import parse_overrides as parse_overrides  # re-exported: ["loss.recon_scale=10"] -> a mapping
from .data.preprocess import INTERPOLATIONS, PIXEL_MAX, PIXEL_MIN


@dataclass
class EncoderConfig(Config):
    """Patch ViT encoder: patch tokens (a linear patch embedding or a convolutional stem), fixed 2D sin-cos
    positions, a CLS token, pre-norm blocks."""

    section: ClassVar[str] = "model.encoder"
    patch_size: int = 16  # side of a square patch, in pixels (one token per patch)
    width: int = 384  # token dimension (ViT-S: 384)
    depth: int = 6  # transformer blocks (ViT-S: 12; the `base` preset uses 12)
    heads: int = 6  # attention heads per block
    mlp_ratio: float = 4.0  # MLP hidden size / width
    # "patch": one linear map per patch (ViT); "conv": log2(patch_size) stride-2 3x3 convolutions (Xiao et al. 2021,
    # "Early convolutions help transformers see better"), which lets a shallow encoder see shapes (docs/model.md)
    stem: Literal["patch", "conv"] = "patch"
    # the global embedding the RSSM's global posterior reads: "cls", the CLS token; "mean", the patch tokens averaged
    # (the vector that loss.contrastive_input="tokens" trains, so a contrastive gain reaches the global latent z)
    pool: Literal["cls", "mean"] = "cls"
    # what the encoder sees: "rgb", the pixels; "sobel", the Sobel gradients of their luma (DeepCluster's filter:
    # no colour reaches the encoder, so a contrastive objective cannot match views by it; docs/evaluation.md);
    # "rgb+sobel", both: two streams of width / 2 whose tokens are concatenated, each trained by its own contrastive
    # term (colour from one, shape from the other; docs/model.md)
    input_filter: Literal["rgb", "sobel", "rgb+sobel"] = "rgb"

    def validate(self) -> None:
        self.check(integer, "patch_size", "width", "depth", "heads")
        _check_width_fits_heads(self)
        if self.input_filter == "rgb+sobel" and (self.width % (2 * self.heads) or self.width % 8):
            raise ValueError(f"{self.key('input_filter')}='rgb+sobel' is two streams of width / 2, each split into "
                             f"{self.key('heads')}={self.heads} heads: {self.key('width')}={self.width} must be "
                             f"divisible by {2 * self.heads} and by 8")
        if self.stem == "conv":
            n = self.patch_size.bit_length() - 1
            if self.patch_size < 2 or 1 << n != self.patch_size:
                raise ValueError(f"{self.key('stem')}='conv' needs a power-of-two {self.key('patch_size')} (one "
                                 f"stride-2 convolution per halving), got {self.patch_size}: use 8 or 16, or "
                                 "stem='patch'")
            streams = 2 if self.input_filter == "rgb+sobel" else 1
            if self.width % (streams << (n - 1)):
                raise ValueError(f"{self.key('stem')}='conv' halves {self.key('width')} once per layer below the "
                                 f"top: width={self.width} must be divisible by {streams << (n - 1)}"
                                 + (" (two streams of width / 2)" if streams == 2 else ""))


@dataclass
class RSSMConfig(Config):
    """Hierarchical RSSM. Global level as in DreamerV3 (categorical); local level: a grid of Gaussian latents."""

    section: ClassVar[str] = "model.rssm"
    deter: int = 512  # GRU state size
    hidden: int = 512  # hidden size of the prior / posterior heads of the global level
    stoch: int = 32  # number of categoricals of the global latent z
    classes: int = 32  # classes per categorical
    unimix: float = 0.01  # mix 1% uniform into every categorical (DreamerV3)
    local_grid: int = 7  # side of the local latent grid; 0 = global level only (no hierarchy)
    local_dim: int = 64  # Gaussian latent dimensions per cell
    local_min_std: float = 0.1  # lower bound of the local Gaussians' standard deviation
    local_hidden: int = 256  # hidden size of the local prior / posterior networks
    local_mixer_depth: int = 1  # transformer blocks over the cells in the local prior (spatial context)
    local_heads: int = 4  # attention heads of the local mixer

    def validate(self) -> None:
        self.check(integer, "deter", "hidden", "stoch", "classes", "local_dim", "local_hidden", "local_heads")
        self.check(integer, "local_grid", "local_mixer_depth", low=0)
        self.check(number, "unimix", high=1)
        self.check(number, "local_min_std", low_open=True)
        if self.local_grid and self.local_hidden % self.local_heads:
            raise ValueError(f"{self.key('local_hidden')}={self.local_hidden} must be divisible by "
                             f"{self.key('local_heads')}={self.local_heads}")


@dataclass
class DecoderConfig(Config):
    """ViT decoder (see `vit_decoder`); MAE's decoder size is the default."""

    section: ClassVar[str] = "model.decoder"
    width: int = 512  # token dimension (MAE's decoder: 512)
    depth: int = 8  # transformer blocks
    heads: int = 16  # attention heads per block
    mlp_ratio: float = 4.0  # MLP hidden size / width
    # 0: a linear layer from each token to its patch's pixels (MAE); > 0: to this many channels per pixel, then two
    # 3x3 convolutions to the image, which see across patch borders (a linear head leaves seams at patch edges)
    conv_channels: int = 0

    def validate(self) -> None:
        self.check(integer, "width", "depth", "heads")
        self.check(integer, "conv_channels", low=0)
        _check_width_fits_heads(self)


@dataclass
class LossConfig(Config):
    """Every objective and its weight. KL: DreamerV3 balancing, each term clipped at its level's free nats."""

    section: ClassVar[str] = "model.loss"
    # "latent_prediction": no pixel decoder; predict an EMA target encoder's embeddings
    objective: Literal["reconstruction", "latent_prediction"] = "reconstruction"
    recon_scale: float = 50.0  # = 1 / (2 sigma^2): a Gaussian decoder with sigma = 0.1 in [-0.5, 0.5] pixels
    # "sse": squared error summed over pixels and channels per image; "normalized_patch": MAE's norm-pix loss
    recon_type: Literal["sse", "normalized_patch"] = "sse"
    kl_dyn_scale: float = 0.5  # on KL(sg(q) || p): trains the prior
    kl_rep_scale: float = 0.1  # on KL(q || sg(p)): regularizes the posterior
    free_nats_global: float = 1.0  # floor of the global KL, per image and time step
    free_nats_local: float = 0.1  # floor of the local KL, per grid cell (the sum's floor scales with the cells)
    contrastive: Literal["none", "barlow", "simclr"] = "none"  # between the views of each image (contrastive_pairs)
    # what the contrastive loss compares: "tokens", the encoder's patch tokens averaged (the encoder itself learns
    # what the views share, e.g. the object under views.paste / views.grayscale); "z", the global latents, which the
    # recurrent state can match from memory across consecutive views without the encoder learning anything
    # (docs/studies/simclr_pool.md)
    contrastive_input: Literal["z", "tokens"] = "tokens"
    # which views are compared: "consecutive", view t with view t + 1; "all", every view of an image with every other
    # (SimCLR: one softmax over all B*T views, each with T - 1 positives: more negatives per step; Barlow: all pairs)
    contrastive_pairs: Literal["consecutive", "all"] = "consecutive"
    contrastive_scale: float = 1.0  # weight of the contrastive loss
    contrastive_dim: int = 128  # output size of the projector the contrastive loss compares
    simclr_temperature: float = 0.1  # SimCLR softmax temperature
    barlow_lambda: float = 5e-3  # Barlow Twins weight of the off-diagonal terms
    latent_pred_scale: float = 1.0  # latent_prediction objective weight
    ema_momentum: float = 0.99  # EMA target encoder (latent_prediction)

    def validate(self) -> None:
        self.check(number, "recon_scale", "kl_dyn_scale", "kl_rep_scale", "free_nats_global", "free_nats_local",
                   "contrastive_scale", "latent_pred_scale", "barlow_lambda")
        self.check(integer, "contrastive_dim")
        self.check(number, "ema_momentum", high=1)
        self.check(number, "simclr_temperature", low_open=True)


@dataclass
class PreprocessConfig(Config):
    """How an image becomes model input; recorded in every export (like timm's `pretrained_cfg`), so `encode()`
    and every evaluation apply what training applied (`ModelConfig.preprocessing`)."""

    section: ClassVar[str] = "model.preprocess"
    # resize the shorter side to image_size / crop_fraction, then center-crop image_size (0.875: 256 -> 224)
    crop_fraction: float = 1.0
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"  # antialiased resize filter
    pixel_range: tuple[float, float] = (PIXEL_MIN, PIXEL_MAX)  # uint8 x -> x / 255 - 0.5: hrssm's one convention

    def validate(self) -> None:
        self.check(number, "crop_fraction", high=1, low_open=True, high_closed=True)
        self.check(one_of, "interpolation", allowed=INTERPOLATIONS)
        if tuple(self.pixel_range) != (PIXEL_MIN, PIXEL_MAX):
            raise ValueError(f"{self.key('pixel_range')}={list(self.pixel_range)} is not hrssm's pixel range "
                             f"[{PIXEL_MIN}, {PIXEL_MAX}] (the only one it has): leave it out")


@dataclass
class ModelConfig(Config):
    """The world model: image size, encoder, hierarchical RSSM, decoder and objectives (see hrssm/world_model.py)."""

    section: ClassVar[str] = "model"
    image_size: int = 224  # side of the square model input, in pixels
    channels: int = 3  # image channels
    action_dim: int = 1  # size of an action (still images: a no-op of zeros)
    attention: str = "auto"  # one of vit_decoder.attention.BACKENDS
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    rssm: RSSMConfig = field(default_factory=RSSMConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)

    @property
    def patch_grid(self) -> int:
        return self.image_size // self.encoder.patch_size

    def preprocessing(self) -> dict[str, Any]:
        """The keyword arguments of `hrssm.data.preprocess` / `load_waterbirds` that give this model's input:
        image_size, crop_fraction, interpolation."""
        return {"image_size": self.image_size, "crop_fraction": self.preprocess.crop_fraction,
                "interpolation": self.preprocess.interpolation}

    @property
    def cell_patches(self) -> int:
        """Side, in patches, of one local grid cell."""
        return self.patch_grid // self.rssm.local_grid if self.rssm.local_grid else 0

    def validate(self) -> None:
        patch, grid = self.encoder.patch_size, self.rssm.local_grid
        self.check(integer, "image_size", "channels", "action_dim")
        self.check(one_of, "attention", allowed=BACKENDS)
        if "sobel" in self.encoder.input_filter and self.channels != 3:
            raise ValueError(f"model.encoder.input_filter={self.encoder.input_filter!r} filters the luma of RGB "
                             f"images, got model.channels={self.channels}: use input_filter='rgb' for other images")
        if self.image_size % patch:
            raise ValueError(f"model.image_size={self.image_size} is not a multiple of model.encoder.patch_size="
                             f"{patch}: use e.g. image_size={self.patch_grid * patch or patch} or another patch")
        if grid and self.patch_grid % grid:
            raise ValueError(f"model.rssm.local_grid={grid} must divide the patch grid {self.patch_grid} "
                             f"(image_size / patch_size); divisors: "
                             f"{[g for g in range(1, self.patch_grid + 1) if self.patch_grid % g == 0]} (0 = no local)")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """`tiny` (64 px, the main job's model) or `base` (224 px, two ViT-S/16 encoder streams): both issue 12's
        recipe (RGB + Sobel streams, SimCLR on their mean tokens). Overrides: nested dicts or values."""
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
        return build(cls, merge(dataclasses.asdict(PRESETS[name]()), overrides))


# Model keys added after files were first written, with the value a file without them meant (not today's default,
# where the two differ): an export's config.json or a checkpoint's identity that lacks one reads as this.
LEGACY_DEFAULTS: dict[tuple[str, str], Any] = {
    ("encoder", "pool"): "cls",
    ("decoder", "conv_channels"): 0,
    ("loss", "contrastive_pairs"): "consecutive",
    ("loss", "contrastive_input"): "z",  # the default until contrastive SimCLR on z was found to be a shortcut
}


def with_legacy_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of a model config mapping (as saved in a file) with every `LEGACY_DEFAULTS` key it lacks filled in.
    A model without a contrastive loss gets today's defaults for the contrastive keys instead: they change nothing
    there, and so such a run stays resumable with today's config."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for (section, key), value in LEGACY_DEFAULTS.items():
        if not isinstance(out.get(section, {}), dict):
            continue  # not a mapping: validation says what is wrong with it
        target = out.setdefault(section, {})
        if section == "loss" and key.startswith("contrastive_") and target.get("contrastive", "none") == "none":
            value = getattr(LossConfig, key)
        target.setdefault(key, value)
    return out


def _check_width_fits_heads(section: EncoderConfig | DecoderConfig) -> None:
    if section.width % section.heads or section.width % 4:
        raise ValueError(f"{section.key('width')}={section.width} must be divisible by "
                         f"{section.key('heads')}={section.heads} and by 4")


def decoder_config(cfg: ModelConfig, token_dim: int, latent_grid: int, context_dim: int) -> ViTDecoderConfig:
    """The `vit_decoder` config of `cfg`'s decoder section, for latent tokens of `token_dim` on a `latent_grid`
    (0: none) and a global context vector of `context_dim` (0: none)."""
    d = cfg.decoder
    return ViTDecoderConfig(image_size=cfg.image_size, patch_size=cfg.encoder.patch_size, width=d.width,
                            depth=d.depth, heads=d.heads, mlp_ratio=d.mlp_ratio, token_dim=token_dim,
                            latent_grid=latent_grid, context_dim=context_dim, channels=cfg.channels,
                            attention=cfg.attention, conv_channels=d.conv_channels)


def _object_encoder(patch_size: int, stream_width: int, depth: int, heads: int) -> EncoderConfig:
    """The encoder that finds the object (issue 12, docs/studies/README.md): two streams of `stream_width`, one on
    RGB and one on the luma's Sobel gradients, each behind a convolutional stem, pooled by the mean patch token."""
    return EncoderConfig(patch_size=patch_size, width=2 * stream_width, depth=depth, heads=heads, stem="conv",
                         pool="mean", input_filter="rgb+sobel")


def _simclr_on_tokens(scale: float) -> LossConfig:
    """Reconstruction + SimCLR between the views on each stream's mean patch token, at temperature 0.2. `scale`
    lifts SimCLR's gradient to the encoder to the order of reconstruction's (~5e4 x smaller at scale 1 on `tiny`)."""
    return LossConfig(contrastive="simclr", contrastive_input="tokens", contrastive_scale=scale,
                      simclr_temperature=0.2)


def _tiny() -> ModelConfig:
    """64 px, patch 8 (8x8 tokens), 2 encoder blocks per stream, local grid 4x4: the main job's model."""
    return ModelConfig(
        image_size=64,
        encoder=_object_encoder(patch_size=8, stream_width=128, depth=2, heads=4),
        rssm=RSSMConfig(deter=128, hidden=128, stoch=16, classes=16, local_grid=4, local_dim=64, local_hidden=128,
                        local_mixer_depth=1, local_heads=4),
        decoder=DecoderConfig(width=128, depth=2, heads=4),
        loss=_simclr_on_tokens(2e4),
    )


def _base() -> ModelConfig:
    """224 px; each encoder stream is ViT-S/16 (patch 16, width 384, 12 blocks, 6 heads); MAE's decoder size.
    SimCLR's scale gives it tiny's balance of gradients on the encoder (reconstruction sums ~12x the pixels):
    `python tools/gradient_balance.py --preset base` suggests 2.6e6 (docs/studies/gradient_balance_base.json)."""
    return ModelConfig(image_size=224, encoder=_object_encoder(patch_size=16, stream_width=384, depth=12, heads=6),
                       loss=_simclr_on_tokens(2.5e6))


PRESETS = {"tiny": _tiny, "base": _base}
