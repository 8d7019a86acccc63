#!/usr/bin/env python
"""Speed, memory and FLOPs of a full hrssm training step, against the machine's matmul speed and a plain ViT
autoencoder with the same encoder and decoder (no RSSM), measured in one run so the ratios are fair.

    python benchmarks/bench_train_step.py --quick                 # CPU, 64 and 224, a couple of minutes
    python benchmarks/bench_train_step.py --sizes 64 128 224 320 --batch 8 --views 4 --out results.json
    python benchmarks/bench_train_step.py --sizes 224 --baseline --model.encoder.depth 6   # vs a 6-block encoder

Model keys are overridden as in training (--model.KEY VALUE). After --baseline (last on the line), overrides describe
a second model; it and the measured model then run alternate steps (both see the same load of a shared machine), and
each row gets the baseline's median step time and the ratio (baseline_step_s, over_baseline).

Per image size: images/s (views/s) of forward + backward + AdamW, peak memory, model FLOPs per view (counted with
torch.utils.flop_counter), achieved FLOP/s and its share of a matmul of the step's dominant shape, and the step
time relative to the plain autoencoder. Variants (--variants): fp32; bf16 (autocast); compile (torch.compile of the
model, inductor: on CPU it needs a C++ compiler); bf16+compile; bf16+sdpa (SDPA instead of xformers, CUDA). Default:
fp32, bf16, compile on CPU; fp32, bf16, bf16+sdpa, bf16+compile on CUDA. Each variant's steps alternate with its
baseline's (fp32 for bf16 and compile, bf16 for bf16+compile and bf16+sdpa; same weights) and the plain
autoencoder's, so its speedup is a ratio measured under the same load; compiled variants also report their compile
time (the first step's time minus a steady step's).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from hrssm._config_utils import merge
from hrssm.commands.config_args import model_overrides
from hrssm.config import ModelConfig, decoder_config
from hrssm.encoder import build_encoder
from hrssm.world_model import WorldModel
from vit_decoder import ViTDecoder

BATCH_OF_TWO = "use 2 or more: a contrastive loss (the presets' SimCLR) tells the images of a batch apart"


def model_config(size: int, preset: str = "base", overrides: dict | None = None) -> ModelConfig:
    """The preset at `size`, with a local grid of 2x2-patch cells (7x7 at 224 for base), and model overrides."""
    patch = ModelConfig.preset(preset, **(overrides or {})).encoder.patch_size
    grid = size // patch
    cells = {"image_size": size, "rssm": {"local_grid": grid // 2 if grid % 2 == 0 else grid}}
    return ModelConfig.preset(preset, **merge(cells, overrides or {}))


class PlainAutoencoder(nn.Module):
    """The baseline: the same ViT encoder and decoder, patch tokens straight into the decoder, no RSSM."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        width = cfg.encoder.width
        self.encoder = build_encoder(cfg.image_size, cfg.encoder, cfg.channels, cfg.attention)
        self.decoder = ViTDecoder(decoder_config(cfg, token_dim=width, latent_grid=cfg.patch_grid, context_dim=width))

    def forward(self, views: torch.Tensor, actions: torch.Tensor):
        x = views.flatten(0, 1)
        cls, tokens = self.encoder(x)
        loss = (self.decoder(tokens, cls) - x).pow(2).flatten(1).sum(1).mean()
        return type("Out", (), {"loss": loss})


@dataclass
class Timing:
    seconds: float  # median step time
    peak_mb: float
    first_s: float  # the first (warm-up) step, which pays torch.compile's compile time


def time_steps(model, views, actions, steps: int, warmup: int, autocast: torch.dtype | None,
               params=None) -> Timing:
    """Median time of a training step of `model(views, actions).loss` (any callable; then give its `params`)."""
    return time_interleaved([(model, autocast, params)], views, actions, steps, warmup)[0]


