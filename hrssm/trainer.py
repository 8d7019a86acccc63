"""Training with Accelerate: one loop from one CPU to many GPUs (see recipes/train_hrssm.py for the command line).

`train` reads setup -> loop -> export:

- setup: `_make_accelerator` (mixed precision, trackers, seed), `_make_data` (dataset, view collator, loader, mean
  image), the model (a warm start from `init_from`: `hrssm.export.load_weights_into`), `hrssm.optim.make_optimizer`
  (AdamW, warmup + cosine), resume (`hrssm.checkpoint.Checkpointer`: the newest checkpoint, or a given one);
- loop: `_optimizer_steps` (gradient accumulation, clipping on sync steps, the NaN/inf guard: the step's one host
  sync); after each step the metrics go into a `MetricWindow`, a full window is logged by `_log_window` (tqdm,
  trackers, metrics.jsonl) and judged by `CollapseWatch` (the collapse verdict, `hrssm.diagnostics`); image grids
  (images/ and the trackers), atomic checkpoints (`Checkpointer.save`, written by
  `hrssm.checkpoint.save_checkpoint`), a clean stop on SIGINT/SIGTERM;
- export: `hrssm.export.export` of the unwrapped model; with `hub.push`, `hrssm.hub.push_export`.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ._torch import eval_mode
from .checkpoint import Checkpointer
from .config import ModelConfig
from .data import ViewCollator, load_waterbirds, preprocess
from .diagnostics import CollapseReport, diagnose_collapse
from .export import export, load_weights_into
from .hub import push_export
from .optim import make_optimizer
from .tracking import available_trackers, log_images, run_name_kwargs
from .train_config import CollapseConfig, TrainConfig
from .viz import image_grid
from .world_model import WorldModel, WorldModelOutput


class CollapseError(RuntimeError):
    """Raised with --stop-on-collapse when the diagnostics say the model collapsed."""


class NonFiniteLossError(RuntimeError):
    """Raised after `collapse.max_nonfinite` consecutive NaN/inf steps."""


class PushError(RuntimeError):
    """Training finished and exported, but the push to the Hugging Face Hub (`hub.push`) failed."""


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


def train(cfg: TrainConfig, resume: bool | str | os.PathLike = False) -> TrainResult:
    """Train a world model as `cfg` says: setup -> loop -> export. Returns when done, or raises CollapseError /
    NonFiniteLossError / TrainingInterrupted (after saving a checkpoint), or PushError (after the export).

    resume: True or "latest" continues from the newest checkpoint of the run folder (if any); a path continues
    from that checkpoint (a `checkpoints/step_N` folder, or a run / checkpoints folder: its newest).
    """
    start, out = time.perf_counter(), Path(cfg.output_dir)
    # -- setup ------------------------------------------------------------------------------------------------------
    accelerator = _make_accelerator(cfg)
    model_cfg = cfg.model_config()
    collate, loader, mean_image = _make_data(cfg, model_cfg, accelerator)
    model = WorldModel(model_cfg)
    if cfg.init_from is not None:
        load_weights_into(model, cfg.init_from)
        accelerator.print(f"warm start from {cfg.init_from}")
    optimizer, scheduler = make_optimizer(model, cfg.optim)
    # The scheduler is not prepared: Accelerate would step it once per process; it steps once per optimizer step.
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    state = TrainState()
    accelerator.register_for_checkpointing(state, scheduler)
    checkpointer = Checkpointer(accelerator, out / "checkpoints", state, cfg.checkpoint.keep)
    if resume:
        checkpointer.resume(None if resume in (True, "latest") else Path(resume))
    _start_run_folder(accelerator, cfg, out)
    unwrapped: WorldModel = accelerator.unwrap_model(model)
    steps = _optimizer_steps(accelerator, model, optimizer, scheduler, loader, collate, mean_image, state, cfg)
    window, collapse = MetricWindow(), CollapseWatch(cfg.collapse, accelerator.print)
    bar = _progress_bar(accelerator, cfg, state.step)
    # -- loop -------------------------------------------------------------------------------------------------------
    try:
        with _stop_signals() as stop_signal:
            for batch, result, grad_norm in steps:
                state.step += 1
                bar.update(1)
                if grad_norm is None:
                    _count_nonfinite(accelerator, state, cfg.collapse.max_nonfinite, window.last)
                else:
                    state.nonfinite = 0
                    unwrapped.update_ema()
                    window.add(result.metrics, grad_norm=grad_norm, lr=torch.tensor(scheduler.get_last_lr()[0]))
                if state.step % cfg.log.every == 0 and window.ready():
                    _log_window(accelerator, window.reduce(accelerator), state.step, out, bar)
                    if collapse.check(window.last, state.step).collapsed and cfg.collapse.stop:
                        checkpointer.save()
                        raise CollapseError(collapse.report.message)
                if state.step % cfg.log.images_every == 0 and accelerator.is_main_process:
                    grid = _image_grid(unwrapped, batch, result)
                    if grid is not None:
                        grid.save(out / "images" / f"step_{state.step:07d}.png")
                        log_images(accelerator.trackers, {"train/views_reconstructions_imagination": grid},
                                   state.step)
                if state.step % cfg.checkpoint.every == 0 or state.step >= cfg.optim.max_steps:
                    checkpointer.save()
                if _stop_requested(accelerator, stop_signal):
                    checkpointer.save()
                    signum = stop_signal[0] if stop_signal else signal.SIGTERM
                    raise TrainingInterrupted(f"stopped by {signal.Signals(signum).name} at step {state.step}; "
                                              f"checkpoint saved, continue with --resume", signum)
                if state.step >= cfg.optim.max_steps:
                    break
        # -- export -----------------------------------------------------------------------------------------------
        export_dir = None
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            export_dir = export(unwrapped, out / "export", metrics=window.last, data=cfg.data.source, steps=state.step)
            accelerator.print(f"done: {state.step} steps in {time.perf_counter() - start:.0f} s on "
                              f"{accelerator.num_processes} process(es); export in {export_dir}")
            if cfg.hub.push:
                _push(export_dir, cfg, accelerator.print)
        return TrainResult(state.step, window.last, out, export_dir, collapse.report, time.perf_counter() - start,
                           unwrapped, accelerator.num_processes, accelerator.process_index)
    finally:
        steps.close()
        bar.close()
        accelerator.end_training()


# -- setup ------------------------------------------------------------------------------------------------------------


def _make_accelerator(cfg: TrainConfig):
    """The run's `Accelerator` (mixed precision, gradient accumulation, trackers, seedable sampler); seeds every RNG."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed

    out = Path(cfg.output_dir)
    mixed = cfg.optim.mixed_precision
    if mixed == "auto":
        mixed = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.optim.grad_accum,
        mixed_precision=mixed,
        log_with=available_trackers(cfg.log.trackers) or None,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    set_seed(cfg.seed)
    return accelerator


