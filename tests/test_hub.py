"""One model contract across the Hugging Face stack: save_pretrained / push_to_hub / from_pretrained write and read
what hrssm.export / hrssm.load do, strictly, with the hub options passed on; local folders stand in for the hub."""

import json
import os
import shutil

import pytest
import torch
from conftest import hub_cache, tiny_run
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file

import hrssm
from hrssm import ModelConfig, WorldModel
from hrssm._io import is_hub_id
from hrssm.export import ENCODER_FILE, FORMAT_VERSION, MODEL_FILE, ExportError, export
from hrssm.train_config import TrainConfig

FILES = ["README.md", "config.json", ENCODER_FILE, MODEL_FILE]


def _model(seed=0, **overrides):
    torch.manual_seed(seed)
    return WorldModel(ModelConfig.preset("tiny", image_size=32, rssm={"local_grid": 2}, **overrides)).eval()


def _images(n=5):
    return torch.randint(0, 256, (n, 3, 40, 36), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = _model()
    folder = tmp_path_factory.mktemp("hub") / "saved"
    model.save_pretrained(folder)
    return model, folder


def test_save_pretrained_writes_the_export_and_every_loader_gives_identical_features(saved, tmp_path):
    model, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == FILES
    assert json.loads((folder / "config.json").read_text())["hrssm_format"] == FORMAT_VERSION
    export(model, tmp_path / "export")
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == FILES
    assert load_file(tmp_path / "export" / MODEL_FILE).keys() == load_file(folder / MODEL_FILE).keys()
    ref = model.encode(_images())
    cache = hub_cache(tmp_path / "cache", "me/hrssm-tiny", {"main": folder})
    for loaded in (hrssm.load(folder), hrssm.load_world_model(folder), WorldModel.from_pretrained(folder),
                   hrssm.load("me/hrssm-tiny", cache_dir=cache),
                   WorldModel.from_pretrained("me/hrssm-tiny", cache_dir=cache, local_files_only=True)):
        assert torch.equal(loaded.encode(_images()), ref), type(loaded).__name__
    reloaded = WorldModel.from_pretrained(folder)
    for (k, a), (_, b) in zip(reloaded.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), k


def test_push_to_hub_uploads_the_same_export(saved, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    hub = tmp_path / "hub"
    calls = {}
    def create_repo(self, repo_id, **kw):
        calls["create"] = (repo_id, kw)
        return type("RepoUrl", (), {"repo_id": repo_id})()

    monkeypatch.setattr(HfApi, "create_repo", create_repo)

    def upload_folder(self, *, folder_path, repo_id, **kw):
        shutil.copytree(folder_path, hub / repo_id)
        return f"https://hub.invalid/{repo_id}"

    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    model, _ = saved
    model.push_to_hub("me/pushed", private=True)
    assert calls["create"][0] == "me/pushed" and calls["create"][1]["private"] is True
    assert sorted(p.name for p in (hub / "me/pushed").iterdir()) == FILES
    assert torch.equal(hrssm.load(hub / "me/pushed").encode(_images()), model.encode(_images()))


def test_revision_picks_the_snapshot_and_every_hub_option_reaches_the_client(saved, tmp_path, monkeypatch):
    model, folder = saved
    other = tmp_path / "other"
    _model(seed=1).save_pretrained(other)
    cache = hub_cache(tmp_path / "cache", "me/m", {"main": other, "v1": folder})
    assert torch.equal(hrssm.load("me/m", cache_dir=cache, revision="v1").encode(_images()),
                       model.encode(_images()))
    assert not torch.equal(hrssm.load("me/m", cache_dir=cache).encode(_images()), model.encode(_images()))

    import huggingface_hub

    seen = []
    real = huggingface_hub.snapshot_download
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo, **kw: seen.append(kw) or real(
        repo, **{**kw, "force_download": False, "token": None}))
    options = {"revision": "v1", "token": "hf_x", "cache_dir": cache, "local_files_only": True,
               "force_download": True}
    hrssm.load("me/m", **options)
    hrssm.load_world_model("me/m", **options)
    WorldModel.from_pretrained("me/m", **options)
    assert len(seen) == 3
    for kw in seen:
        assert {k: kw[k] for k in options} == options


@pytest.mark.parametrize("loader", ["load", "load_world_model", "from_pretrained", "hub load", "hub from_pretrained",
                                    "init_from"])
@pytest.mark.parametrize("kind", ["deleted tensor", "renamed tensor", "wrong shape", "newer format"])
def test_every_loading_path_refuses_a_broken_export_naming_what_is_wrong(kind, loader, saved, synthetic_disk,
                                                                         tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(saved[1], broken)
    name = "encoder.rgb.norm.weight"  # in both weight files (the RGB stream of the two)
    if kind == "newer format":
        cfg = json.loads((broken / "config.json").read_text())
        (broken / "config.json").write_text(json.dumps({**cfg, "hrssm_format": FORMAT_VERSION + 1}))
        expected = f"format {FORMAT_VERSION + 1}, newer than this hrssm understands"
    else:
        for file in (ENCODER_FILE, MODEL_FILE):
            state = load_file(broken / file)
            tensor = state.pop(name)
            if kind == "renamed tensor":
                state[name + "_renamed"] = tensor
            elif kind == "wrong shape":
                state[name] = tensor[:3].clone()
            save_file(state, broken / file, metadata={"hrssm_format": str(FORMAT_VERSION)})
        expected = {"deleted tensor": rf"missing, e.g. \['{name}'\]",
                    "renamed tensor": rf"missing, e.g. \['{name}'\].*unexpected.*'{name}_renamed'",
                    "wrong shape": rf"{name}: file \(3,\) vs model \(128,\)"}[kind]
    cache = hub_cache(tmp_path / "cache", "me/broken", {"main": broken})
    with pytest.raises(ExportError, match=expected):
        if loader == "load":
            hrssm.load(broken)
        elif loader == "load_world_model":
            hrssm.load_world_model(broken)
        elif loader == "from_pretrained":
            WorldModel.from_pretrained(broken)
        elif loader == "hub load":
            hrssm.load("me/broken", cache_dir=cache)
        elif loader == "hub from_pretrained":
            WorldModel.from_pretrained("me/broken", cache_dir=cache)
        else:
            from hrssm.trainer import train

            train(TrainConfig.load(None, tiny_run(synthetic_disk, tmp_path / "run", "--init_from", str(broken))))


def test_a_missing_path_that_looks_local_is_a_missing_folder_not_a_hub_repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for missing in ("runs/missing", "./missing", "missing/a/b", "bad name"):
        assert not is_hub_id(missing), missing
        with pytest.raises(FileNotFoundError, match="does not exist"):
            hrssm.load(missing)
        with pytest.raises(FileNotFoundError, match="does not exist"):
            WorldModel.from_pretrained(missing)
    assert is_hub_id("someone/hrssm-model") and is_hub_id("hrssm-model")
    with pytest.raises(ExportError, match="could not be fetched from the Hugging Face Hub"):
        WorldModel.from_pretrained("someone/hrssm-model")
    from hrssm.data import load_waterbirds

    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_waterbirds("runs/missing")


def test_from_pretrained_refuses_a_partial_load(saved):
    with pytest.raises(TypeError, match="load strictly"):
        WorldModel.from_pretrained(saved[1], strict=False)


def test_format_1_exports_without_preprocessing_still_load(saved, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(saved[1], old)
    cfg = json.loads((old / "config.json").read_text())
    del cfg["preprocess"]
    (old / "config.json").write_text(json.dumps({**cfg, "hrssm_format": 1}))
    enc = hrssm.load(old)
    assert enc.cfg.preprocess.crop_fraction == 1.0
    assert torch.equal(enc.encode(_images()), saved[0].encode(_images()))


def test_the_card_parses_with_license_pipeline_tag_tags_and_the_preprocessing(saved):
    card = ModelCard.load(saved[1] / "README.md")
    assert card.data.license == "apache-2.0" and card.data.pipeline_tag == "image-feature-extraction"
    assert card.data.library_name == "hrssm"
    assert {"model_hub_mixin", "pytorch_model_hub_mixin", "hrssm", "world-model"} <= set(card.data.tags)
    assert "crop" in card.text and "hrssm.load(" in card.text
    # the tiny preset's encoder, as it is: two streams of half the width
    assert "two streams, RGB and Sobel gradients (2 blocks, width 128 each, patch 8, conv stem)" in card.text


def test_an_export_trained_on_a_hub_dataset_names_it_in_the_card(tmp_path):
    export(_model(), tmp_path / "e", data="grodino/waterbirds", steps=3)
    assert ModelCard.load(tmp_path / "e" / "README.md").data.datasets == ["grodino/waterbirds"]
    export(_model(), tmp_path / "local", data=str(tmp_path))  # a local folder is no hub dataset
    assert ModelCard.load(tmp_path / "local" / "README.md").data.datasets is None


def test_save_pretrained_over_an_old_export_leaves_nothing_of_it(saved, tmp_path):
    folder = tmp_path / "e"
    shutil.copytree(saved[1], folder)
    (folder / "evaluation").mkdir()
    (folder / "README.md").write_text("stale card")
    _model(seed=2).save_pretrained(folder)
    assert sorted(p.name for p in folder.iterdir()) == FILES
    assert "stale" not in (folder / "README.md").read_text()
    assert os.path.getsize(folder / MODEL_FILE) > 0


def test_a_second_evaluation_replaces_the_first_in_the_card(saved, tmp_path):
    from PIL import Image

    from hrssm.model_card import add_evaluation

    folder = tmp_path / "e"
    shutil.copytree(saved[1], folder)
    scores = {"acc_wg": 0.5, "adj_acc_avg": 0.75, "acc_wg_std": 0.01}
    for run, picture in enumerate(("first.png", "second.png")):
        Image.new("RGB", (4, 4)).save(tmp_path / picture)
        floor = {"bird": {**scores, "acc_wg": 0.25 + run}}
        evaluation = {"probes": {"bird": scores}, "features": {"trained": {"bird": scores}, "raw pixels": floor},
                      "pictures": {"a picture": picture}, "split_sizes": {"test": 10}}
        add_evaluation(folder, evaluation, tmp_path, data="grodino/waterbirds")
    card = ModelCard.load(folder / "README.md")
    assert card.text.count("## Evaluation") == 1 and "## Use" in card.text
    assert sorted(p.name for p in (folder / "evaluation").iterdir()) == ["second.png"]
    values = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert values == {"worst-group accuracy, bird": 0.5, "adjusted average accuracy, bird": 0.75,
                      "worst-group accuracy, bird (floor: raw pixels)": 1.25,
                      "adjusted average accuracy, bird (floor: raw pixels)": 0.75}
    assert card.data.eval_results[0].dataset_type == "grodino/waterbirds"
    assert torch.equal(hrssm.load(folder).encode(_images()), saved[0].encode(_images()))  # still a valid export
