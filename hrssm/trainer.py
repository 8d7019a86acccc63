"""Training with Accelerate: one loop from one CPU to many GPUs (see recipes/train_hrssm.py for the command line).

`train` reads setup -> loop -> export:

- setup: `_make_accelerator` (mixed precision, trackers, seed), the run folder (`hrssm.run_folder`: one run owns it,
  a fresh run starts it empty), `make_data` (dataset, view collator, loader with `loader_workers`, mean image),
  the model (a warm start from `init_from`: `hrssm.export.load_weights_into`), `hrssm.optim.make_optimizer`
  (AdamW, warmup + cosine), resume (`hrssm.checkpoint.Checkpointer`: the newest good checkpoint, or a given one;
  then metrics.jsonl cut back to the checkpoint's step), `_step_forward` (the model, or its `torch.compile` with
  optim.compile);
- loop: `_optimizer_steps` (views made on the accelerator by `_step_inputs` when the loader sends base batches,
  gradient accumulation, clipping on sync steps, the NaN/inf guard: the step's one host sync); after each step the
  metrics go into a `MetricWindow`, a full window is logged by `_log_window` (tqdm, trackers, metrics.jsonl) and
  judged by `CollapseWatch` (the collapse verdict, `hrssm.diagnostics`); image grids (images/ and the trackers),
  atomic checkpoints (`Checkpointer.save`, written by `hrssm.checkpoint.save_checkpoint`), a clean stop on
  SIGINT/SIGTERM;
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
from typing import Any

import torch
from torch.utils.data import DataLoader

from ._torch import eval_mode
from .checkpoint import Checkpointer
from .config import ModelConfig
from .data import ViewCollator, load_waterbirds, preprocess, resize_center_crop, views_from_base
from .diagnostics import CollapseReport, diagnose_collapse
from .errors import ConfigError, HrssmError
from .export import export, load_weights_into
from .hub import push_export
from .optim import make_optimizer
from .run_folder import RunFolderError, RunLock, claim_run_folder, truncate_log
from .tracking import available_trackers, log_images, run_name_kwargs
from .train_config import CollapseConfig, OptimConfig, TrainConfig
from .viz import image_grid
from .world_model import WorldModel, WorldModelOutput


class CollapseError(HrssmError, RuntimeError):
    """Raised with --stop-on-collapse when the diagnostics say the model collapsed (a checkpoint was saved)."""

    exit_code, prefix = 3, "stopped"


class NonFiniteLossError(HrssmError, RuntimeError):
    """Raised after `collapse.max_nonfinite` consecutive NaN/inf steps (a checkpoint was saved)."""

    exit_code, prefix = 4, "stopped"


class PushError(HrssmError, RuntimeError):
    """Training finished and exported, but the push to the Hugging Face Hub (`hub.push`) failed: exit code 1."""

    exit_code = 1


class TrainingInterrupted(HrssmError, RuntimeError):
    """SIGINT/SIGTERM arrived; a checkpoint was saved first. Exit code 128 + the signal (130, 143)."""

    prefix = "interrupted"

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + int(signum)


class TrainState:
    """What the loop needs, besides model and optimizer (Accelerate's save_state), to resume exactly: the step, the
    count of skipped steps in a row, the LR schedule, the open metric window and whether collapse was announced.
    `hrssm.checkpoint` saves `state_dict` as JSON and `tensors` (the window's sums, per process) as safetensors."""

    def __init__(self, scheduler, window: MetricWindow, collapse: CollapseWatch) -> None:
        self.scheduler, self.window, self.collapse = scheduler, window, collapse
        self.step = 0
        self.nonfinite = 0

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "nonfinite": self.nonfinite, "scheduler": self.scheduler.state_dict(),
                "window": {"steps": self.window.steps, "counts": self.window.counts, "last": self.window.last},
                "collapse_announced": self.collapse.announced}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"window.{key}": value for key, value in self.window.sums.items()}

    def load_state_dict(self, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        self.step, self.nonfinite = int(state["step"]), int(state["nonfinite"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.window.steps, self.window.last = int(state["window"]["steps"]), dict(state["window"]["last"])
        device = self.window.device
        self.window.sums = {k.removeprefix("window."): v.to(device) for k, v in tensors.items()
                            if k.startswith("window.")}
        # (checkpoints before the per-metric counts: every metric was reported at every step)
        self.window.counts = {k: int(state["window"].get("counts", {}).get(k, self.window.steps))
                              for k in self.window.sums}
        self.collapse.announced = bool(state["collapse_announced"])


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


def train(cfg: TrainConfig, resume: bool | str | os.PathLike = False, overwrite: bool = False) -> TrainResult:
    """Train a world model as `cfg` says: setup -> loop -> export. Returns when done, or raises CollapseError /
    NonFiniteLossError / TrainingInterrupted (after saving a checkpoint), or PushError (after the export).

    `resume` (True or "latest") continues from the newest good checkpoint in `cfg.output_dir`; a path continues from
    that checkpoint (a `checkpoints/step_N` folder, or a run folder: its newest good one), also another run's;
    `overwrite` deletes the run there first. Without either the folder must be empty
    (`hrssm.run_folder.RunFolderError` otherwise). The run holds the folder's lock until it returns."""
    start = time.perf_counter()
    accelerator = _make_accelerator(cfg)
    lock = _claim_run_folder(accelerator, Path(cfg.output_dir), bool(resume), overwrite)
    try:
        return _train(accelerator, cfg, resume, start)
    finally:
        if lock is not None:
            lock.release()


def _train(accelerator, cfg: TrainConfig, resume: bool | str | os.PathLike, start: float) -> TrainResult:
    out = Path(cfg.output_dir)
    # -- setup ------------------------------------------------------------------------------------------------------
    model_cfg = cfg.model_config()
    collate, loader, mean_image = make_data(cfg, model_cfg, accelerator)
    model = WorldModel(model_cfg)
    if cfg.init_from is not None:
        unused = load_weights_into(model, cfg.init_from)
        accelerator.print(f"warm start from {cfg.init_from}"
                          + (f" (its loss heads {', '.join(unused)} unused here: left out)" if unused else ""))
    optimizer, scheduler = make_optimizer(model, cfg.optim, early=model.contrastive_warmup_parameters())
    # The scheduler is not prepared: Accelerate would step it once per process; it steps once per optimizer step.
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    window = MetricWindow(accelerator.device)
    collapse = CollapseWatch(cfg.collapse, accelerator.print, after=cfg.optim.contrastive_warmup_steps)
    state = TrainState(scheduler, window, collapse)  # (nothing is registered for Accelerate to pickle)
    checkpointer = Checkpointer(accelerator, out / "checkpoints", cfg.checkpoint.keep, state,
                                identity={"model": model_cfg.to_dict(), "num_processes": accelerator.num_processes})
    if resume:
        checkpointer.resume(None if resume in (True, "latest") else resume)
    _start_run_folder(accelerator, cfg, out, state.step)
    unwrapped: WorldModel = accelerator.unwrap_model(model)
    steps = _optimizer_steps(accelerator, model, _step_forward(model, cfg), optimizer, scheduler, loader, collate,
                             mean_image, state, cfg)
    bar = _progress_bar(accelerator, cfg, state.step)
    # -- loop -------------------------------------------------------------------------------------------------------
    try:
        with _stop_signals() as stop_signal:
            for batch, result, grad_norm in steps:
                state.step += 1
                bar.update(1)
                if grad_norm is None:
                    if _count_nonfinite(accelerator, state, cfg.collapse.max_nonfinite):
                        checkpointer.save()
                        raise NonFiniteLossError(_nonfinite_message(state, window.last))
                else:
                    state.nonfinite = 0
                    unwrapped.update_ema()
                    # the rates this step used: [encoder's groups..., the late-start groups (RSSM, decoder)...]
                    lrs = [base * f(state.step - 1) for base, f in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
                    window.add(result.metrics, grad_norm=grad_norm, lr=torch.tensor(lrs[0]),
                               **({"lr/world_model": torch.tensor(lrs[-1])} if len(lrs) > 2 else {}))
                if state.step % cfg.log.every == 0 and window.ready():
                    _log_window(accelerator, window.reduce(accelerator), state.step, out, bar)
                    if collapse.check(window.last, state.step).collapsed and cfg.collapse.stop:
                        checkpointer.save()
                        raise CollapseError(f"training collapsed at step {state.step} "
                                            f"({', '.join(collapse.report.signals)}; --stop-on-collapse): the "
                                            "message above says what to change; checkpoint saved")
                if state.step % cfg.log.images_every == 0 and accelerator.is_main_process:
                    _save_image_grid(accelerator, unwrapped, batch, result, out, state.step)
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
        bar.close()  # (before the last messages, so they do not land on the bar's line)
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
    from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, ProjectConfiguration, set_seed

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
        # the contrastive warm-up's steps leave the RSSM and decoder without gradients, which DDP must be told
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=cfg.optim.contrastive_warmup_steps > 0)],
    )
    set_seed(cfg.seed)
    return accelerator


def make_data(cfg: TrainConfig, model_cfg: ModelConfig, accelerator
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
        raise ConfigError(f"the {cfg.data.split} split has {len(ds)} images, fewer than one step's batch "
                          f"({cfg.optim.batch_size} x {accelerator.num_processes} processes): lower optim.batch_size")
    on_device = cfg.data.views_on == "accelerator" or (cfg.data.views_on == "auto" and accelerator.device.type != "cpu")
    pre = model_cfg.preprocess
    collate = ViewCollator(model_cfg.image_size, cfg.views, seed=cfg.seed, crop_fraction=pre.crop_fraction,
                           interpolation=pre.interpolation, base_only=on_device)
    loader = DataLoader(ds, batch_size=cfg.optim.batch_size, shuffle=True, drop_last=True, collate_fn=collate,
                        num_workers=loader_workers(cfg.data.num_workers, accelerator.device),
                        pin_memory=accelerator.device.type == "cuda", generator=torch.Generator().manual_seed(cfg.seed))
    mean_image = preprocess([ds[i]["image"] for i in range(min(len(ds), 512))],
                            **model_cfg.preprocessing()).mean(dim=0).to(accelerator.device)
    return collate, loader, mean_image


def loader_workers(setting: int | str, device: torch.device) -> int:
    """DataLoader workers per process for data.num_workers: a number as it is; "auto": 0 on CPU (the step's threads
    already use the cores), else this process's share of the cores minus one for the step itself, from 1 to 8."""
    if setting != "auto":
        return int(setting)
    if device.type == "cpu":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    share = cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))  # set by torchrun / accelerate launch
    return max(1, min(8, share - 1))


