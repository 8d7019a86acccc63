"""Export a trained world model, and load it back as an encoder (for probes) or as the full model.

One layout, written by `export` and by `WorldModel.save_pretrained` / `push_to_hub`, read by `load`,
`load_world_model` and `WorldModel.from_pretrained` (all strict and format-checked):

    config.json          the ModelConfig, its preprocessing included, plus `hrssm_format` (refused by older loaders)
    model.safetensors    the full world model, decoder included
    encoder.safetensors  what feature extraction needs: the ViT encoder and the RSSM (no decoder)
    README.md            the model card (hrssm/model_card.py); evaluation/ holds its pictures after an evaluation

    enc = hrssm.load("runs/demo/export")          # or a hub repo id (revision=, token=, cache_dir=, ...)
    feats = enc.encode(images)                     # (B, D): [h, p(z), s of every cell]; uint8 or [-0.5, 0.5] input
    lat = enc.encode_latents(images)               # {"h": (B, deter), "z": (B, stoch*classes) one-hot, "z_probs",
                                                   #  "s": (B, cells, dim)}
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from ._io import atomic_directory, atomic_file, atomic_write_text
from .config import ModelConfig, with_legacy_defaults
from .encoder import EncodesImages
from .errors import one_line
from .hub import CONFIG_FILE, ExportError, resolve_export
from .model_card import LICENSE, PICTURES_DIR, PIPELINE_TAG, TAGS, training_card

# 2: config.json carries the preprocessing (`preprocess`). Format 1 folders still load (they encoded at crop 1.0).
FORMAT_VERSION = 2
ENCODER_FILE, MODEL_FILE = "encoder.safetensors", "model.safetensors"
ENCODER_PREFIXES = ("encoder.", "rssm.")
__all__ = ["CONFIG_FILE", "ENCODER_FILE", "Encoder", "ExportError", "FORMAT_VERSION", "HubMixin", "MODEL_FILE",
           "export", "load", "load_weights_into", "load_world_model", "read_model_config", "write_export_files"]


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


class HubMixin(PyTorchModelHubMixin, library_name="hrssm", license=LICENSE, pipeline_tag=PIPELINE_TAG, tags=TAGS):
    """huggingface_hub's `save_pretrained` / `push_to_hub` / `from_pretrained`, writing and reading exactly what
    `export` / `load_world_model` do: the encoder file included, strict loading, the format checked.

    `from_pretrained` is replaced as a whole (not only `_from_pretrained`): the mixin's version would decode
    config.json and try the hub before hrssm could check the format or tell a missing folder from a repo id.
    """

    def _save_pretrained(self, save_directory: Path) -> None:
        write_export_files(self, Path(save_directory))

    def generate_model_card(self, *args, **kwargs):
        """hrssm's card (`hrssm.model_card.training_card`); kwargs: metrics, data, steps."""
        return training_card(self, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *, force_download: bool = False,
                        token: str | bool | None = None, cache_dir: str | os.PathLike | None = None,
                        local_files_only: bool = False, revision: str | None = None, **model_kwargs: Any):
        """The world model of an export folder, a run folder or a hub repo (= `hrssm.load_world_model`).
        model_kwargs: `map_location` (device, default cpu)."""
        return cls._from_pretrained(model_id=os.fspath(pretrained_model_name_or_path), revision=revision,
                                    cache_dir=cache_dir, force_download=force_download,
                                    local_files_only=local_files_only, token=token, **model_kwargs)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None, cache_dir: str | os.PathLike | None,
                         force_download: bool, local_files_only: bool, token: str | bool | None,
                         map_location: str | torch.device = "cpu", strict: bool = True, **model_kwargs: Any):
        if not strict or model_kwargs:
            raise TypeError("hrssm exports load strictly and rebuild the model from their config.json: "
                            f"from_pretrained takes no {'strict=False' if not strict else sorted(model_kwargs)}")
        hub = {"revision": revision, "cache_dir": cache_dir, "force_download": force_download,
               "local_files_only": local_files_only, "token": token}
        return _load_module(cls, model_id, MODEL_FILE, map_location, torch.float32, hub)


def write_export_files(model, folder: Path) -> None:
    """config.json, model.safetensors and encoder.safetensors of `model` into `folder`, each file atomically. A
    README.md and evaluation/ already there belong to other weights and are removed (the caller writes a card)."""
    from safetensors.torch import save

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"hrssm_format": str(FORMAT_VERSION)}
    (folder / "README.md").unlink(missing_ok=True)
    shutil.rmtree(folder / PICTURES_DIR, ignore_errors=True)
    atomic_write_text(folder / CONFIG_FILE,
                      json.dumps({**model.cfg.to_dict(), "hrssm_format": FORMAT_VERSION}, indent=2))
    for name, tensors in ((MODEL_FILE, state),
                          (ENCODER_FILE, {k: v for k, v in state.items() if k.startswith(ENCODER_PREFIXES)})):
        with atomic_file(folder / name) as f:
            f.write(save(tensors, metadata=meta))


