"""The README's main job (recipes/demo.py), shortened: train, export, reload, probe, report."""

import json

from recipes_loader import load_recipe

from hrssm.evaluation import DFR_PROBE, PROBES


def test_main_job_trains_exports_probes_and_reports(synthetic_disk, tmp_path, capsys):
    demo = load_recipe("demo")
    out = tmp_path / "demo"
    args = ["--data.source", str(synthetic_disk), "--output_dir", str(out), "--model.image_size", "32",
            "--optim.batch_size", "8", "--optim.max_steps", "6", "--log.every", "3", "--log.images_every", "3",
            "--checkpoint.every", "3", "--log.trackers", "[]", "--log.progress", "false",
            "--optim.contrastive_warmup_steps", "3"]  # demo.yaml's encoder-only steps, then 3 full ones
    assert demo.main(args) == 0
    printed = capsys.readouterr().out
    assert "| probe | average | worst group | adjusted average | C / k |" in printed
    assert "| random init (same config, seed 0) |" in printed and "| raw pixels (32x32) |" in printed
    assert "held-out test images: recon_std_ratio" in printed
    report = (out / "report.md").read_text()
    assert "](test_reconstructions.png)" in report and (out / "test_reconstructions.png").exists()
    result = json.loads((out / "eval.json").read_text())
    assert set(result["probes"]) == set(PROBES) and result["train_steps"] == 6
    for picture in ("test_reconstructions.png", "group_accuracy.png", "latents_tsne.png"):
        assert f"]({picture})" in report and (out / picture).stat().st_size > 1000
    assert 0 <= result["probes"][DFR_PROBE]["acc_wg"] <= 1
    assert "The global level alone, [h, p(z)]" in printed  # and its own floors, probed on the same features
    glob = json.loads((out / "eval_global" / "eval.json").read_text())
    assert glob["model_features"] == "global" and "random init (same config, seed 0)" in glob["features"]
    assert "The encoder's mean patch token" in printed  # the third export, from the same encoding pass
    tokens = json.loads((out / "eval_tokens" / "eval.json").read_text())
    assert tokens["model_features"] == "tokens" and "random init (same config, seed 0)" in tokens["features"]
    # a second run reuses the finished training instead of starting over
    assert demo.main(args) == 0
    assert "resumed from" in capsys.readouterr().out