def _step_forward(model, cfg: TrainConfig) -> Callable[..., WorldModelOutput]:
    """What the step calls for the losses: the (prepared) model, or with optim.compile its `torch.compile` (the
    parameters are shared; checkpoints and export keep using the model itself)."""
    return torch.compile(model) if cfg.optim.compile else model


def _claim_run_folder(accelerator, out: Path, resume: bool, overwrite: bool) -> RunLock | None:
    """The main process takes the run folder (`claim_run_folder`: lock, empty or resumed or overwritten); every
    process raises the same error if it is refused. The lock (main process), or None."""
    lock, failure, message = None, None, None
    if accelerator.is_main_process:
        try:
            lock = claim_run_folder(out, resume, overwrite)
        except (HrssmError, OSError) as err:
            failure, message = err, str(err)
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        message = broadcast_object_list([message])[0]
    if failure is not None:
        raise failure
    if message is not None:
        raise RunFolderError(message)
    return lock


def _start_run_folder(accelerator, cfg: TrainConfig, out: Path, step: int) -> None:
    """The run folder with its resolved config.yaml, images/ and metrics.jsonl (cut back to `step`, the step a
    resumed run continues from), and the trackers."""
    if accelerator.is_main_process:
        (out / "images").mkdir(exist_ok=True)
        cfg.save(out / "config.yaml")
        truncate_log(out, step)
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


