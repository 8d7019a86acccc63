"""The one place where an error becomes what a command line prints and its exit code.

    @cli_main
    def main(argv: list[str] | None = None) -> int: ...

Every script (recipes/*.py, tools/*.py) decorates its `main` with `cli_main`: a known failure prints one line,
``error: <what happened and what to do>``, and `main` returns its exit code instead of raising:

- `hrssm.HrssmError` (config, data, export, checkpoint, run folder, latents) and `ValueError`: 2, or the error's
  own `exit_code` (training: collapse 3, NaN/inf losses 4, SIGINT/SIGTERM 128 + the signal);
- a file or folder that is missing, in the way or not allowed (`FileNotFoundError`, `PermissionError`, ...): 2;
- a full disk (`ENOSPC`, `EDQUOT`, PyTorch's "unexpected pos"): 2, saying the disk is full;
- Ctrl-C outside the training loop (`KeyboardInterrupt`): 130.

Anything else is a bug and keeps its traceback; ``HRSSM_TRACEBACK=1`` shows the traceback of known errors too.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable

from ._io import is_disk_full
from .errors import HrssmError, one_line

_PATH_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


def describe(err: BaseException) -> tuple[int, str] | None:
    """(exit code, the line to print) for a known error; None for anything else (a bug: keep the traceback)."""
    if isinstance(err, HrssmError):
        return err.exit_code, f"{err.prefix}: {one_line(err)}"
    if is_disk_full(err):
        where = f" ({err.filename})" if isinstance(err, OSError) and err.filename else ""
        return 2, (f"error: the disk is full{where}: {one_line(err)}. Free some space, then run again "
                   "(a training run continues with --resume)")
    if isinstance(err, _PATH_ERRORS):
        return 2, f"error: {one_line(err)}"
    if isinstance(err, ValueError):
        return 2, f"error: {one_line(err)}"
    if isinstance(err, KeyboardInterrupt):
        return 130, "interrupted"
    return None


def cli_main(main: Callable[..., int | None]) -> Callable[..., int]:
    """Decorate a script's `main(argv) -> exit code` so that known errors print one line (`describe`) and return
    their exit code; the rest propagate."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs) or 0
        except BaseException as err:  # KeyboardInterrupt too; SystemExit (argparse) is not described and propagates
            known = describe(err)
            if known is None or os.environ.get("HRSSM_TRACEBACK"):
                raise
            code, line = known
            print(line, file=sys.stderr)
            return code

    return wrapper
