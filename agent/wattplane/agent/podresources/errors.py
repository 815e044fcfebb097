"""Typed errors for talking to the kubelet's PodResources socket.

The agent only needs to know *why* it could not learn which pod holds which GPU, to decide between
"retry next tick" and "tell the operator this node cannot attribute power to pods". No grpc
exception escapes the client; the original one is chained as ``__cause__``::

    PodResourcesError              any other failure (an unexpected status, a malformed reply)
    ├── PodResourcesUnavailableError   socket missing, not a socket, refused, kubelet restarting
    ├── PodResourcesTimeoutError       the kubelet did not answer within the deadline
    └── PodResourcesUnsupportedError   the kubelet does not serve v1 ``List`` (UNIMPLEMENTED)
"""

from __future__ import annotations

from pathlib import Path


class PodResourcesError(Exception):
    """Base of every error raised while listing pod resources.

    Attributes:
        socket_path: The socket that was asked.
        code: Name of the gRPC status code (``"UNAVAILABLE"``...), or ``None`` when the call never
            reached gRPC (e.g. the socket file is missing).
    """

    #: Short machine-readable reason, used in GpuNode conditions and metric labels.
    reason = "PodResourcesError"

    def __init__(self, message: str, *, socket_path: Path, code: str | None = None) -> None:
        super().__init__(message)
        self.socket_path = socket_path
        self.code = code


class PodResourcesUnavailableError(PodResourcesError):
    """Nothing answers on the socket: kubelet down or restarting, or the path is wrong."""

    reason = "Unavailable"


class PodResourcesTimeoutError(PodResourcesError):
    """The kubelet accepted the call but did not answer before the deadline."""

    reason = "Timeout"


class PodResourcesUnsupportedError(PodResourcesError):
    """The server on the socket does not implement ``/v1.PodResourcesLister/List``."""

    reason = "Unsupported"
