"""Training configuration: YAML file + command-line overrides -> validated dataclasses, before anything runs.

    cfg = TrainConfig.load("recipes/configs/demo.yaml", ["--optim.lr", "3e-4", "--views.num_views=2"])

Every key is ``section.key``; a wrong key, a bad value or a file that is not YAML raises
`hrssm.errors.ConfigError` (a ``ValueError``) naming the key or the file (the mechanism is hrssm/_config_utils.py,
shared with ModelConfig and ViewConfig). A field's comment is its meaning in `hrssm-train --help`
(`TrainConfig.describe`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from ._config_utils import Config, build, cli_pairs, describe, integer, merge, number, one_of, parse_overrides
from .config import PRESETS, ModelConfig
from .data.schema import canonical_split
from .data.views import ViewConfig
from .errors import ConfigError

TRACKERS = ("tensorboard", "mlflow", "wandb", "none")
# Keys that moved: old name -> new name (a config that uses the old one is refused with the new one named).
MOVED = {"data.crop_fraction": "model.preprocess.crop_fraction"}


@dataclass
class DataConfig(Config):
    section: ClassVar[str] = "data"
    source: str = "data/synthetic_waterbirds_64"  # hub id, save_to_disk dir or original Waterbirds folder
    split: str = "train"  # the split to train on: train, validation or test
    revision: str | None = None  # a hub dataset's branch, tag or commit (pin it for reproducible runs)
    cache_dir: str | None = None  # cache of converted folders and hub downloads (default: HRSSM_CACHE / HF caches)
    num_proc: int | None = None  # processes for the hub download and the resize (default: one)
    # DataLoader workers per process; "auto": 0 on CPU (the step's threads use the cores), else the process's share
    # of the cores minus one, at most 8 (hrssm.trainer.loader_workers)
    num_workers: int | Literal["auto"] = "auto"
    # where views are made: "loader" (the collator, in the workers), "accelerator" (the training step, from uint8
    # batches: 4x less to decode, collate and copy per image, 4T x less per view), "auto": accelerator unless on CPU
    views_on: Literal["auto", "loader", "accelerator"] = "auto"
    synthetic_seed: int = 0  # views.mode=edit on the synthetic twin: the seed it was generated with (pairs)

    def validate(self) -> None:
        try:
            canonical_split(self.split)
        except ValueError as err:
            raise ConfigError(f"{self.key('split')}: {err}") from None
        self.check(integer, "synthetic_seed", low=0)
        workers = self.num_workers
        if workers != "auto" and not (isinstance(workers, int) and not isinstance(workers, bool) and workers >= 0):
            raise ConfigError(f"{self.key('num_workers')}={workers!r} must be an integer >= 0 or 'auto'")
        if self.num_proc is not None:
            self.check(integer, "num_proc")


@dataclass
class OptimConfig(Config):
    section: ClassVar[str] = "optim"
    batch_size: int = 32  # per process
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-3  # peak learning rate of AdamW
    weight_decay: float = 0.01  # AdamW weight decay
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas
    warmup_steps: int = 100  # linear warm-up steps before the cosine decay
    max_steps: int = 1000  # optimizer steps of the run
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    max_grad_norm: float = 1e4  # losses are sums over pixels: gradient norms are large (Adam does not mind)
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    compile: bool = False  # torch.compile the model step (forward + backward); the first steps pay the compile time
    # the first N steps train only the encoder and projector on the contrastive loss (no RSSM, no decoder: each
    # costs about half a full step), so the encoder finds the object before reconstruction and the KL start; needs
    # model.loss.contrastive on contrastive_input "tokens". 0: every step trains everything
    contrastive_warmup_steps: int = 0
    # with contrastive_warmup_steps > 0: the parameters the warm-up leaves untrained (RSSM, decoder) get their own
    # warm-up and cosine over the steps after it; false: they join the run's cosine where it is (at its low tail
    # after a long warm-up, so the decoder learns slowly)
    late_start_schedule: bool = True
    # side in pixels of the views the contrastive warm-up trains on (a multiple of the patch size; 0: the model's
    # image_size): smaller views cost about (size / image_size)^2 of a warm-up step, and an encoder trained on
    # random crops at a lower size reads full images at a higher one well (FixRes, Touvron et al. 2019)
    contrastive_warmup_image_size: int = 0

    def validate(self) -> None:
        self.check(integer, "batch_size", "grad_accum", "max_steps")
        self.check(integer, "warmup_steps", "contrastive_warmup_steps", "contrastive_warmup_image_size", low=0)
        if self.contrastive_warmup_steps >= self.max_steps:
            raise ConfigError(f"{self.key('contrastive_warmup_steps')}={self.contrastive_warmup_steps} must be below "
                              f"{self.key('max_steps')}={self.max_steps}: the world model trains after the warm-up")
        self.check(number, "lr", "max_grad_norm", low_open=True)
        self.check(number, "weight_decay")
        self.check(number, "min_lr_ratio", high=1, high_closed=True)


@dataclass
class LogConfig(Config):
    section: ClassVar[str] = "log"
    every: int = 50  # steps per logged window of averaged metrics (trackers, metrics.jsonl, collapse check)
    images_every: int = 250  # steps between image grids (images/ and the trackers)
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])  # any of TRACKERS
    project: str = "hrssm"  # tracker project: W&B project, MLflow experiment, TensorBoard folder under logs/
    run_name: str | None = None  # tracker run name (W&B, MLflow); default: the output_dir's folder name
    progress: bool = True  # show a progress bar

    def validate(self) -> None:
        self.check(integer, "every", "images_every")
        if not self.project:
            raise ConfigError(f"{self.key('project')} must be a non-empty name")
        for i, name in enumerate(self.trackers):
            one_of(f"{self.key('trackers')}[{i}]", name, TRACKERS)


@dataclass
class CheckpointConfig(Config):
    section: ClassVar[str] = "checkpoint"
    every: int = 250  # steps between checkpoints (one is always written at the end)
    keep: int = 2  # newest checkpoints kept

    def validate(self) -> None:
        self.check(integer, "every", "keep")


@dataclass
class CollapseConfig(Config):
    section: ClassVar[str] = "collapse"
    warmup_steps: int = 300  # no verdict before this step (counted from the end of optim.contrastive_warmup_steps)
    stop: bool = False  # --stop-on-collapse: end the run with exit code 3
    max_nonfinite: int = 5  # consecutive NaN/inf steps (skipped) before the run stops

    def validate(self) -> None:
        self.check(integer, "warmup_steps", low=0)
        self.check(integer, "max_nonfinite")


@dataclass
class HubConfig(Config):
    section: ClassVar[str] = "hub"
    push: bool = False  # push the export to the Hugging Face Hub at the end of training (token: $HF_TOKEN / login)
    model_id: str | None = None  # the repo to push to, "user/name"
    private: bool = True  # create the repo private

    def validate(self) -> None:
        if self.push and not self.model_id:
            raise ConfigError("hub.push=true needs hub.model_id (the repo to push to, e.g. you/hrssm-waterbirds)")


@dataclass
class TrainConfig(Config):
    output_dir: str = "runs/hrssm"  # the run folder: config, metrics, logs, images, checkpoints, export
    seed: int = 0  # seeds every RNG (weights, data order, views)
    # warm start: an export folder, run folder or hub repo whose weights the model starts from; its config.json is
    # the model config (model.preset is ignored; other model.* keys override it)
    init_from: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    views: ViewConfig = field(default_factory=ViewConfig)
    model: dict[str, Any] = field(default_factory=lambda: {"preset": "tiny"})  # a preset + ModelConfig overrides
    optim: OptimConfig = field(default_factory=OptimConfig)
    log: LogConfig = field(default_factory=LogConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    collapse: CollapseConfig = field(default_factory=CollapseConfig)
    hub: HubConfig = field(default_factory=HubConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.model, Mapping):
            raise ConfigError(f"model={self.model!r} must be a mapping: a preset and ModelConfig overrides, e.g. "
                             "{preset: tiny, image_size: 32}")
        for old, new in MOVED.items():
            section, key = old.split(".")
            if isinstance(getattr(self, section), Mapping) and key in getattr(self, section):
                raise ConfigError(f"{old} is now {new} (the export records it, so encode() applies it): rename "
                                 "the key")
        if isinstance(self.views, Mapping) and "action_dim" not in self.views:  # by default actions fit the model
            self.views = {**self.views, "action_dim": self.model_config().action_dim}
        super().__post_init__()

    def model_config(self) -> ModelConfig:
        """The model this run trains: `model.preset` with the other `model` keys as overrides; with `init_from`,
        the export's config with those overrides."""
        overrides = dict(self.model)
        preset = overrides.pop("preset", "tiny")
        if self.init_from is None:
            return ModelConfig.preset(preset, **overrides)
        from .export import read_model_config

        return build(ModelConfig, merge(read_model_config(self.init_from).to_dict(), overrides))

    def resolved(self) -> dict[str, Any]:
        """The config as a mapping, the model section with every key of the model it trains (what
        `--print-config` shows; it loads back as the same config)."""
        return {**self.to_dict(), "model": {"preset": self.model.get("preset", "tiny"),
                                            **self.model_config().to_dict()}}

    def describe(self) -> list[tuple[str, Any, str]]:
        """(key, value, meaning) of every key, the model's included (`hrssm._config_utils.describe`)."""
        rows = [row for row in describe(self) if row[0] != "model"]
        at = next(i for i, row in enumerate(rows) if row[0].startswith("optim."))
        preset = ("model.preset", self.model.get("preset", "tiny"),
                  f"model preset ({', '.join(PRESETS)}) that the other model.* keys override")
        return rows[:at] + [preset, *describe(self.model_config())] + rows[at:]

    def validate(self) -> None:
        self.check(integer, "seed", low=0)
        model_cfg = self.model_config()
        action_dim = model_cfg.action_dim
        loss = model_cfg.loss
        if self.optim.contrastive_warmup_steps and (loss.contrastive == "none" or loss.contrastive_input != "tokens"):
            raise ConfigError(f"optim.contrastive_warmup_steps={self.optim.contrastive_warmup_steps} trains the "
                              "encoder on the contrastive loss alone, but the model has model.loss.contrastive="
                              f"{loss.contrastive!r}, contrastive_input={loss.contrastive_input!r}: set "
                              "model.loss.contrastive=simclr (or barlow) and model.loss.contrastive_input=tokens, or "
                              "optim.contrastive_warmup_steps=0")
        if loss.contrastive != "none":
            self._check_contrastive_inputs(loss.contrastive)
        size, patch = self.optim.contrastive_warmup_image_size, model_cfg.encoder.patch_size
        if size and (size > model_cfg.image_size or size % patch):
            raise ConfigError(f"optim.contrastive_warmup_image_size={size} must be a multiple of "
                              f"model.encoder.patch_size={patch} no larger than model.image_size="
                              f"{model_cfg.image_size} (0: the model's size)")
        if self.views.action_dim != action_dim:
            raise ValueError(f"views.action_dim={self.views.action_dim} differs from the model's action_dim "
                             f"{action_dim}: set both")

    def _check_contrastive_inputs(self, kind: str) -> None:
        """A contrastive loss (`kind`) needs views of each image to compare and other images to tell them from."""
        if self.views.num_views < 2:
            raise ConfigError(f"model.loss.contrastive={kind!r} (the presets' default) compares the views of an "
                              f"image, but views.num_views={self.views.num_views}: use views.num_views >= 2 (mode "
                              "augment), or model.loss.contrastive=none")
        if self.optim.batch_size < 2:
            raise ConfigError(f"model.loss.contrastive={kind!r} tells the images of a batch apart, but "
                              f"optim.batch_size={self.optim.batch_size}: use optim.batch_size >= 2 (SimCLR: the "
                              "more the better), or model.loss.contrastive=none")
        if self.views.mode == "edit":
            raise ConfigError(f"views.mode=edit makes each view a concept edit of the one before, and "
                              f"model.loss.contrastive={kind!r} would pull those views together: the encoder would "
                              "learn to ignore the very concept the actions edit. Set model.loss.contrastive=none "
                              "for edit training")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
        """Read a YAML file (or the defaults), apply ``--section.key value`` overrides, validate."""
        data: Any = {}
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise FileNotFoundError(f"config file {p} not found (see recipes/configs/ for examples)")
            data = _read_yaml(p)
            if data is None:
                data = {}
            elif not isinstance(data, dict):
                raise ConfigError(f"{p} must hold a YAML mapping of config sections (data:, model:, optim:, ...)")
        return build(cls, merge(data, parse_overrides(cli_pairs(overrides or []))))


def _read_yaml(path: Path) -> Any:
    """The YAML document in `path` (None if empty), read with `yaml.safe_load`, or a `ConfigError` naming the file."""
    try:
        return yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file: give a YAML config (see recipes/configs/)") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML{where}: {what}. Fix the file (configs are plain YAML: no "
                          "!!python tags)") from None
