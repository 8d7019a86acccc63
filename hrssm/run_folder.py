"""A training run's folder: one run owns it at a time, a new run starts it empty, a resumed run cuts its log back.

    lock = claim_run_folder(out, resume=False, overwrite=False)    # main process only; RunFolderError if refused
    ...
    lock.release()

- **one owner**: `run.lock` holds the owner's pid, host and start time, and is locked with `fcntl.flock` while the
  run lives. A second run refuses, naming the holder. The kernel drops the lock when its process dies (SIGKILL
  too), so a lock file that nobody holds is stale: the next run takes it over with a warning.
- **a fresh start needs an empty folder**: without `resume`, a folder that holds anything but the lock is refused
  (continue it with --resume, or replace it with --overwrite). `overwrite` clears the folder first, and only a
  folder that holds an hrssm run (a `config.yaml`), never an arbitrary one.
- **the log after a resume** (`truncate_log`): rows after the checkpoint's step are cut from `metrics.jsonl`, so the
  resumed run writes them again exactly once.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path

from ._io import atomic_write_text
from .errors import HrssmError

LOCK_FILE, LOG_FILE, CONFIG_FILE = "run.lock", "metrics.jsonl", "config.yaml"

logger = logging.getLogger("hrssm")


class RunFolderError(HrssmError, ValueError):
    """An output_dir a run cannot use as it is (held by another run, not empty, or not a folder)."""


class RunLock:
    """The lock of one run folder, held by this process until `release` (or until the process dies)."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path, self._fd = path, fd

    @classmethod
    def acquire(cls, folder: str | os.PathLike) -> RunLock:
        """Lock `folder` (created if needed) for this process, or raise `RunFolderError` naming the holder."""
        path = Path(folder) / LOCK_FILE
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if not _try_flock(fd, path):
                    holder = _describe(_read_holder(fd))
                    raise RunFolderError(
                        f"{path.parent} is in use by another training run ({holder}): wait for it to finish, stop "
                        "it, or choose another output_dir")
                if os.path.exists(path) and os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break  # (else the holder released and removed the file between our open and flock: again)
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        stale = _read_holder(fd)
        if stale:
            logger.warning("%s: taking over the lock of a run that is no longer running (%s)", path.parent,
                           _describe(stale))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_this_holder()).encode() + b"\n", 0)
        os.fsync(fd)
        return cls(path, fd)

    def release(self) -> None:
        """Remove the lock file and unlock (idempotent)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def claim_run_folder(folder: str | os.PathLike, resume: bool = False, overwrite: bool = False) -> RunLock:
    """Make `folder` this run's: lock it, then check (or, with `overwrite`, clear) what it holds.

    Raises `RunFolderError` if `folder` is a file, another live run holds it, or it is not empty although neither
    `resume` nor `overwrite` is set (and if `overwrite` is asked of a folder that holds no hrssm run)."""
    out = Path(folder)
    if resume and overwrite:
        raise RunFolderError("--resume continues the run in output_dir and --overwrite deletes it: choose one")
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"output_dir {out} is a file, not a folder: choose another output_dir")
    out.mkdir(parents=True, exist_ok=True)
    lock = RunLock.acquire(out)
    try:
        contents = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE)
        if contents and overwrite:
            if CONFIG_FILE not in contents:
                raise RunFolderError(
                    f"--overwrite clears only a run folder, and {out} holds no run ({CONFIG_FILE} missing; it holds "
                    f"{_some(contents)}): empty it yourself or choose another output_dir")
            _clear(out)
        elif contents and not resume:
            raise RunFolderError(
                f"output_dir {out} is not empty (it holds {_some(contents)}): continue that run with --resume, "
                "replace it with --overwrite, or choose another output_dir")
    except BaseException:
        lock.release()
        raise
    return lock


def truncate_log(folder: str | os.PathLike, step: int) -> None:
    """Cut `metrics.jsonl` back to the rows of steps <= `step` (and drop a line a kill left half written)."""
    path = Path(folder) / LOG_FILE
    if not path.exists():
        return
    text = path.read_text()
    kept = [line for line in text.splitlines() if (row := _row_step(line)) is not None and row <= step]
    new = "".join(line + "\n" for line in kept)
    if new != text:
        atomic_write_text(path, new)


def _row_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def _clear(out: Path) -> None:
    """Delete everything in the run folder `out` but the lock, its config.yaml last (so a clear that is killed half
    way still leaves a folder --overwrite recognises as a run)."""
    for p in sorted(out.iterdir(), key=lambda p: p.name == CONFIG_FILE):
        if p.name == LOCK_FILE:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def _some(names: list[str], most: int = 4) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _try_flock(fd: int, path: Path) -> bool:
    """Lock `fd` exclusively without waiting: False if another process holds it. Where the file system cannot lock
    (some network mounts), a warning, and True."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; the lock file is still written, so the holder is named
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as err:
        logger.warning("cannot lock %s (%s): runs started concurrently in this folder will not be detected",
                       path, err)
    return True


def _this_holder() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S %z")}


def _read_holder(fd: int) -> dict:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {"unreadable lock file": True}
    return data if isinstance(data, dict) else {}


def _describe(holder: dict) -> str:
    if not holder:
        return "a run that has not written its pid yet"
    if "pid" not in holder:
        return "the lock file is unreadable"
    return f"pid {holder['pid']} on host {holder.get('host', '?')}, since {holder.get('since', '?')}"
