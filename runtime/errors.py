"""User-facing errors: raised at a boundary, they name the file and the fix."""

from __future__ import annotations


class DaadError(Exception):
    """A failure the user can act on; the CLI prints it without a traceback and exits 2."""


class DataError(DaadError):
    """A data set, image or frame source is missing or unusable."""


class BundleError(DaadError):
    """A bundle file is missing, corrupt, or built for another model."""


class ThresholdError(DaadError):
    """No usable threshold for this bundle."""


class OutputError(DaadError, OSError):
    """An output cannot be written (no permission, not a folder, disk full); an OSError too, so
    code that counts failed writes (the NG store) still catches it."""


class MissingDependency(DaadError, ImportError):
    """An optional package is not installed; the message names the extra that brings it."""
