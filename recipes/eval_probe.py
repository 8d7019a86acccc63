#!/usr/bin/env python
"""Evaluate an exported hrssm model on Waterbirds: the `hrssm-eval` command (hrssm/commands/evaluate.py), runnable
without installing.

    python recipes/eval_probe.py --model runs/demo/export --data data/synthetic_waterbirds_64 [--out runs/demo/eval]
"""

import sys

from hrssm.commands.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
