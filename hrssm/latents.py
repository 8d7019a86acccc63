"""Latents of a dataset to `.npz` and back to images.

Arrays: features (N, D), h (N, deter), z (N, stoch*classes), s (N, cells, dim) (the local latents; (N, 0, 0) without
a local level), label, place, group, img_id, and `metadata` (a JSON string: model, config hash, preprocessing, data,
split). Files written before the local array was named `s` call it `local`; they still load. Decoding checks the
config hash, so latents are never decoded by a model they do not belong to.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._io import atomic_file
from .config import ModelConfig

ARRAYS = ("features", "h", "z", "s", "label", "place", "group", "img_id")
_OLD_NAMES = {"s": "local"}  # array names of older files


def config_hash(cfg: ModelConfig) -> str:
    """A short, stable hash of a model config (what makes latents compatible with a decoder). The preprocessing is
    left out: it changes which latents an image gets, not which decoder fits them."""
    arch = {k: v for k, v in cfg.to_dict().items() if k != "preprocess"}
    return hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:16]


def dataset_latents(encoder, ds, batch_size: int = 128, progress: bool = True, desc: str = "encoding"
                    ) -> dict[str, np.ndarray]:
    """Encode every image of a Waterbirds dataset with an `hrssm.Encoder` (deterministic latents; the model's own
    preprocessing), with a progress bar named `desc` unless `progress` is False."""
    from tqdm.auto import tqdm

    parts: dict[str, list[torch.Tensor]] = {"h": [], "z": [], "s": []}
    for start in tqdm(range(0, len(ds), batch_size), desc=desc, unit="batch", disable=not progress):
        lat = encoder.encode_latents(ds[start : start + batch_size]["image"])
        for key, value in lat.items():
            parts[key].append(value.float().cpu())
    out = {k: torch.cat(v).numpy() for k, v in parts.items() if v}
    if "s" not in out:
        out["s"] = np.zeros((len(ds), 0, 0), np.float32)
    s = torch.from_numpy(out["s"]) if out["s"].size else None
    out["features"] = encoder.rssm.features(torch.from_numpy(out["h"]), torch.from_numpy(out["z"]), s).numpy()
    for key in ("label", "place", "group", "img_id"):
        out[key] = np.asarray(ds[key], dtype=np.int64)
    return out


def save_latents(path: str | os.PathLike, arrays: dict[str, np.ndarray], metadata: dict[str, Any]) -> Path:
    """Write the arrays and metadata to `path` (.npz), atomically."""
    path = Path(path)
    missing = [k for k in ARRAYS if k not in arrays]
    if missing:
        raise ValueError(f"latent arrays lack {missing}")
    with atomic_file(path) as f:
        np.savez(f, metadata=np.array(json.dumps(metadata)), **{k: arrays[k] for k in ARRAYS})
    return path


def load_latents(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, metadata) of a file written by `save_latents`, with a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"latents file {path} not found (write one with tools/export_latents.py)")
    with np.load(path, allow_pickle=False) as f:
        stored = {k: _OLD_NAMES[k] if k not in f.files and _OLD_NAMES.get(k) in f.files else k for k in ARRAYS}
        missing = [k for k in (*stored.values(), "metadata") if k not in f.files]
        if missing:
            raise ValueError(f"{path} is not an hrssm latents file: it lacks {missing}")
        arrays = {k: f[name] for k, name in stored.items()}
        metadata = json.loads(str(f["metadata"]))
    return arrays, metadata


@torch.no_grad()
def decode_latents(model, arrays: dict[str, np.ndarray], metadata: dict[str, Any] | None = None,
                   n: int | None = None, batch_size: int = 128) -> torch.Tensor:
    """Decode saved latents with a WorldModel -> images (N, 3, S, S) in [-0.5, 0.5] (unclamped decoder output)."""
    if metadata is not None and metadata.get("config_hash") != config_hash(model.cfg):
        raise ValueError(f"these latents were made by a model with config hash {metadata.get('config_hash')} "
                         f"({metadata.get('model')}), not this one ({config_hash(model.cfg)}): decode them with "
                         "the model that encoded them")
    model.eval()
    param = next(model.parameters())
    count = len(arrays["h"]) if n is None else min(n, len(arrays["h"]))
    out = []
    for start in range(0, count, batch_size):
        stop = min(count, start + batch_size)
        h, z = (torch.from_numpy(arrays[k][start:stop]).to(param) for k in ("h", "z"))
        s = torch.from_numpy(arrays["s"][start:stop]).to(param) if arrays["s"].size else None
        out.append(model.decode(h, z, s).float().cpu())
    return torch.cat(out)
