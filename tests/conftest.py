"""Shared fixtures and helpers (import the helpers with `from conftest import ...`). The whole suite runs offline:
hub access is disabled and non-loopback sockets are refused."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before datasets / huggingface_hub are imported
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402

_real_connect = socket.socket.connect


def _guarded_connect(self, address):
    host = address[0] if isinstance(address, tuple) else None
    if host is not None:
        try:
            ok = ipaddress.ip_address(host).is_loopback
        except ValueError:
            ok = host == "localhost"
        if not ok:
            raise RuntimeError(f"tests must not touch the network (tried to connect to {address})")
    return _real_connect(self, address)


socket.socket.connect = _guarded_connect

ROOT = Path(__file__).resolve().parents[1]  # the repository
BASE_CONFIG = ROOT / "recipes" / "configs" / "studies_base.yaml"  # 64 px, no contrastive term: the mechanics


# the `tiny` preset before issue 12's recipe became its default: one RGB stream (a linear patch embedding, the CLS
# token as the global embedding), no contrastive term. Tests of one mechanism vary one key of it.
PLAIN_TINY = {"encoder": {"width": 128, "input_filter": "rgb", "stem": "patch", "pool": "cls"},
              "loss": {"contrastive": "none", "contrastive_scale": 1.0, "simclr_temperature": 0.1}}


def plain_tiny(**overrides):
    """`ModelConfig.preset("tiny")` with `PLAIN_TINY`, then `overrides` (nested dicts or values)."""
    from hrssm._config_utils import merge
    from hrssm.config import ModelConfig

    return ModelConfig.preset("tiny", **merge(PLAIN_TINY, overrides))


def tiny_run(data, out, *extra: str) -> list[str]:
    """`--section.key value` overrides of a small, fast training run on a synthetic fixture at 32x32 (6 steps, no
    trackers, no progress bar); `extra` comes last, so its keys win."""
    return ["--data.source", str(data), "--output_dir", str(out), "--model.image_size", "32", "--optim.batch_size", "4",
            "--views.num_views", "2", "--optim.max_steps", "6", "--optim.warmup_steps", "2", "--log.every", "2",
            "--log.images_every", "3", "--checkpoint.every", "3", "--log.trackers", "[]", "--log.progress", "false",
            *extra]


def hub_cache(cache_dir, repo_id: str, revisions: dict[str, Path]) -> Path:
    """A Hugging Face Hub cache (the layout `snapshot_download` reads offline) holding `repo_id` with one snapshot
    per revision name (folder copied as it is): a local folder standing in for the hub."""
    import shutil

    repo = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    for revision, folder in revisions.items():
        commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
        shutil.copytree(folder, repo / "snapshots" / commit, dirs_exist_ok=True)
        (repo / "refs" / revision).write_text(commit)
    return Path(cache_dir)


def digest(model) -> str:
    """A hash of every tensor of a module's state_dict (or of a state_dict), to compare weights exactly."""
    state = model.state_dict() if hasattr(model, "state_dict") else model
    h = hashlib.sha256()
    for name, p in sorted(state.items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="session")
def synthetic_columns():
    """A tiny synthetic Waterbirds (32x32, 2% of the real counts) generated in memory once per session."""
    from hrssm.data import synthetic

    return synthetic.generate(image_size=32, scale=0.02, seed=0, workers=1, progress=False)


@pytest.fixture(scope="session")
def synthetic_disk(synthetic_columns, tmp_path_factory):
    """The tiny synthetic set as a save_to_disk directory."""
    from hrssm.data import synthetic

    out = tmp_path_factory.mktemp("synthetic") / "disk"
    synthetic.write_save_to_disk(synthetic_columns, out)
    return out


@pytest.fixture(scope="session")
def synthetic_folder(synthetic_columns, tmp_path_factory):
    """The tiny synthetic set in the original Waterbirds layout (metadata.csv + JPEGs)."""
    from hrssm.data import synthetic

    out = tmp_path_factory.mktemp("synthetic") / "folder"
    synthetic.write_original_folder(synthetic_columns, out)
    return out