def time_interleaved(runs: list[tuple], views, actions, steps: int, warmup: int) -> list[Timing]:
    """Training steps of several (model, autocast dtype or None, params or None) in turn, one step of each per
    round, so a change of the machine's load hits them all alike: their median step times, peaks, first steps."""
    device = views.device
    opts = [torch.optim.AdamW(model.parameters() if params is None else params, lr=1e-4)
            for model, _, params in runs]
    times: list[list[float]] = [[] for _ in runs]
    peaks = [0.0 for _ in runs]
    for _ in range(warmup + steps):
        for i, ((model, autocast, _), opt) in enumerate(zip(runs, opts)):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                loss = model(views, actions).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[i].append(time.perf_counter() - start)
            peaks[i] = max(peaks[i], torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
                           else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    out = []
    for run_times, peak in zip(times, peaks):
        timed = sorted(run_times[warmup:])
        out.append(Timing(timed[len(timed) // 2], peak, run_times[0]))
    return out


def step_flops(model: nn.Module, views, actions) -> float:
    with FlopCounterMode(display=False) as counter:
        model(views, actions).loss.backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def matmul_flops_per_s(m: int, k: int, n: int, device, dtype, repeats: int = 10) -> float:
    """Achievable FLOP/s of one (m x k) @ (k x n) matmul, the step's dominant shape."""
    a, b = torch.randn(m, k, device=device, dtype=dtype), torch.randn(k, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 2 * m * k * n / sorted(times)[len(times) // 2]


def bench_size(size: int, args, device, variant: dict) -> dict:
    """One size and variant, timed in turn with its variant baseline (same weights), unless compiled with the plain
    autoencoder, and with the --baseline model when one is given."""
    def build(spec: dict, overrides: dict | None) -> tuple[nn.Module, torch.dtype | None]:
        cfg = model_config(size, args.preset, overrides)
        if spec.get("attention"):
            cfg = ModelConfig.from_dict({**cfg.to_dict(), "attention": spec["attention"]})
        torch.manual_seed(0)
        model = WorldModel(cfg).to(device)
        return (torch.compile(model) if spec.get("compile") else model), torch.bfloat16 if spec.get("bf16") else None

    cfg = model_config(size, args.preset, args.overrides)
    torch.manual_seed(0)
    views = torch.rand(args.batch, args.views, 3, size, size, device=device) - 0.5
    actions = torch.zeros(args.batch, args.views, 1, device=device)
    flops = step_flops(WorldModel(cfg).to(device), views, actions)
    hrssm_model, dtype = build(variant, args.overrides)
    runs = [(hrssm_model, dtype, None)]
    if not variant.get("compile"):  # the plain autoencoder is not compiled (only the compile speedup is asked for)
        torch.manual_seed(0)
        runs.append((PlainAutoencoder(cfg).to(device), dtype, None))
    if variant.get("baseline"):
        runs.append((*build(VARIANTS[variant["baseline"]], args.overrides), None))
    if args.baseline is not None:
        runs.append((*build(variant, args.baseline), None))
    timings = time_interleaved(runs, views, actions, args.steps, args.warmup)
    t_hrssm = timings[0]
    t_plain = timings[1] if not variant.get("compile") else Timing(float("nan"), float("nan"), float("nan"))
    t_variant_base = timings[len(runs) - 1 - (args.baseline is not None)] if variant.get("baseline") else t_hrssm
    baseline = {}
    if args.baseline is not None:
        baseline = {"baseline_step_s": timings[-1].seconds, "over_baseline": t_hrssm.seconds / timings[-1].seconds}
    n_views = args.batch * args.views
    tokens, width = n_views * (size // cfg.encoder.patch_size) ** 2, cfg.decoder.width
    peak = matmul_flops_per_s(tokens, width, 4 * width, device, torch.bfloat16 if dtype else torch.float32)
    achieved = flops / t_hrssm.seconds
    return {
        "size": size, "variant": variant.get("name", "fp32"), "batch": args.batch, "views": args.views,
        "step_s": t_hrssm.seconds, "views_per_s": n_views / t_hrssm.seconds, "peak_mb": t_hrssm.peak_mb,
        "gflop_per_view": flops / n_views / 1e9, "achieved_gflop_s": achieved / 1e9,
        "matmul_gflop_s": peak / 1e9, "utilization": achieved / peak,
        "plain_step_s": t_plain.seconds, "hrssm_over_plain": t_hrssm.seconds / t_plain.seconds,
        "matmul_shape": [tokens, width, 4 * width],
        "compile_s": t_hrssm.first_s - t_hrssm.seconds if variant.get("compile") else 0.0,
        "variant_baseline": variant.get("baseline"), "variant_baseline_step_s": t_variant_base.seconds,
        "speedup": t_variant_base.seconds / t_hrssm.seconds, **baseline,
    }


VARIANTS = {
    "fp32": {},
    "bf16": {"bf16": True, "baseline": "fp32"},
    "compile": {"compile": True, "baseline": "fp32"},
    "bf16+compile": {"bf16": True, "compile": True, "baseline": "bf16"},
    "bf16+sdpa": {"bf16": True, "attention": "sdpa", "baseline": "bf16"},
}
DEFAULT_VARIANTS = {"cpu": ["fp32", "bf16", "compile"], "cuda": ["fp32", "bf16", "bf16+sdpa", "bf16+compile"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 224, 320])
    p.add_argument("--preset", default="base")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--views", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), help="default: fp32 bf16 compile on CPU; "
                   "fp32 bf16 bf16+sdpa bf16+compile on CUDA")
    p.add_argument("--quick", action="store_true", help="CPU-friendly: sizes 64 and 224, 3 timed steps")
    p.add_argument("--out", default="benchmarks/results/bench_train_step.json")
    argv = sys.argv[1:] if argv is None else list(argv)
    cut = argv.index("--baseline") if "--baseline" in argv else len(argv)
    args, rest = p.parse_known_args(argv[:cut])
    if args.batch < 2:
        p.error(f"--batch {args.batch}: {BATCH_OF_TWO}")
    args.overrides = model_overrides(rest)
    args.baseline = model_overrides(argv[cut + 1 :]) if cut < len(argv) else None
    if args.quick:
        args.sizes = [64, 224]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    variants = [{"name": name, **VARIANTS[name]} for name in args.variants or DEFAULT_VARIANTS[device.type]]
    rows = []
    for size in args.sizes:
        for variant in variants:
            try:
                rows.append(bench_size(size, args, device, variant))
            except (RuntimeError, torch.OutOfMemoryError) as err:  # e.g. out of memory at 320
                print(f"size {size} {variant['name']}: skipped ({type(err).__name__}: {str(err)[:120]})")
                continue
            r = rows[-1]
            extra = f"  x{r['speedup']:.2f} vs {r['variant_baseline']}" if r["variant_baseline"] else ""
            if args.baseline is not None:
                extra += f"  x{r['over_baseline']:.2f} baseline ({r['baseline_step_s']:.3f} s)"
            extra += f"  compile {r['compile_s']:.0f} s" if variant.get("compile") else ""
            print(f"size {size:>4} {r['variant']:<13} step {r['step_s']:7.3f} s  {r['views_per_s']:7.1f} views/s  "
                  f"{r['gflop_per_view']:6.2f} GFLOP/view  {r['achieved_gflop_s']:7.1f} GFLOP/s "
                  f"({r['utilization']:.0%} of matmul {r['matmul_gflop_s']:.0f})  "
                  f"x{r['hrssm_over_plain']:.2f} plain AE  peak {r['peak_mb']:.0f} MB{extra}", flush=True)
    meta = {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
            "threads": torch.get_num_threads(), "torch": torch.__version__, "preset": args.preset,
            "overrides": args.overrides, "baseline_overrides": args.baseline,
            "peak_memory": "torch.cuda.max_memory_allocated" if device.type == "cuda"
            else "process peak RSS so far (monotonic over the run)"}
    write_results(args.out, {"meta": meta, "rows": rows})
    return 0


def write_results(path: str, results: dict) -> None:
    """The benchmark's JSON, written atomically (a killed run leaves the previous file)."""
    from pathlib import Path

    from hrssm._io import atomic_write_text

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
