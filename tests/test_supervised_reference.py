"""The supervised reference (hrssm.supervised_reference, tools/supervised_reference.py): trains on half of the
test split, scores the other half, deterministic, with clear errors."""

import json

import numpy as np
import pytest
import torch
from recipes_loader import load_tool

from hrssm.config import ModelConfig
from hrssm.evaluation import PALETTE_KEYS
from hrssm.supervised_reference import ReferenceSettings, predict, split_in_halves, train_reference


def test_halves_are_disjoint_and_cover_every_image():
    fit, score = split_in_halves(11, seed=3)
    assert sorted(np.concatenate([fit, score]).tolist()) == list(range(11)) and len(fit) == 5
    assert not np.array_equal(split_in_halves(11, seed=4)[0], fit)  # another seed, another half


def test_reference_learns_a_planted_rule_and_is_deterministic():
    # planted: the class is which half of the image is bright; a trained network must find it, and the same seed
    # must give the same network bit for bit
    g = torch.Generator().manual_seed(0)
    images = torch.rand(64, 3, 16, 16, generator=g) * 0.2 - 0.1
    target = np.arange(64) % 2
    images[torch.from_numpy(target == 1), :, :8] += 0.3
    settings = ReferenceSettings(arch="cnn", steps=40, batch_size=32)
    model = train_reference(images, target, settings, seed=0)
    assert (predict(model, images) == target).mean() == 1.0
    again = train_reference(images, target, settings, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_encoder_reference_trains_the_configs_encoder_and_every_module_gets_gradients():
    cfg = ModelConfig.preset("tiny", image_size=32)
    images, target = torch.rand(8, 3, 32, 32) - 0.5, np.array([0, 1] * 4)
    model = train_reference(images, target, ReferenceSettings(arch="encoder", steps=1, batch_size=4), 0, cfg)
    assert model.encoder.grid == cfg.patch_grid and model.head.in_features == cfg.encoder.width
    model.train()
    torch.nn.functional.cross_entropy(model(images), torch.as_tensor(target)).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("kwargs, message", [({"arch": "resnet"}, "arch must be one of"),
                                             ({"target": "group"}, "target must be 'label'"),
                                             ({"steps": 0}, "steps must be at least 1")])
def test_bad_settings_say_what_is_allowed(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ReferenceSettings(**kwargs)


def test_tool_finds_the_background_and_writes_its_table(synthetic_disk, tmp_path, capsys):
    tool = load_tool("supervised_reference")
    assert tool.main(["--data", str(synthetic_disk), "--arch", "cnn", "--image-size", "32", "--target", "place",
                      "--steps", "40", "--batch-size", "16", "--seeds", "2", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "supervised_reference.json").read_text())
    assert len(result["runs"]) == 2 and result["target"] == "place" and result["image_size"] == 32
    assert result["acc_wg"] == pytest.approx(np.mean([r["acc_wg"] for r in result["runs"]]))
    assert np.mean([r["acc_avg"] for r in result["runs"]]) >= 0.9 and "palette" not in result  # the background: easy
    assert f"| 4-layer CNN | 32 px | 40 | place | {result['acc_wg']:.3f} ± " in capsys.readouterr().out


def test_tool_trains_the_configs_encoder_at_its_image_size(synthetic_disk, tmp_path, capsys):
    tool = load_tool("supervised_reference")
    assert tool.main(["--data", str(synthetic_disk), "--config", "recipes/configs/demo_rgb32.yaml", "--steps", "2",
                      "--batch-size", "8", "--seeds", "1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "supervised_reference.json").read_text())
    assert result["arch"] == "encoder" and result["image_size"] == 32 and "demo_rgb32's encoder" in result["network"]
    # the synthetic twin: the bird's accuracy split by palette too, on the same scored half
    assert len(result["palette"]) == 1 and set(result["palette"][0]) == set(PALETTE_KEYS)
    assert result["palette"][0]["acc_wg"] == result["runs"][0]["acc_wg"]
    assert "| own-palette birds | other-palette birds (" in capsys.readouterr().out
    assert tool.main(["--data", str(synthetic_disk), "--config", "recipes/configs/demo_rgb32.yaml", "--steps", "1",
                      "--batch-size", "4", "--seeds", "1", "--out", str(tmp_path), "--twin-seed", "1"]) == 0
    assert "palette" not in json.loads((tmp_path / "supervised_reference.json").read_text())
    assert "(not the synthetic twin of seed 1: no palette split)" in capsys.readouterr().out
    assert tool.main(["--data", str(synthetic_disk), "--image-size", "64", "--out", str(tmp_path)]) == 2
    assert "--image-size is for --arch cnn" in capsys.readouterr().err
    # config overrides, as hrssm-train takes them: the encoder at another input size and patch size
    assert tool.main(["--data", str(synthetic_disk), "--config", "recipes/configs/demo_rgb32.yaml", "--steps", "1",
                      "--batch-size", "4", "--seeds", "1", "--out", str(tmp_path), "--model.image_size", "64",
                      "--model.encoder.patch_size", "8"]) == 0
    result = json.loads((tmp_path / "supervised_reference.json").read_text())
    assert result["image_size"] == 64 and "patch 8" in result["network"]
    # the main job's encoder: two streams (RGB and Sobel) at 64 px, one linear head on their concatenated tokens
    assert tool.main(["--data", str(synthetic_disk), "--config", "recipes/configs/demo.yaml", "--steps", "1",
                      "--batch-size", "4", "--seeds", "1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "supervised_reference.json").read_text())
    assert result["image_size"] == 64 and "width 256" in result["network"]
    assert tool.main(["--data", str(synthetic_disk), "--arch", "cnn", "--model.image_size", "64"]) == 2
    assert "are for --arch encoder" in capsys.readouterr().err
    assert tool.main(["--data", str(synthetic_disk), "--model.no_such_key", "1"]) == 2


def test_a_non_finite_loss_stops_training_and_says_what_to_do():
    images = torch.full((4, 3, 16, 16), float("nan"))
    with pytest.raises(FloatingPointError, match="at step 0; lower the learning rate"):
        train_reference(images, np.array([0, 1, 0, 1]), ReferenceSettings(arch="cnn", steps=3, batch_size=2), seed=0)