def _optimizer_steps(accelerator, model, forward, optimizer, scheduler, loader, collate: ViewCollator,
                     mean_image: torch.Tensor, state: TrainState, cfg: TrainConfig
                     ) -> Iterator[tuple[dict, WorldModelOutput, torch.Tensor | None]]:
    """(last batch, its output, gradient norm) of each optimizer step from `state.step` on, epoch after epoch
    (resuming mid-epoch skips the batches already seen); the norm is None for a skipped non-finite step. The caller
    counts `state.step` and stops. `forward` computes the losses (`_step_forward`)."""
    batches_per_epoch = len(loader) // cfg.optim.grad_accum
    if batches_per_epoch == 0:
        raise ConfigError(f"one epoch has {len(loader)} batches per process, fewer than optim.grad_accum="
                          f"{cfg.optim.grad_accum}: lower optim.grad_accum or optim.batch_size")
    while state.step < cfg.optim.max_steps:
        epoch, done = divmod(state.step, batches_per_epoch)
        loader.set_epoch(epoch)
        collate.set_epoch(epoch)
        for batch in accelerator.skip_first_batches(loader, done * cfg.optim.grad_accum) if done else loader:
            with accelerator.accumulate(model):
                views, actions = _step_inputs(batch, cfg)
                warmup = state.step < cfg.optim.contrastive_warmup_steps
                if warmup:
                    views = warmup_views(views, cfg.optim)
                result = forward(views, actions, mean_image=mean_image, contrastive_only=warmup)
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


