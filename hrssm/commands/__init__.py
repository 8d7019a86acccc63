"""The command-line programs of hrssm, installed as console scripts with the package (recipes/ and tools/ hold thin
wrappers that run the same `main`):

    hrssm-train           hrssm.commands.train            recipes/train_hrssm.py
    hrssm-eval            hrssm.commands.evaluate         recipes/eval_probe.py
    hrssm-export-latents  hrssm.commands.export_latents   tools/export_latents.py
    hrssm-push            hrssm.commands.push             tools/push_to_hub.py

Config keys have one override style everywhere: ``--section.key VALUE`` or ``--section.key=VALUE``
(`hrssm.commands.config_args`); ``hrssm-train --help`` lists every key with its default and meaning.
Each `main(argv)` returns the exit code: 0 done, 2 bad input (config, data, model), others as each says.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


def model_and_data_parser(description: str | None, many_models: bool = False) -> argparse.ArgumentParser:
    """The arguments of the commands that read an export (`many_models`: one or more) and a dataset: --model,
    --revision, --data, --data-revision, --device, --batch-size."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    if many_models:
        p.add_argument("--model", required=True, nargs="+", help="export folders, run folders or hub repo ids")
    else:
        p.add_argument("--model", required=True, help="export folder, run folder or hub repo id")
    p.add_argument("--revision", default=None, help="the hub repo's branch, tag or commit (a repo id only)")
    add_data_arguments(p)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=128)
    return p


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """--data (a Waterbirds source) and --data-revision (the hub dataset's revision)."""
    p.add_argument("--data", required=True, help="Waterbirds source (hub id, save_to_disk dir, original folder)")
    p.add_argument("--data-revision", default=None, help="the hub dataset's branch, tag or commit")


def twin_test_palettes(data: str, revision: str | None, seed: int) -> np.ndarray | None:
    """`own_palette` of the test rows when `data` is the synthetic twin of `seed` as generated, else None (and a
    line saying so: the palette split is skipped)."""
    from ..data import load_waterbirds
    from ..data.counterfactual import CounterfactualError, twin_palettes

    try:
        return twin_palettes(load_waterbirds(data, "test", revision=revision), "test", seed)
    except CounterfactualError:
        print(f"(not the synthetic twin of seed {seed}: no palette split)")
        return None


def local_export(model: str) -> Path | None:
    """The export folder of `--model` when it is a local export or run folder, else None (a hub repo id)."""
    from ..hub import CONFIG_FILE, resolve_export

    return resolve_export(model, [CONFIG_FILE]) if Path(model).exists() else None


def default_output_dir(model: str, export_dir: Path | None, folder: str) -> Path:
    """Where a command writes what it measures of `--model`: `folder` beside its local export `export_dir` (in its
    run folder; `local_export(model)`), else `folder`-OWNER--NAME in the working directory (a hub repo)."""
    return export_dir.parent / folder if export_dir else Path(f"{folder}-{model.replace('/', '--')}")
