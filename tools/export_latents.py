#!/usr/bin/env python
"""Encode a Waterbirds split with an exported model and save the latents to .npz: the `hrssm-export-latents`
command (hrssm/commands/export_latents.py), runnable without installing.

    python tools/export_latents.py --model runs/demo/export --data data/synthetic_waterbirds_64 --split test \\
        --out runs/demo/latents_test.npz
"""

import sys

from hrssm.commands.export_latents import main

if __name__ == "__main__":
    sys.exit(main())
