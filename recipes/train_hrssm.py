#!/usr/bin/env python
"""Train an hrssm world model.

    python recipes/train_hrssm.py --config recipes/configs/demo.yaml [--section.key value ...]
    accelerate launch --num_processes 4 recipes/train_hrssm.py --config recipes/configs/waterbirds_224.yaml
    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 recipes/train_hrssm.py --config ...   # several CPU processes

Any key of the config can be overridden: --optim.lr 3e-4, --views.num_views=2, --model.loss.recon_scale 10.
--resume continues from the newest checkpoint of output_dir; --stop-on-collapse ends a collapsed run (exit 3).
Exit codes: 0 done, 2 bad config or data, 3 collapse, 4 NaN/inf losses, 130/143 interrupted (checkpoint saved).
"""

from __future__ import annotations

import argparse
import sys

from hrssm.train_config import TrainConfig
from hrssm.trainer import CollapseError, NonFiniteLossError, TrainingInterrupted, train


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="YAML config (see recipes/configs/)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    p.add_argument("--stop-on-collapse", action="store_true", help="exit with code 3 when training collapses")
    p.add_argument("--output-dir", default=None, help="shortcut for --output_dir")
    args, rest = p.parse_known_args(argv)
    try:
        extra = rest + (["--output_dir", args.output_dir] if args.output_dir else [])
        extra += ["--collapse.stop", "true"] if args.stop_on_collapse else []
        cfg = TrainConfig.load(args.config, extra)
    except (ValueError, FileNotFoundError) as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    try:
        train(cfg, resume=args.resume)
    except CollapseError:
        print("stopped: training collapsed (--stop-on-collapse); see the message above", file=sys.stderr)
        return 3
    except NonFiniteLossError as err:
        print(f"stopped: {err}", file=sys.stderr)
        return 4
    except TrainingInterrupted as err:
        print(str(err), file=sys.stderr)
        return 128 + int(err.signum)
    except (ValueError, FileNotFoundError) as err:  # data problems found before the first step
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
