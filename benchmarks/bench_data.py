#!/usr/bin/env python
"""The input pipeline per CPU core, next to the model step it feeds, measured in one run so the ratios are fair.

    python benchmarks/bench_data.py                     # sizes 64 224 320, T = 1 4 8, batch 64 (~10 min on 2 cores)
    python benchmarks/bench_data.py --quick             # 64 and 224, T = 4 (~3 min)

Per image size, images/s on one thread (`torch.set_num_threads(1)`) of each stage of the loader:

- decode: `datasets` rows -> PIL images (JPEG, as the synthetic twin stores them);
- preprocess (before this benchmark's issue): the decoded images -> a float batch in [-0.5, 0.5];
- base batch (now): the decoded images -> a uint8 batch with the view parameters of their keys
  (`ViewCollator(base_only=True).base_batch`);
- views at each T: before = `reference_augment` on the float batch (the first implementation, as `make_views` ran
  it: range check, keyed uniforms, grid_sample, jitter), now = `views_from_base` on the uint8 batch;

and the pipeline rates they add up to (1 / the sum of the per-image times): before = decode + preprocess + views;
now with views in the loader = decode + base batch + views; now with views on the accelerator = decode + base batch
(the views are then made in the training step, on the device). Next to them: the model step's images/s at the same
size and T (forward + backward + AdamW, `tiny` preset at 64 px as the main job trains, `base` above; on CPU with
all of the process's threads, on CUDA in bf16 with the views made on the GPU as the trainer does), the ratio
pipeline / model step (above 1: the pipeline is not the bottleneck) and the loader cores one model process needs
(model images/s / the per-core loader rate with views on the accelerator). Every time is the best of --repeats,
with before and now interleaved. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train_step import BATCH_OF_TWO, model_config, time_steps, write_results  # noqa: E402

from hrssm.data import FEATURES, check_pixel_range, preprocess  # noqa: E402
from hrssm.data.synthetic import make_example  # noqa: E402
from hrssm.data.views import ViewCollator, ViewConfig, reference_augment, view_uniforms, views_from_base  # noqa: E402
from hrssm.world_model import WorldModel  # noqa: E402


def synthetic_rows(size: int, count: int):
    """`count` synthetic-twin images at `size` as an in-memory `datasets.Dataset` (JPEG bytes, decoded on access)."""
    from datasets import Dataset

    examples = [make_example(0, "train", i, i % 2, (i // 2) % 2, size)[0] for i in range(count)]
    columns = {"image": [{"bytes": b, "path": None} for b in examples], "label": [i % 2 for i in range(count)],
               "place": [(i // 2) % 2 for i in range(count)], "group": [0] * count, "split": ["train"] * count,
               "img_id": list(range(count))}
    return Dataset.from_dict(columns, features=FEATURES)


def best_of(repeats: int, *stages: Callable[[], object]) -> list[float]:
    """The best time of each stage over `repeats` rounds, the stages interleaved within a round."""
    times = [[] for _ in stages]
    for _ in range(repeats):
        for t, stage in zip(times, stages):
            start = time.perf_counter()
            stage()
            t.append(time.perf_counter() - start)
    return [min(t) for t in times]


def today_views(images: torch.Tensor, keys: list[tuple[int, int, int]], cfg: ViewConfig) -> torch.Tensor:
    """View making as it ran before: float images, range check, keyed uniforms, grid_sample + jitter."""
    check_pixel_range(images)
    return reference_augment(images, view_uniforms(keys, cfg.num_views), cfg)


def model_images_per_s(size: int, base: dict, cfg: ViewConfig, args, threads: int) -> tuple[str, float]:
    """The model step's images/s (forward + backward + AdamW) at `size`: on CPU with all `threads` in fp32, on CUDA
    in bf16 with the views made on the GPU from the uint8 `base` batch (cut to --model-batch) inside the step."""
    preset = "tiny" if size <= 64 else "base"
    device = torch.device(args.device)
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        model = WorldModel(model_config(size, preset)).to(device)  # at 64 px: the main job's model (tiny)
        batch = {k: v[: args.model_batch].to(device) for k, v in base.items()}
        x, a = views_from_base(batch, cfg)
        if device.type == "cuda":
            def with_views(views, actions):  # the trainer's step on a GPU: views made on the device, then the model
                return model(*views_from_base(batch, cfg))
            step = time_steps(with_views, x, a, args.model_steps, 1, torch.bfloat16, model.parameters())
        else:
            step = time_steps(model, x, a, args.model_steps, 1, None)
        return preset, args.model_batch / step.seconds
    finally:
        torch.set_num_threads(1)


def bench_size(size: int, args, threads: int) -> list[dict]:
    ds = synthetic_rows(size, args.batch)
    indices = list(range(args.batch))
    rows = ds.__getitems__(indices)
    images = [r["image"] for r in rows]
    decode, prep = best_of(args.repeats, lambda: ds.__getitems__(indices), lambda: preprocess(images, size))
    return [bench_views(size, t, rows, decode, prep, args, threads) for t in args.views]


def bench_views(size: int, t: int, rows: list[dict], decode: float, prep: float, args, threads: int) -> dict:
    """One (size, T) row: the view stages before and now, the pipelines, the model step."""
    n, cfg = len(rows), ViewConfig(num_views=t)
    keys = [(0, 0, int(r["img_id"])) for r in rows]
    collate = ViewCollator(size, cfg, base_only=True)
    base, floats = collate.base_batch(rows), preprocess([r["image"] for r in rows], size)
    base_s, before_s, now_s = best_of(args.repeats, lambda: collate.base_batch(rows),
                                      lambda: today_views(floats, keys, cfg), lambda: views_from_base(base, cfg))
    preset, model_rate = (model_images_per_s(size, base, cfg, args, threads) if args.model_batch
                          else ("none", float("nan")))
    rate = {"decode": n / decode, "preprocess": n / prep, "base_batch": n / base_s, "views_before": n / before_s,
            "views_now": n / now_s}
    pipeline_before = n / (decode + prep + before_s)
    loader_views = n / (decode + base_s + now_s)
    loader_only = n / (decode + base_s)
    r = {
        "size": size, "views": t, "batch": n, "images_per_s_per_core": rate, "views_speedup": before_s / now_s,
        "pipeline_before": pipeline_before, "pipeline_views_in_loader": loader_views,
        "pipeline_views_on_device": loader_only,
        "pipeline_speedup_views_in_loader": loader_views / pipeline_before,
        "pipeline_speedup_views_on_device": loader_only / pipeline_before,
        "model_preset": preset, "model_batch": args.model_batch, "model_images_per_s": model_rate,
        "model_threads": threads, "model_device": args.device, "loader_over_model": loader_views / model_rate,
        "loader_cores_per_model_process": model_rate / loader_only,
    }
    print(f"{size:>4} {t:>2} | {rate['decode']:7.0f} {rate['preprocess']:7.0f} {rate['base_batch']:7.0f} | "
          f"{rate['views_before']:7.1f} {rate['views_now']:7.1f} x{r['views_speedup']:5.1f} | "
          f"{pipeline_before:7.1f} {loader_views:7.1f} {loader_only:7.0f} | "
          f"{preset:>4} {model_rate:7.2f} {r['loader_over_model']:8.1f} {r['loader_cores_per_model_process']:6.2f}",
          flush=True)
    return r


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 224, 320])
    p.add_argument("--views", type=int, nargs="+", default=[1, 4, 8], help="T values")
    p.add_argument("--batch", type=int, default=64, help="images per loader batch")
    p.add_argument("--repeats", type=int, default=5, help="best of this many rounds")
    p.add_argument("--model-batch", type=int, default=2, help="batch of the model step (0: skip the model)")
    p.add_argument("--model-steps", type=int, default=2, help="timed model steps after one warm-up step")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="of the model step")
    p.add_argument("--quick", action="store_true", help="sizes 64 and 224, T = 4")
    p.add_argument("--out", default="benchmarks/results/bench_data.json")
    args = p.parse_args(argv)
    if args.model_batch == 1:
        p.error(f"--model-batch 1 (0 skips the model): {BATCH_OF_TWO}")
    if args.quick:
        args.sizes, args.views = [64, 224], [4]
    warnings.filterwarnings("ignore", message="sequences of length 1")  # T = 1 is measured on purpose
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    print("images/s per core (1 thread) of each loader stage; pipelines = 1 / the sum of per-image times;\n"
          f"model step: images/s of one process on {args.device} ({threads} threads), batch {args.model_batch}\n")
    print(f"{'size':>4} {'T':>2} | {'decode':>7} {'prep':>7} {'base':>7} | {'views':>7} {'views':>7} {'':>6} | "
          f"{'pipe':>7} {'pipe':>7} {'loader':>7} | {'':>4} {'model':>7} {'pipe /':>8} {'cores':>6}")
    print(f"{'':>4} {'':>2} | {'':>7} {'before':>7} {'now':>7} | {'before':>7} {'now':>7} {'ratio':>6} | "
          f"{'before':>7} {'now':>7} {'(dev.)':>7} | {'':>4} {'img/s':>7} {'model':>8} {'needed':>6}")
    rows = [r for size in args.sizes for r in bench_size(size, args, threads)]
    meta = {"device": platform.processor() or "cpu", "threads_model": threads, "threads_pipeline": 1,
            "torch": torch.__version__, "repeats": args.repeats}
    write_results(args.out, {"meta": meta, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
