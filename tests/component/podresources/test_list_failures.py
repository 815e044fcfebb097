"""Every way the kubelet socket can fail surfaces as a typed PodResourcesError, never a gRPC error."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf.message import DecodeError
from wattplane.agent.podresources import (
    PodResourcesError,
    PodResourcesTimeoutError,
    PodResourcesUnavailableError,
    PodResourcesUnsupportedError,
    list_gpu_allocations,
)

if TYPE_CHECKING:
    from tests.component.podresources.conftest import FakeKubelet, StartKubelet


async def test_missing_socket_says_where_it_looked(socket_path: Path) -> None:
    with pytest.raises(PodResourcesUnavailableError, match="no kubelet PodResources socket") as err:
        await list_gpu_allocations(socket_path)

    assert err.value.socket_path == socket_path
    assert str(socket_path.parent) in str(err.value)
    assert err.value.code is None
    assert isinstance(err.value.__cause__, FileNotFoundError)


@pytest.fixture
def regular_file(socket_path: Path) -> Path:
    socket_path.write_text("")
    return socket_path


async def test_regular_file_is_not_a_socket(regular_file: Path) -> None:
    with pytest.raises(PodResourcesUnavailableError, match="not a Unix socket"):
        await list_gpu_allocations(regular_file)


async def test_stale_socket_with_nobody_listening_is_unavailable(socket_path: Path) -> None:
    # What a bind-mounted socket looks like after the kubelet recreated the real one.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(socket_path))

    with pytest.raises(PodResourcesUnavailableError, match="not answering") as err:
        await list_gpu_allocations(socket_path, timeout_s=5)

    assert err.value.code == "UNAVAILABLE"
    assert isinstance(err.value.__cause__, grpc.RpcError)


async def test_server_without_list_is_unsupported(start_kubelet: StartKubelet) -> None:
    server = await start_kubelet(serve_list=False)

    with pytest.raises(
        PodResourcesUnsupportedError, match=re.escape("does not implement /v1.PodResourcesLister/List")
    ) as err:
        await list_gpu_allocations(server.socket_path)

    assert err.value.code == "UNIMPLEMENTED"


async def test_slow_kubelet_trips_the_deadline(kubelet: FakeKubelet) -> None:
    kubelet.delay_s = 5.0
    started = time.monotonic()

    with pytest.raises(PodResourcesTimeoutError, match=r"within 0\.3 s") as err:
        await list_gpu_allocations(kubelet.socket_path, timeout_s=0.3)

    assert time.monotonic() - started < 3.0
    assert err.value.code == "DEADLINE_EXCEEDED"
    assert kubelet.calls == 1


@pytest.mark.parametrize(
    ("status", "details"),
    [(grpc.StatusCode.PERMISSION_DENIED, "not root"), (grpc.StatusCode.INTERNAL, "kubelet exploded")],
)
async def test_other_statuses_keep_code_and_details(
    kubelet: FakeKubelet, status: grpc.StatusCode, details: str
) -> None:
    kubelet.abort = (status, details)

    with pytest.raises(PodResourcesError) as err:
        await list_gpu_allocations(kubelet.socket_path)

    assert type(err.value) is PodResourcesError
    assert err.value.code == status.name
    assert details in str(err.value)
    assert isinstance(err.value.__cause__, grpc.RpcError)


async def test_unparseable_reply_is_a_pod_resources_error(kubelet: FakeKubelet) -> None:
    kubelet.reply = b"\x0a\xff\xff\xff\xff\x0f"  # field 1, length far beyond the message

    with pytest.raises(PodResourcesError, match="cannot parse the List reply") as err:
        await list_gpu_allocations(kubelet.socket_path)

    assert type(err.value) is PodResourcesError
    assert err.value.code is None
    assert isinstance(err.value.__cause__, DecodeError)
