"""Files a crash cannot leave half written, and the one rule that tells a local path from a hub id.

Every writer in hrssm writes aside, then renames into place (a rename is atomic on POSIX):

    atomic_write_text(path, text)                          # report.md, eval.json, a study's row
    with atomic_file(path) as f: np.savez(f, ...)          # latents .npz
    with atomic_directory(out) as work: ds.save_to_disk(str(work))   # synthetic twin, Waterbirds cache, pairs
    replace_directory(finished, final)                     # checkpoints (hrssm.checkpoint)

and `is_disk_full(err)` tells a failed write that ran out of space from other failures.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """An open temporary file beside `path`; when the block ends without error it replaces `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` so that a reader sees the old file or the new one, never a part."""
    with atomic_file(path, "w") as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, data) -> Path:
    """`data` as indented JSON at `path` (its folder made if missing), atomically (`atomic_write_text`); the path."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=2))
    return Path(path)


def replace_directory(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Move the complete folder `src` to `dst`; an existing `dst` is moved aside first and removed only after."""
    src, dst = Path(src), Path(dst)
    if not dst.exists():
        os.replace(src, dst)
        return
    old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_directory(out: str | os.PathLike) -> Iterator[Path]:
    """A path beside `out` (not created yet) to write a folder into; when the block ends without error the folder
    replaces `out` (see `replace_directory`), and on error it is removed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp / out.name
        replace_directory(tmp / out.name, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def is_hub_id(source: str | os.PathLike) -> bool:
    """True if `source` can only be a Hugging Face Hub repo id ("name" or "owner/name"), not a local path.

    (Call it for a source that does not exist locally.) A path is: a Path object; a string that starts with `.`,
    `/` or `~`, holds more than one `/` or the platform's own separator, or is no valid repo id (huggingface_hub's
    rule: letters, digits, `-`, `_`, `.`); and "first/second" whose first part is an existing local folder
    (`runs/missing` where `runs/` exists is a missing run, not the hub repo of a user called "runs").
    """
    if isinstance(source, os.PathLike) or not source:
        return False
    if source.startswith((".", "/", "~")) or source.count("/") > 1 or os.sep != "/" and os.sep in source:
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(source)
    except HFValidationError:
        return False
    return not ("/" in source and Path(source.split("/")[0]).is_dir())


_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_DISK_FULL_TEXT = ("No space left on device", "unexpected pos", "file write failed", "StorageFull")


def is_disk_full(err: BaseException) -> bool:
    """True if `err`, or an error it came from, says the disk (or the quota) is full. PyTorch reports a full disk in
    `torch.save` as a RuntimeError ("unexpected pos ..."), safetensors as "StorageFull"."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _DISK_FULL_ERRNOS:
            return True
        if any(text in str(seen) for text in _DISK_FULL_TEXT):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
