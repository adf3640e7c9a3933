"""The library's user-facing error types.

Anything a user can cause (a bad path, a corrupt file, a wrong flag value)
raises a subclass of :class:`MaskgitError` with a sentence that says what was
wrong, which file, and what is expected. The CLI prints that sentence and exits
with status 2; it never shows a traceback for these.
"""


class MaskgitError(Exception):
    """Base class of all user-facing errors."""


class DataError(MaskgitError, ValueError):
    """An input folder or file that cannot be used (missing, empty, corrupt, mismatched)."""


class ConfigError(MaskgitError, ValueError):
    """A config dict, preset name or option value that cannot be used."""


class CheckpointError(MaskgitError, RuntimeError):
    """A checkpoint that is missing, corrupt, unsafe, or for another model/config."""


class WriteError(MaskgitError, OSError):
    """A file the library could not write (read-only folder, full disk, no permission); nothing half-written."""