def _make_data(cfg: TrainConfig, model_cfg: ModelConfig, accelerator
               ) -> tuple[ViewCollator, DataLoader, torch.Tensor]:
    """The training split as view sequences: collator, loader (not prepared yet) and the dataset's mean image (C, H,
    W) on the device (the PSNR floor of the collapse diagnostics)."""
    with accelerator.main_process_first():  # the main process converts / resizes / caches first
        ds = load_waterbirds(cfg.data.source, cfg.data.split, cache_dir=cfg.data.cache_dir,
                             revision=cfg.data.revision, num_proc=cfg.data.num_proc, **model_cfg.preprocessing())
        if cfg.views.mode == "edit" and "counterfactual" not in ds.column_names:
            from .data.counterfactual import add_counterfactuals

            ds = add_counterfactuals(ds, cfg.data.split, cfg.data.synthetic_seed)
    if len(ds) < cfg.optim.batch_size * accelerator.num_processes:
        raise ValueError(f"the {cfg.data.split} split has {len(ds)} images, fewer than one step's batch "
                         f"({cfg.optim.batch_size} x {accelerator.num_processes} processes): lower optim.batch_size")
    crop = model_cfg.preprocess.crop_fraction
    collate = ViewCollator(model_cfg.image_size, cfg.views, seed=cfg.seed, crop_fraction=crop)
    loader = DataLoader(ds, batch_size=cfg.optim.batch_size, shuffle=True, drop_last=True, collate_fn=collate,
                        num_workers=cfg.data.num_workers, generator=torch.Generator().manual_seed(cfg.seed))
    mean_image = preprocess([ds[i]["image"] for i in range(min(len(ds), 512))],
                            **model_cfg.preprocessing()).mean(dim=0).to(accelerator.device)
    return collate, loader, mean_image


