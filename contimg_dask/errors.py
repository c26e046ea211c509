"""The pipeline's exception hierarchy.

Every error the pipeline raises on purpose derives from :class:`ContimgError`. Each one
says *what* failed (file, block, stage, configuration key) and whether retrying can help
(``transient``): the recovery machinery (retries, circuit breakers, failure analysis) acts on
that flag, so choose the class by the nature of the failure, not by where it happened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class ContimgError(Exception):
    """Base of all contimg-dask errors.

    Parameters
    ----------
    message:
        What went wrong, in words an operator can act on.
    file, block, stage, key:
        The context: the offending file, the observation block id, the pipeline stage and
        the configuration key, whichever apply.
    transient:
        Override the class default: True when retrying the same operation may succeed.
    """

    transient: bool = False

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        block: str | None = None,
        stage: str | None = None,
        key: str | None = None,
        transient: bool | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.block = block
        self.stage = stage
        self.key = key
        if transient is not None:
            self.transient = transient
        super().__init__(self._render())

    def _render(self) -> str:
        context = [
            f"{name}={value}"
            for name, value in (
                ("file", self.file),
                ("block", self.block),
                ("stage", self.stage),
                ("key", self.key),
            )
            if value is not None
        ]
        return f"{self.message} [{', '.join(context)}]" if context else self.message

    def __reduce__(self) -> tuple:
        # Keep the context when the error crosses a process boundary (Dask workers).
        return (_rebuild, (type(self), self.message, {
            "file": self.file, "block": self.block, "stage": self.stage, "key": self.key,
            "transient": self.transient}))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record of the failure (for the state store and ``--json`` output)."""
        return {
            "error": type(self).__name__,
            "message": self.message,
            "file": self.file,
            "block": self.block,
            "stage": self.stage,
            "key": self.key,
            "transient": self.transient,
        }


def _rebuild(cls: type[ContimgError], message: str, context: dict[str, Any]) -> ContimgError:
    return cls(message, **context)


class ConfigError(ContimgError):
    """Invalid or unreadable configuration (names the file and the key). Permanent."""


class InputError(ContimgError):
    """Bad input data: the file or block itself is wrong. Retrying the same input cannot help."""


class UnreadableFileError(InputError):
    """A file that cannot be opened or read: truncated, corrupt, not HDF5."""


class ForeignFileError(InputError):
    """A readable file that is not what the pipeline expects (wrong name, layout or telescope)."""


class InconsistentBlockError(InputError):
    """Files of one block disagree (time axis, shapes, frequencies) or belong to other blocks."""


class IncompleteBlockError(InputError):
    """A block misses more subbands than the configured maximum."""


class OutputError(ContimgError):
    """A product cannot be written: its output path holds something else (never replaced
    without ``--overwrite``), or the file system refuses (permission: permanent; no space,
    I/O error: transient)."""


class CalibrationError(ContimgError):
    """Calibration cannot be done right: no calibrator in the block, no usable reference
    antenna, no solution above the SNR limit, solutions from another declination strip or
    outside their validity window. Permanent for the same inputs."""


class ExternalToolError(ContimgError):
    """An external engine (CASA) failed. Transient by default: it may be a crash or a time-out."""

    transient = True


class CasaError(ExternalToolError):
    """A CASA task or tool failed or timed out in its worker process."""


class CasaSetupError(ContimgError):
    """CASA cannot be configured (measures data missing, wrong installation). Permanent."""


class StateError(ContimgError):
    """The state store (SQLite file or Redis server) failed. ``file`` names the database
    file or the Redis URL (without its password)."""


class StateUnavailableError(StateError):
    """The state store cannot be reached or is busy beyond its time-outs (Redis down or
    restarting, a connection dropped, SQLite locked longer than ``busy_timeout``). Transient."""

    transient = True


class StateAccessError(StateError):
    """The state store refused us: wrong Redis password or ACL user, missing permission on
    the SQLite file or its directory. Permanent until the configuration is fixed."""


class StateCorruptError(StateError):
    """The database is not a contimg state store: a corrupt file, another application's
    SQLite database, or Redis keys under our prefix that are not ours. Permanent."""


class StateSchemaError(StateError):
    """The store's schema is newer than this program (upgrade contimg-dask) or older (run
    ``contimg state migrate``). Permanent."""


class StateLocationError(StateError):
    """The SQLite database would live on a network file system (NFS, CIFS, Lustre, ...),
    where SQLite's locking is unreliable: use Redis for shared state. Permanent."""


class LeaseLostError(StateError):
    """A heartbeat, complete or fail came with a fencing token that is no longer the
    current one: the lease expired and the work was handed to someone else. The holder
    must stop and discard its result. Permanent for that holder."""
