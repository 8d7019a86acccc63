"""The one attention function: xformers' memory-efficient kernel on CUDA when it works, else PyTorch SDPA."""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "sdpa", "xformers", "math")


@functools.cache
def xformers_usable(device_type: str, dtype: torch.dtype) -> bool:
    """True if xformers is installed and a trial call runs on this device/dtype (it has no CPU kernels)."""
    if device_type != "cuda":
        return False
    try:
        import xformers.ops as xops

        q = torch.zeros(1, 8, 1, 16, device=device_type, dtype=dtype)
        xops.memory_efficient_attention(q, q, q)
        return True
    except Exception as err:  # ImportError, NotImplementedError, a build for another torch/CUDA ...
        warnings.warn(f"xformers not usable ({type(err).__name__}: {err}); using torch SDPA", stacklevel=2)
        return False


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Reference: softmax(q k^T / sqrt(d)) v for (B, heads, N, d) tensors."""
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    return scores.softmax(dim=-1) @ v


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Scaled dot-product attention, no mask, for q, k, v of shape (B, heads, N, head_dim).

    backend: "auto" (xformers on CUDA if usable, else SDPA), "sdpa", "xformers" (raises if unusable), "math".
    """
    if backend == "auto":
        backend = "xformers" if q.is_cuda and xformers_usable(q.device.type, q.dtype) else "sdpa"
    if backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v)
    if backend == "math":
        return math_attention(q, k, v)
    if backend == "xformers":
        if not xformers_usable(q.device.type, q.dtype):
            raise RuntimeError("attention backend 'xformers' asked for, but xformers cannot run here "
                               "(not installed, no CUDA, or built for another torch): use 'auto' or 'sdpa'")
        import xformers.ops as xops

        out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2)
    raise ValueError(f"unknown attention backend {backend!r}; use one of {BACKENDS}")
