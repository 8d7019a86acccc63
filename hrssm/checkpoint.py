"""Atomic training checkpoints on top of `accelerator.save_state`.

A checkpoint is written to ``checkpoints/.tmp-step_N`` and renamed to ``checkpoints/step_N`` only once complete
(a directory rename is atomic on POSIX), so a kill mid-write leaves the previous checkpoint untouched and the
half-written one invisible. The newest ``keep`` checkpoints are kept.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

_NAME = re.compile(r"^step_(\d+)$")


def checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return sorted(found)


def latest_checkpoint(root: str | Path) -> Path | None:
    found = checkpoints(root)
    return found[-1][1] if found else None


def save_checkpoint(accelerator, root: str | Path, step: int, keep: int) -> Path:
    """`accelerator.save_state` into a temporary folder, then rename into place and prune. Call on every process."""
    root = Path(root)
    final, tmp = root / f"step_{step:08d}", root / f".tmp-step_{step:08d}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():  # the same step saved again (e.g. an interrupt right after a periodic save)
            old = root / f".old-step_{step:08d}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        for _, path in checkpoints(root)[:-keep]:
            shutil.rmtree(path, ignore_errors=True)
        for stale in root.glob(".tmp-step_*"):  # leftovers of killed writes
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final
