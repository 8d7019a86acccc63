#!/usr/bin/env python
"""Train an hrssm world model.

    python recipes/train_hrssm.py --config recipes/configs/demo.yaml [--section.key value ...]
    accelerate launch --num_processes 4 recipes/train_hrssm.py --config recipes/configs/waterbirds_224.yaml
    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 recipes/train_hrssm.py --config ...   # several CPU processes

Any key of the config can be overridden: --optim.lr 3e-4, --views.num_views=2, --model.loss.recon_scale 10.
--resume continues from the newest checkpoint of output_dir, --overwrite deletes the run in output_dir first (a
new run needs an empty output_dir); --stop-on-collapse ends a collapsed run (exit 3).
Exit codes (hrssm/cli.py): 0 done, 2 bad config, data, run folder or checkpoint (one line says what to do),
3 collapse, 4 NaN/inf losses, 130/143 interrupted (checkpoint saved).
"""

from __future__ import annotations

import argparse
import sys

from hrssm.cli import cli_main
from hrssm.train_config import TrainConfig
from hrssm.trainer import train


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="YAML config (see recipes/configs/)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    p.add_argument("--overwrite", action="store_true", help="delete the run in output_dir first")
    p.add_argument("--stop-on-collapse", action="store_true", help="exit with code 3 when training collapses")
    p.add_argument("--output-dir", default=None, help="shortcut for --output_dir")
    args, rest = p.parse_known_args(argv)
    extra = rest + (["--output_dir", args.output_dir] if args.output_dir else [])
    extra += ["--collapse.stop", "true"] if args.stop_on_collapse else []
    cfg = TrainConfig.load(args.config, extra)
    train(cfg, resume=args.resume, overwrite=args.overwrite)
    return 0


if __name__ == "__main__":
    sys.exit(main())
