"""Export a trained world model, and load it back as an encoder (for probes) or as the full model.

An export folder (the standard `save_pretrained` layout, so it also works with `WorldModel.from_pretrained` and
`push_to_hub`):

    config.json          the ModelConfig plus `hrssm_format` (refused by older hrssm versions' loaders)
    model.safetensors    the full world model, decoder included
    encoder.safetensors  what feature extraction needs: the ViT encoder and the RSSM (no decoder)
    README.md            a model card: data, config, metrics, usage

    enc = hrssm.load("runs/demo/export")          # or a hub repo id
    feats = enc.encode(images)                     # (B, D): [h, z, s of every cell]; uint8 or [-0.5, 0.5] input
    lat = enc.encode_latents(images)               # {"h": (B, deter), "z": (B, stoch*classes), "s": (B, cells, dim)}
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from ._io import is_hub_id
from .config import ModelConfig
from .encoder import EncodesImages
from .errors import HrssmError, one_line

FORMAT_VERSION = 1
ENCODER_FILE, MODEL_FILE, CONFIG_FILE = "encoder.safetensors", "model.safetensors", "config.json"
ENCODER_PREFIXES = ("encoder.", "rssm.")


class ExportError(HrssmError, ValueError):
    """An export folder or hub repo that cannot be loaded as it is; the message says why and what to do."""


class Encoder(nn.Module, EncodesImages):
    """Images -> latent features (`encode`, `encode_latents`), with the encoder and RSSM posterior of a trained
    world model (no decoder)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        from .world_model import build_encoder_and_rssm

        self.cfg = config
        self.encoder, self.rssm = build_encoder_and_rssm(config)

    @property
    def feature_dim(self) -> int:
        return self.rssm.feature_dim


def export(model, out_dir: str | os.PathLike, metrics: dict[str, float] | None = None,
           data: str | None = None, steps: int | None = None) -> Path:
    """Write an export folder for a (trained) WorldModel."""
    out = Path(out_dir)
    config = {**model.cfg.to_dict(), "hrssm_format": FORMAT_VERSION}
    model.save_pretrained(out, config=config)
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k.startswith(ENCODER_PREFIXES)}
    save_file(state, str(out / ENCODER_FILE), metadata={"hrssm_format": str(FORMAT_VERSION)})
    (out / "README.md").write_text(_model_card(model.cfg, metrics or {}, data, steps))
    return out


def load(path_or_repo: str | os.PathLike, device: str | torch.device = "cpu",
         dtype: torch.dtype = torch.float32) -> Encoder:
    """Load the encoder of an export folder or hub repo: `encode(images)` -> (B, D) features."""
    folder = _resolve(path_or_repo, [CONFIG_FILE, ENCODER_FILE])
    enc = Encoder(_read_config(folder))
    _load_weights(enc, folder / ENCODER_FILE)
    return enc.to(device=device, dtype=dtype).eval()


def load_world_model(path_or_repo: str | os.PathLike, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32):
    """Load the full world model (decoder included) of an export folder or hub repo."""
    from .world_model import WorldModel

    folder = _resolve(path_or_repo, [CONFIG_FILE, MODEL_FILE])
    model = WorldModel(_read_config(folder))
    _load_weights(model, folder / MODEL_FILE)
    return model.to(device=device, dtype=dtype).eval()


