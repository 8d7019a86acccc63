"""Run under `ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 tests/ddp_worker.py OUT CONFIG [--key value ...]`:
train, then each rank writes what it saw to OUT/rank{i}.json (process count, the class Accelerate wrapped the model
in) and its weights to OUT/rank{i}.safetensors."""

import json
import sys
from pathlib import Path

from accelerate import Accelerator
from safetensors.torch import save_file

from hrssm.train_config import TrainConfig
from hrssm.trainer import train

prepared: list[str] = []
_prepare = Accelerator.prepare


def _recording_prepare(self, *args, **kwargs):
    out = _prepare(self, *args, **kwargs)
    prepared.append(type(out[0]).__name__)  # train prepares (model, optimizer, loader)
    return out


if __name__ == "__main__":
    Accelerator.prepare = _recording_prepare
    out, config, *overrides = sys.argv[1:]
    res = train(TrainConfig.load(config, overrides))
    rank = res.process_index
    save_file({k: v.contiguous() for k, v in res.model.state_dict().items()}, str(Path(out, f"rank{rank}.safetensors")))
    Path(out, f"rank{rank}.json").write_text(json.dumps({"num_processes": res.num_processes,
                                                         "prepared_model": prepared[0]}))
