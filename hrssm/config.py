"""Dataclass configs of the world model, presets (`tiny`, `base`), and validation with messages naming the key."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

OBJECTIVES = ("reconstruction", "latent_prediction")
RECON_TYPES = ("sse", "normalized_patch")
CONTRASTIVE = ("none", "barlow", "simclr")


@dataclass
class EncoderConfig:
    """Patch ViT encoder: patch embedding, fixed 2D sin-cos positions, a CLS token, pre-norm blocks."""

    patch_size: int = 16
    width: int = 384
    depth: int = 6
    heads: int = 6
    mlp_ratio: float = 4.0


@dataclass
class RSSMConfig:
    """Hierarchical RSSM. Global level as in DreamerV3 (categorical); local level: a grid of Gaussian latents."""

    deter: int = 512  # GRU state size
    hidden: int = 512
    stoch: int = 32  # number of categoricals of the global latent z
    classes: int = 32  # classes per categorical
    unimix: float = 0.01  # mix 1% uniform into every categorical (DreamerV3)
    local_grid: int = 7  # side of the local latent grid; 0 = global level only (no hierarchy)
    local_dim: int = 64  # Gaussian latent dimensions per cell
    local_min_std: float = 0.1
    local_hidden: int = 256
    local_mixer_depth: int = 1  # transformer blocks over the cells in the local prior (spatial context)
    local_heads: int = 4


@dataclass
class DecoderConfig:
    """ViT decoder (see `vit_decoder`); MAE's decoder size is the default."""

    width: int = 512
    depth: int = 8
    heads: int = 16
    mlp_ratio: float = 4.0


@dataclass
class LossConfig:
    """Every objective and its weight. KL: DreamerV3 balancing, each term clipped at its level's free nats."""

    objective: str = "reconstruction"  # or "latent_prediction" (no pixel decoder; predict an EMA target encoder)
    recon_scale: float = 50.0  # = 1 / (2 sigma^2): a Gaussian decoder with sigma = 0.1 in [-0.5, 0.5] pixels
    recon_type: str = "sse"  # squared error summed over pixels and channels per image; or "normalized_patch" (MAE)
    kl_dyn_scale: float = 0.5  # on KL(sg(q) || p): trains the prior
    kl_rep_scale: float = 0.1  # on KL(q || sg(p)): regularizes the posterior
    free_nats_global: float = 1.0  # floor of the global KL, per image and time step
    free_nats_local: float = 0.1  # floor of the local KL, per grid cell (the sum's floor scales with the cells)
    contrastive: str = "none"  # "barlow" or "simclr" between the global features of consecutive views
    contrastive_scale: float = 1.0
    contrastive_dim: int = 128
    simclr_temperature: float = 0.1
    barlow_lambda: float = 5e-3
    latent_pred_scale: float = 1.0  # latent_prediction objective weight
    ema_momentum: float = 0.99  # EMA target encoder (latent_prediction)


