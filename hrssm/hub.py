"""Where an export comes from and goes to: a local folder, or a Hugging Face Hub repo.

    folder = resolve_export("runs/demo", ["config.json"])                   # a run folder: its export/
    folder = resolve_export("you/hrssm-demo", files, revision="v1.0", token=..., cache_dir=..., local_files_only=...)
    url = push_export("runs/demo/export", "you/hrssm-demo")                  # private unless private=False

Every loader (`hrssm.load`, `hrssm.load_world_model`, `WorldModel.from_pretrained`) takes the `HUB_OPTIONS` and passes
them on to `huggingface_hub.snapshot_download`: revision (branch, tag or commit), token (default: $HF_TOKEN or
`hf auth login`), cache_dir (default: the hub cache, HF_HOME / HF_HUB_CACHE), local_files_only (the cache only, never
the network), force_download (download again even if cached). A source that exists locally is a
folder; one that does not and cannot be a repo id (`hrssm._io.is_hub_id`) is a missing folder, never a hub lookup.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ._io import is_hub_id
from .errors import HrssmError

CONFIG_FILE = "config.json"
HUB_OPTIONS = ("revision", "token", "cache_dir", "local_files_only", "force_download")


class ExportError(HrssmError, ValueError):
    """An export folder or hub repo that cannot be loaded as it is; the message says why and what to do."""


def resolve_export(path_or_repo: str | os.PathLike, files: list[str], **hub: Any) -> Path:
    """The local folder holding `files` of an export: the folder itself, a run folder's `export/`, or a snapshot of
    a hub repo (only `files` are downloaded). Raises FileNotFoundError for a missing local folder, ExportError for
    an incomplete folder or a repo that cannot be fetched. `hub`: any of `HUB_OPTIONS` (used for a repo only)."""
    unknown = sorted(set(hub) - set(HUB_OPTIONS))
    if unknown:
        raise TypeError(f"unexpected option(s) {unknown}; the hub options are {', '.join(HUB_OPTIONS)}")
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
                              f"(hrssm.export.export(model, folder) or model.save_pretrained(folder)) or point to "
                              "the run's export/ folder.")
        return path
    if not is_hub_id(path_or_repo):
        raise FileNotFoundError(f"export folder {path} does not exist. Check the path (a run folder, its export/, "
                                "or a hub repo id such as you/hrssm-model).")
    return _download(text, files, hub)


def _download(repo_id: str, files: list[str], hub: dict[str, Any]) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id!r}" + (f" at revision {hub['revision']!r}" if hub.get("revision") else "")
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=files, **hub))
    except LocalEntryNotFoundError as err:
        raise ExportError(f"{where} is not a local folder and could not be fetched from the Hugging Face Hub "
                          f"(offline, local_files_only, or not in the cache): {err}. Download it where there is "
                          "network, or pass a local export folder.") from err
    except RevisionNotFoundError as err:
        raise ExportError(f"{where}: no such revision on the Hugging Face Hub; check the branch, tag or "
                          "commit") from err
    except (RepositoryNotFoundError, GatedRepoError) as err:
        raise ExportError(f"{where} is neither a local folder nor a Hugging Face Hub repo you can read "
                          f"({type(err).__name__}): check the name, or pass a token (token=..., $HF_TOKEN or "
                          "`hf auth login`) for a private or gated repo") from err
    except Exception as err:  # network, disk
        raise ExportError(f"could not fetch {where} from the Hugging Face Hub ({type(err).__name__}: {err})") \
            from err
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise ExportError(f"hub repo {where} lacks {missing}: it is not a complete hrssm export (push a folder "
                          "written by hrssm.export or WorldModel.save_pretrained)")
    return folder


def check_export(folder: str | os.PathLike) -> Path:
    """The export folder of `folder` (itself or a run's export/), after loading it with `hrssm.load` and
    `hrssm.load_world_model` (ExportError / FileNotFoundError if it does not load)."""
    from .export import load, load_world_model

    path = resolve_export(folder, [CONFIG_FILE])
    load(path)
    load_world_model(path)
    return path


def push_export(folder: str | os.PathLike, repo_id: str, *, private: bool = True, token: str | None = None,
                commit_message: str = "Upload hrssm world model", check: bool = True) -> str:
    """Upload an export folder as it is (card, evaluation pictures and all) to `repo_id`, creating the repo
    (private unless `private=False`). The folder must pass `check_export` first (skip with `check=False` if the
    caller did): a broken export is never uploaded. Returns the commit URL."""
    from huggingface_hub import HfApi

    folder = check_export(folder) if check else Path(folder)
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=commit_message)
    return str(info)
