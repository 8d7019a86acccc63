"""Concepts: TCAV significance, CAV edits, the edit-action training mode, the planner, tools/tcav.py."""

import json

import numpy as np
import pytest
import torch
from conftest import tiny_run
from recipes_loader import load_tool

from hrssm.concepts import (
    edit_along_cav,
    edit_by_action,
    features_to_latents,
    latents_to_features,
    learn_cav,
    linear_logit_fn,
    logit_gradients,
    plan_edits,
    tcav,
)
from hrssm.data import ViewConfig, load_waterbirds, preprocess
from hrssm.data.counterfactual import CounterfactualError, add_counterfactuals
from hrssm.data.views import edit_views
from hrssm.evaluation import fit_logistic


def _planted(seed=0, d=16):
    rng = np.random.default_rng(seed)
    pool = rng.normal(size=(600, d))
    concept = rng.normal(size=(120, d))
    concept[:, 0] += 3.0  # the concept lives along feature 0
    return rng, pool, concept


def test_a_planted_concept_is_significant_and_a_random_one_is_not():
    rng, pool, concept = _planted()
    # a class logit that grows with feature 0 (nonlinearly, so gradients differ between examples)
    grads = logit_gradients(lambda x: torch.tanh(x[:, 0]) + 0.5 * x[:, 1], rng.normal(size=(200, 16)))
    planted = tcav(grads, concept, pool)
    assert planted.score > 0.95 and planted.p_value < 0.05 and planted.significant
    assert planted.cav_accuracy > 0.85
    random_concept = tcav(grads, pool[rng.choice(600, 120, replace=False)], pool)
    assert not random_concept.significant and random_concept.cav_accuracy < 0.65
    # the concept's opposite direction: the class logit falls along it (score ~0), also significant
    flipped = tcav(-grads, concept, pool)
    assert flipped.score < 0.05 and flipped.significant


def test_cav_edits_move_the_concept_probe_and_not_an_orthogonal_one():
    rng, pool, concept = _planted()
    cav = learn_cav(concept, pool)
    assert cav.direction[0] > 0.9 and abs(np.linalg.norm(cav.direction) - 1) < 1e-9 and 2 < cav.gap < 4
    data = rng.normal(size=(400, 16))
    concept_probe = linear_logit_fn(fit_logistic(data, (data[:, 0] > 0).astype(int)))
    other_probe = linear_logit_fn(fit_logistic(data, (data[:, 1] > 0).astype(int)))
    lat = {"h": torch.as_tensor(data[:, :4]), "z": torch.as_tensor(data[:, 4:8]),
           "s": torch.as_tensor(data[:, 8:]).unflatten(-1, (2, 4))}
    assert torch.equal(latents_to_features(features_to_latents(latents_to_features(lat), lat)),
                       latents_to_features(lat))
    before = latents_to_features(lat)
    after = latents_to_features(edit_along_cav(lat, cav, 1.0))
    moved = (concept_probe(after) - concept_probe(before)).mean()
    side = (other_probe(after) - other_probe(before)).abs().mean()
    assert moved > 3 and side < 0.3 * moved
    back = latents_to_features(edit_along_cav(lat, cav, torch.full((400,), -1.0)))
    assert (concept_probe(back) - concept_probe(before)).mean() < -3


def test_the_planner_finds_the_best_edit_amount():
    target = torch.linspace(-2, 2, 7, dtype=torch.float64)
    amounts, rewards = plan_edits(lambda a: -(a - target) ** 2, batch=7)
    assert torch.allclose(amounts, target, atol=0.05) and (rewards > -0.01).all()


def test_edit_views_follow_their_actions():
    own, other = torch.zeros(5, 3, 8, 8) - 0.2, torch.zeros(5, 3, 8, 8) + 0.3
    places = torch.tensor([0, 1, 0, 1, 1])
    views, actions = edit_views(own, other, places, ViewConfig(num_views=6, mode="edit"),
                                keys=[(0, 0, i) for i in range(5)])
    assert views.shape == (5, 6, 3, 8, 8) and actions.shape == (5, 6, 1) and (actions[:, -1] == 0).all()
    assert set(actions.unique().tolist()) <= {-1.0, 0.0, 1.0} and (actions != 0).any()
    for b in range(5):
        place = int(places[b])
        assert torch.equal(views[b, 0], own[b])
        for t in range(5):
            a = int(actions[b, t, 0])
            place = 1 if a > 0 else 0 if a < 0 else place
            assert torch.equal(views[b, t + 1], own[b] if place == int(places[b]) else other[b])


