"""Training with Accelerate: one loop from one CPU to many GPUs (see recipes/train_hrssm.py for the command line).

dataset -> ViewCollator (views, no-op actions) -> WorldModel -> loss -> AdamW (warmup + cosine), with gradient
accumulation, clipping on sync steps, mixed precision, main-process logging (tqdm, trackers, metrics.jsonl),
image grids, collapse diagnostics, atomic checkpoints, exact resume, and a clean stop on SIGINT/SIGTERM.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from .checkpoint import latest_checkpoint, save_checkpoint
from .data import ViewCollator, load_waterbirds, preprocess
from .diagnostics import CollapseReport, diagnose_collapse
from .export import export
from .train_config import TrainConfig
from .viz import image_grid
from .world_model import WorldModel

logger = logging.getLogger("hrssm")


class CollapseError(RuntimeError):
    """Raised with --stop-on-collapse when the diagnostics say the model collapsed."""


class NonFiniteLossError(RuntimeError):
    """Raised after `collapse.max_nonfinite` consecutive NaN/inf steps."""


class TrainingInterrupted(RuntimeError):
    """SIGINT/SIGTERM arrived; a checkpoint was saved first."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


class TrainState:
    """What the loop needs besides model/optimizer/scheduler/RNG to resume exactly (saved with save_state)."""

    def __init__(self) -> None:
        self.step = 0
        self.nonfinite = 0

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step, "nonfinite": self.nonfinite}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step, self.nonfinite = int(state["step"]), int(state["nonfinite"])


@dataclass
class TrainResult:
    step: int
    metrics: dict[str, float]  # the last logged (averaged) metrics
    output_dir: Path
    export_dir: Path | None
    collapse: CollapseReport = field(default_factory=CollapseReport)
    seconds: float = 0.0
    model: WorldModel | None = None  # the trained model (unwrapped)
    num_processes: int = 1
    process_index: int = 0
    wrapped_as: str = ""  # class of the prepared model, e.g. DistributedDataParallel


def lr_lambda(warmup: int, total: int, min_ratio: float):
    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return fn


