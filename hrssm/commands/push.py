"""Push an export (or a run's export/) to the Hugging Face Hub as it is, private by default (the `hrssm-push`
command; tools/push_to_hub.py runs the same).

    hrssm-push runs/demo --repo-id you/hrssm-waterbirds [--public] [--token hf_...]

The folder is checked first (it must load with hrssm.load and hrssm.load_world_model), so a broken export is never
uploaded; its card (with the evaluation, after hrssm-eval) and evaluation/ pictures go with it. The token comes from
--token, $HF_TOKEN, or `hf auth login`. Exit codes: 0 pushed, 1 the hub refused or could not be reached, 2 the
export does not load.
"""

from __future__ import annotations

import argparse
import sys

from ..cli import cli_main
from ..hub import ExportError


@cli_main
def main(argv: list[str] | None = None) -> int:
    from ..hub import check_export, push_export

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("folder", help="export folder, or a run folder holding export/")
    p.add_argument("--repo-id", required=True, help="user/name on the Hub")
    p.add_argument("--public", action="store_true", help="make a new repo public (default: private)")
    p.add_argument("--token", default=None)
    p.add_argument("--commit-message", default="Upload hrssm world model")
    args = p.parse_args(argv)
    try:
        folder = check_export(args.folder)
    except (ExportError, FileNotFoundError) as err:
        raise ExportError(f"not pushing, the export does not load: {err}") from err
    try:
        url = push_export(folder, args.repo_id, private=not args.public, token=args.token,
                          commit_message=args.commit_message, check=False)
    except Exception as err:  # offline, no token, no permission, network
        print(f"error: could not push {folder} to {args.repo_id} ({type(err).__name__}: {err}). Check the network "
              "(HF_HUB_OFFLINE must be unset) and the token (--token, $HF_TOKEN or `hf auth login`).",
              file=sys.stderr)
        return 1
    print(f"pushed {folder} to {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
