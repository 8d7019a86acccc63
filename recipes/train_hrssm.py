#!/usr/bin/env python
"""Train an hrssm world model: the `hrssm-train` command (hrssm/commands/train.py), runnable without installing.

    python recipes/train_hrssm.py --config recipes/configs/demo.yaml [--section.key VALUE ...]   # --help: every key
    accelerate launch --num_processes 4 recipes/train_hrssm.py --config recipes/configs/waterbirds_224.yaml
"""

import sys

from hrssm.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
