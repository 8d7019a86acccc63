"""Training configuration: YAML file + command-line overrides -> validated dataclasses, before anything runs.

    cfg = TrainConfig.load("recipes/configs/demo.yaml", ["--optim.lr", "3e-4", "--views.num_views=2"])

Every key is ``section.key``; a wrong key or a bad value raises ``ValueError`` naming the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import ModelConfig, parse_overrides
from .data.views import ViewConfig


@dataclass
class DataConfig:
    source: str = "data/synthetic_waterbirds_64"  # hub id, save_to_disk dir or original Waterbirds folder
    split: str = "train"
    crop_fraction: float = 1.0
    cache_dir: str | None = None
    num_workers: int = 0
    synthetic_seed: int = 0  # views.mode=edit on the synthetic twin: the seed it was generated with (pairs)


@dataclass
class OptimConfig:
    batch_size: int = 32  # per process
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100
    max_steps: int = 1000
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    max_grad_norm: float = 1e4  # losses are sums over pixels: gradient norms are large (Adam does not mind)
    mixed_precision: str = "auto"  # "auto" (bf16 on CUDA, fp32 on CPU) | "no" | "bf16" | "fp16"


@dataclass
class LogConfig:
    every: int = 50
    images_every: int = 250
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])  # tensorboard | mlflow | wandb | none
    progress: bool = True


@dataclass
class CheckpointConfig:
    every: int = 250
    keep: int = 2


@dataclass
class CollapseConfig:
    warmup_steps: int = 300  # no verdict before this step
    stop: bool = False  # --stop-on-collapse: end the run with exit code 3
    max_nonfinite: int = 5  # consecutive NaN/inf steps (skipped) before the run stops


@dataclass
class TrainConfig:
    output_dir: str = "runs/hrssm"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    views: dict[str, Any] = field(default_factory=lambda: {"num_views": 4, "mode": "augment"})
    model: dict[str, Any] = field(default_factory=lambda: {"preset": "tiny"})  # preset + ModelConfig overrides
    optim: OptimConfig = field(default_factory=OptimConfig)
    log: LogConfig = field(default_factory=LogConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    collapse: CollapseConfig = field(default_factory=CollapseConfig)

    def __post_init__(self) -> None:
        for name, sub in _SECTIONS.items():
            if isinstance(getattr(self, name), dict):
                setattr(self, name, _build(sub, getattr(self, name), name))
        self.validate()

    # -- derived ----------------------------------------------------------------------------------------------------

    def model_config(self) -> ModelConfig:
        spec = dict(self.model)
        preset = spec.pop("preset", "tiny")
        return ModelConfig.preset(preset, **spec)

    def view_config(self) -> ViewConfig:
        spec = dict(self.views)
        spec.setdefault("action_dim", self.model_config().action_dim)
        for key in ("crop_scale", "crop_ratio"):
            if key in spec:
                spec[key] = tuple(spec[key])
        return ViewConfig(**spec)

    def validate(self) -> None:
        o, lg, ck, co, d = self.optim, self.log, self.checkpoint, self.collapse, self.data
        for key in ("batch_size", "grad_accum", "max_steps"):
            _positive_int(getattr(o, key), f"optim.{key}")
        for key, value in (("log.every", lg.every), ("log.images_every", lg.images_every),
                           ("checkpoint.every", ck.every), ("checkpoint.keep", ck.keep),
                           ("collapse.max_nonfinite", co.max_nonfinite)):
            _positive_int(value, key)
        for key, value in (("optim.warmup_steps", o.warmup_steps), ("collapse.warmup_steps", co.warmup_steps),
                           ("data.num_workers", d.num_workers), ("seed", self.seed)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{key}={value!r} must be an integer >= 0")
        for key in ("lr", "max_grad_norm"):
            if not (isinstance(getattr(o, key), (int, float)) and getattr(o, key) > 0):
                raise ValueError(f"optim.{key}={getattr(o, key)!r} must be a number > 0")
        if not (isinstance(o.weight_decay, (int, float)) and o.weight_decay >= 0):
            raise ValueError(f"optim.weight_decay={o.weight_decay!r} must be a number >= 0")
        if not 0 <= o.min_lr_ratio <= 1:
            raise ValueError(f"optim.min_lr_ratio={o.min_lr_ratio!r} must be in [0, 1]")
        if o.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ValueError(f"optim.mixed_precision={o.mixed_precision!r} must be one of auto, no, bf16, fp16")
        bad = [t for t in lg.trackers if t not in ("tensorboard", "mlflow", "wandb", "none")]
        if bad:
            raise ValueError(f"log.trackers has unknown tracker(s) {bad}; use tensorboard, mlflow, wandb or none")
        if not 0 < d.crop_fraction <= 1:
            raise ValueError(f"data.crop_fraction={d.crop_fraction!r} must be in (0, 1]")
        try:
            self.model_config()
        except (ValueError, TypeError) as err:
            raise ValueError(f"model: {err}") from err
        try:
            views = self.view_config()
        except TypeError as err:
            raise ValueError(f"views: {err} (valid keys: {[f.name for f in dataclasses.fields(ViewConfig)]})") \
                from err
        except ValueError as err:
            raise ValueError(f"views: {err}") from err
        if views.action_dim != self.model_config().action_dim:
            raise ValueError(f"views.action_dim={views.action_dim} differs from the model's action_dim "
                             f"{self.model_config().action_dim}")

    # -- I/O ----------------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return _build(cls, data, "config")

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
        """Read a YAML file (or the defaults), apply ``--section.key value`` overrides, validate."""
        data = dataclasses.asdict(cls()) if path is None else {}
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise FileNotFoundError(f"config file {p} not found (see recipes/configs/ for examples)")
            data = yaml.safe_load(p.read_text()) or {}
            if not isinstance(data, dict):
                raise ValueError(f"{p} must hold a YAML mapping of config sections")
        _merge(data, parse_overrides(cli_pairs(overrides or [])))
        return cls.from_dict(data)


_SECTIONS = {"data": DataConfig, "optim": OptimConfig, "log": LogConfig, "checkpoint": CheckpointConfig,
             "collapse": CollapseConfig}


def cli_pairs(args: list[str]) -> list[str]:
    """["--optim.lr", "3e-4", "--views.mode=repeat"] -> ["optim.lr=3e-4", "views.mode=repeat"]."""
    out, i = [], 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise ValueError(f"unexpected argument {arg!r}: overrides look like --section.key value")
        key = arg[2:]
        if "=" in key:
            out.append(key)
            i += 1
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            out.append(f"{key}={args[i + 1]}")
            i += 2
        else:
            raise ValueError(f"override {arg} needs a value: {arg} VALUE or {arg}=VALUE")
    return out


def _merge(base: dict, overrides: dict) -> None:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _build(cls, data: dict[str, Any], where: str):
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping, got {data!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = "" if where == "config" else f"{where}."
        raise ValueError(f"unknown config key(s) {[prefix + k for k in unknown]}; valid keys"
                         f"{'' if where == 'config' else ' of ' + where}: {sorted(names)}")
    if cls is OptimConfig and "betas" in data:
        data = {**data, "betas": tuple(data["betas"])}
    return cls(**data)


def _positive_int(value: Any, key: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{key}={value!r} must be a positive integer")
