"""Ask the kubelet, over its PodResources v1 socket, which containers hold which GPUs.

Each call opens a fresh channel and closes it afterwards. The kubelet deletes and recreates the
socket when it restarts; a long-lived channel would sit in gRPC's reconnect back-off (up to two
minutes) after the old socket vanished, whereas a fresh one reaches the new socket on the very next
tick. A call every few seconds costs a connect on a local Unix socket, which is negligible.

Every failure is raised as a :class:`~.errors.PodResourcesError` subclass with a message that
names the socket and the likely cause; gRPC exceptions never escape.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection
from pathlib import Path

import grpc
import grpc.aio
from google.protobuf.message import DecodeError
from wattplane.agent.podresources import podresources_pb2 as pb
from wattplane.agent.podresources.errors import (
    PodResourcesError,
    PodResourcesTimeoutError,
    PodResourcesUnavailableError,
    PodResourcesUnsupportedError,
)
from wattplane.agent.podresources.model import (
    DEFAULT_RESOURCE_NAMES,
    DEFAULT_RESOURCE_PREFIXES,
    GpuAllocation,
    allocations_from_response,
)

#: Where the kubelet serves the API. Mount the *directory* into the agent: a bind-mounted socket
#: file keeps pointing at the old socket after a kubelet restart.
DEFAULT_SOCKET_PATH = Path("/var/lib/kubelet/pod-resources/kubelet.sock")

#: Full gRPC method name; the kubelet serves it under the proto package ``v1``.
LIST_METHOD = "/v1.PodResourcesLister/List"

# A busy node's reply (hundreds of pods, each with cpu_ids and memory blocks we skip but still
# receive) can pass gRPC's 4 MiB default; Kubernetes' node e2e tests and most node agents allow 16 MiB.
_MAX_RECEIVE_BYTES = 16 * 1024 * 1024


async def list_gpu_allocations(
    socket_path: str | Path,
    *,
    resource_names: Collection[str] = DEFAULT_RESOURCE_NAMES,
    resource_prefixes: Collection[str] = DEFAULT_RESOURCE_PREFIXES,
    timeout_s: float = 10.0,
) -> list[GpuAllocation]:
    """List every GPU device id the kubelet has allocated to a running container.

    Args:
        socket_path: The kubelet's PodResources socket, normally :data:`DEFAULT_SOCKET_PATH`.
        resource_names: Resources kept by exact name.
        resource_prefixes: Resources kept by prefix (MIG profiles under the ``mixed`` strategy).
        timeout_s: Deadline for the whole call, connection included.

    Returns:
        One allocation per (container, device id), in the kubelet's order.

    Raises:
        PodResourcesUnavailableError: No socket, not a socket, or nobody listening on it.
        PodResourcesTimeoutError: No answer within ``timeout_s``.
        PodResourcesUnsupportedError: The server does not implement v1 ``List``.
        PodResourcesError: Any other failure.
    """
    path = _checked_socket(socket_path)
    response = await _list(path, timeout_s)
    return allocations_from_response(response, resource_names=resource_names, resource_prefixes=resource_prefixes)


def _checked_socket(socket_path: str | Path) -> Path:
    """Return the socket's absolute path; fail early, and more clearly than gRPC would, if it is absent."""
    path = Path(socket_path).absolute()
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError as exc:
        raise PodResourcesUnavailableError(
            f"no kubelet PodResources socket at {path}: is the kubelet running, and is its "
            f"directory {path.parent} mounted into this pod?",
            socket_path=path,
        ) from exc
    except OSError as exc:
        raise PodResourcesError(f"cannot stat {path}: {exc}", socket_path=path) from exc
    if not stat.S_ISSOCK(mode):
        raise PodResourcesUnavailableError(f"{path} exists but is not a Unix socket", socket_path=path)
    return path


async def _list(path: Path, timeout_s: float) -> pb.ListPodResourcesResponse:
    options = [("grpc.max_receive_message_length", _MAX_RECEIVE_BYTES)]
    async with grpc.aio.insecure_channel(f"unix://{path}", options=options) as channel:
        # The reply is parsed here rather than by a gRPC response_deserializer: grpc.aio logs a
        # failed deserialisation and hands back None instead of raising.
        call = channel.unary_unary(
            LIST_METHOD,
            request_serializer=pb.ListPodResourcesRequest.SerializeToString,
            response_deserializer=None,
        )
        try:
            raw: bytes = await call(pb.ListPodResourcesRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc, path, timeout_s) from exc
    try:
        return pb.ListPodResourcesResponse.FromString(raw)
    except DecodeError as exc:
        raise PodResourcesError(
            f"cannot parse the List reply from {path} ({len(raw)} bytes): {exc}", socket_path=path
        ) from exc


def _translate(exc: grpc.aio.AioRpcError, path: Path, timeout_s: float) -> PodResourcesError:
    """Turn a gRPC status into the error the agent acts on, keeping the server's details."""
    code = exc.code()
    details = exc.details() or "no details"
    if code == grpc.StatusCode.UNAVAILABLE:
        return PodResourcesUnavailableError(
            f"kubelet PodResources socket {path} is not answering ({details}); the kubelet may be "
            "restarting, or a bind-mounted socket went stale (mount the directory, not the socket)",
            socket_path=path,
            code=code.name,
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return PodResourcesTimeoutError(
            f"kubelet PodResources socket {path} did not answer List within {timeout_s:g} s",
            socket_path=path,
            code=code.name,
        )
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return PodResourcesUnsupportedError(
            f"the server on {path} does not implement {LIST_METHOD} (a kubelet without the v1 "
            f"PodResources API, or another service on that socket): {details}",
            socket_path=path,
            code=code.name,
        )
    return PodResourcesError(
        f"{LIST_METHOD} on {path} failed with {code.name}: {details}",
        socket_path=path,
        code=code.name,
    )
