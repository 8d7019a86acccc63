"""Training checkpoints: written atomically, verified before use, and nothing in them unpickled but by
``torch.load(weights_only=True)``.

A checkpoint ``checkpoints/step_N`` holds

    model.safetensors       the model (`accelerator.save_state`)
    optimizer.bin           the optimizer's state_dict (`accelerator.save_state`: torch.save; loaded weights_only=True)
    scaler.pt               fp16 runs only: the GradScaler (likewise)
    trainer_state.json      the loop's own state (step, skipped steps, LR schedule, metric window) and what the run
                            must match to resume (the model config, the number of processes)
    process_K.safetensors   one per process K: its RNG states (torch CPU and CUDA, NumPy, Python) and its tensors
                            of the loop's state (the open metric window)
    manifest.json           written last: the size and SHA-256 of every other file

Accelerate's own pickles are not kept: nothing is registered with `register_for_checkpointing` (Accelerate loads
its ``custom_checkpoint_*.pkl`` with weights_only=False, i.e. it runs whatever code the file names), and
``random_states_K.pkl`` is replaced by process_K.safetensors.

- `save_checkpoint` writes ``checkpoints/.tmp-step_N``, its manifest last, and renames it to ``step_N``
  (`hrssm._io.replace_directory`): a kill mid-write leaves the previous checkpoint the newest one. The newest `keep`
  are kept. A full disk removes the half-written folder and raises `CheckpointError` saying so.
- `Checkpointer.resume` loads the newest checkpoint that verifies (`verify_checkpoint`: every file in the manifest
  present, with its size and hash, and no other file); one that fails is skipped with a warning naming the file.
  `--resume PATH` names one (`find_checkpoint`: a checkpoint folder, or a run folder's newest good one).
  `hrssm.trainer` decides when to save.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ._io import atomic_write_text, is_disk_full, replace_directory
from .config import with_legacy_defaults
from .errors import HrssmError, one_line

FORMAT_VERSION = 1
MANIFEST, STATE_FILE = "manifest.json", "trainer_state.json"
_NAME = re.compile(r"^step_(\d+)$")
_RNG = "rng."  # prefix of the RNG tensors in a process file


class CheckpointError(HrssmError, ValueError):
    """No usable checkpoint, a checkpoint of another run, or a checkpoint that could not be written."""


class Resumable(Protocol):
    """What `Checkpointer` saves besides the model and optimizer: the loop's state at `step`."""

    step: int

    def state_dict(self) -> dict[str, Any]: ...  # JSON; the main process's is saved

    def tensors(self) -> dict[str, torch.Tensor]: ...  # each process's own

    def load_state_dict(self, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None: ...


def checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """Checkpoint folders under `root` (renamed into place, not yet verified), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return sorted(found)


def latest_checkpoint(root: str | Path) -> Path | None:
    found = checkpoints(root)
    return found[-1][1] if found else None


def find_checkpoint(path: str | Path, warn: Callable[[str], None] = lambda msg: None) -> Path:
    """The checkpoint `path` names (`--resume PATH`), verified: a checkpoint folder (``checkpoints/step_N``), or the
    newest good one of a checkpoints folder or of a run folder. FileNotFoundError / CheckpointError say why not."""
    path = Path(path)
    if _NAME.match(path.name) and path.is_dir():
        if reason := verify_checkpoint(path):
            raise CheckpointError(f"checkpoint {path} cannot be used: {reason}. Give another checkpoint, or its run "
                                  "folder (its newest good one)")
        return path
    for root in (path / "checkpoints", path):
        found = newest_good_checkpoint(root, warn)
        if found is not None:
            return found
    raise FileNotFoundError(f"--resume {path}: " + ("no such folder" if not path.exists() else
                            "not a checkpoint (checkpoints/step_N), and holds none") +
                            ". Give a checkpoint folder such as runs/NAME/checkpoints/step_00000300, a run folder "
                            "(its newest checkpoint), or --resume latest")


def save_checkpoint(accelerator, root: str | Path, step: int, keep: int, state: dict[str, Any],
                    tensors: dict[str, torch.Tensor]) -> Path:
    """Write the checkpoint of `step` (see the module docstring) and prune to the newest `keep`. Call on every
    process; `state` is the main process's JSON, `tensors` each process's own."""
    root = Path(root)
    final, tmp = root / f"step_{step:08d}", root / f".tmp-step_{step:08d}"
    main = accelerator.is_main_process
    if main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp))
        _write_process_file(tmp, accelerator.process_index, tensors)
        accelerator.wait_for_everyone()
        if main:
            (tmp / STATE_FILE).write_text(json.dumps(state))
            _write_manifest(tmp, step)
    except Exception as err:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(err):
            previous = latest_checkpoint(root)
            kept = f"the last good checkpoint, {previous}, is kept" if previous else "there is no earlier checkpoint"
            raise CheckpointError(f"the disk is full: checkpoint {final} could not be written ({one_line(err)}); "
                                  f"{kept}. Free some space (or lower checkpoint.keep), then continue with --resume") \
                from err
        raise
    if main:
        replace_directory(tmp, final)  # final exists when a step is saved again (an interrupt after a save)
        for _, path in checkpoints(root)[:-keep]:
            shutil.rmtree(path, ignore_errors=True)
        for stale in root.glob(".tmp-step_*"):  # leftovers of killed writes
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def verify_checkpoint(ckpt: str | Path) -> str | None:
    """Why the checkpoint folder `ckpt` cannot be trusted, or None if its manifest verifies."""
    ckpt = Path(ckpt)
    try:
        listed = json.loads((ckpt / MANIFEST).read_text())["files"]
        listed = {str(name): (int(entry["bytes"]), str(entry["sha256"])) for name, entry in listed.items()}
    except FileNotFoundError:
        return f"it has no {MANIFEST} (an unfinished write, or a checkpoint of an hrssm older than the manifest)"
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"its {MANIFEST} is unreadable"
    present = {p.name for p in ckpt.iterdir()} - {MANIFEST}
    if missing := sorted(set(listed) - present):
        return f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing"
    if added := sorted(present - set(listed)):
        return f"{', '.join(added)} {'is' if len(added) == 1 else 'are'} not in its manifest (added afterwards)"
    for name, (size, digest) in sorted(listed.items()):
        path = ckpt / name
        if not path.is_file() or path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, not the {size} it was written with (truncated?)"
        if _sha256(path) != digest:
            return f"{name} differs from what was written (its SHA-256 does not match the manifest)"
    return None


def newest_good_checkpoint(root: str | Path, warn: Callable[[str], None]) -> Path | None:
    """The newest checkpoint under `root` that verifies; `warn` is told about each newer one skipped. None if there
    is no checkpoint at all; `CheckpointError` if there are some and none verifies."""
    found = checkpoints(root)
    reasons = []
    for _, path in reversed(found):
        reason = verify_checkpoint(path)
        if reason is None:
            return path
        reasons.append(f"{path.name}: {reason}")
        warn(f"checkpoint {path} is skipped: {reason}")
    if reasons:
        raise CheckpointError(f"no checkpoint in {Path(root)} can be used ({'; '.join(reasons)}): start the run "
                              "over with --overwrite (or restore the checkpoints)")
    return None


class Checkpointer:
    """The checkpoints of one run: `save` writes the state at `state.step` (at most once per step); `resume` loads
    the newest good one (or a given one). `identity` (JSON) is what a checkpoint must have been written with to be
    resumed, e.g. the model config. Call both on every process."""

    def __init__(self, accelerator, root: str | Path, keep: int, state: Resumable, identity: dict[str, Any]) -> None:
        self.accelerator, self.root, self.keep, self.state = accelerator, Path(root), keep, state
        self.identity = json.loads(json.dumps(identity))  # as it reads back (tuples become lists)
        self.saved_at = -1

    def save(self) -> None:
        if self.saved_at != self.state.step:
            data = {"format": FORMAT_VERSION, "identity": self.identity, "state": self.state.state_dict()}
            save_checkpoint(self.accelerator, self.root, self.state.step, self.keep, data, self.state.tensors())
            self.saved_at = self.state.step

    def resume(self, checkpoint: str | Path | None = None) -> Path | None:
        """Load `checkpoint` (`find_checkpoint`: a checkpoint folder, or the newest good one of a run folder), or
        else the newest good checkpoint of this run: model and optimizer (Accelerate, weights_only), RNG states and
        the loop's state. None (and a message) if there is no checkpoint."""
        say = self.accelerator.print

        def warn(msg: str) -> None:
            say(f"warning: {msg}")

        ckpt = newest_good_checkpoint(self.root, warn) if checkpoint is None else find_checkpoint(checkpoint, warn)
        if ckpt is None:
            say(f"--resume: no checkpoint in {self.root}, starting from scratch")
            return None
        data = json.loads((ckpt / STATE_FILE).read_text())
        saved = data.get("identity", {})
        if isinstance(saved.get("model"), dict):  # model keys added since the checkpoint was written
            saved = {**saved, "model": with_legacy_defaults(saved["model"])}
        if differences := _differences(saved, self.identity):
            raise CheckpointError(f"checkpoint {ckpt} belongs to another run: {'; '.join(differences[:4])}. Resume "
                                  "with the run's own settings (its config.yaml), or start over with --overwrite")
        try:
            self.accelerator.load_state(str(ckpt), load_kwargs={"weights_only": True})
        except pickle.UnpicklingError as err:
            raise CheckpointError(f"checkpoint {ckpt} holds a pickle that torch's safe loader refuses (weights_only: "
                                  f"{one_line(err)[:160]}): hrssm did not write it. Delete that checkpoint, or start "
                                  "over with --overwrite") from None
        except ValueError as err:
            if "parameter groups" not in str(err):
                raise
            raise CheckpointError(f"checkpoint {ckpt} has another number of optimizer parameter groups than this run "
                                  f"({one_line(err)[:120]}): a run trained before optim.late_start_schedule existed "
                                  "resumes with --optim.late_start_schedule false, or start over with --overwrite"
                                  ) from None
        tensors = _read_process_file(ckpt, self.accelerator.process_index)
        self.state.load_state_dict(data["state"], tensors)
        self.saved_at = self.state.step
        say(f"resumed from {ckpt} (step {self.state.step})")
        return ckpt


# -- files ----------------------------------------------------------------------------------------------------------


def _process_file(index: int) -> str:
    return f"process_{index}.safetensors"


def _write_process_file(folder: Path, index: int, tensors: dict[str, torch.Tensor]) -> None:
    """This process's RNG states and `tensors`, as safetensors (in place of Accelerate's random_states_K.pkl)."""
    from safetensors.torch import save_file

    rng, meta = _rng_state()
    own = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    save_file({**rng, **own}, str(folder / _process_file(index)), metadata={"rng": json.dumps(meta)})
    (folder / f"random_states_{index}.pkl").unlink(missing_ok=True)


def _read_process_file(folder: Path, index: int) -> dict[str, torch.Tensor]:
    """Restore this process's RNG states from its file; return its other tensors."""
    from safetensors import safe_open

    with safe_open(str(folder / _process_file(index)), framework="pt") as f:
        meta = json.loads(f.metadata()["rng"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    _set_rng_state({k: v for k, v in tensors.items() if k.startswith(_RNG)}, meta)
    return {k: v for k, v in tensors.items() if not k.startswith(_RNG)}


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The RNG states of this process: tensors and JSON."""
    tensors = {f"{_RNG}torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"{_RNG}cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    tensors[f"{_RNG}numpy"] = torch.from_numpy(keys.astype(np.int64))
    tensors[f"{_RNG}python"] = torch.tensor(internal, dtype=torch.int64)
    meta = {"numpy": [kind, int(pos), int(has_gauss), float(cached)], "python": [version, gauss_next]}
    return tensors, meta


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors[f"{_RNG}torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith(f"{_RNG}cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    kind, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, tensors[f"{_RNG}numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, gauss_next = meta["python"]
    random.setstate((version, tuple(tensors[f"{_RNG}python"].tolist()), gauss_next))


def _write_manifest(folder: Path, step: int) -> None:
    files = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(folder.iterdir()) if p.name != MANIFEST}
    atomic_write_text(folder / MANIFEST, json.dumps({"format": FORMAT_VERSION, "step": step, "files": files},
                                                    indent=1))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _differences(saved: Any, current: Any, key: str = "") -> list[str]:
    """'key: checkpoint A, this run B' for every leaf where two nested mappings differ."""
    if isinstance(saved, dict) and isinstance(current, dict):
        return [d for k in sorted(set(saved) | set(current), key=str)
                for d in _differences(saved.get(k), current.get(k), f"{key}.{k}" if key else str(k))]
    return [] if saved == current else [f"{key}: {saved!r} in the checkpoint, {current!r} in this run"]