def test_counterfactual_pairs_are_checked_against_the_generator(synthetic_disk):
    ds = load_waterbirds(synthetic_disk, "validation")
    cf = add_counterfactuals(ds, "validation", seed=0)
    same = np.abs(np.asarray(cf[0]["image"], float) - np.asarray(cf[0]["counterfactual"], float)).mean()
    assert same > 10  # another background
    with pytest.raises(CounterfactualError, match="not the synthetic Waterbirds twin of seed 1"):
        add_counterfactuals(ds, "validation", seed=1)
    with pytest.raises(CounterfactualError, match="not the synthetic"):
        add_counterfactuals(ds, "test", seed=0)  # rows of another split


@pytest.fixture(scope="module")
def edit_model(synthetic_disk, tmp_path_factory):
    """A tiny world model trained 300 steps with views.mode=edit (actions swap the background)."""
    from hrssm.train_config import TrainConfig
    from hrssm.trainer import train

    out = tmp_path_factory.mktemp("edit") / "run"
    cfg = TrainConfig.load(None, tiny_run(
        synthetic_disk, out, "--optim.batch_size", "16", "--views.num_views", "3", "--views.mode", "edit",
        "--model.loss.contrastive", "none",  # a contrastive loss would pull an image and its edit together
        "--optim.max_steps", "300", "--optim.warmup_steps", "20", "--log.every", "50", "--log.images_every", "1000",
        "--checkpoint.every", "1000"))
    return train(cfg).model.eval(), out / "export"


def test_action_edits_change_the_background_and_keep_the_bird(edit_model, synthetic_disk):
    from hrssm.latents import dataset_latents

    model, _ = edit_model
    train = add_counterfactuals(load_waterbirds(synthetic_disk, "train", image_size=32), "train")
    feats = np.concatenate([model.encode(train[c]).numpy() for c in ("image", "counterfactual")])
    labels = np.r_[train["label"], train["label"]]
    places = np.r_[train["place"], 1 - np.asarray(train["place"])]
    place_probe, bird_probe = fit_logistic(feats, places), fit_logistic(feats, labels)  # bird: place-balanced

    test = load_waterbirds(synthetic_disk, "test", image_size=32)
    x, place = preprocess(test["image"], 32), np.asarray(test["place"])
    with torch.no_grad():
        lat = model.encode_latents(x)
        to_other = edit_by_action(model, lat, torch.as_tensor(np.where(place == 0, 1.0, -1.0)))
        noop = edit_by_action(model, lat, 0.0)
        edited, kept = (model.decode(v["h"], v["z"], v.get("s")).clamp(-0.5, 0.5) for v in (to_other, noop))
    f_edit, f_noop = model.encode(edited).numpy(), model.encode(kept).numpy()
    flipped, kept_place = (place_probe.predict(f_edit) != place).mean(), (place_probe.predict(f_noop) == place).mean()
    bird_before = bird_probe.predict(dataset_latents(model, test, progress=False)["features"])
    kept_bird = (bird_probe.predict(f_edit) == bird_before).mean()
    print(f"background flipped {flipped:.3f}, kept by the no-op {kept_place:.3f}, bird call kept {kept_bird:.3f}")
    assert flipped > 0.9  # the decoded edit shows the other background
    assert kept_place > 0.7  # the no-op action does not
    assert kept_bird > 0.7  # ... and the bird probe's call survives the edit


def test_tcav_tool_prints_scores_and_writes_a_plot(edit_model, synthetic_disk, tmp_path, capsys):
    _, export = edit_model
    tool = load_tool("tcav")
    args = ["--model", str(export), "--data", str(synthetic_disk), "--runs", "5", "--out", str(tmp_path)]
    assert tool.main([*args, "--concept", "place=1"]) == 0
    out = capsys.readouterr().out
    assert "| class | TCAV score | random CAVs | p (two-sided t-test) |" in out and "| waterbird |" in out
    result = json.loads((tmp_path / "tcav.json").read_text())
    assert [r["class"] for r in result["rows"]] == ["landbird", "waterbird"]
    assert all(0 <= r["score"] <= 1 and 0 <= r["p_value"] <= 1 and len(r["scores"]) == 5 for r in result["rows"])
    assert (tmp_path / "tcav.png").stat().st_size > 1000
    assert tool.main([*args, "--concept", "background=water"]) == 2
    assert "must look like KEY=VALUE" in capsys.readouterr().err


