"""tools/encoder_curve.py: the encoder trained alone on its contrastive term, probed along the way."""

import json

from recipes_loader import load_tool

from hrssm.evaluation import PALETTE_KEYS
from hrssm.report import pixels_name


def test_tool_probes_the_random_init_then_every_few_steps_with_the_palette_split(synthetic_disk, tmp_path, capsys):
    tool = load_tool("encoder_curve")
    args = ["--data", str(synthetic_disk), "--steps", "3", "--every", "2", "--seeds", "1", "--out", str(tmp_path),
            "--optim.batch_size", "8"]
    assert tool.main(args) == 0
    result = json.loads((tmp_path / "encoder_curve.json").read_text())
    assert [r["step"] for r in result["rows"]] == [0, 2, 3]  # the random init, every 2 steps, the last
    assert result["pixels"]["step"] == pixels_name() and result["overrides"] == ["--optim.batch_size", "8"]
    seconds = [r["train_seconds"] for r in result["rows"]]
    assert seconds[0] == 0 < seconds[1] <= seconds[2]  # training time only, counted across the probes
    for row in [result["pixels"], *result["rows"]]:
        assert all(0 <= row[k] <= 1 for k in ("val_wg", *PALETTE_KEYS)), row
    printed = capsys.readouterr().out
    for row in result["rows"]:  # each row printed as it came, as the JSON has it
        assert f"| {row['step']} | {row['val_wg']:.3f} ± {row['val_wg_std']:.3f} | {row['acc_wg']:.3f} ± " in printed
    assert "| step | validation: worst group (chose C) | test: worst group | own-palette birds |" in printed

    assert tool.main([*args, "--twin-seed", "1"]) == 0  # not the twin of that seed: no palette columns
    assert "acc_other_palette" not in json.loads((tmp_path / "encoder_curve.json").read_text())["rows"][0]
    assert "(not the synthetic twin of seed 1: no palette split)" in capsys.readouterr().out


def test_tool_trains_on_views_of_the_configs_warmup_size(synthetic_disk, tmp_path, monkeypatch):
    from hrssm.world_model import WorldModel

    seen, forward = [], WorldModel.forward

    def spy(self, views, actions, **kwargs):
        seen.append(tuple(views.shape[-2:]))
        return forward(self, views, actions, **kwargs)

    monkeypatch.setattr(WorldModel, "forward", spy)
    tool = load_tool("encoder_curve")
    args = ["--data", str(synthetic_disk), "--steps", "2", "--every", "2", "--seeds", "1", "--out", str(tmp_path),
            "--optim.batch_size", "8"]
    assert tool.main(args) == 0
    assert seen == [(32, 32)] * 2  # demo.yaml: 64 px model, contrastive_warmup_image_size 32
    seen.clear()
    assert tool.main([*args, "--optim.contrastive_warmup_image_size", "0"]) == 0
    assert seen == [(64, 64)] * 2


def test_tool_refuses_a_config_without_a_contrastive_term_on_the_tokens(synthetic_disk, tmp_path, capsys):
    tool = load_tool("encoder_curve")
    assert tool.main(["--data", str(synthetic_disk), "--config", "recipes/configs/studies_base.yaml",
                      "--out", str(tmp_path)]) == 2
    assert "--model.loss.contrastive simclr" in capsys.readouterr().err
    assert tool.main(["--data", str(synthetic_disk), "--every", "0", "--out", str(tmp_path)]) == 2
    assert "--every must be positive" in capsys.readouterr().err
