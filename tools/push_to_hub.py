#!/usr/bin/env python
"""Push an export (or a run's export/) to the Hugging Face Hub, private by default: the `hrssm-push` command
(hrssm/commands/push.py), runnable without installing.

    python tools/push_to_hub.py runs/demo --repo-id you/hrssm-waterbirds [--public] [--token hf_...]
"""

import sys

from hrssm.commands.push import main

if __name__ == "__main__":
    sys.exit(main())
