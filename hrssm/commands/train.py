"""Train an hrssm world model (the `hrssm-train` command; recipes/train_hrssm.py runs the same).

    hrssm-train --config recipes/configs/demo.yaml [--section.key VALUE ...]
    accelerate launch --num_processes 4 recipes/train_hrssm.py --config recipes/configs/waterbirds_224.yaml
    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 recipes/train_hrssm.py --config ...   # several CPU processes

Any config key can be overridden (the list is below): --optim.lr 3e-4, --views.num_views=2,
--model.loss.free_nats_global 0.5. --print-config shows the resolved config and exits.
--resume (or --resume latest) continues from the newest good checkpoint of output_dir; --resume PATH from that
checkpoint (a checkpoints/step_N folder, or a run folder: its newest good one); --overwrite deletes the run in
output_dir first (a new run needs an empty output_dir). --init-from EXPORT starts from the weights of an export
(folder, run folder or hub repo; its config.json is the model config). --hub.push true --hub.model_id you/name
pushes the export at the end (a private repo unless --hub.private false).
Exit codes (hrssm/cli.py): 0 done, 1 trained and exported but the push failed, 2 bad config, data, run folder or
checkpoint (one line says what to do), 3 collapse (with --stop-on-collapse), 4 NaN/inf losses, 130/143 interrupted
(checkpoint saved).
"""

from __future__ import annotations

import sys

from ..checkpoint import find_checkpoint
from ..cli import cli_main
from ..train_config import TrainConfig
from .config_args import config_parser, print_config


@cli_main
def main(argv: list[str] | None = None) -> int:
    from ..trainer import train

    p = config_parser(__doc__, argv)
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="latest|PATH",
                   help="continue from the newest checkpoint of output_dir (latest), or from the checkpoint PATH")
    p.add_argument("--overwrite", action="store_true", help="delete the run in output_dir first")
    p.add_argument("--init-from", default=None, metavar="EXPORT",
                   help="warm start from an export folder, run folder or hub repo (= --init_from)")
    p.add_argument("--stop-on-collapse", action="store_true", help="exit with code 3 when training collapses")
    p.add_argument("--output-dir", default=None, help="the run folder (= --output_dir)")
    args, rest = p.parse_known_args(argv)
    extra = rest + (["--output_dir", args.output_dir] if args.output_dir else [])
    extra += ["--init_from", args.init_from] if args.init_from else []
    extra += ["--collapse.stop", "true"] if args.stop_on_collapse else []
    cfg = TrainConfig.load(args.config, extra)
    if args.resume not in (None, "latest"):
        find_checkpoint(args.resume)  # a wrong path fails now, not after the setup
    if args.print_config:
        print_config(cfg)
        return 0
    train(cfg, resume=args.resume or False, overwrite=args.overwrite)
    return 0


if __name__ == "__main__":
    sys.exit(main())