def _start_run_folder(accelerator, cfg: TrainConfig, out: Path) -> None:
    """The run folder with its resolved config.yaml and images/, and the trackers."""
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "images").mkdir(exist_ok=True)
        cfg.save(out / "config.yaml")
    accelerator.init_trackers(cfg.log.project, config=_flat(cfg.to_dict()),
                              init_kwargs=run_name_kwargs(cfg.log.run_name, out))


def _progress_bar(accelerator, cfg: TrainConfig, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=cfg.optim.max_steps, initial=initial, desc="train",
                disable=not (accelerator.is_local_main_process and cfg.log.progress))


@contextmanager
def _stop_signals() -> Iterator[list[int]]:
    """A list that collects SIGINT/SIGTERM while the block runs (the loop stops cleanly at the end of its step)."""
    received: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


# -- loop -------------------------------------------------------------------------------------------------------------


def _optimizer_steps(accelerator, model, optimizer, scheduler, loader, collate: ViewCollator,
                     mean_image: torch.Tensor, state: TrainState, cfg: TrainConfig
                     ) -> Iterator[tuple[dict, WorldModelOutput, torch.Tensor | None]]:
    """(last batch, its output, gradient norm) of each optimizer step from `state.step` on, epoch after epoch
    (resuming mid-epoch skips the batches already seen); the norm is None for a skipped non-finite step. The caller
    counts `state.step` and stops."""
    batches_per_epoch = len(loader) // cfg.optim.grad_accum
    if batches_per_epoch == 0:
        raise ValueError(f"one epoch has {len(loader)} batches per process, fewer than optim.grad_accum="
                         f"{cfg.optim.grad_accum}: lower optim.grad_accum or optim.batch_size")
    while state.step < cfg.optim.max_steps:
        epoch, done = divmod(state.step, batches_per_epoch)
        loader.set_epoch(epoch)
        collate.set_epoch(epoch)
        for batch in accelerator.skip_first_batches(loader, done * cfg.optim.grad_accum) if done else loader:
            with accelerator.accumulate(model):
                result = model(batch["views"], batch["actions"], mean_image=mean_image)
                accelerator.backward(result.loss)
                if not accelerator.sync_gradients:
                    continue
                norm = accelerator.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
                # A NaN/inf loss in any micro-batch on any rank makes the all-reduced gradient norm NaN: one check,
                # the step's only host sync, covers them all.
                finite = bool(torch.isfinite(norm))
                if finite:
                    optimizer.step()
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            yield batch, result, norm.detach() if finite else None


def _count_nonfinite(accelerator, state: TrainState, limit: int, last: dict[str, float]) -> None:
    """A skipped non-finite step: say so, and stop the run after `limit` in a row."""
    state.nonfinite += 1
    accelerator.print(f"step {state.step}: non-finite loss or gradient, step skipped ({state.nonfinite} in a row)")
    if state.nonfinite >= limit:
        raise NonFiniteLossError(
            f"{state.nonfinite} consecutive steps had a NaN/inf loss or gradient (last at step {state.step}). "
            f"Last finite metrics: {_short(last)}. Try a lower optim.lr, optim.mixed_precision=no, or check the data "
            "for broken images.")


class MetricWindow:
    """The metrics of the finite steps since the last log, summed on the device (no host sync per step)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.last: dict[str, float] = {}  # the last reduced window

    def add(self, metrics: dict[str, torch.Tensor], **more: torch.Tensor) -> None:
        for key, value in {**metrics, **more}.items():
            self.sums[key] = self.sums.get(key, 0) + value.float()
        self.steps += 1

    def ready(self) -> bool:
        return self.steps > 0

    def reduce(self, accelerator) -> dict[str, float]:
        """The window's means over steps and processes (one collective, one host sync); starts a new window."""
        keys = sorted(self.sums)
        values = torch.stack([self.sums[k].to(accelerator.device) for k in keys]) / self.steps
        if accelerator.num_processes > 1:
            values = accelerator.reduce(values, "mean")
        self.last = dict(zip(keys, values.tolist()))
        self.sums, self.steps = {}, 0
        return self.last


