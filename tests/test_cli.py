"""The command line: console scripts, --help generated from the config dataclasses, --print-config, one override
style, --resume PATH, --init-from, the push at the end of training, tracker names and pictures."""

import importlib
import json
import shutil

import pytest
import tomllib
import yaml
from conftest import BASE_CONFIG, ROOT, digest, tiny_run
from recipes_loader import load_recipe, load_tool

import hrssm
from hrssm.checkpoint import checkpoints
from hrssm.commands import train as train_command
from hrssm.train_config import TrainConfig

WATERBIRDS_224 = ROOT / "recipes" / "configs" / "waterbirds_224.yaml"
SCRIPTS = {"hrssm-train": ("train_hrssm", "recipes"), "hrssm-eval": ("eval_probe", "recipes"),
           "hrssm-export-latents": ("export_latents", "tools"), "hrssm-push": ("push_to_hub", "tools")}


def _help(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as stop:
        train_command.main([*argv, "--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


def test_console_scripts_run_the_package_mains_that_the_scripts_wrap():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == set(SCRIPTS)
    for name, target in scripts.items():
        module, func = target.split(":")
        main = getattr(importlib.import_module(module), func)
        wrapper, folder = SCRIPTS[name]
        script = (load_recipe if folder == "recipes" else load_tool)(wrapper)
        assert script.main is main, name


def test_train_help_lists_every_config_key_with_its_default_and_meaning(capsys):
    text = _help(capsys)
    assert "--model.loss.free_nats_global 1.0\n      floor of the global KL, per image and time step" in text
    rows = TrainConfig().describe()
    assert len(rows) > 80
    for key, _, meaning in rows:
        assert f"  --{key} " in text, key
        assert meaning, f"{key} has no meaning: give its field a comment (or metadata help)"
    assert "--model.preset tiny" in text and "--model.encoder.depth 2" in text  # the tiny preset's values
    assert "--log.trackers [tensorboard]" in text and "--data.revision null" in text


def test_help_with_a_config_file_shows_its_values(capsys):
    text = _help(capsys, "--config", str(WATERBIRDS_224))
    assert "--model.encoder.depth 12" in text and "--model.preprocess.crop_fraction 0.875" in text
    assert "--optim.lr 0.0003" in text and f"values of {WATERBIRDS_224}" in text


def test_print_config_shows_the_resolved_config_and_exits(tmp_path, capsys):
    out = tmp_path / "run"
    assert train_command.main(["--config", str(BASE_CONFIG), "--output_dir", str(out), "--optim.lr", "3e-4",
                               "--model.rssm.local_grid", "2", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert not out.exists()
    assert printed["optim"]["lr"] == 3e-4 and printed["model"]["rssm"]["local_grid"] == 2
    assert printed["model"]["encoder"]["depth"] == 2 and printed["model"]["preset"] == "tiny"  # every model key
    (tmp_path / "printed.yaml").write_text(yaml.safe_dump(printed))
    again = TrainConfig.load(tmp_path / "printed.yaml")
    assert again.model_config() == TrainConfig.load(BASE_CONFIG, ["--model.rssm.local_grid", "2"]).model_config()


def test_a_moved_key_is_refused_naming_its_new_name(capsys):
    assert train_command.main(["--data.crop_fraction", "0.875", "--print-config"]) == 2
    assert "data.crop_fraction is now model.preprocess.crop_fraction" in capsys.readouterr().err


def test_every_recipe_config_loads_and_starts_with_what_it_is_for():
    configs = sorted((ROOT / "recipes" / "configs").glob("*.yaml"))
    assert {c.name for c in configs} >= {"demo.yaml", "waterbirds_224.yaml", "twin_quality.yaml"}
    for path in configs:
        cfg = TrainConfig.load(path)
        cfg.model_config()  # every model key valid
        assert path.read_text().startswith("#")
    twin = TrainConfig.load(ROOT / "recipes" / "configs" / "twin_quality.yaml").model_config()
    assert twin.encoder.pool == "mean" and twin.loss.contrastive_input == "tokens"  # SimCLR trains what z reads


def test_the_base_preset_is_two_vit_s16_streams_and_the_224_config_crops_like_group_dro():
    cfg = TrainConfig.load(WATERBIRDS_224).model_config()
    enc = cfg.encoder
    assert (cfg.image_size, enc.patch_size, enc.width // 2, enc.depth, enc.heads) == (224, 16, 384, 12, 6)
    assert enc.input_filter == "rgb+sobel"  # each stream (RGB, Sobel) is width / 2 = ViT-S's 384 wide
    assert cfg.preprocess.crop_fraction == 0.875


def test_tools_take_model_keys_in_the_training_style(capsys):
    summary = load_tool("model_summary")
    assert summary.main(["--preset", "tiny", "--model.rssm.local_grid", "2", "--model.image_size=32", "--json"]) == 0
    small = json.loads(capsys.readouterr().out)
    assert small["image_size"] == 32
    assert summary.main(["--preset", "tiny", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"]["rssm"] != small["params"]["rssm"]
    assert summary.main(["--set", "rssm.local_grid=2"]) == 2
    assert "model keys only" in capsys.readouterr().err


def test_gradient_balance_suggests_the_contrastive_scale_and_refuses_a_model_without_one(capsys):
    tool = load_tool("gradient_balance")
    small = ["--preset", "tiny", "--model.image_size", "32", "--model.rssm.local_grid", "2", "--batch-size", "4"]
    assert tool.main([*small, "--steps", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["ratios"]) == len(out["reference_ratios"]) == 1 and out["image_size"] == 32
    assert out["median"] > 1 and out["reference_median"] > 1  # at scale 1, reconstruction's gradient dominates
    assert 0 < out["suggested_contrastive_scale"] < float("inf") and out["configured_contrastive_scale"] == 2e4
    assert tool.main([*small, "--steps", "5", "--model.loss.contrastive", "none"]) == 2
    assert "--model.loss.contrastive simclr" in capsys.readouterr().err
    assert tool.main([*small, "--steps", "5", "--model.loss.objective", "latent_prediction"]) == 2
    assert "use --model.loss.objective reconstruction" in capsys.readouterr().err
    assert tool.main([*small, "--steps", "3"]) == 2
    assert "use --steps 5 or more" in capsys.readouterr().err


def test_resume_path_continues_from_that_checkpoint(synthetic_disk, tmp_path, capsys):
    first = tmp_path / "first"
    args = tiny_run(synthetic_disk, first, "--collapse.warmup_steps", "1000")
    assert train_command.main(args) == 0
    assert [s for s, _ in checkpoints(first / "checkpoints")] == [3, 6]
    step3 = checkpoints(first / "checkpoints")[0][1]
    second = tmp_path / "second"  # another run folder, started from the first run's step 3
    assert train_command.main([*tiny_run(synthetic_disk, second, "--collapse.warmup_steps", "1000"),
                               "--resume", str(step3)]) == 0
    assert f"resumed from {step3} (step 3)" in capsys.readouterr().out
    assert digest(hrssm.load_world_model(second)) == digest(hrssm.load_world_model(first))
    assert train_command.main([*args, "--resume", str(tmp_path / "nope")]) == 2
    assert "--resume" in capsys.readouterr().err


def test_init_from_starts_from_the_exports_weights(synthetic_disk, tmp_path, capsys):
    source = tmp_path / "source"
    assert train_command.main(tiny_run(synthetic_disk, source)) == 0
    warm = tmp_path / "warm"
    # a learning rate so small that one step cannot move the weights measurably: the start is what is compared
    assert train_command.main([*tiny_run(synthetic_disk, warm, "--optim.max_steps", "1", "--optim.lr", "1e-12",
                                         "--model.loss.recon_scale", "5"), "--init-from", str(source)]) == 0
    assert f"warm start from {source}" in capsys.readouterr().out
    a, b = hrssm.load_world_model(source).state_dict(), hrssm.load_world_model(warm).state_dict()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6
    assert hrssm.load_world_model(warm).cfg.loss.recon_scale == 5  # model.* keys override the export's config
    assert train_command.main([*tiny_run(synthetic_disk, tmp_path / "bad"), "--init-from", str(source),
                               "--model.encoder.width", "64"]) == 2
    assert "Keep the export's architecture" in capsys.readouterr().err
    # edit training from a preset export: no contrastive loss, so the export's projectors are left out, all else kept
    edit = tmp_path / "edit"
    assert train_command.main([*tiny_run(synthetic_disk, edit, "--optim.max_steps", "1", "--optim.lr", "1e-12",
                                         "--views.mode", "edit", "--model.loss.contrastive", "none"),
                               "--init-from", str(source)]) == 0
    assert "(its loss heads projector, sobel_projector unused here: left out)" in capsys.readouterr().out
    c = hrssm.load_world_model(edit).state_dict()
    assert set(a) - set(c) == {k for k in a if k.startswith(("projector.", "sobel_projector."))} != set()
    assert max(float((a[k] - c[k]).abs().max()) for k in c) < 1e-6


def test_push_at_the_end_of_training_is_private_and_uploads_the_export(synthetic_disk, tmp_path, monkeypatch,
                                                                       capsys):
    from huggingface_hub import HfApi

    hub, created = tmp_path / "hub", []

    def create_repo(self, repo_id, **kw):
        created.append((repo_id, kw))

    def upload_folder(self, *, folder_path, repo_id, **kw):
        shutil.copytree(folder_path, hub / repo_id)
        return f"https://hub.invalid/{repo_id}/commit/1"

    args = tiny_run(synthetic_disk, tmp_path / "run", "--hub.push", "true", "--hub.model_id", "me/x")
    assert train_command.main(args) == 1  # offline: trained and exported, the push fails and says how to retry
    err = capsys.readouterr().err
    assert "the push to me/x failed" in err and "hrssm-push" in err
    assert (tmp_path / "run" / "export" / "model.safetensors").is_file()
    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    assert train_command.main([*args, "--output_dir", str(tmp_path / "run2")]) == 0
    assert created == [("me/x", {"private": True, "exist_ok": True})]
    assert "pushed the export to me/x (private)" in capsys.readouterr().out
    assert digest(hrssm.load(hub / "me/x")) == digest(hrssm.load(tmp_path / "run2"))
    assert train_command.main(["--hub.push", "true", "--print-config"]) == 2
    assert "needs hub.model_id" in capsys.readouterr().err


def test_trackers_get_the_project_the_run_name_and_the_image_grids(synthetic_disk, tmp_path, monkeypatch):
    from accelerate import Accelerator

    from hrssm import tracking, trainer

    inits, images = [], []
    monkeypatch.setattr(Accelerator, "init_trackers", lambda self, project, config=None, init_kwargs=None: inits.append(
        (project, init_kwargs)))
    monkeypatch.setattr(trainer, "log_images", lambda trackers, pictures, step: images.append((set(pictures), step)))
    trainer.train(TrainConfig.load(None, tiny_run(synthetic_disk, tmp_path / "myrun", "--log.project", "proj")))
    assert inits == [("proj", {"wandb": {"name": "myrun"}, "mlflow": {"run_name": "myrun"}})]
    grid = "train/views_reconstructions_imagination"
    assert images == [({grid}, 3), ({grid}, 6)]
    assert tracking.run_name_kwargs("named", tmp_path)["wandb"] == {"name": "named"}


def test_log_images_gives_each_tracker_its_kind_of_image():
    from PIL import Image

    from hrssm.tracking import log_images

    class Writer:
        def __init__(self):
            self.calls = []

        def add_image(self, tag, array, step, dataformats):
            self.calls.append((tag, array.shape, step, dataformats))

        def flush(self):
            pass

    tensorboard = type("TB", (), {"name": "tensorboard", "writer": Writer()})()
    other = type("WandB", (), {"name": "wandb", "calls": [],
                               "log_images": lambda self, values, step: self.calls.append((values, step))})()
    image = Image.new("RGB", (6, 4))
    log_images([tensorboard, other], {"eval/x": image}, 7)
    assert tensorboard.writer.calls == [("eval/x", (4, 6, 3), 7, "HWC")]
    assert other.calls == [({"eval/x": [image]}, 7)]


def test_training_writes_tensorboard_events_with_the_image_grids_and_evaluation_pictures(synthetic_disk, tmp_path):
    pytest.importorskip("tensorboard", reason="a dependency of hrssm (pyproject): the README's install has it")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from hrssm.tracking import log_pictures_to_run

    out = tmp_path / "run"
    assert train_command.main([*tiny_run(synthetic_disk, out), "--log.trackers", "[tensorboard]"]) == 0
    assert log_pictures_to_run(out, {"eval/samples": sorted((out / "images").glob("*.png"))[0]}) == ["tensorboard"]
    logs = EventAccumulator(str(out / "logs" / "hrssm"), size_guidance={"images": 0}).Reload()
    assert {"loss", "recon_std_ratio"} <= set(logs.Tags()["scalars"])
    assert {"train/views_reconstructions_imagination", "eval/samples"} <= set(logs.Tags()["images"])
    assert [e.step for e in logs.Images("eval/samples")] == [6]


def test_encoding_shows_a_progress_bar_per_split(synthetic_disk, capsys):
    from hrssm.data import load_waterbirds
    from hrssm.report import feature_sets

    model = hrssm.WorldModel(hrssm.ModelConfig.preset("tiny", image_size=32, rssm={"local_grid": 2}))
    feature_sets(model, {"test": load_waterbirds(synthetic_disk, "test")}, floors=True, progress=True)
    err = capsys.readouterr().err
    assert "encoding test:" in err and "encoding test, random init:" in err and "batch" in err
