"""Experiment trackers through Accelerate (TensorBoard by default; MLflow, W&B when installed): which ones can run,
how a run is named, and pictures sent to them. The trainer also writes every metric to metrics.jsonl, tracker or not.

    accelerator.init_trackers(cfg.log.project, config, init_kwargs=run_name_kwargs(cfg.log, output_dir))
    log_images(accelerator.trackers, {"train/views": pil_image}, step)      # image grids during training
    log_pictures_to_run("runs/demo", {"eval/group_accuracy": path}, step)    # evaluation pictures, after training

TensorBoard writes to ``<output_dir>/logs/<log.project>/``; W&B and MLflow name the run `log.run_name` (default:
the run folder's name).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

logger = logging.getLogger("hrssm")


def available_trackers(names: Iterable[str]) -> list[str]:
    """The trackers of `names` that are installed ("none" dropped); a warning for each that is not."""
    from accelerate.utils import is_mlflow_available, is_tensorboard_available, is_wandb_available

    checks = {"tensorboard": is_tensorboard_available, "mlflow": is_mlflow_available, "wandb": is_wandb_available}
    out = []
    for name in names:
        if name == "none":
            continue
        if checks[name]():
            out.append(name)
        else:
            logger.warning("tracker %s is not installed (pip install %s); metrics still go to metrics.jsonl", name,
                           name)
    return out


def run_name_kwargs(run_name: str | None, output_dir: str | os.PathLike) -> dict[str, dict[str, str]]:
    """`init_kwargs` of `Accelerator.init_trackers` that name the run (W&B, MLflow): `run_name` or the run folder's
    name. (TensorBoard has no run name: its folder is the run.)"""
    name = run_name or Path(output_dir).resolve().name
    return {"wandb": {"name": name}, "mlflow": {"run_name": name}}


def log_images(trackers: Iterable, images: dict[str, Image.Image], step: int) -> None:
    """Send PIL images to every tracker that takes images (TensorBoard `add_image`, W&B `log_images`)."""
    for tracker in trackers:
        if tracker.name == "tensorboard":
            for tag, image in images.items():
                tracker.writer.add_image(tag, np.asarray(image.convert("RGB")), step, dataformats="HWC")
            tracker.writer.flush()
        elif hasattr(tracker, "log_images"):
            tracker.log_images({tag: [image] for tag, image in images.items()}, step=step)


def log_pictures_to_run(run_dir: str | os.PathLike, pictures: dict[str, str | os.PathLike],
                        step: int | None = None) -> list[str]:
    """Send picture files (tag -> PNG) to the trackers of a finished run (`run_dir/config.yaml`'s `log` section),
    next to its training logs, at `step` (default: the run's last step). Returns the trackers that got them (none
    when the run used none, or `run_dir` is no run folder)."""
    import yaml
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    from .train_config import LogConfig

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        return []
    try:  # only the run's log section and length: the rest of its config may name files that are gone
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
        log = LogConfig.from_dict(saved.get("log") or {})
        step = int(saved.get("optim", {}).get("max_steps", 0)) if step is None else step
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError) as err:
        logger.warning("pictures not sent to trackers: %s has no readable run config (%s)", run_dir, err)
        return []
    names = available_trackers(log.trackers)
    kwargs = run_name_kwargs(log.run_name, run_dir)
    images = {tag: Image.open(path) for tag, path in pictures.items()}
    for name in names:
        cls = LOGGER_TYPE_TO_CLASS[name]
        args = (log.project, run_dir / "logs") if cls.requires_logging_directory else (log.project,)
        tracker = cls(*args, **kwargs.get(name, {}))
        tracker.start()
        try:
            log_images([tracker], images, step)
        finally:
            tracker.finish()
    return names
