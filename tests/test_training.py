"""Training with Accelerate: config errors, run folder, exact resume, atomic checkpoints, NaN and collapse stops,
signals, and a 2-process CPU run."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import BASE_CONFIG, ROOT, digest, tiny_run

from hrssm import trainer as trainer_mod
from hrssm.checkpoint import checkpoints, latest_checkpoint
from hrssm.data import ViewConfig
from hrssm.diagnostics import diagnose_collapse
from hrssm.train_config import TrainConfig
from hrssm.trainer import NonFiniteLossError, TrainingInterrupted, train
from hrssm.world_model import WorldModel

SCRIPT = ROOT / "recipes" / "train_hrssm.py"


def _cfg(data, out, *extra):
    """A tiny, fast run of the demo config on the 32x32 synthetic fixture."""
    return TrainConfig.load(BASE_CONFIG, tiny_run(data, out, "--collapse.warmup_steps", "1000", *extra))


@pytest.mark.parametrize("args, key", [
    (["--optim.lrr", "1"], "optim.lrr"),
    (["--optim.batch_size", "0"], "optim.batch_size=0"),
    (["--views.mode", "shuffle"], "views.mode='shuffle' must be one of 'repeat', 'augment', 'edit'"),
    (["--views.num_view", "2"], "num_view"),
    (["--model.loss.recon_scal", "2"], "model.loss.recon_scal"),
    (["--model.rssm.local_grid", "3"], "rssm.local_grid=3"),
    (["--optim.mixed_precision", "fp8"], "optim.mixed_precision='fp8'"),
    (["--log.trackers", "[comet]"], "comet"),
    (["--bogus", "1"], "bogus"),
    (["--optim.lr"], "needs a value"),
    (["--optim.contrastive_warmup_steps", "2"], "model.loss.contrastive='none'"),
    (["--optim.contrastive_warmup_steps", "1200"], "optim.contrastive_warmup_steps=1200 must be below"),
    (["--optim.contrastive_warmup_image_size", "36", "--optim.contrastive_warmup_steps", "2",
      "--model.loss.contrastive", "simclr", "--model.loss.contrastive_input", "tokens"],
     "optim.contrastive_warmup_image_size=36 must be a multiple of model.encoder.patch_size=8"),
    (["--optim.contrastive_warmup_image_size", "72", "--optim.contrastive_warmup_steps", "2",
      "--model.loss.contrastive", "simclr", "--model.loss.contrastive_input", "tokens"],
     "no larger than model.image_size=64"),
    (["--model.loss.contrastive", "simclr", "--views.num_views", "1"],
     "model.loss.contrastive='simclr' (the presets' default) compares the views of an image, but views.num_views=1"),
    (["--model.loss.contrastive", "barlow", "--views.mode", "edit"], "Set model.loss.contrastive=none for edit"),
    (["--model.loss.contrastive", "simclr", "--optim.batch_size", "1"], "use optim.batch_size >= 2 (SimCLR"),
])
def test_bad_config_fails_before_training_naming_the_key(args, key, capsys):
    from recipes_loader import load_recipe

    main = load_recipe("train_hrssm").main
    assert main(["--config", str(BASE_CONFIG), *args]) == 2
    assert key in capsys.readouterr().err


@pytest.mark.parametrize("section", ["data", "views", "model", "model.loss", "optim", "log", "checkpoint", "collapse"])
def test_an_unknown_key_in_any_section_is_refused_with_the_valid_keys(section):
    with pytest.raises(ValueError, match=rf"unknown key {section}.nope; valid keys of {section}: \w+, "):
        TrainConfig.load(None, [f"--{section}.nope", "1"])


def test_values_take_the_type_of_their_field():
    cfg = TrainConfig.load(None, ["--optim.betas", "[0.8, 0.9]", "--views.crop_scale", "[0.5, 1]"])
    assert cfg.optim.betas == (0.8, 0.9) and cfg.views.crop_scale == (0.5, 1)
    assert isinstance(cfg.views, ViewConfig) and cfg.model_config().action_dim == cfg.views.action_dim


def test_run_folder_holds_config_metrics_images_checkpoints_export(synthetic_disk, tmp_path):
    res = train(_cfg(synthetic_disk, tmp_path / "run"))
    out = tmp_path / "run"
    assert res.step == 6 and res.num_processes == 1
    assert TrainConfig.load(out / "config.yaml").optim.max_steps == 6  # the resolved config reloads
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4, 6]
    for key in ("loss", "recon_std_ratio", "psnr", "psnr_mean_image", "kl_global_raw", "kl_local_raw",
                "kl_global_floor_share", "active_local", "grad_norm", "lr", "kl_global/t1"):
        assert key in lines[-1]
    assert sorted(p.name for p in (out / "images").iterdir()) == ["step_0000003.png", "step_0000006.png"]
    assert [s for s, _ in checkpoints(out / "checkpoints")] == [3, 6]
    loaded = WorldModel.from_pretrained(out / "export")
    assert digest(loaded) == digest(res.model)


@pytest.mark.parametrize("extra", [
    ["--data.views_on", "loader"],
    ["--data.views_on", "accelerator"],
    # cut at step 4 with a log window open over the end of the contrastive warm-up (steps 1-3; one log, at 5): its
    # steps 1-3 reported no reconstruction metrics, step 4 did
    ["--optim.contrastive_warmup_steps", "3", "--log.every", "5", "--model.loss.contrastive", "simclr",
     "--model.loss.contrastive_input", "tokens"],
], ids=["views_in_loader", "views_on_accelerator", "contrastive_warmup"])
def test_resume_after_interruption_equals_an_uninterrupted_run(synthetic_disk, tmp_path, monkeypatch, extra):
    def run(name, resume=False):
        return train(_cfg(synthetic_disk, tmp_path / name, "--checkpoint.every", "100", *extra), resume=resume)

    full = run("full")

    calls = {"n": 0}

    def stop_at_step_4(accelerator, stop_signal):
        calls["n"] += 1
        return calls["n"] == 4

    monkeypatch.setattr(trainer_mod, "_stop_requested", stop_at_step_4)
    with pytest.raises(TrainingInterrupted, match="at step 4; checkpoint saved"):
        run("cut")
    assert [s for s, _ in checkpoints(tmp_path / "cut" / "checkpoints")] == [4]
    from safetensors.torch import load_file

    at_step_4 = WorldModel(full.model.cfg)
    at_step_4.load_state_dict(load_file(tmp_path / "cut" / "checkpoints" / "step_00000004" / "model.safetensors"))
    assert digest(at_step_4) != digest(full.model)  # the last two steps do change the weights
    monkeypatch.undo()
    resumed = run("cut", resume=True)
    assert resumed.step == 6
    assert digest(resumed.model) == digest(full.model)
    # the logged windows too, the one the cut split included
    assert (tmp_path / "cut" / "metrics.jsonl").read_text() == (tmp_path / "full" / "metrics.jsonl").read_text()


def test_contrastive_warmup_trains_the_encoder_first_then_the_whole_world_model(synthetic_disk, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "run"
    cfg = _cfg(synthetic_disk, out, "--optim.contrastive_warmup_steps", "2", "--optim.max_steps", "4",
               "--log.every", "1", "--checkpoint.every", "1", "--checkpoint.keep", "4",
               "--model.loss.contrastive", "simclr", "--model.loss.contrastive_input", "tokens")
    train(cfg)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all("contrastive_loss" in r for r in rows)
    assert [("recon_loss" in r, "kl_global_raw" in r) for r in rows] == [(False, False)] * 2 + [(True, True)] * 2
    # the RSSM and decoder's own schedule (optim.late_start_schedule) starts with them
    assert [r["lr/world_model"] > 0 for r in rows] == [False, False, True, True]
    weights = {step: load_file(path / "model.safetensors") for step, path in checkpoints(out / "checkpoints")}

    def moved(a: int, b: int) -> set[str]:
        return {name.split(".")[0] for name in weights[a] if not torch.equal(weights[a][name], weights[b][name])}

    assert moved(1, 2) == {"encoder", "projector"}  # a warm-up step: the RSSM and decoder stay as they were
    assert {"encoder", "projector", "rssm", "decoder"} <= moved(2, 3)


def test_the_contrastive_warmup_trains_on_views_of_its_own_size_then_the_world_model_on_full_ones(
        synthetic_disk, tmp_path, monkeypatch):
    seen = []
    forward = WorldModel.forward

    def spy(self, views, actions, **kwargs):
        seen.append((tuple(views.shape[-2:]), kwargs["contrastive_only"]))
        return forward(self, views, actions, **kwargs)

    monkeypatch.setattr(WorldModel, "forward", spy)
    cfg = _cfg(synthetic_disk, tmp_path / "run", "--optim.contrastive_warmup_steps", "2", "--optim.max_steps", "3",
               "--optim.contrastive_warmup_image_size", "16", "--model.loss.contrastive", "simclr",
               "--model.loss.contrastive_input", "tokens")
    assert cfg.model_config().image_size == 32
    train(cfg)
    assert seen == [((16, 16), True)] * 2 + [((32, 32), False)]


def test_after_a_contrastive_warmup_the_rssm_and_decoder_get_a_schedule_of_their_own():
    from hrssm.optim import make_optimizer

    cfg = TrainConfig.load(BASE_CONFIG, ["--optim.warmup_steps", "10", "--optim.contrastive_warmup_steps", "60",
                                         "--optim.max_steps", "100", "--model.loss.contrastive", "simclr",
                                         "--model.loss.contrastive_input", "tokens"])
    model = WorldModel(cfg.model_config())
    early = model.contrastive_warmup_parameters()
    optimizer, scheduler = make_optimizer(model, cfg.optim, early=early)
    early_ids = {id(p) for p in early}
    late_ids = {id(p) for g in optimizer.param_groups[2:] for p in g["params"]}
    assert early_ids == {id(p) for g in optimizer.param_groups[:2] for p in g["params"]}
    assert late_ids == {id(p) for p in model.parameters()} - early_ids
    assert all(id(p) in late_ids for p in [*model.rssm.parameters(), *model.decoder.parameters()])
    lrs = []
    for _ in range(100):
        lrs.append(scheduler.get_last_lr())
        optimizer.step()
        scheduler.step()
    peak, low = cfg.optim.lr, cfg.optim.lr * cfg.optim.min_lr_ratio
    assert [lr[2] for lr in lrs[:60]] == [0.0] * 60  # not trained yet: no weight decay either
    assert lrs[59][0] < 0.5 * peak  # the run's cosine is past its middle when the world model starts ...
    assert max(lr[2] for lr in lrs[60:]) == pytest.approx(peak)  # ... the late groups warm up to the peak (8 steps)
    assert lrs[68][2] == pytest.approx(peak) and lrs[-1][2] > low and lrs[-1][0] > low
    plain = TrainConfig.load(BASE_CONFIG, ["--optim.contrastive_warmup_steps", "60", "--optim.max_steps", "100",
                                           "--optim.late_start_schedule", "false", "--model.loss.contrastive",
                                           "simclr", "--model.loss.contrastive_input", "tokens"]).optim
    optimizer, _ = make_optimizer(model, plain, early=early)
    assert len(optimizer.param_groups) == 2  # one schedule for every parameter


def test_resuming_a_run_with_the_other_schedule_layout_says_which_setting_to_use(synthetic_disk, tmp_path):
    from hrssm.checkpoint import CheckpointError

    out = tmp_path / "run"
    args = ("--optim.contrastive_warmup_steps", "1", "--optim.max_steps", "3", "--checkpoint.every", "2",
            "--model.loss.contrastive", "simclr", "--model.loss.contrastive_input", "tokens")
    train(_cfg(synthetic_disk, out, *args, "--optim.late_start_schedule", "false"))  # one schedule: 2 groups
    with pytest.raises(CheckpointError, match="--optim.late_start_schedule false"):
        train(_cfg(synthetic_disk, out, *args), resume=True)


def test_collapse_watch_counts_its_warmup_from_the_end_of_the_contrastive_warmup():
    from hrssm.train_config import CollapseConfig

    said = []
    watch = trainer_mod.CollapseWatch(CollapseConfig(warmup_steps=50), said.append, after=350)
    gray = {"recon_std_ratio": 0.01}  # every decoded image the same: collapsed
    assert not watch.check(gray, 399).collapsed and not said  # the world model has trained 49 steps
    assert watch.check(gray, 400).collapsed and "gray" in said[0]


def test_metric_window_averages_each_metric_over_the_steps_that_reported_it():
    window = trainer_mod.MetricWindow()

    class One:
        num_processes, device = 1, "cpu"

    window.add({"a": torch.tensor(1.0)})
    window.add({"a": torch.tensor(3.0), "b": torch.tensor(5.0)})
    assert window.reduce(One()) == {"a": 2.0, "b": 5.0}


def test_views_made_on_the_accelerator_train_the_model_the_loader_views_train(synthetic_disk, tmp_path):
    in_loader = train(_cfg(synthetic_disk, tmp_path / "loader", "--data.views_on", "loader"))
    on_device = train(_cfg(synthetic_disk, tmp_path / "device", "--data.views_on", "accelerator"))
    assert digest(in_loader.model) == digest(on_device.model)


@pytest.mark.parametrize("setting, device, cores, local, want", [
    ("auto", "cpu", 16, 1, 0), ("auto", "cuda", 16, 1, 8), ("auto", "cuda", 16, 4, 3), ("auto", "cuda", 2, 2, 1),
    (3, "cpu", 16, 1, 3),
])
def test_loader_workers_default_per_device(setting, device, cores, local, want, monkeypatch):
    monkeypatch.setattr(trainer_mod.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local))
    import torch

    assert trainer_mod.loader_workers(setting, torch.device(device)) == want


def test_num_workers_must_be_a_count_or_auto():
    with pytest.raises(ValueError, match="data.num_workers='many' must be an integer >= 0 or 'auto'"):
        TrainConfig.load(None, ["--data.num_workers", "many"])
    assert TrainConfig.load(None, ["--optim.mixed_precision", "no"]).optim.mixed_precision == "no"  # not YAML false


@pytest.mark.slow
@pytest.mark.skipif(not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "clang++")),
                    reason="torch.compile on CPU (inductor) needs a C++ compiler: apt install g++")
def test_compiled_training_steps_agree_with_eager_ones(synthetic_disk, tmp_path, monkeypatch):
    """optim.compile: torch.compile (inductor: a C++ compiler on CPU) of the model step; with inductor drawing its
    random numbers as eager torch does, both runs see the same samples and must agree to float tolerance."""
    import torch._inductor.config as inductor

    monkeypatch.setattr(inductor, "fallback_random", True)
    common = ["--optim.max_steps", "2", "--log.every", "1", "--model.encoder.depth", "1", "--model.decoder.depth", "1"]
    eager = train(_cfg(synthetic_disk, tmp_path / "eager", *common))
    compiled = train(_cfg(synthetic_disk, tmp_path / "compiled", *common, "--optim.compile", "true"))

    def losses(run):
        return [json.loads(line)["loss"] for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]

    assert losses("compiled") == pytest.approx(losses("eager"), rel=1e-4)
    lr = TrainConfig.load(BASE_CONFIG).optim.lr
    for (name, a), b in zip(eager.model.state_dict().items(), compiled.model.state_dict().values()):
        assert (a - b).abs().max() < 4 * lr, name  # Adam turns a tiny gradient difference into at most ~lr a step


@pytest.mark.slow
def test_bf16_training_on_cpu_keeps_finite_losses_and_does_not_collapse(synthetic_disk, tmp_path):
    out = tmp_path / "bf16"
    proc = _run_script("--config", str(BASE_CONFIG), *tiny_run(synthetic_disk, out, "--optim.mixed_precision", "bf16",
                       "--optim.max_steps", "40", "--optim.warmup_steps", "5", "--optim.batch_size", "8",
                       "--log.every", "10", "--log.images_every", "1000", "--checkpoint.every", "1000",
                       "--collapse.warmup_steps", "1000"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    windows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(v) for w in windows for v in w.values())
    assert windows[-1]["loss"] < 0.6 * windows[0]["loss"]
    report = diagnose_collapse(windows[-1])
    assert not report.collapsed, report.message


def test_a_killed_checkpoint_write_leaves_the_previous_one_loadable(synthetic_disk, tmp_path, monkeypatch):
    from accelerate import Accelerator

    real_save = Accelerator.save_state
    calls = {"n": 0}

    def dying_save(self, output_dir=None, **kw):
        calls["n"] += 1
        if calls["n"] == 2:  # the second checkpoint dies half-way
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / "model.safetensors").write_bytes(b"half a file")
            raise OSError("killed mid-write")
        return real_save(self, output_dir, **kw)

    monkeypatch.setattr(Accelerator, "save_state", dying_save)
    with pytest.raises(OSError, match="killed mid-write"):
        train(_cfg(synthetic_disk, tmp_path / "run"))
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "step_00000003"
    resumed = train(_cfg(synthetic_disk, tmp_path / "run"), resume=True)
    assert resumed.step == 6
    assert not list((tmp_path / "run" / "checkpoints").glob(".tmp-*"))  # the half-written one was cleaned up


def test_nan_losses_are_skipped_then_stop_with_the_last_finite_metrics(synthetic_disk, tmp_path, monkeypatch):
    real_forward = WorldModel.forward
    calls = {"n": 0}

    def nan_after_4(self, *a, **kw):
        out = real_forward(self, *a, **kw)
        calls["n"] += 1
        if calls["n"] > 4:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(WorldModel, "forward", nan_after_4)
    with pytest.raises(NonFiniteLossError, match=r"3 consecutive steps .* Last finite metrics: loss="):
        train(_cfg(synthetic_disk, tmp_path / "run", "--optim.max_steps", "20", "--collapse.max_nonfinite", "3"))


@pytest.mark.slow
def test_stop_on_collapse_fires_on_a_collapsed_config_not_on_the_demo(synthetic_disk, tmp_path):
    common = ["--data.source", str(synthetic_disk), "--model.image_size", "32", "--optim.batch_size", "8",
              "--log.every", "20", "--log.trackers", "[]", "--log.progress", "false", "--collapse.warmup_steps", "100",
              "--optim.max_steps", "160", "--checkpoint.every", "1000", "--stop-on-collapse"]
    collapsed = _run_script("--config", str(BASE_CONFIG), "--output_dir",
                            str(tmp_path / "bad"), "--model.loss.recon_scale", "1e-4", "--model.loss.free_nats_global",
                            "0", "--model.loss.free_nats_local", "0", *common)
    assert collapsed.returncode == 3, collapsed.stderr[-2000:]
    assert "COLLAPSE DETECTED" in collapsed.stdout and "no_better_than_mean_image" in collapsed.stdout
    healthy = _run_script("--config", str(BASE_CONFIG), "--output_dir",
                          str(tmp_path / "good"), *common)
    assert healthy.returncode == 0, healthy.stdout[-2000:] + healthy.stderr[-2000:]
    assert "COLLAPSE" not in healthy.stdout


def _run_script(*args, timeout=300):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=ROOT)


@pytest.mark.slow
def test_sigint_saves_a_checkpoint_and_exits_130(synthetic_disk, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--config", str(BASE_CONFIG), "--data.source",
         str(synthetic_disk), "--output_dir", str(out), "--model.image_size", "32", "--optim.batch_size", "4",
         "--optim.max_steps", "100000", "--log.every", "2", "--log.trackers", "[]", "--log.progress", "false",
         "--checkpoint.every", "100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "stopped by SIGINT" in err
    assert latest_checkpoint(out / "checkpoints") is not None


@pytest.mark.slow
def test_two_cpu_processes_train_one_ddp_model(synthetic_disk, tmp_path):
    """The documented multi-CPU launch: ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 (a subprocess, not a fork
    of this process: forking after torch has started its thread pool can deadlock)."""
    out = tmp_path / "ddp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(ROOT / "tests" / "ddp_worker.py"), str(out), str(BASE_CONFIG),
                           *tiny_run(synthetic_disk, out, "--optim.max_steps", "4", "--collapse.warmup_steps", "1000")],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["num_processes"] == 2 and r["prepared_model"] == "DistributedDataParallel" for r in ranks)
    from safetensors.torch import load_file

    assert digest(load_file(out / "rank0.safetensors")) == digest(load_file(out / "rank1.safetensors"))
    assert (out / "export" / "model.safetensors").exists()


def test_progress_bar_shows_only_the_metrics_the_window_has(tmp_path):
    class Bar:
        def set_postfix(self, values):
            self.values = values

    class One:
        is_main_process = True

        def log(self, metrics, step):
            pass

    bar = Bar()
    trainer_mod._log_window(One(), {"loss": 75299.64, "contrastive_loss": 3.76}, 25, tmp_path, bar)
    assert bar.values == {"loss": "75299.6"}  # a contrastive warm-up window: no reconstruction, no "psnr=nan"
    trainer_mod._log_window(One(), {"loss": 12.0, "psnr": 21.43, "recon_std_ratio": 0.8}, 50, tmp_path, bar)
    assert bar.values == {"loss": "12.0", "psnr": "21.4", "std_ratio": "0.80"}
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [25, 50]