def test_concept_demo_runs_end_to_end(edit_model, synthetic_disk, tmp_path, capsys):
    _, export = edit_model
    tool = load_tool("concept_demo")
    args = ["--model", str(export), "--data", str(synthetic_disk), "--edit-run", str(tmp_path / "edit"),
            "--out", str(tmp_path / "out"), "--runs", "3", "--model.image_size", "32", "--optim.max_steps", "4",
            "--optim.batch_size", "8", "--log.trackers", "[]", "--log.every", "2", "--log.images_every", "100",
            "--checkpoint.every", "100"]
    assert tool.main(args) == 0
    result = json.loads((tmp_path / "out" / "concepts.json").read_text())
    assert [r["class"] for r in result["tcav"]] == ["landbird", "waterbird"]
    assert set(result["edits"]) == {"CAV edit (demo model)", "action edit (edit-trained model)"}
    assert set(result["planner"]) == {"no edit (posterior)", "no-op action (0)", "all to water (+1)",
                                      "all to land (-1)", "planned (CEM)"}
    for name in ("edits.png", "tcav.png"):
        assert (tmp_path / "out" / name).stat().st_size > 1000
    assert "| planned (CEM) |" in (tmp_path / "out" / "concepts.md").read_text()
    assert tool.main(["--model", str(tmp_path / "missing"), "--data", str(synthetic_disk)]) == 2
    assert "run `python recipes/demo.py`" in capsys.readouterr().err


def test_edit_mode_on_data_that_is_not_the_twin_stops_with_the_reason(synthetic_disk, tmp_path, capsys):
    from recipes_loader import load_recipe

    code = load_recipe("train_hrssm").main([
        "--data.source", str(synthetic_disk), "--output_dir", str(tmp_path / "run"), "--model.image_size", "32",
        "--views.mode", "edit", "--model.loss.contrastive", "none", "--data.synthetic_seed", "5", "--optim.max_steps",
        "2", "--log.trackers", "[]"])
    assert code == 2
    assert "not the synthetic Waterbirds twin of seed 5" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()


def _fake_cub_places(root):
    """8 CUB-like birds (a red square on noise, its segmentation) and Places-like land (green) / water (blue)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        label, place, split = i % 2, (i // 2) % 2, [0, 0, 0, 0, 1, 1, 2, 2][i]
        name = f"{label:03d}.Bird/bird_{i}.jpg"
        bird = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
        bird[10:30, 15:35] = (250, 10, 10)
        mask = np.zeros((40, 50), np.uint8)
        mask[10:30, 15:35] = 255
        for sub, img in (("cub", bird), ("seg", mask)):
            path = root / sub / (name if sub == "cub" else name.replace(".jpg", ".png"))
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(path)
        kind, colour = (("b/bamboo_forest", (20, 200, 20)), ("o/ocean", (20, 20, 200)))[place]
        bg = root / "places" / kind / f"{i:08d}.jpg"
        bg.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 48), colour).save(bg, quality=100)
        rows.append(f"{i + 1},{name},{label},{split},{place},/{kind}/{i:08d}.jpg")
    (root / "wb").mkdir()
    (root / "wb" / "metadata.csv").write_text("img_id,img_filename,y,split,place,place_filename\n" + "\n".join(rows))


def test_real_waterbirds_pairs_are_composited_and_train_in_edit_mode(tmp_path, capsys):
    from recipes_loader import load_recipe

    _fake_cub_places(tmp_path)
    out = tmp_path / "pairs"
    args = ["--waterbirds", str(tmp_path / "wb"), "--cub", str(tmp_path / "cub"), "--segmentations",
            str(tmp_path / "seg"), "--places", str(tmp_path / "places"), "--out", str(out)]
    tool = load_tool("make_waterbirds_pairs")
    assert tool.main(args) == 0
    train = load_waterbirds(out, "train")
    assert "counterfactual" in train.column_names and len(train) == 4
    for row in train:
        own, other = np.asarray(row["image"], int), np.asarray(row["counterfactual"], int)
        assert np.abs(own[20, 25] - (250, 10, 10)).max() < 30 and np.abs(other[20, 25] - (250, 10, 10)).max() < 30
        land, water = (20, 200, 20), (20, 20, 200)
        expect_own, expect_other = (land, water) if row["place"] == 0 else (water, land)
        assert np.abs(own[2, 2] - expect_own).max() < 30 and np.abs(other[2, 2] - expect_other).max() < 30
    resized = load_waterbirds(out, "train", image_size=32)
    assert resized[0]["counterfactual"].size == (32, 32)
    assert tool.main(args) == 2 and "exists" in capsys.readouterr().err  # never overwrites
    next((tmp_path / "places" / "o" / "ocean").iterdir()).unlink()
    assert tool.main([*args[:-1], str(tmp_path / "pairs2")]) == 2
    assert "input files are missing" in capsys.readouterr().err and not (tmp_path / "pairs2").exists()
    code = load_recipe("train_hrssm").main([
        "--data.source", str(out), "--output_dir", str(tmp_path / "run"), "--model.image_size", "32",
        "--views.mode", "edit", "--model.loss.contrastive", "none", "--views.num_views", "2", "--optim.batch_size", "4",
        "--optim.max_steps", "2",
        "--log.trackers", "[]", "--log.every", "1", "--log.images_every", "100", "--checkpoint.every", "100",
        "--log.progress", "false"])
    assert code == 0 and (tmp_path / "run" / "export" / "model.safetensors").exists()
