"""A fake kubelet: a real grpc.aio server on a Unix socket serving ``/v1.PodResourcesLister/List``.

The server answers with bytes serialised from a *wider* schema than the agent's trimmed proto (see
``kubelet_v1_wide.proto``), the way a current kubelet does, so every happy-path test also proves
that unknown fields are skipped.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import Message
from grpc_tools import protoc  # type: ignore[import-untyped]

HERE = Path(__file__).parent

#: A GPU node as a kubelet would describe it: several namespaces, multi-container pods, two pods
#: time-slicing one GPU, a MIG instance, a container with a non-GPU device, pods with no devices,
#: and the fields the agent's proto does not declare.
NODE_PODS: list[dict[str, Any]] = [
    {
        "name": "llama-ft-0",
        "namespace": "ml-train",
        "cpu_ids": [0, 1],
        "containers": [
            {
                "name": "trainer",
                "devices": [
                    {
                        "resource_name": "nvidia.com/gpu",
                        "device_ids": [
                            "GPU-aaaaaaaa-0000-0000-0000-000000000001",
                            "GPU-bbbbbbbb-0000-0000-0000-000000000002",
                        ],
                        "topology": {"nodes": [{"ID": 0}]},
                    },
                    {"resource_name": "example.com/foo", "device_ids": ["foo-1"]},
                ],
                "cpu_ids": [2, 3, 4, 5],
                "memory": [{"memory_type": "memory", "size": "1073741824", "topology": {"nodes": [{"ID": 0}]}}],
            },
            {"name": "log-shipper", "cpu_ids": [6]},
        ],
    },
    {
        "name": "vllm-7d9f-abc",
        "namespace": "inference",
        "containers": [
            {
                "name": "server",
                "devices": [
                    {"resource_name": "nvidia.com/gpu", "device_ids": ["GPU-cccccccc-0000-0000-0000-000000000003::0"]}
                ],
            },
            {
                "name": "router",
                "dynamic_resources": [
                    {
                        "claim_name": "nic",
                        "claim_namespace": "inference",
                        "claim_resources": [
                            {
                                "cdi_devices": [{"name": "example.com/nic=nic0"}],
                                "driver_name": "nic.example.com",
                                "pool_name": "node-a",
                                "device_name": "nic0",
                            }
                        ],
                    }
                ],
            },
        ],
    },
    {
        "name": "vllm-7d9f-def",
        "namespace": "inference",
        "containers": [
            {
                "name": "server",
                "devices": [
                    {"resource_name": "nvidia.com/gpu", "device_ids": ["GPU-cccccccc-0000-0000-0000-000000000003::1"]}
                ],
            }
        ],
    },
    {
        "name": "notebook-alice",
        "namespace": "research",
        "containers": [
            {
                "name": "jupyter",
                "devices": [
                    {
                        "resource_name": "nvidia.com/mig-1g.10gb",
                        "device_ids": ["MIG-11111111-2222-3333-4444-555555555555"],
                    }
                ],
            }
        ],
    },
    {"name": "dcgm-exporter-x7k2p", "namespace": "gpu-operator", "containers": [{"name": "exporter"}]},
    {
        "name": "fpga-job",
        "namespace": "default",
        "containers": [
            {"name": "main", "devices": [{"resource_name": "example.com/foo", "device_ids": ["foo-2", "foo-3"]}]}
        ],
    },
]


def _wide_response_class() -> type[Message]:
    """Compile the wide test schema into a private pool, away from the agent's global ``v1`` symbols."""
    with tempfile.TemporaryDirectory() as out:
        descriptor_set = Path(out) / "wide.pb"
        rc = protoc.main(
            ["protoc", f"-I{HERE}", f"--descriptor_set_out={descriptor_set}", str(HERE / "kubelet_v1_wide.proto")]
        )
        assert rc == 0, "protoc could not compile kubelet_v1_wide.proto"
        files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("v1.ListPodResourcesResponse"))


WideResponse = _wide_response_class()


def wide_reply(pods: list[dict[str, Any]]) -> bytes:
    """Serialise ``pods`` the way a current kubelet would (with fields the agent does not know)."""
    return json_format.ParseDict({"pod_resources": pods}, WideResponse()).SerializeToString()


class FakeKubelet:
    """A PodResources server on a Unix socket whose behaviour a test can change between calls.

    Attributes:
        reply: Serialised ``ListPodResourcesResponse`` returned by ``List``.
        delay_s: Sleep before answering, to trip the client's deadline.
        abort: ``(code, details)`` to fail ``List`` with, instead of answering.
        calls: How many ``List`` calls reached the server.
    """

    def __init__(self, socket_path: Path, *, pods: list[dict[str, Any]], serve_list: bool = True) -> None:
        self.socket_path = socket_path
        self.reply = wide_reply(pods)
        self.delay_s = 0.0
        self.abort: tuple[grpc.StatusCode, str] | None = None
        self.calls = 0
        self._serve_list = serve_list
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        methods: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = (
            {"List": grpc.unary_unary_rpc_method_handler(self._list)} if self._serve_list else {}
        )
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("v1.PodResourcesLister", methods),))
        server.add_insecure_port(f"unix://{self.socket_path}")
        await server.start()
        self._server = server

    async def stop(self) -> None:
        """Stop serving and remove the socket, as a kubelet going down does."""
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None
        self.socket_path.unlink(missing_ok=True)

    async def _list(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        # No deserialisers are registered, so request and reply are raw bytes on the wire.
        self.calls += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.abort is not None:
            await context.abort(*self.abort)
        return self.reply


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short temporary directory: Unix socket paths must fit in 107 bytes, pytest's tmp_path may not."""
    path = Path(tempfile.mkdtemp(prefix="wp-podres-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def socket_path(socket_dir: Path) -> Path:
    return socket_dir / "kubelet.sock"


StartKubelet = Callable[..., Awaitable[FakeKubelet]]


@pytest.fixture
async def start_kubelet(socket_path: Path) -> AsyncIterator[StartKubelet]:
    """Start fake kubelets on ``socket_path`` (one at a time); all are stopped after the test."""
    started: list[FakeKubelet] = []

    async def start(pods: list[dict[str, Any]] = NODE_PODS, *, serve_list: bool = True) -> FakeKubelet:
        server = FakeKubelet(socket_path, pods=pods, serve_list=serve_list)
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


@pytest.fixture
async def kubelet(start_kubelet: StartKubelet) -> FakeKubelet:
    """A started fake kubelet serving :data:`NODE_PODS`."""
    return await start_kubelet()
