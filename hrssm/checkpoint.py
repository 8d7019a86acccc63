"""Where a training checkpoint is written: atomic folders on top of `accelerator.save_state`.

`save_checkpoint` writes ``checkpoints/.tmp-step_N`` and renames it to ``checkpoints/step_N`` only once complete
(`hrssm._io.replace_directory`), so a kill mid-write leaves the previous checkpoint untouched and the half-written
one invisible. The newest ``keep`` checkpoints are kept. `hrssm.trainer.Checkpointer` decides when to call it.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from ._io import replace_directory

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


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint `path` names: a checkpoint folder (``checkpoints/step_N``), or the newest one of a
    checkpoints folder or of a run folder. Raises FileNotFoundError saying what exists."""
    path = Path(path)
    if _NAME.match(path.name) and path.is_dir():
        return path
    for root in (path / "checkpoints", path):
        found = latest_checkpoint(root)
        if found is not None:
            return found
    raise FileNotFoundError(f"--resume {path}: " + ("no such folder" if not path.exists() else
                            "not a checkpoint (checkpoints/step_N), and holds none") +
                            ". Give a checkpoint folder such as runs/NAME/checkpoints/step_00000300, a run folder "
                            "(its newest checkpoint), or --resume latest")


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
        replace_directory(tmp, final)  # final exists when a step is saved again (an interrupt after a save)
        for _, path in checkpoints(root)[:-keep]:
            shutil.rmtree(path, ignore_errors=True)
        for stale in root.glob(".tmp-step_*"):  # leftovers of killed writes
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


class Checkpointer:
    """The checkpoints of one run: `save` writes the state of `step_source.step` (at most once per step) with
    `save_checkpoint`; `resume` loads the newest one, or a given one. Call both on every process."""

    def __init__(self, accelerator, root: str | Path, step_source, keep: int) -> None:
        self.accelerator, self.root, self.state, self.keep = accelerator, Path(root), step_source, keep
        self.saved_at = -1

    def save(self) -> None:
        if self.saved_at != self.state.step:
            save_checkpoint(self.accelerator, self.root, self.state.step, self.keep)
            self.saved_at = self.state.step

    def resume(self, checkpoint: Path | None = None) -> None:
        """Load `checkpoint` (`find_checkpoint`), or else the newest of this run (model, optimizer, RNG and
        everything registered for checkpointing)."""
        ckpt = latest_checkpoint(self.root) if checkpoint is None else find_checkpoint(checkpoint)
        if ckpt is None:
            self.accelerator.print(f"--resume: no checkpoint in {self.root}, starting from scratch")
        else:
            self.accelerator.load_state(str(ckpt))
            self.accelerator.print(f"resumed from {ckpt} (step {self.state.step})")
