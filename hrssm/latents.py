"""Latents of a dataset to `.npz` and back to images.

Arrays: features (N, D) (`Encoder.encode`), h (N, deter), z (N, stoch*classes) one-hot, s (N, cells, dim) (the local
latents; (N, 0, 0) without a local level): h, z, s are the state the decoder reads, label, place, group, img_id, and
`metadata` (a JSON string: model, config hash, weights hash, preprocessing, data, split). Files written before the
local array was named `s` call it `local`; they still load. Decoding checks the config hash and the weights hash
(`model_hashes`), so latents are never decoded by a model they do not belong to, and refuses NaN/inf latents, naming
the rows. A file that is not a readable latents file raises `LatentsError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._io import atomic_file
from .config import ModelConfig
from .data.preprocess import check_finite
from .encoder import check_features, select_features
from .errors import HrssmError, one_line
from .export import ENCODER_PREFIXES

ARRAYS = ("features", "h", "z", "s", "label", "place", "group", "img_id")
_OLD_NAMES = {"s": "local"}  # array names of older files


class LatentsError(HrssmError, ValueError):
    """A latents file that cannot be read, or latents that this model cannot decode."""


def config_hash(cfg: ModelConfig) -> str:
    """A short, stable hash of a model config (what makes latents compatible with a decoder). The preprocessing is
    left out: it changes which latents an image gets, not which decoder fits them."""
    arch = {k: v for k, v in cfg.to_dict().items() if k != "preprocess"}
    return hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:16]


def weights_hash(model: torch.nn.Module) -> str:
    """A short hash of the weights that make latents (encoder and RSSM), the same for a WorldModel and the
    `hrssm.Encoder` of its export."""
    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        if name.startswith(ENCODER_PREFIXES):
            h.update(name.encode())
            h.update(value.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def model_hashes(model) -> dict[str, str]:
    """The metadata that ties latents to the model that encoded them: config hash and weights hash."""
    return {"config_hash": config_hash(model.cfg), "weights_hash": weights_hash(model)}


def dataset_latents(encoder, ds, batch_size: int = 128, progress: bool = True, desc: str = "encoding",
                    features: str = "latents") -> dict[str, np.ndarray]:
    """Encode every image of a Waterbirds dataset with an `hrssm.Encoder` (deterministic latents; the model's own
    preprocessing), with a progress bar named `desc` unless `progress` is False. `features` says what the
    `features` array holds (`Encoder.encode`): "latents" [h, z's class probabilities, s], "global" [h, z's class
    probabilities] or "tokens" (the encoder's mean patch token); `with_features` makes another set from the same
    arrays. h, z (one-hot) and s are the state the decoder reads; z_probs and tokens are returned too, not saved by
    `save_latents`."""
    from tqdm.auto import tqdm

    check_features(features)
    parts: dict[str, list[torch.Tensor]] = {"h": [], "z": [], "z_probs": [], "s": [], "tokens": []}
    for start in tqdm(range(0, len(ds), batch_size), desc=desc, unit="batch", disable=not progress):
        lat = encoder.encode_latents(ds[start : start + batch_size]["image"], tokens=True)
        for key, value in lat.items():
            parts[key].append(value.float().cpu())
    out = {k: torch.cat(v).numpy() for k, v in parts.items() if v}
    if "s" not in out:
        out["s"] = np.zeros((len(ds), 0, 0), np.float32)
    for key in ("label", "place", "group", "img_id"):
        out[key] = np.asarray(ds[key], dtype=np.int64)
    return with_features(out, features)


def with_features(latents: dict[str, np.ndarray], features: str) -> dict[str, np.ndarray]:
    """`dataset_latents`' output with its `features` array rebuilt as `features` (one of `encoder.FEATURES`) from
    the same h, z_probs, s and tokens: a shallow copy, the other arrays shared."""
    parts = {key: torch.from_numpy(latents[key]) for key in ("h", "z_probs", "s", "tokens")
             if key in latents and latents[key].size}
    needed = ("tokens",) if check_features(features) == "tokens" else ("h", "z_probs")
    if missing := [key for key in needed if key not in parts]:
        raise ValueError(f"{features!r} features need {list(needed)}, these arrays lack {missing}: use the output of "
                         "dataset_latents (a saved .npz keeps only h, z and s)")
    return {**latents, "features": select_features(features, parts).numpy()}


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
    try:
        with np.load(path, allow_pickle=False) as f:
            stored = {k: _OLD_NAMES[k] if k not in f.files and _OLD_NAMES.get(k) in f.files else k for k in ARRAYS}
            missing = [k for k in (*stored.values(), "metadata") if k not in f.files]
            if missing:
                raise LatentsError(f"{path} is not an hrssm latents file: it lacks {missing}")
            arrays = {k: f[name] for k, name in stored.items()}
            metadata = json.loads(str(f["metadata"]))
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as err:
        if isinstance(err, LatentsError):
            raise
        raise LatentsError(f"{path} is not a readable latents file ({type(err).__name__}: {one_line(err)[:200]}): "
                           "it is truncated, damaged or of another kind; write it again with tools/export_latents.py") \
            from None
    if not isinstance(metadata, dict):
        raise LatentsError(f"{path}: its metadata is not a JSON object; write it again with tools/export_latents.py")
    rows = {k: len(v) for k, v in arrays.items()}
    if len(set(rows.values())) != 1 or not rows["h"]:
        raise LatentsError(f"{path} holds {rows['h']} latents" + (" (its arrays disagree on the count: "
                                                                   f"{rows})" if len(set(rows.values())) != 1 else "")
                           + "; write it again with tools/export_latents.py")
    return arrays, metadata


@torch.no_grad()
def decode_latents(model, arrays: dict[str, np.ndarray], metadata: dict[str, Any] | None = None,
                   n: int | None = None, batch_size: int = 128) -> torch.Tensor:
    """Decode saved latents with a WorldModel -> images (N, 3, S, S) in [-0.5, 0.5] (unclamped decoder output).
    `metadata` (of `load_latents`) is checked against the model's `model_hashes`."""
    if metadata is not None:
        _check_source(model, metadata)
    model.eval()
    param = next(model.parameters())
    count = len(arrays["h"]) if n is None else min(n, len(arrays["h"]))
    for key in ("h", "z", "s"):
        try:
            check_finite(torch.from_numpy(np.asarray(arrays[key][:count])), f"latents {key!r}")
        except ValueError as err:
            raise LatentsError(str(err)) from None
    out = []
    for start in range(0, count, batch_size):
        stop = min(count, start + batch_size)
        h, z = (torch.from_numpy(arrays[k][start:stop]).to(param) for k in ("h", "z"))
        s = torch.from_numpy(arrays["s"][start:stop]).to(param) if arrays["s"].size else None
        out.append(model.decode(h, z, s).float().cpu())
    return torch.cat(out)


def _check_source(model, metadata: dict[str, Any]) -> None:
    """Refuse latents whose metadata names another config or other weights than `model`'s."""
    ours = model_hashes(model)
    if metadata.get("config_hash") != ours["config_hash"]:
        raise LatentsError(f"these latents were made by a model with config hash {metadata.get('config_hash')} "
                           f"({metadata.get('model')}), not this one ({ours['config_hash']}): decode them with the "
                           "model that encoded them")
    if "weights_hash" not in metadata:
        warnings.warn("these latents record no weights hash (written by an older hrssm): only their config is "
                      "checked against the model", stacklevel=3)
    elif metadata["weights_hash"] != ours["weights_hash"]:
        raise LatentsError(f"these latents were encoded by other weights (hash {metadata['weights_hash']}, "
                           f"{metadata.get('model')}) than this model's ({ours['weights_hash']}), though the config "
                           "is the same: decode them with the export that encoded them")
