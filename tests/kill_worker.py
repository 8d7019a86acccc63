"""Run recipes/train_hrssm.py, but send this process a signal at the end of a given step (a fault for
tests/test_faults.py; a kill at a known step, unlike a signal from outside).

    python tests/kill_worker.py STEP SIGNAL [train_hrssm.py arguments ...]     # SIGNAL: KILL, TERM, INT
"""

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from recipes_loader import load_recipe  # noqa: E402

from hrssm import trainer  # noqa: E402

if __name__ == "__main__":
    step, name, *args = sys.argv[1:]
    real, calls = trainer._stop_requested, {"n": 0}

    def stop_requested(accelerator, stop_signal):  # called once at the end of every step
        calls["n"] += 1
        if calls["n"] == int(step):
            os.kill(os.getpid(), getattr(signal, f"SIG{name}"))
        return real(accelerator, stop_signal)

    trainer._stop_requested = stop_requested
    sys.exit(load_recipe("train_hrssm").main(args))