def warmup_views(views: torch.Tensor, optim: OptimConfig) -> torch.Tensor:
    """The views (B, T, C, S, S) a contrastive warm-up step sees: resized to `optim.contrastive_warmup_image_size`
    (square views: a plain antialiased resize), or as they are when that is 0."""
    size = optim.contrastive_warmup_image_size
    return resize_center_crop(views, size) if size else views


def _step_inputs(batch: dict, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's views (B, T, 3, S, S) and actions (B, T, A): made here, on the batch's device, from a base batch
    (data.views_on: accelerator), else as the loader made them. The views are put in the batch (image grids)."""
    if "views" not in batch:
        with torch.no_grad():
            batch["views"], batch["actions"] = views_from_base(batch, cfg.views)
    return batch["views"], batch["actions"]


def _count_nonfinite(accelerator, state: TrainState, limit: int) -> bool:
    """A skipped non-finite step: say so; True once `limit` came in a row (the run stops)."""
    state.nonfinite += 1
    accelerator.print(f"step {state.step}: non-finite loss or gradient, step skipped ({state.nonfinite} in a row)")
    return state.nonfinite >= limit


def _nonfinite_message(state: TrainState, last: dict[str, float]) -> str:
    return (f"{state.nonfinite} consecutive steps had a NaN/inf loss or gradient (last at step {state.step}). "
            f"Last finite metrics: {_short(last)}. Try a lower optim.lr, optim.mixed_precision=no, or check the data "
            "for broken images; checkpoint saved")


class MetricWindow:
    """The metrics of the finite steps since the last log, summed on `device` (no host sync per step); each metric
    is averaged over the steps that reported it (the contrastive warm-up reports fewer)."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.steps = 0
        self.last: dict[str, float] = {}  # the last reduced window

    def add(self, metrics: dict[str, torch.Tensor], **more: torch.Tensor) -> None:
        for key, value in {**metrics, **more}.items():
            self.sums[key] = self.sums.get(key, 0) + value.float()
            self.counts[key] = self.counts.get(key, 0) + 1
        self.steps += 1

    def ready(self) -> bool:
        return self.steps > 0

    def reduce(self, accelerator) -> dict[str, float]:
        """The window's means over steps and processes (one collective, one host sync); starts a new window."""
        keys = sorted(self.sums)
        values = torch.stack([self.sums[k].to(accelerator.device) / self.counts[k] for k in keys])
        if accelerator.num_processes > 1:
            values = accelerator.reduce(values, "mean")
        self.last = dict(zip(keys, values.tolist()))
        self.sums, self.counts, self.steps = {}, {}, 0
        return self.last


def _log_window(accelerator, metrics: dict[str, float], step: int, out: Path, bar) -> None:
    """One logged window: the trackers, metrics.jsonl (main process) and the progress bar."""
    accelerator.log(metrics, step=step)
    if accelerator.is_main_process:
        with (out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
    bar.set_postfix({name: f"{metrics[key]:{spec}}" for key, (name, spec) in _BAR_METRICS.items() if key in metrics})


# what the progress bar shows, when the window has it (the contrastive warm-up has no reconstruction): key -> (name,
# format)
_BAR_METRICS = {"loss": ("loss", ".1f"), "psnr": ("psnr", ".1f"), "recon_std_ratio": ("std_ratio", ".2f")}


class CollapseWatch:
    """The collapse verdict on each logged window from `collapse.warmup_steps` after the contrastive warm-up (`after`
    steps, when the world model starts training) on (`diagnose_collapse`): the full message the first time the model
    collapses, one line each time after."""

    def __init__(self, cfg: CollapseConfig, say: Callable[[str], None], after: int = 0) -> None:
        self.warmup_steps, self.say = after + cfg.warmup_steps, say
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


def _save_image_grid(accelerator, model: WorldModel, batch: dict, result: WorldModelOutput, out: Path,
                     step: int) -> None:
    """The step's grid (views | reconstructions | imagination) as images/step_N.png and to the trackers."""
    grid = _image_grid(model, batch, result)
    if grid is not None:
        grid.save(out / "images" / f"step_{step:07d}.png")
        log_images(accelerator.trackers, {"train/views_reconstructions_imagination": grid}, step)


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
