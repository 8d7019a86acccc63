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
         "--warmup", "0", "--out", str(out), "--model.rssm.local_grid", "2", "--baseline", "--model.encoder.depth", "1")
    data = json.loads(out.read_text())
    row = data["rows"][0]
    for key in ("views_per_s", "peak_mb", "gflop_per_view", "utilization", "hrssm_over_plain", "over_baseline"):
        assert row[key] > 0
    assert data["meta"]["overrides"] == {"rssm": {"local_grid": 2}}
    assert data["meta"]["baseline_overrides"] == {"encoder": {"depth": 1}}


def test_bench_scaling_runs(tmp_path):
    out = tmp_path / "scaling.json"
    printed = _run("bench_scaling.py", "--preset", "tiny", "--sizes", "32", "64", "--views-list", "1", "2",
                   "--views-size", "32", "--batch", "1", "--steps", "1", "--warmup", "0", "--out", str(out))
    data = json.loads(out.read_text())
    assert [r["size"] for r in data["by_size"]] == [32, 64] and [r["views"] for r in data["by_views"]] == [1, 2]
    assert "x pixels" in printed
