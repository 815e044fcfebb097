"""Typed GPU errors, independent of the backend that raised them.

The agent reacts to *kinds* of failure, not to vendor codes: a GPU that refuses a write for lack of
privilege is reported and left alone, a feature a GPU lacks is skipped, a lost GPU is marked and
retried later. Backends translate their own codes into this tree (the NVML backend does it with one
table), chaining the original exception as ``__cause__``::

    GpuError
    ├── GpuNoPermissionError      the process lacks CAP_SYS_ADMIN / root for a write
    ├── GpuNotSupportedError      the device or driver does not offer this call
    ├── GpuInvalidArgumentError   a value outside the device's accepted range or format
    ├── GpuLostError              the device fell off the bus or needs a reset
    ├── GpuUninitializedError     the library was not (or no longer is) initialised
    ├── GpuNotFoundError          no device with that index / UUID
    └── GpuDriverError            anything else the driver reports (library missing, timeout, ...)
"""

from __future__ import annotations


class GpuError(Exception):
    """Base of every error a GPU backend raises."""

    #: Short machine-readable reason, used in GpuNode conditions and metric labels.
    reason = "GpuError"


class GpuNoPermissionError(GpuError):
    """The call needs privileges (CAP_SYS_ADMIN) the process does not have."""

    reason = "NoPermission"


class GpuNotSupportedError(GpuError):
    """The device or its driver does not support the call."""

    reason = "NotSupported"


class GpuInvalidArgumentError(GpuError):
    """A value was outside what the device accepts (e.g. a limit beyond its constraints)."""

    reason = "InvalidArgument"


class GpuLostError(GpuError):
    """The device is gone (fell off the bus) or must be reset before it answers again."""

    reason = "GpuLost"


class GpuUninitializedError(GpuError):
    """The backend library is not initialised."""

    reason = "Uninitialized"


class GpuNotFoundError(GpuError):
    """No device matches the requested index or UUID."""

    reason = "NotFound"


class GpuDriverError(GpuError):
    """Any other driver-level failure (library missing, timeout, unknown code)."""

    reason = "DriverError"


#: The specific errors a backend raises (``GpuError`` itself is the catch-all).
SPECIFIC_ERRORS: tuple[type[GpuError], ...] = (
    GpuNoPermissionError,
    GpuNotSupportedError,
    GpuInvalidArgumentError,
    GpuLostError,
    GpuUninitializedError,
    GpuNotFoundError,
    GpuDriverError,
)
#: Every reason a backend can report, for metrics that list each one from the start (zeros included).
ERROR_REASONS: tuple[str, ...] = tuple(cls.reason for cls in (GpuError, *SPECIFIC_ERRORS))