def export(model, out_dir: str | os.PathLike, metrics: dict[str, float] | None = None,
           data: str | None = None, steps: int | None = None) -> Path:
    """Write the export folder of a (trained) WorldModel: `model.save_pretrained` with the training facts on the
    card, into a folder that replaces `out_dir` only once complete."""
    out = Path(out_dir)
    with atomic_directory(out) as work:
        model.save_pretrained(work, model_card_kwargs={"metrics": metrics or {}, "data": data, "steps": steps})
    return out


def load(path_or_repo: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
         *, revision: str | None = None, token: str | bool | None = None, cache_dir: str | os.PathLike | None = None,
         local_files_only: bool = False, force_download: bool = False) -> Encoder:
    """Load the encoder of an export folder, a run folder or a hub repo: `encode(images)` -> (B, D) features.
    The keyword options go to `huggingface_hub.snapshot_download` (a repo only)."""
    hub = {"revision": revision, "token": token, "cache_dir": cache_dir, "local_files_only": local_files_only,
           "force_download": force_download}
    return _load_module(Encoder, path_or_repo, ENCODER_FILE, device, dtype, hub)


def load_world_model(path_or_repo: str | os.PathLike, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32, *, revision: str | None = None,
                     token: str | bool | None = None, cache_dir: str | os.PathLike | None = None,
                     local_files_only: bool = False, force_download: bool = False):
    """Load the full world model (decoder included) of an export folder, a run folder or a hub repo (the same as
    `WorldModel.from_pretrained`). The keyword options go to `huggingface_hub.snapshot_download`."""
    from .world_model import WorldModel

    hub = {"revision": revision, "token": token, "cache_dir": cache_dir, "local_files_only": local_files_only,
           "force_download": force_download}
    return _load_module(WorldModel, path_or_repo, MODEL_FILE, device, dtype, hub)


def read_model_config(path_or_repo: str | os.PathLike, **hub: Any) -> ModelConfig:
    """The (format-checked) ModelConfig of an export folder, a run folder or a hub repo."""
    return _read_config(resolve_export(path_or_repo, [CONFIG_FILE], **hub))


# modules of a WorldModel that only a loss uses (None when the config has no such loss)
LOSS_HEADS = ("projector", "sobel_projector", "predictor", "local_predictor", "target_encoder")


def load_weights_into(module: nn.Module, path_or_repo: str | os.PathLike, **hub: Any) -> list[str]:
    """Copy the full model weights of an export into `module` (a WorldModel of a compatible config), strictly:
    the warm start of `init_from` in training. The export's loss heads that `module` has no use for (e.g. the
    contrastive projectors when it trains with `loss.contrastive: none`) are left out; their names are returned."""
    folder = resolve_export(path_or_repo, [CONFIG_FILE, MODEL_FILE], **hub)
    _read_config(folder)  # the format check
    unused = tuple(f"{name}." for name in LOSS_HEADS if getattr(module, name, "absent") is None)
    dropped = _load_weights(module, folder / MODEL_FILE, hint="Keep the export's architecture (only settings such "
                            "as the loss weights or the preprocessing may differ from its config.json), or start "
                            "from scratch.", drop=unused)
    heads = {key.split(".", 1)[0] for key in dropped}
    return [name for name in LOSS_HEADS if name in heads]


def _load_module(cls, path_or_repo, weights: str, device, dtype, hub: dict[str, Any]):
    folder = resolve_export(path_or_repo, [CONFIG_FILE, weights], **hub)
    module = cls(_read_config(folder))
    _load_weights(module, folder / weights)
    return module.to(device=device, dtype=dtype).eval()


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
                          f"({FORMAT_VERSION}): upgrade hrssm (git pull and pip install -e . in your hrssm checkout), "
                          "or re-export the model with this version")
    try:
        return ModelConfig.from_dict(with_legacy_defaults(data))  # keys added since the file was written
    except (TypeError, ValueError) as err:
        raise ExportError(f"{folder / CONFIG_FILE} is not a valid model config: {err}") from err


def _load_weights(module: nn.Module, file: Path,
                  hint: str = "The folder mixes files of different exports: re-export the run.",
                  drop: tuple[str, ...] = ()) -> list[str]:
    """Strict load with a readable list of what does not fit (never a silent partial load); the file's tensors
    whose names start with one of `drop` are left out first, and their names returned."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(file))
    except (SafetensorError, OSError) as err:
        raise ExportError(f"{file} cannot be read as safetensors ({one_line(err)}): it is truncated or damaged; "
                          "re-export the run (or download it again)") from None
    dropped = sorted(k for k in state if k.startswith(drop)) if drop else []
    for key in dropped:
        del state[key]
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
        raise ExportError(f"the weights in {file} do not fit the model: {'; '.join(parts)}. {hint}")
    module.load_state_dict(state, strict=True)
    return dropped
