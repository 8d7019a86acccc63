"""Config files and ``--section.key VALUE`` overrides on a command line, and the `--help` that lists every key.

    parser = config_parser(__doc__, argv)              # --config, --print-config; the epilog lists every key
    args, overrides = parser.parse_known_args(argv)   # the rest are overrides
    cfg = TrainConfig.load(args.config, overrides)
    ModelConfig.preset("tiny", **model_overrides(["--model.loss.recon_scale", "1"]))   # tools that build a model

The key list is generated from the config dataclasses (`TrainConfig.describe`: each field's comment is its meaning),
with the values of the `--config` file when one is given before `--help`, else the built-in defaults.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import Any

import yaml

from .._config_utils import cli_pairs, parse_overrides
from ..train_config import TrainConfig

WIDTH = 100


def config_parser(description: str | None, argv: list[str] | None = None) -> argparse.ArgumentParser:
    """An ArgumentParser with --config and --print-config, whose help ends with every config key."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False,  # an override such as --out must not become --output-dir
                                epilog=config_keys_help(_config_file(argv)))
    p.add_argument("--config", default=None, metavar="FILE", help="YAML config (see recipes/configs/); the "
                   "--section.key overrides below go on top of it")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (YAML, every model key included) and exit")
    return p


def config_keys_help(config_file: str | None = None) -> str:
    """Every config key with its value and meaning: the values of `config_file`, or the built-in defaults."""
    cfg, source = TrainConfig(), "built-in defaults (model.*: the tiny preset)"
    if config_file is not None:
        try:
            cfg, source = TrainConfig.load(config_file), f"values of {config_file}"
        except (ValueError, OSError) as err:
            source = f"built-in defaults ({config_file} does not load: {err})"
    lines = [f"config keys: --KEY VALUE or --KEY=VALUE, values as YAML (3e-4, true, [0.5, 1], null); {source}:", ""]
    for key, value, meaning in cfg.describe():
        lines.append(f"  --{key} {format_value(value)}")
        lines += textwrap.wrap(meaning or "(no description)", WIDTH, initial_indent=" " * 6,
                               subsequent_indent=" " * 6)
    return "\n".join(lines)


def format_value(value: Any) -> str:
    """A value as it is written on the command line (YAML flow style)."""
    if isinstance(value, tuple):
        value = list(value)
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...").strip()


def model_overrides(args: list[str]) -> dict[str, Any]:
    """``--model.KEY VALUE`` arguments (the model keys of `hrssm-train --help`) as ModelConfig overrides, for tools
    that build a model without a training config; any other key raises ValueError."""
    data = parse_overrides(cli_pairs(args))
    other = [key for key in data if key != "model"]
    if other:
        raise ValueError(f"unexpected --{other[0]}...: this tool takes model keys only, e.g. "
                         "--model.loss.recon_scale 1 (hrssm-train --help lists them)")
    return data.get("model", {})


def print_config(cfg: TrainConfig) -> None:
    """The resolved config as YAML (loads back with --config)."""
    print(yaml.safe_dump(cfg.resolved(), sort_keys=False), end="")


def _config_file(argv: list[str] | None) -> str | None:
    """The --config value of `argv`, when the help will be shown (so it can show that file's values)."""
    argv = sys.argv[1:] if argv is None else argv
    if not {"-h", "--help"} & set(argv):
        return None
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None
