#!/usr/bin/env python
"""Expected accelerator memory of a training step per batch size, computed from measurements on the CPU.

    python benchmarks/bench_memory.py                          # base preset, 224, T = 4, bf16; measured at B = 2, 3
    python benchmarks/bench_memory.py --precision fp32 --batches 2 3 --predict 8 16 32 64 128

A training step (forward + backward + AdamW, autocast as on a GPU) runs under a dispatch mode that follows every
tensor it allocates until the tensor is freed. The peak of the live bytes during forward + backward (activations,
gradients, temporaries) is linear in the batch: two batch sizes give its per-image and fixed cost. The optimizer
step's peak (AdamW's temporaries) does not depend on the batch. Expected memory = weights + AdamW's two moments +
the larger of the two peaks, extrapolated to the batches asked for. What the estimate leaves out on a GPU: the
CUDA context (~0.5 GB), cuBLAS/cuDNN workspaces and the caching allocator's rounding and fragmentation (typically
+10-30%); `python benchmarks/bench_train_step.py` on the GPU prints the real `torch.cuda.max_memory_allocated`.
"""

from __future__ import annotations

import argparse
import sys
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train_step import BATCH_OF_TWO, model_config, write_results  # noqa: E402

from hrssm.world_model import WorldModel  # noqa: E402


class LiveBytes(TorchDispatchMode):
    """The bytes of the tensors allocated under this mode and still alive, and their peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self.seen: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t._base is None:  # a view or an in-place result shares a storage
                ptr = t.untyped_storage().data_ptr()
                if ptr and ptr not in self.seen:
                    size = t.untyped_storage().nbytes()
                    self.seen.add(ptr)
                    self.live += size
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(t, self._free, ptr, size)
        return out

    def _free(self, ptr: int, size: int) -> None:
        self.seen.discard(ptr)
        self.live -= size


def step_peak_bytes(model: torch.nn.Module, batch: int, views: int, size: int, precision: str) -> dict[str, float]:
    """What one training step at `batch` holds (after a warm-up step, so AdamW's moments exist), in bytes."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(batch, views, 3, size, size) - 0.5
    a = torch.zeros(batch, views, model.cfg.action_dim)

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        model(x, a).loss.backward()  # a warm-up step: AdamW's moments exist from here on
    opt.step()
    opt.zero_grad(set_to_none=True)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    moments = sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if v.ndim > 0)
    inputs = x.numel() * x.element_size()
    with LiveBytes() as backward:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(x, a).loss
        loss.backward()
    with LiveBytes() as optimizer:  # the gradients are already there, so the increase is AdamW's own
        opt.step()
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    opt.zero_grad(set_to_none=True)
    return {"batch": batch, "weights": weights, "adam_moments": moments, "inputs": inputs,
            "forward_backward_peak": backward.peak, "optimizer_peak": grads + optimizer.peak}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="base")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--views", type=int, default=4, help="T")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16", help="autocast as the GPU run uses")
    p.add_argument("--batches", type=int, nargs=2, default=[2, 3],
                   help="the two batch sizes measured (2 or more: SimCLR tells the images of a batch apart)")
    p.add_argument("--predict", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    p.add_argument("--out", default="benchmarks/results/bench_memory.json")
    args = p.parse_args(argv)
    if min(args.batches) < 2:
        p.error(f"--batches {args.batches}: {BATCH_OF_TWO}")
    torch.manual_seed(0)
    model = WorldModel(model_config(args.size, args.preset))
    measured = [step_peak_bytes(model, b, args.views, args.size, args.precision) for b in args.batches]
    (b0, m0), (b1, m1) = ((m["batch"], m["forward_backward_peak"] + m["inputs"]) for m in measured)
    per_image = (m1 - m0) / (b1 - b0)  # activations, their gradients and the input views
    fixed = m0 - per_image * b0
    state = measured[0]["weights"] + measured[0]["adam_moments"]
    optimizer = max(m["optimizer_peak"] for m in measured)
    gib = 2**30

    def expected(batch: int) -> float:
        return state + max(fixed + per_image * batch, optimizer)

    print(f"{args.preset} at {args.size} px, T = {args.views}, {args.precision}: weights "
          f"{measured[0]['weights'] / gib:.2f} GiB, AdamW moments {measured[0]['adam_moments'] / gib:.2f} GiB, "
          f"optimizer step peak {optimizer / gib:.2f} GiB")
    for m in measured:
        print(f"measured: batch {m['batch']:>3}  forward + backward peak {m['forward_backward_peak'] / gib:6.2f} GiB"
              f"  step {expected(m['batch']) / gib:6.2f} GiB")
    print(f"per image (T = {args.views} views): {per_image / gib:.3f} GiB; forward + backward fixed: "
          f"{fixed / gib:.2f} GiB")
    print(f"{'batch':>6} {'expected GiB':>13}")
    predicted = [{"batch": b, "gib": expected(b) / gib} for b in args.predict]
    for row in predicted:
        print(f"{row['batch']:>6} {row['gib']:>13.1f}")
    write_results(args.out, {"preset": args.preset, "size": args.size, "views": args.views,
                             "precision": args.precision, "measured": measured, "per_image_bytes": per_image,
                             "fixed_bytes": fixed, "optimizer_peak_bytes": optimizer, "predicted": predicted})
    return 0


if __name__ == "__main__":
    sys.exit(main())
