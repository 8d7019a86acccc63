"""tools/run_studies.py on the tiny synthetic set, a few steps: tables, JSON, plots, caching; the VAE baseline."""

import json

import torch
from recipes_loader import load_tool

from hrssm import ModelConfig, WorldModel
from hrssm.baselines import ViTVAE
from hrssm.evaluation import PROBES


def test_vae_baseline_is_about_the_world_models_size_and_trains_every_parameter():
    cfg = ModelConfig.preset("tiny", image_size=32)
    vae, wm = ViTVAE(cfg), WorldModel(cfg)
    n_vae, n_wm = (sum(p.numel() for p in m.parameters()) for m in (vae, wm))
    assert 0.5 < n_vae / n_wm < 1.0  # same encoder and decoder, no recurrent core
    x = torch.rand(6, 3, 32, 32) - 0.5
    torch.manual_seed(0)
    opt = torch.optim.SGD(vae.parameters(), lr=1e-4)
    for _ in range(2):  # one step first: the decoder's output layer starts at zero (no gradient behind it yet)
        opt.zero_grad()
        loss, metrics = vae(x)
        loss.backward()
        opt.step()
    assert [n for n, p in vae.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []
    assert {"recon_loss", "kl_global_raw", "kl_local_raw", "recon_std_ratio"} <= set(metrics)
    feats = vae.encode(x)
    assert feats.shape == (6, cfg.rssm.deter + cfg.rssm.local_grid**2 * cfg.rssm.local_dim)
    assert torch.equal(feats, vae.encode(x))  # posterior means: deterministic


def test_a_study_trains_evaluates_writes_and_reuses_its_runs(synthetic_disk, tmp_path, capsys):
    studies = load_tool("run_studies")
    args = ["--study", "vae_baseline", "--steps", "2", "--data", str(synthetic_disk), "--runs", str(tmp_path / "runs"),
            "--out", str(tmp_path / "docs"), "--probe-seeds", "2"]
    assert studies.main(args) == 0
    printed = capsys.readouterr().out
    assert printed.count("== ") == 4  # default, T1_repeat, two VAEs
    table = (tmp_path / "docs" / "vae_baseline.md").read_text()
    assert studies.HEADER in table and "plain VAE (beta 1)" in table and "--study vae_baseline" in table
    rows = json.loads((tmp_path / "docs" / "vae_baseline.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["default", "T1_repeat", "vae_beta1", "vae_beta0.1"]
    for row in rows:
        assert set(row["probes"]) == set(PROBES) == set(row["random_init"])  # every variant beside its random init
        assert 0 <= row["probes"][studies.DFR]["acc_wg"] <= 1 and row["reconstruction"]["psnr"] > 0
        assert row["reconstruction"]["seam_ratio"] > 0
        assert row["probes"][studies.DFR]["seeds"] == 2
    assert "*floor: raw pixels (32x32)*" in table
    progress = [line.strip() for line in printed.splitlines() if line.startswith("   ")]
    assert len(progress) == 4 and all(f"| {cells} |" in table for cells in progress)  # the margin too: same floors
    assert (tmp_path / "docs" / "vae_baseline.png").stat().st_size > 1000
    for row in rows:  # world models also probe the encoder's mean token, beside its random init; VAEs have none
        if row["name"].startswith("vae"):
            assert "tokens" not in row
        else:
            assert set(row["tokens"]) == {"trained", "random_init"}
            assert all(0 <= t["acc_wg"] <= 1 and t["seeds"] == 2 for t in row["tokens"].values())
            assert f"{row['tokens']['trained']['acc_wg']:.3f} ± " in table
    cached = tmp_path / "runs" / "default" / "study.json"
    first = json.loads(cached.read_text())
    older = {k: v for k, v in first.items() if k != "tokens"}  # a row of an older harness: no tokens, no seams
    older["reconstruction"] = {k: v for k, v in first["reconstruction"].items() if k != "seam_ratio"}
    cached.write_text(json.dumps(older))
    assert studies.main(args) == 0  # cached: nothing is retrained; what the row lacks comes from the export
    assert "== " not in capsys.readouterr().out
    assert json.loads(cached.read_text()) == first
    stale = {**first, "spec": {**first["spec"], "protocol": studies.PROTOCOL - 1},
             "probes": {}, "train_seconds": -1.0}  # a row of the previous evaluation protocol
    cached.write_text(json.dumps(stale))
    assert studies.main(args) == 0  # re-evaluated from its export, not retrained: the training time is kept
    out = capsys.readouterr().out
    assert out.count("== ") == 1 and f"== default: re-evaluating its export (protocol {studies.PROTOCOL - 1}" in out
    assert json.loads(cached.read_text()) == {**first, "train_seconds": -1.0}
    assert studies.main([*args[:3], "3", *args[4:]]) == 0  # another spec (steps) retrains
    assert capsys.readouterr().out.count("== ") == 4
