"""Run under `ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 tests/ddp_worker.py DATA OUT`: a few training steps,
then each rank writes what it saw (process count, wrapper class, a digest of its weights) to OUT/rank{i}.json."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_training import _cfg, _digest  # noqa: E402

from hrssm.trainer import train  # noqa: E402

if __name__ == "__main__":
    data, out = sys.argv[1], sys.argv[2]
    res = train(_cfg(data, out, "--optim.max_steps", "4"))
    Path(out, f"rank{res.process_index}.json").write_text(json.dumps(
        {"num_processes": res.num_processes, "wrapped_as": res.wrapped_as, "digest": _digest(res.model)}))
