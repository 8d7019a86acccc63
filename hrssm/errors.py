"""The project's error types: one base, `HrssmError`, whose message says what went wrong and what to do.

Every command line maps them to one line on stderr and an exit code (`hrssm.cli.cli_main`); a library user can
catch `hrssm.HrssmError`. Subclasses live beside the code that raises them (`hrssm.export.ExportError`,
`hrssm.data.WaterbirdsDataError`, `hrssm.checkpoint.CheckpointError`, `hrssm.run_folder.RunFolderError`,
`hrssm.latents.LatentsError`, the trainer's stops); those about a bad value are also `ValueError`s.
"""

from __future__ import annotations


class HrssmError(Exception):
    """A failure hrssm recognises; `exit_code` and `prefix` say how a command line reports it."""

    exit_code: int = 2
    prefix: str = "error"


class ConfigError(HrssmError, ValueError):
    """A config key or value that cannot be used (the message names the key, e.g. ``optim.lr=-1 must be ...``)."""


def one_line(message: object) -> str:
    """A message on one line (its lines joined with spaces), as command lines print errors."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())
