#!/usr/bin/env python
"""Push an exported model (or a run's export/) to the Hugging Face Hub, private by default.

    python tools/push_to_hub.py runs/demo --repo-id you/hrssm-waterbirds [--public] [--token hf_...]

The folder is checked first (it must load with hrssm.load and hrssm.load_world_model), so a broken export is never
uploaded. The token comes from --token, $HF_TOKEN, or `hf auth login`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import hrssm
from hrssm.cli import cli_main
from hrssm.export import CONFIG_FILE


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="export folder, or a run folder holding export/")
    p.add_argument("--repo-id", required=True, help="user/name on the Hub")
    p.add_argument("--public", action="store_true", help="make a new repo public (default: private)")
    p.add_argument("--token", default=None)
    p.add_argument("--commit-message", default="Upload hrssm world model")
    args = p.parse_args(argv)
    folder = Path(args.folder)
    if (folder / "export" / CONFIG_FILE).exists():
        folder = folder / "export"
    try:
        hrssm.load(folder)
        hrssm.load_world_model(folder)
    except (hrssm.ExportError, FileNotFoundError) as err:
        raise hrssm.ExportError(f"not pushing, the export does not load: {err}") from err
    from huggingface_hub import HfApi

    api = HfApi(token=args.token)
    try:
        api.create_repo(args.repo_id, private=not args.public, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=args.repo_id, commit_message=args.commit_message)
    except Exception as err:  # offline, no token, no permission, network
        print(f"error: could not push {folder} to {args.repo_id} ({type(err).__name__}: {err}). Check the network "
              "(HF_HUB_OFFLINE must be unset) and the token (--token, $HF_TOKEN or `hf auth login`).",
              file=sys.stderr)
        return 1
    print(f"pushed {folder} to {info}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
