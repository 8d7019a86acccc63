#!/usr/bin/env python
"""Wall time of a training config (default: the studies' base, recipes/configs/studies_base.yaml, the main job until
issue 12's contrastive warm-up) in several variants (source trees, overrides), back to back.

    git archive <before-commit> | tar -x -C /tmp/before && ln -s $PWD/data /tmp/before/data
    python benchmarks/bench_main_job.py --run before=/tmp/before --run now=. --run "bf16=. --optim.mixed_precision bf16"

Each round runs `recipes/train_hrssm.py --config CONFIG --optim.max_steps STEPS` once per variant
(`--run LABEL=TREE [OVERRIDES]`: the code of TREE, the overrides after it; a fresh process each, no trackers, no
progress bar), in the order given, so the variants share the machine's load; a variant's time is the best over the
rounds, and the table gives each one's ratio to the first. The data comes from each tree's own `data/` (the
configs' relative path). With `--config recipes/configs/demo.yaml` pass `--steps` above its contrastive warm-up (350)
or a smaller `--optim.contrastive_warmup_steps` in the overrides.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train_step import write_results  # noqa: E402


def run_tree(tree: Path, config: str, steps: int, extra: list[str]) -> float:
    """Seconds of one training run of `config` for `steps` steps with the code of `tree`."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "recipes/train_hrssm.py", "--config", config, "--output_dir", out,
               "--optim.max_steps", str(steps), "--log.trackers", "[]", "--log.progress", "false", *extra]
        env = {**os.environ, "PYTHONPATH": str(tree)}
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"the main job failed under {tree}: {proc.stderr[-2000:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", required=True, metavar="LABEL=TREE [OVERRIDES]",
                   help="a variant; the first is the reference")
    p.add_argument("--config", default="recipes/configs/studies_base.yaml", help="relative to each tree")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/bench_main_job.json")
    args = p.parse_args(argv)
    runs = {}
    for spec in args.run:
        label, sep, rest = spec.partition("=")
        if not sep or not rest.strip():
            raise SystemExit(f"--run {spec!r}: write LABEL=TREE [OVERRIDES], e.g. now=. --optim.compile true")
        tree, *overrides = shlex.split(rest)
        runs[label] = (Path(tree).resolve(), overrides)
    times: dict[str, list[float]] = {label: [] for label in runs}
    for r in range(args.rounds):
        for label, (tree, overrides) in runs.items():
            times[label].append(run_tree(tree, args.config, args.steps, overrides))
            print(f"round {r + 1}: {label}  {times[label][-1]:.1f} s", flush=True)
    best = {label: min(v) for label, v in times.items()}
    reference = best[next(iter(runs))]
    print(f"\n{'variant':<24} {'best s':>8} {'s / step':>9} {'vs first':>9}")
    for label, seconds in best.items():
        print(f"{label:<24} {seconds:>8.1f} {seconds / args.steps:>9.3f} {seconds / reference:>9.3f}")
    write_results(args.out, {"config": args.config, "steps": args.steps, "rounds": args.rounds, "times": times,
                             "runs": {label: [str(tree), overrides] for label, (tree, overrides) in runs.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