@dataclass
class ModelConfig:
    image_size: int = 224
    channels: int = 3
    action_dim: int = 1
    attention: str = "auto"  # "auto" | "sdpa" | "xformers" | "math"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    rssm: RSSMConfig = field(default_factory=RSSMConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        for name, sub in (("encoder", EncoderConfig), ("rssm", RSSMConfig), ("decoder", DecoderConfig),
                          ("loss", LossConfig)):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, _build(sub, getattr(self, name), name))
        self.validate()

    @property
    def patch_grid(self) -> int:
        return self.image_size // self.encoder.patch_size

    @property
    def cell_patches(self) -> int:
        """Side, in patches, of one local grid cell."""
        return self.patch_grid // self.rssm.local_grid if self.rssm.local_grid else 0

    def validate(self) -> None:
        e, r, d, loss = self.encoder, self.rssm, self.decoder, self.loss
        _positive(self, ["image_size", "channels", "action_dim"], "model")
        _positive(e, ["patch_size", "width", "depth", "heads"], "encoder")
        _positive(r, ["deter", "hidden", "stoch", "classes", "local_dim", "local_hidden", "local_heads"], "rssm")
        _positive(d, ["width", "depth", "heads"], "decoder")
        if self.image_size % e.patch_size:
            raise ValueError(f"image_size={self.image_size} is not a multiple of encoder.patch_size={e.patch_size}: "
                             f"use e.g. image_size={self.patch_grid * e.patch_size or e.patch_size} or another patch")
        for name, width, heads in (("encoder", e.width, e.heads), ("decoder", d.width, d.heads)):
            if width % heads or width % 4:
                raise ValueError(f"{name}.width={width} must be divisible by {name}.heads={heads} and by 4")
        if r.local_grid < 0 or r.local_grid and self.patch_grid % r.local_grid:
            raise ValueError(f"rssm.local_grid={r.local_grid} must divide the patch grid {self.patch_grid} "
                             f"(image_size / patch_size); divisors: "
                             f"{[g for g in range(1, self.patch_grid + 1) if self.patch_grid % g == 0]} (0 = no local)")
        if r.local_grid and r.local_hidden % r.local_heads:
            raise ValueError(f"rssm.local_hidden={r.local_hidden} must be divisible by "
                             f"rssm.local_heads={r.local_heads}")
        if not 0 <= r.unimix < 1:
            raise ValueError(f"rssm.unimix={r.unimix} must be in [0, 1)")
        if not r.local_min_std > 0:
            raise ValueError(f"rssm.local_min_std={r.local_min_std} must be > 0")
        if r.local_mixer_depth < 0:
            raise ValueError(f"rssm.local_mixer_depth={r.local_mixer_depth} must be >= 0")
        _choice(loss.objective, OBJECTIVES, "loss.objective")
        _choice(loss.recon_type, RECON_TYPES, "loss.recon_type")
        _choice(loss.contrastive, CONTRASTIVE, "loss.contrastive")
        _choice(self.attention, ("auto", "sdpa", "xformers", "math"), "model.attention")
        for key in ("recon_scale", "kl_dyn_scale", "kl_rep_scale", "free_nats_global", "free_nats_local",
                    "contrastive_scale", "latent_pred_scale", "barlow_lambda"):
            value = getattr(loss, key)
            if not (isinstance(value, (int, float)) and value >= 0):
                raise ValueError(f"loss.{key}={value!r} must be a number >= 0")
        if not 0 <= loss.ema_momentum < 1:
            raise ValueError(f"loss.ema_momentum={loss.ema_momentum} must be in [0, 1)")
        if loss.simclr_temperature <= 0:
            raise ValueError(f"loss.simclr_temperature={loss.simclr_temperature} must be > 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return _build(cls, data, "model")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """`tiny` (32-64 px, trains in seconds on a CPU) or `base` (224 px). Overrides: nested dicts or values."""
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
        data = dataclasses.asdict(PRESETS[name]())
        _merge(data, overrides, "model")
        return cls.from_dict(data)


def _tiny() -> ModelConfig:
    return ModelConfig(
        image_size=64,
        encoder=EncoderConfig(patch_size=8, width=128, depth=2, heads=4),
        rssm=RSSMConfig(deter=128, hidden=128, stoch=16, classes=16, local_grid=4, local_dim=64, local_hidden=128,
                        local_mixer_depth=1, local_heads=4),
        decoder=DecoderConfig(width=128, depth=2, heads=4),
    )


def _base() -> ModelConfig:
    return ModelConfig(image_size=224)


PRESETS = {"tiny": _tiny, "base": _base}


def _build(cls, data: dict[str, Any], where: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown key(s) {[f'{where}.{k}' for k in unknown]}; valid keys of {where}: {sorted(names)}")
    return cls(**data)


def _merge(base: dict, overrides: dict, where: str) -> None:
    for key, value in overrides.items():
        if key not in base:
            raise ValueError(f"unknown key {where}.{key}; valid keys: {sorted(base)}")
        if isinstance(base[key], dict) and isinstance(value, dict):
            _merge(base[key], value, f"{where}.{key}")
        else:
            base[key] = value


def _positive(obj, keys: list[str], where: str) -> None:
    for key in keys:
        value = getattr(obj, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{where}.{key}={value!r} must be a positive integer")


def _choice(value: str, allowed: tuple[str, ...], key: str) -> None:
    if value not in allowed:
        raise ValueError(f"{key}={value!r} must be one of {allowed}")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """["loss.recon_scale=10", "rssm.local_grid=0"] -> {"loss": {"recon_scale": 10}, "rssm": {"local_grid": 0}}.

    Values are parsed as YAML scalars (numbers, booleans, null, lists); anything else stays a string.
    """
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} must look like key=value (e.g. loss.recon_scale=10)")
        node = out
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        value = yaml.safe_load(raw)
        if isinstance(value, str):
            try:  # YAML 1.1 reads "1e-4" (no dot) as a string
                value = float(value)
            except ValueError:
                pass
        node[leaf] = value
    return out
