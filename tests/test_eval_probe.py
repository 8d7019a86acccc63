"""recipes/eval_probe.py: the evaluation protocol on an export, and its errors."""

import json

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from recipes_loader import load_recipe, load_tool

from hrssm import ModelConfig, WorldModel, export, load_world_model
from hrssm.data import load_waterbirds, preprocess, synthetic
from hrssm.encoder import FEATURE_SHORT_NAMES, FEATURES
from hrssm.evaluation import (
    DFR_C_GRID,
    DFR_PROBE,
    ERM_PROBE,
    PALETTE_KEYS,
    PLACE_PROBE,
    PROBES,
    palette_scores,
    wilds_group_names,
)
from hrssm.latents import dataset_latents, with_features
from hrssm.model_card import add_evaluation
from hrssm.report import RANDOM_INIT, TRAINED, feature_sets, pixels_name, random_init_encoder


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    """An (untrained) tiny model at 32x32, exported: the protocol does not care whether it learned anything."""
    out = tmp_path_factory.mktemp("evalprobe") / "export"
    export(WorldModel(ModelConfig.preset("tiny", image_size=32, rssm={"local_grid": 2})), out)
    return out


def test_eval_probe_writes_the_floors_table_json_pictures_and_report(export_dir, synthetic_disk, tmp_path, capsys):
    out = tmp_path / "eval"
    assert load_recipe("eval_probe").main(["--model", str(export_dir), "--data", str(synthetic_disk),
                                           "--out", str(out), "--seeds", "2"]) == 0
    printed = capsys.readouterr().out
    assert "| probe | average | worst group | adjusted average | C / k |" in printed
    result = json.loads((out / "eval.json").read_text())
    assert set(result["probes"]) == set(PROBES) and result["model_features"] == "latents"
    assert list(result["features"]) == ["trained", "random init (same config, seed 0)", "raw pixels (32x32)"]
    for features, probes in result["features"].items():
        assert set(probes) == set(PROBES)
        assert f"| {features} | {probes[DFR_PROBE]['acc_wg']:.3f} ± {probes[DFR_PROBE]['acc_wg_std']:.3f} |" \
            in printed
    for name, probe in result["probes"].items():
        assert 0 <= probe["acc_wg"] <= probe["acc_avg"] + 1e-9 <= 1 + 1e-9, name
        # the mean over probe seeds of each seed's worst group: at most the worst of the mean per-group accuracies
        assert probe["acc_wg"] <= min(probe[f"acc_{g}"] for g in wilds_group_names()) + 1e-9
        assert sum(probe["group_counts"]) == result["split_sizes"]["test"]
        assert probe["seeds"] == (1 if name in (ERM_PROBE, PLACE_PROBE) else 2)
    assert result["probes"][DFR_PROBE]["hyper"][0] in DFR_C_GRID
    assert isinstance(result["dfr_worst_group_margin_over_floors"], float)
    assert set(result["reconstruction"]) == {"recon_std_ratio", "psnr", "psnr_mean_image", "psnr_gain", "seam_ratio"}
    report = (out / "report.md").read_text()
    for picture in result["pictures"].values():
        assert f"]({picture})" in report and (out / picture).stat().st_size > 1000
    assert {"latents_tsne.png", "group_accuracy.png", "test_reconstructions.png"} <= set(result["pictures"].values())
    # the export's card now carries the results, the floors beside them, and the pictures
    card = ModelCard.load(export_dir / "README.md")
    assert card.data.license == "apache-2.0" and card.data.pipeline_tag == "image-feature-extraction"
    values = {(r.metric_type, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert len(values) == 2 * len(PROBES) * len(result["features"])
    for features, probes in result["features"].items():
        floor = "" if features == "trained" else f" (floor: {features})"
        for name, probe in probes.items():
            assert values[("worst_group_accuracy", f"worst-group accuracy, {name}{floor}")] == round(probe["acc_wg"], 4)
            assert values[("adjusted_average_accuracy", f"adjusted average accuracy, {name}{floor}")] == \
                round(probe["adj_acc_avg"], 4)
    for picture in result["pictures"].values():
        assert f"](evaluation/{picture})" in card.text and (export_dir / "evaluation" / picture).is_file()


def test_eval_probe_on_the_encoders_tokens_probes_them_for_the_floor_too_and_leaves_the_card(export_dir,
                                                                                           synthetic_disk, capsys):
    card = (export_dir / "README.md").read_bytes()
    assert load_recipe("eval_probe").main(["--model", str(export_dir), "--data", str(synthetic_disk),
                                           "--features", "tokens", "--no-pictures", "--seeds", "1"]) == 0
    result = json.loads((export_dir.parent / "eval_tokens" / "eval.json").read_text())
    assert result["model_features"] == "tokens"
    assert list(result["features"]) == ["trained", "random init (same config, seed 0)", "raw pixels (32x32)"]
    assert "the encoder's mean patch token" in capsys.readouterr().out
    assert (export_dir / "README.md").read_bytes() == card  # the card describes encode()'s default features
    with pytest.raises(ValueError, match="probed the model's 'tokens'.*with the default --features latents"):
        add_evaluation(export_dir, result, export_dir.parent / "eval_tokens")
    assert (export_dir / "README.md").read_bytes() == card


def test_token_feature_sets_are_the_mean_patch_token_of_the_model_and_of_its_random_init(synthetic_disk):
    model = WorldModel(ModelConfig.preset("tiny", image_size=32, rssm={"local_grid": 2})).eval()
    ds = load_waterbirds(synthetic_disk, "test").select(range(10))
    feats = feature_sets(model, {"test": ds}, progress=False, features="tokens")
    x = preprocess(ds["image"], **model.cfg.preprocessing())
    with torch.no_grad():
        ref = model.encoder(x)[1].mean(1).numpy()
    assert np.array_equal(feats[TRAINED]["test"]["features"], ref)
    rand = random_init_encoder(model.cfg).encode(ds["image"], features="tokens").numpy()
    assert np.array_equal(feats[RANDOM_INIT]["test"]["features"], rand) and not np.allclose(rand, ref)
    with pytest.raises(ValueError, match="features must be one of"):
        feature_sets(model, {"test": ds}, progress=False, features="cells")


def test_each_feature_set_rebuilt_from_one_encoding_equals_encoding_it_directly(synthetic_disk):
    model = WorldModel(ModelConfig.preset("tiny", image_size=32, rssm={"local_grid": 2})).eval()
    ds = load_waterbirds(synthetic_disk, "test").select(range(10))
    latents = dataset_latents(model, ds, progress=False)  # features="latents"
    assert latents["features"].shape[1] == model.rssm.feature_dim
    assert set(FEATURE_SHORT_NAMES) == set(FEATURES)  # every feature set has its picture title
    for name in FEATURES:
        direct = model.encode(ds["image"], features=name).numpy()
        assert np.array_equal(with_features(latents, name)["features"], direct), name
        assert np.array_equal(dataset_latents(model, ds, progress=False, features=name)["features"], direct), name
    assert with_features(latents, "global")["h"] is latents["h"]  # the other arrays are shared, not copied
    saved = {k: latents[k] for k in ("h", "z", "s")}  # what a latents .npz keeps
    with pytest.raises(ValueError, match=r"'tokens' features need \['tokens'\].*use the output of dataset_latents"):
        with_features(saved, "tokens")


def test_eval_probe_also_probes_more_feature_sets_from_the_same_encoding(export_dir, synthetic_disk, tmp_path,
                                                                         capsys):
    out = tmp_path / "eval"
    assert load_recipe("eval_probe").main(["--model", str(export_dir), "--data", str(synthetic_disk), "--out",
                                           str(out), "--no-pictures", "--no-card", "--seeds", "1",
                                           "--also", "global", "tokens"]) == 0
    printed = capsys.readouterr().out
    main = json.loads((out / "eval.json").read_text())
    for name in ("global", "tokens"):
        assert f"The same probes on {name!r}" in printed
        other = json.loads((out / f"eval_{name}" / "eval.json").read_text())
        assert other["model_features"] == name and list(other["features"]) == list(main["features"])
        assert other["reconstruction"] == main["reconstruction"]  # the same model and test images
        pixels = "raw pixels (32x32)"
        assert other["features"][pixels] == main["features"][pixels]  # the same pixel floor
        assert "its " + repr(name) + " features" in (out / f"eval_{name}" / "report.md").read_text()
    with pytest.raises(SystemExit):
        load_recipe("eval_probe").main(["--model", str(export_dir), "--data", str(synthetic_disk), "--also", "cells"])
    assert "invalid choice: 'cells'" in capsys.readouterr().err


def test_eval_probe_without_pictures_and_without_a_decoder(tmp_path, synthetic_disk, capsys):
    export_dir = tmp_path / "export"
    export(WorldModel(ModelConfig.preset("tiny", image_size=32, rssm={"local_grid": 0},
                                         loss={"objective": "latent_prediction"})), export_dir)
    out = tmp_path / "eval"
    assert load_recipe("eval_probe").main(["--model", str(export_dir), "--data", str(synthetic_disk), "--out", str(out),
                                           "--no-pictures", "--no-floors", "--seeds", "1"]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert result["reconstruction"] == {} and result["pictures"] == {} and list(result["features"]) == ["trained"]
    assert "Reconstruction" not in capsys.readouterr().out


@pytest.mark.parametrize("which", ["model", "data"])
def test_eval_probe_reports_a_missing_model_or_dataset(which, export_dir, synthetic_disk, tmp_path, capsys):
    model, data = str(export_dir), str(synthetic_disk)
    if which == "model":
        model = str(tmp_path / "no_export")
    else:
        data = str(tmp_path / "no_data")
    assert load_recipe("eval_probe").main(["--model", model, "--data", data, "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and ("no_export" in err if which == "model" else "no_data" in err)


def test_probe_parts_probes_each_part_of_the_features_beside_the_random_init(export_dir, synthetic_disk, tmp_path,
                                                                            capsys):
    tool = load_tool("probe_parts")
    assert tool.main(["--model", str(export_dir), "--data", str(synthetic_disk), "--seeds", "2",
                      "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "parts.json").read_text())
    cfg = ModelConfig.preset("tiny", image_size=32, rssm={"local_grid": 2})
    r = cfg.rssm
    z, s = r.stoch * r.classes, r.local_grid**2 * r.local_dim
    dims = {"h": r.deter, "z": z, "z mode": z, "s": s, "latents": r.deter + z + s, "tokens": cfg.encoder.width,
            "latents + tokens": r.deter + z + s + cfg.encoder.width}
    for name in ("trained", "random init"):
        assert {p: v["dims"] for p, v in result[name].items()} == dims
        assert all(0 <= v["acc_wg"] <= 1 and v["seeds"] == 2 for v in result[name].values())
    printed = capsys.readouterr().out
    assert f"| latents | {dims['latents']} | {result['trained']['latents']['acc_wg']:.3f} ± " in printed
    enc = {"h": np.ones((3, 2)), "z": np.eye(4)[[0, 1, 1]], "z_probs": np.full((3, 4), 0.25), "s": np.zeros((3, 0, 0)),
           "tokens": np.ones((3, 5))}
    assert np.array_equal(tool.part_features(enc, "z"), enc["z_probs"])  # the probabilities, as encode() exports
    assert np.array_equal(tool.part_features(enc, "z mode"), enc["z"])
    latents = np.concatenate([enc["h"], enc["z_probs"]], axis=1)  # what encode() returns without a local level
    assert np.array_equal(tool.part_features(enc, "latents"), latents)
    assert np.array_equal(tool.part_features(enc, "latents + tokens"), np.concatenate([latents, enc["tokens"]], 1))
    with pytest.raises(ValueError, match="without a local level has no s"):
        tool.part_features(enc, "s")


def test_recon_quality_measures_psnr_over_the_mean_image_on_the_split_asked_for(export_dir, synthetic_disk, tmp_path,
                                                                               capsys):
    tool = load_tool("recon_quality")
    assert tool.main(["--model", str(export_dir), "--data", str(synthetic_disk), "--split", "validation",
                      "--images", "6", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "recon_quality.json").read_text())
    assert (result["split"], result["images"]) == ("validation", 6)
    metrics = result["models"][str(export_dir)]
    # by hand: the first 6 validation images encoded once, decoded, against the images and against their mean
    model = load_world_model(export_dir)
    images = load_waterbirds(synthetic_disk, "validation", **model.cfg.preprocessing())[:6]["image"]
    target = preprocess(images, **model.cfg.preprocessing())
    with torch.no_grad():
        lat = model.encode_latents(images)
        recon = model.decode(lat["h"], lat["z"], lat["s"])

    def psnr(pred):
        return float((-10 * torch.log10((pred - target).pow(2).flatten(1).mean(1))).mean())

    assert metrics["psnr"] == pytest.approx(psnr(recon), abs=1e-4)
    assert metrics["psnr_gain"] == pytest.approx(psnr(recon) - psnr(target.mean(0, keepdim=True)), abs=1e-4)
    assert f"| {export_dir} | {metrics['recon_std_ratio']:.3f} | {metrics['psnr']:.3f} |" in capsys.readouterr().out

    no_decoder = tmp_path / "no_decoder"
    export(WorldModel(ModelConfig.preset("tiny", image_size=32, rssm={"local_grid": 2},
                                         loss={"objective": "latent_prediction"})), no_decoder)
    assert tool.main(["--model", str(no_decoder), "--data", str(synthetic_disk), "--out", str(tmp_path)]) == 2
    assert "has no pixel decoder" in capsys.readouterr().err


def test_colour_vs_shape_splits_the_probe_by_palette_and_refuses_data_that_is_not_the_twin(
        export_dir, synthetic_disk, tmp_path, capsys):
    tool = load_tool("colour_vs_shape")
    # planted: a colour reader is right on every own-palette bird and wrong on every other-palette one
    label, group = np.array([0, 0, 1, 1, 0, 1, 0, 1]), np.array([0, 1, 2, 3, 0, 3, 1, 2])
    own = np.array([True, True, True, True, False, False, True, True])
    scores = palette_scores(np.where(own, label, 1 - label), label, group, own)
    assert scores == {"acc_wg": 0.5, "acc_own_palette": 1.0, "acc_other_palette": 0.0, "acc_wg_other_palette": 0.0}
    assert palette_scores(label, label, group, own)["acc_wg"] == 1.0
    assert np.isnan(palette_scores(label, label, group, np.ones(8, bool))["acc_other_palette"])

    assert tool.main(["--model", str(export_dir), "--data", str(synthetic_disk), "--seeds", "2",
                      "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "colour_vs_shape.json").read_text())
    assert list(result["results"]) == [TRAINED, RANDOM_INIT, pixels_name()]
    test_own = synthetic.own_palette("test", len(load_waterbirds(synthetic_disk, "test")), 0)
    assert result["other_palette_share"] == pytest.approx((~test_own).mean())
    for r in result["results"].values():
        assert all(0 <= r[k] <= 1 for k in PALETTE_KEYS) and r["seeds"] == 2
    trained = result["results"]["trained"]
    assert f"| trained | {trained['acc_wg']:.3f} ± {trained['acc_wg_std']:.3f} |" in capsys.readouterr().out
    assert tool.main(["--model", str(export_dir), "--data", str(synthetic_disk), "--twin-seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "not the synthetic Waterbirds twin of seed 1" in err and "--twin-seed SEED" in err  # says what to do