def _log_window(accelerator, metrics: dict[str, float], step: int, out: Path, bar) -> None:
    """One logged window: the trackers, metrics.jsonl (main process) and the progress bar."""
    accelerator.log(metrics, step=step)
    if accelerator.is_main_process:
        with (out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
    bar.set_postfix(loss=f"{metrics['loss']:.1f}", psnr=f"{metrics.get('psnr', float('nan')):.1f}",
                    std_ratio=f"{metrics.get('recon_std_ratio', float('nan')):.2f}")


class CollapseWatch:
    """The collapse verdict on each logged window from `collapse.warmup_steps` on (`diagnose_collapse`): the full
    message the first time the model collapses, one line each time after."""

    def __init__(self, cfg: CollapseConfig, say: Callable[[str], None]) -> None:
        self.warmup_steps, self.say = cfg.warmup_steps, say
        self.report = CollapseReport()  # the last verdict
        self.announced = False

    def check(self, metrics: dict[str, float], step: int) -> CollapseReport:
        if step < self.warmup_steps:
            return CollapseReport()
        self.report = diagnose_collapse(metrics)
        if self.report.collapsed:
            if not self.announced:
                self.say(f"\nstep {step}: {self.report.message}\n")
                self.announced = True
            else:
                self.say(f"step {step}: still collapsed ({', '.join(self.report.signals)})")
        return self.report


def _stop_requested(accelerator, stop_signal: list[int]) -> bool:
    if accelerator.num_processes == 1:
        return bool(stop_signal)
    flag = torch.tensor([1.0 if stop_signal else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(flag, "sum") > 0)


def _short(metrics: dict[str, float]) -> str:
    keys = ("loss", "recon_loss", "kl_global_raw", "kl_local_raw", "psnr", "recon_std_ratio", "grad_norm")
    return ", ".join(f"{k}={metrics[k]:.4g}" for k in keys if k in metrics) or "none logged yet"


def _push(export_dir: Path, cfg: TrainConfig, say: Callable[[str], None]) -> None:
    """`hub.push`: the export to `hub.model_id`; a failure leaves the export where it is and says how to retry."""
    try:
        url = push_export(export_dir, cfg.hub.model_id, private=cfg.hub.private)
    except Exception as err:  # offline, no token, no permission, network
        raise PushError(f"training finished and the export is in {export_dir}, but the push to {cfg.hub.model_id} "
                        f"failed ({type(err).__name__}: {err}). Check the network and the token ($HF_TOKEN or "
                        f"`hf auth login`), then: hrssm-push {export_dir} --repo-id {cfg.hub.model_id}") from err
    say(f"pushed the export to {cfg.hub.model_id} ({'private' if cfg.hub.private else 'public'}): {url}")


@torch.no_grad()
def _image_grid(model: WorldModel, batch: dict, result: WorldModelOutput, rows: int = 4):
    """Per sample three rows: input views | reconstructions | prior imagination from the first posterior state (a
    PIL image; None without a pixel decoder)."""
    if result.recon is None:
        return None
    views, actions = batch["views"][:rows], batch["actions"][:rows]
    with eval_mode(model):
        traj = model.observe(views, actions)
        steps = views.shape[1]
        imagined = [model.decode(traj.h[:, :1], traj.z[:, :1], None if traj.s is None else traj.s[:, :1])]
        if steps > 1:
            dream = model.imagine(traj.state(0), actions[:, : steps - 1])
            imagined.append(model.decode(dream.h, dream.z, dream.s))
    grid = torch.stack([views, result.recon[:rows].detach(), torch.cat(imagined, dim=1)], dim=1).flatten(0, 1)
    return image_grid(grid.float().cpu().clamp(-0.5, 0.5))


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out
