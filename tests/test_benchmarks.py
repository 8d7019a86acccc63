"""The benchmark scripts run (tiny settings) and write their JSON; no timing is asserted here."""

import json
import subprocess
import sys

from conftest import ROOT


def _run(script, *args):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_bench_train_step_runs(tmp_path):
    out = tmp_path / "step.json"
    _run("bench_train_step.py", "--preset", "tiny", "--sizes", "32", "--batch", "2", "--views", "2", "--steps", "1",
         "--warmup", "0", "--variants", "fp32", "bf16", "--out", str(out), "--model.rssm.local_grid", "2",
         "--baseline", "--model.encoder.depth", "1")
    data = json.loads(out.read_text())
    fp32, bf16 = data["rows"]
    for key in ("views_per_s", "peak_mb", "gflop_per_view", "utilization", "hrssm_over_plain", "over_baseline"):
        assert fp32[key] > 0
    assert bf16["variant"] == "bf16" and bf16["speedup"] > 0  # measured against fp32 in the same run
    assert data["meta"]["overrides"] == {"rssm": {"local_grid": 2}}
    assert data["meta"]["baseline_overrides"] == {"encoder": {"depth": 1}}


def test_bench_scaling_runs(tmp_path):
    out = tmp_path / "scaling.json"
    printed = _run("bench_scaling.py", "--preset", "tiny", "--sizes", "32", "64", "--views-list", "1", "2",
                   "--views-size", "32", "--batch", "2", "--steps", "1", "--warmup", "0", "--out", str(out))
    data = json.loads(out.read_text())
    assert [r["size"] for r in data["by_size"]] == [32, 64] and [r["views"] for r in data["by_views"]] == [1, 2]
    assert "x pixels" in printed


def test_bench_data_runs(tmp_path):
    out = tmp_path / "data.json"
    printed = _run("bench_data.py", "--sizes", "32", "--views", "2", "--batch", "4", "--repeats", "1",
                   "--model-batch", "2", "--model-steps", "1", "--out", str(out))
    row = json.loads(out.read_text())["rows"][0]
    assert (row["size"], row["views"], row["model_preset"]) == (32, 2, "tiny")
    for stage in ("decode", "preprocess", "base_batch", "views_before", "views_now"):
        assert row["images_per_s_per_core"][stage] > 0
    assert row["views_speedup"] > 0 and row["loader_over_model"] > 0 and "pipe" in printed


def test_bench_memory_runs(tmp_path):
    out = tmp_path / "memory.json"
    _run("bench_memory.py", "--preset", "tiny", "--size", "32", "--views", "2", "--batches", "2", "3",
         "--predict", "8", "--out", str(out))
    data = json.loads(out.read_text())
    small, large = (m["forward_backward_peak"] for m in data["measured"])
    assert 0 < small < large and data["per_image_bytes"] > 0 and data["predicted"][0]["gib"] > 0


def test_benchmarks_refuse_a_batch_of_one_naming_the_flag():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_scaling.py"), "--batch", "1"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and "--batch 1: use 2 or more: a contrastive loss" in proc.stderr