def _resolve(path_or_repo: str | os.PathLike, files: list[str]) -> Path:
    text = os.fspath(path_or_repo)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ExportError(f"{path} is a file; give the export folder (holding {', '.join(files)})")
        if (path / "export" / CONFIG_FILE).exists() and not (path / CONFIG_FILE).exists():
            path = path / "export"  # a run folder: use its export
        missing = [f for f in files if not (path / f).is_file()]
        if missing:
            raise ExportError(f"{path} lacks {missing}: it is not a complete hrssm export. Re-export the run "
                              f"(hrssm.export.export(model, folder)) or point to the run's export/ folder.")
        return path
    if not is_hub_id(path_or_repo):
        raise FileNotFoundError(f"export folder {path} does not exist (and {text!r} is no hub repo id)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(text, allow_patterns=files))
    except LocalEntryNotFoundError as err:
        raise ExportError(f"{text!r} is not a local folder and could not be fetched from the Hugging Face Hub "
                          f"(offline, or not in the cache): {err}. Download it where there is network, or pass "
                          "a local export folder.") from err
    except Exception as err:  # repo not found, auth, network
        raise ExportError(f"could not fetch {text!r} from the Hugging Face Hub ({type(err).__name__}: {err})") \
            from err


def _read_config(folder: Path) -> ModelConfig:
    path = folder / CONFIG_FILE
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ExportError(f"{path} is not valid JSON ({one_line(err)}): the export is damaged; re-export the run") \
            from None
    if not isinstance(data, dict):
        raise ExportError(f"{path} holds a {type(data).__name__}, not a model config (a JSON object): the export is "
                          "damaged; re-export the run")
    version = data.pop("hrssm_format", None)
    if version is None:
        raise ExportError(f"{path} has no `hrssm_format`: it was not written by hrssm.export")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ExportError(f"{path} has hrssm_format={version!r}, not an integer: the export is damaged; re-export "
                          "the run")
    if version > FORMAT_VERSION:
        raise ExportError(f"{folder} uses export format {version}, newer than this hrssm understands "
                          f"({FORMAT_VERSION}): upgrade hrssm (pip install -U hrssm)")
    try:
        return ModelConfig.from_dict(data)
    except (TypeError, ValueError) as err:
        raise ExportError(f"{folder / CONFIG_FILE} is not a valid model config: {err}") from err


def _load_weights(module: nn.Module, file: Path) -> None:
    """Strict load with a readable list of what does not fit (never a silent partial load)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(file))
    except (SafetensorError, OSError) as err:
        raise ExportError(f"{file} cannot be read as safetensors ({one_line(err)}): it is truncated or damaged; "
                          "re-export the run (or download it again)") from None
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
             for k in sorted(set(state) & set(expected)) if state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} shape mismatch(es), e.g. {'; '.join(wrong[:3])}")
        if missing:
            parts.append(f"{len(missing)} tensor(s) missing, e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[:3]}")
        raise ExportError(f"the weights in {file} do not fit the config next to them: {'; '.join(parts)}. "
                          "The folder mixes files of different exports: re-export the run.")
    module.load_state_dict(state, strict=True)


def _model_card(cfg: ModelConfig, metrics: dict[str, float], data: str | None, steps: int | None) -> str:
    keys = ("recon_std_ratio", "psnr", "psnr_mean_image", "psnr_gain", "kl_global_raw", "kl_local_raw")
    rows = "\n".join(f"| {k} | {metrics[k]:.4g} |" for k in keys if k in metrics)
    r = cfg.rssm
    dim = r.deter + r.stoch * r.classes + r.local_grid**2 * r.local_dim
    return f"""---
library_name: hrssm
tags: [world-model, rssm, representation-learning, waterbirds]
---

# hrssm world model

A hierarchical RSSM world model (global GRU + {r.stoch}x{r.classes} categorical latent, {r.local_grid}x{r.local_grid}
grid of {r.local_dim}-dim Gaussian local latents) with a patch-ViT encoder and a ViT decoder, trained on
still images seen as sequences of views. Image size {cfg.image_size}, patch {cfg.encoder.patch_size}.

- data: {data or "unknown"}
- training steps: {steps if steps is not None else "unknown"}
- objective: {cfg.loss.objective}, recon_scale {cfg.loss.recon_scale}, free nats {cfg.loss.free_nats_global}
  (global) / {cfg.loss.free_nats_local} per cell (local)

## Metrics at the end of training (averaged over the last log window, training views)

| metric | value |
| --- | --- |
{rows or "| (none recorded) | |"}

## Use

```python
import hrssm
enc = hrssm.load("THIS_FOLDER_OR_REPO")      # encoder + RSSM posterior
features = enc.encode(images)                 # (B, {dim}) = [h, z, s of every cell]
model = hrssm.load_world_model("THIS_FOLDER_OR_REPO")   # full model, decoder included
```

Images: uint8 (resized and center-cropped to {cfg.image_size}) or float in [-0.5, 0.5].
"""
