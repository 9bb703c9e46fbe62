"""One hierarchy for the errors a user can fix: the CLI prints them as one line, exit 2.

Every error that means "the request cannot be served as asked" (a bad config, a
task that does not build, a run directory or store that must not be touched, a
refused resume, a lock held by another process, a failed submission) derives
from ``LosskernelError``. Anything else that escapes is a bug, and the CLI shows
its traceback. The classes live here, below every other module, so that any
layer can raise them without importing the layer that defines the concept;
the modules that own a concept re-export theirs under the old names.
"""

from __future__ import annotations

import errno
from pathlib import Path


class LosskernelError(Exception):
    """Base of every user-facing error: one line that says what is wrong and what to do."""


class ConfigError(LosskernelError, ValueError):
    """A config value that is missing, unknown or invalid; the message names the key."""


class TaskError(LosskernelError, ValueError):
    """A task target that cannot be loaded or returns something that is not a valid Task."""


class RunDirError(LosskernelError, RuntimeError):
    """A run directory that cannot be used for the request; nothing was written."""


class StoreError(LosskernelError, RuntimeError):
    """A store that is missing, damaged or of the wrong layout."""


class IncompleteRunError(StoreError):
    """A reduce of a run whose draws are not all done, without ``allow_partial``."""


class CompareError(StoreError):
    """Two runs whose kernels cannot be compared (different N, no kernel)."""


class WriterError(StoreError):
    """The background writer failed to commit something it was handed."""


class LockedError(LosskernelError, RuntimeError):
    """Another live process holds a chain (or the whole run) this process needs."""


class GuardError(LosskernelError, RuntimeError):
    """A guard rail configured as an error found a problem with the run."""


class CalibrationError(LosskernelError, RuntimeError):
    """A calibration that cannot run or report as asked."""


class SubmitError(LosskernelError, RuntimeError):
    """A SLURM submission that cannot be made (no submitit cluster, an in-memory task...)."""


class MissingFileError(LosskernelError, FileNotFoundError):
    """A file the task or config names (checkpoint, data folder) does not exist."""


# OSErrors of the file system that the user fixes there (space, quota, a read-only mount,
# permissions), with what to do; any other OSError is left to show its traceback.
FILESYSTEM_ERRNOS: dict[int, str] = {
    errno.ENOSPC: "free space or choose another output",
    errno.EDQUOT: "free space (or raise the quota) or choose another output",
    errno.EROFS: "make the file system writable or choose another output",
    errno.EACCES: "fix the permissions or choose another output",
}


def filesystem_error_line(exc: BaseException, path: str | Path | None = None) -> str | None:
    """``'<path>: <strerror>: <what to do>'`` for an OSError with a file-system errno the
    user can fix (``FILESYSTEM_ERRNOS``), else None. ``path`` names the file when the error
    does not (a failed ``write`` carries no file name)."""
    if not isinstance(exc, OSError) or exc.errno not in FILESYSTEM_ERRNOS:
        return None
    where = exc.filename if exc.filename is not None else path
    what = exc.strerror or str(exc)
    head = f"{where}: {what}" if where is not None else what
    return f"{head}: {FILESYSTEM_ERRNOS[exc.errno]}"