def _available_trackers(names: list[str]) -> list[str]:
    from accelerate.utils import is_mlflow_available, is_tensorboard_available, is_wandb_available

    checks = {"tensorboard": is_tensorboard_available, "mlflow": is_mlflow_available, "wandb": is_wandb_available}
    out = []
    for name in names:
        if name == "none":
            continue
        if checks[name]():
            out.append(name)
        else:
            logger.warning("tracker %s is not installed; metrics still go to metrics.jsonl", name)
    return out


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train(cfg: TrainConfig, resume: bool = False) -> TrainResult:
    """Train a world model as `cfg` says; returns when done (or raises CollapseError / NonFiniteLossError /
    TrainingInterrupted after saving a checkpoint)."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed

    start = time.perf_counter()
    out = Path(cfg.output_dir)
    mixed = cfg.optim.mixed_precision
    if mixed == "auto":
        mixed = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.optim.grad_accum,
        mixed_precision=mixed,
        log_with=_available_trackers(cfg.log.trackers) or None,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    set_seed(cfg.seed)
    model_cfg, view_cfg = cfg.model_config(), cfg.views

    with accelerator.main_process_first():  # the main process converts / resizes / caches first
        ds = load_waterbirds(cfg.data.source, cfg.data.split, image_size=model_cfg.image_size,
                             crop_fraction=cfg.data.crop_fraction, cache_dir=cfg.data.cache_dir)
        if view_cfg.mode == "edit" and "counterfactual" not in ds.column_names:
            from .data.counterfactual import add_counterfactuals

            ds = add_counterfactuals(ds, cfg.data.split, cfg.data.synthetic_seed)
    per_step = cfg.optim.batch_size * accelerator.num_processes
    if len(ds) < per_step:
        raise ValueError(f"the {cfg.data.split} split has {len(ds)} images, fewer than one step's batch "
                         f"({cfg.optim.batch_size} x {accelerator.num_processes} processes): lower optim.batch_size")
    collate = ViewCollator(model_cfg.image_size, view_cfg, seed=cfg.seed, crop_fraction=cfg.data.crop_fraction)
    loader = DataLoader(ds, batch_size=cfg.optim.batch_size, shuffle=True, drop_last=True, collate_fn=collate,
                        num_workers=cfg.data.num_workers, generator=torch.Generator().manual_seed(cfg.seed))
    mean_image = preprocess([ds[i]["image"] for i in range(min(len(ds), 512))], model_cfg.image_size,
                            cfg.data.crop_fraction).mean(dim=0).to(accelerator.device)

    model = WorldModel(model_cfg)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.optim.weight_decay), lr=cfg.optim.lr,
                                  betas=cfg.optim.betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(cfg.optim.warmup_steps, cfg.optim.max_steps, cfg.optim.min_lr_ratio))
    # The scheduler is not prepared: Accelerate would step it once per process; it steps once per optimizer step.
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    state = TrainState()
    accelerator.register_for_checkpointing(state, scheduler)
    ckpt_root = out / "checkpoints"

    if resume:
        ckpt = latest_checkpoint(ckpt_root)
        if ckpt is None:
            accelerator.print(f"--resume: no checkpoint in {ckpt_root}, starting from scratch")
        else:
            accelerator.load_state(str(ckpt))
            accelerator.print(f"resumed from {ckpt} (step {state.step})")
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "images").mkdir(exist_ok=True)
        cfg.save(out / "config.yaml")
    accelerator.init_trackers("hrssm", config=_flat(cfg.to_dict()))

    stop_signal: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: stop_signal.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    unwrapped: WorldModel = accelerator.unwrap_model(model)
    batches_per_epoch = len(loader) // cfg.optim.grad_accum
    if batches_per_epoch == 0:
        raise ValueError(f"one epoch has {len(loader)} batches per process, fewer than optim.grad_accum="
                         f"{cfg.optim.grad_accum}: lower optim.grad_accum or optim.batch_size")
    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.optim.max_steps, initial=state.step, disable=not (accelerator.is_local_main_process
                                                                            and cfg.log.progress), desc="train")
    window: dict[str, torch.Tensor] = {}
    window_steps = 0
    last: dict[str, float] = {}  # the last logged window (finite steps only)
    saved_at = -1
    report = CollapseReport()
    announced = False
    metrics_file = out / "metrics.jsonl"

    def checkpoint() -> None:
        nonlocal saved_at
        if saved_at != state.step:
            save_checkpoint(accelerator, ckpt_root, state.step, cfg.checkpoint.keep)
            saved_at = state.step

    try:
        while state.step < cfg.optim.max_steps:
            epoch, done = divmod(state.step, batches_per_epoch)
            loader.set_epoch(epoch)
            collate.set_epoch(epoch)
            batches = accelerator.skip_first_batches(loader, done * cfg.optim.grad_accum) if done else loader
            for batch in batches:
                with accelerator.accumulate(model):
                    result = model(batch["views"], batch["actions"], mean_image=mean_image)
                    accelerator.backward(result.loss)
                    if not accelerator.sync_gradients:
                        continue
                    norm = accelerator.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
                    # A NaN/inf loss in any micro-batch on any rank makes the all-reduced gradient norm NaN: one
                    # check, the step's only host sync, covers them all.
                    ok = bool(torch.isfinite(norm))
                    if ok:
                        optimizer.step()
                        scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                state.step += 1
                bar.update(1)
                if ok:
                    state.nonfinite = 0
                    unwrapped.update_ema()
                    for k, v in result.metrics.items():
                        window[k] = window.get(k, 0) + v.float()
                    window["grad_norm"] = window.get("grad_norm", 0) + norm.detach().float()
                    window["lr"] = window.get("lr", 0) + torch.tensor(scheduler.get_last_lr()[0])
                    window_steps += 1
                else:
                    state.nonfinite += 1
                    accelerator.print(f"step {state.step}: non-finite loss or gradient, step skipped "
                                      f"({state.nonfinite} in a row)")
                    if state.nonfinite >= cfg.collapse.max_nonfinite:
                        raise NonFiniteLossError(
                            f"{state.nonfinite} consecutive steps had a NaN/inf loss or gradient (last at step "
                            f"{state.step}). Last finite metrics: {_short(last)}. Try a lower optim.lr, "
                            "optim.mixed_precision=no, or check the data for broken images.")

                if state.step % cfg.log.every == 0 and window_steps:
                    last = _reduce(accelerator, window, window_steps)
                    window, window_steps = {}, 0
                    accelerator.log(last, step=state.step)
                    if accelerator.is_main_process:
                        with metrics_file.open("a") as f:
                            f.write(json.dumps({"step": state.step, **last}) + "\n")
                    bar.set_postfix(loss=f"{last['loss']:.1f}", psnr=f"{last.get('psnr', float('nan')):.1f}",
                                    std_ratio=f"{last.get('recon_std_ratio', float('nan')):.2f}")
                    if state.step >= cfg.collapse.warmup_steps:
                        report = diagnose_collapse(last)
                        if report.collapsed:
                            if not announced:
                                accelerator.print(f"\nstep {state.step}: {report.message}\n")
                                announced = True
                            else:
                                accelerator.print(f"step {state.step}: still collapsed ({', '.join(report.signals)})")
                            if cfg.collapse.stop:
                                checkpoint()
                                raise CollapseError(report.message)
                if state.step % cfg.log.images_every == 0 and accelerator.is_main_process:
                    _save_images(unwrapped, batch, result, out / "images" / f"step_{state.step:07d}.png")
                if state.step % cfg.checkpoint.every == 0 or state.step >= cfg.optim.max_steps:
                    checkpoint()
                if _stop_requested(accelerator, stop_signal):
                    checkpoint()
                    signum = stop_signal[0] if stop_signal else signal.SIGTERM
                    raise TrainingInterrupted(f"stopped by {signal.Signals(signum).name} at step {state.step}; "
                                              f"checkpoint saved, continue with --resume", signum)
                if state.step >= cfg.optim.max_steps:
                    break
        export_dir = None
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            export_dir = export(unwrapped, out / "export", metrics=last, data=cfg.data.source, steps=state.step)
            accelerator.print(f"done: {state.step} steps in {time.perf_counter() - start:.0f} s on "
                              f"{accelerator.num_processes} process(es); export in {export_dir}")
        return TrainResult(state.step, last, out, export_dir, report, time.perf_counter() - start, unwrapped,
                           accelerator.num_processes, accelerator.process_index, type(model).__name__)
    finally:
        bar.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
        accelerator.end_training()


def _stop_requested(accelerator, stop_signal: list[int]) -> bool:
    if accelerator.num_processes == 1:
        return bool(stop_signal)
    flag = torch.tensor([1.0 if stop_signal else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(flag, "sum") > 0)


def _reduce(accelerator, window: dict[str, torch.Tensor], steps: int) -> dict[str, float]:
    """Average the windowed metrics over steps and processes: one collective, one host sync."""
    keys = sorted(window)
    values = torch.stack([window[k].to(accelerator.device) for k in keys]) / steps
    if accelerator.num_processes > 1:
        values = accelerator.reduce(values, "mean")
    return dict(zip(keys, values.tolist()))


def _short(metrics: dict[str, float]) -> str:
    keys = ("loss", "recon_loss", "kl_global_raw", "kl_local_raw", "psnr", "recon_std_ratio", "grad_norm")
    return ", ".join(f"{k}={metrics[k]:.4g}" for k in keys if k in metrics) or "none logged yet"


@torch.no_grad()
def _save_images(model: WorldModel, batch: dict, result, path: Path, rows: int = 4) -> None:
    """Per sample three rows: input views | reconstructions | prior imagination from the first posterior state."""
    if result.recon is None:
        return
    views = batch["views"][:rows]
    was_training = model.training
    model.eval()
    try:
        traj = model.observe(views, batch["actions"][:rows])
        steps = views.shape[1]
        imagined = [model.decode(traj.h[:, :1], traj.z[:, :1], None if traj.s is None else traj.s[:, :1])]
        if steps > 1:
            dream = model.imagine(traj.state(0), batch["actions"][:rows, : steps - 1])
            imagined.append(model.decode(dream.h, dream.z, dream.s))
        imagined_t = torch.cat(imagined, dim=1)
    finally:
        model.train(was_training)
    grid = torch.stack([views, result.recon[:rows].detach(), imagined_t], dim=1).flatten(0, 1)
    image_grid(grid.float().cpu().clamp(-0.5, 0.5)).save(path)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out
