"""list_gpu_allocations against a real gRPC server on a Unix socket, answering like a kubelet."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import grpc.aio
import pytest
from wattplane.agent.podresources import (
    GpuAllocation,
    PodRef,
    list_gpu_allocations,
    map_gpus_to_pods,
)
from wattplane.agent.podresources import podresources_pb2 as pb
from wattplane.agent.podresources import podresources_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from tests.component.podresources.conftest import FakeKubelet

GPU_A = "GPU-aaaaaaaa-0000-0000-0000-000000000001"
GPU_B = "GPU-bbbbbbbb-0000-0000-0000-000000000002"
GPU_C = "GPU-cccccccc-0000-0000-0000-000000000003"
GPU_D = "GPU-dddddddd-0000-0000-0000-000000000004"
GPU_IDLE = "GPU-eeeeeeee-0000-0000-0000-000000000005"
MIG_1 = "MIG-11111111-2222-3333-4444-555555555555"


def _alloc(ns: str, pod: str, ctr: str, res: str, dev: str, gpu: str, *, mig: bool, shared: bool) -> GpuAllocation:
    return GpuAllocation(ns, pod, ctr, res, dev, gpu, mig=mig, shared=shared)


async def test_lists_gpu_devices_of_every_container_and_skips_the_rest(kubelet: FakeKubelet) -> None:
    allocations = await list_gpu_allocations(kubelet.socket_path)

    assert allocations == [
        _alloc("ml-train", "llama-ft-0", "trainer", "nvidia.com/gpu", GPU_A, GPU_A, mig=False, shared=False),
        _alloc("ml-train", "llama-ft-0", "trainer", "nvidia.com/gpu", GPU_B, GPU_B, mig=False, shared=False),
        _alloc("inference", "vllm-7d9f-abc", "server", "nvidia.com/gpu", f"{GPU_C}::0", GPU_C, mig=False, shared=True),
        _alloc("inference", "vllm-7d9f-def", "server", "nvidia.com/gpu", f"{GPU_C}::1", GPU_C, mig=False, shared=True),
        _alloc("research", "notebook-alice", "jupyter", "nvidia.com/mig-1g.10gb", MIG_1, MIG_1, mig=True, shared=False),
    ]
    assert kubelet.calls == 1


async def test_other_resources_are_listed_when_asked_for(kubelet: FakeKubelet) -> None:
    allocations = await list_gpu_allocations(
        str(kubelet.socket_path), resource_names=("example.com/foo",), resource_prefixes=()
    )

    assert [(a.pod, a.container, a.device_id) for a in allocations] == [
        ("llama-ft-0", "trainer", "foo-1"),
        ("fpga-job", "main", "foo-2"),
        ("fpga-job", "main", "foo-3"),
    ]


async def test_reply_maps_onto_the_nodes_boards(kubelet: FakeKubelet) -> None:
    allocations = await list_gpu_allocations(kubelet.socket_path)

    gpu_pods = map_gpus_to_pods(allocations, [GPU_A, GPU_B, GPU_C, GPU_D, GPU_IDLE], mig_parents={MIG_1: GPU_D})

    assert dict(gpu_pods.pods_by_gpu) == {
        GPU_A: (PodRef("ml-train", "llama-ft-0", "trainer"),),
        GPU_B: (PodRef("ml-train", "llama-ft-0", "trainer"),),
        GPU_C: (PodRef("inference", "vllm-7d9f-abc", "server"), PodRef("inference", "vllm-7d9f-def", "server")),
        GPU_D: (PodRef("research", "notebook-alice", "jupyter"),),
        GPU_IDLE: (),
    }
    assert gpu_pods.unmapped == ()


async def test_relative_socket_path_is_resolved(kubelet: FakeKubelet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(kubelet.socket_path.parent)

    allocations = await list_gpu_allocations(kubelet.socket_path.name)

    assert len(allocations) == 5


class _TrimmedServicer(pb_grpc.PodResourcesListerServicer):
    """A server built from the agent's own generated code, as a kind/e2e fake would be."""

    async def List(
        self, request: pb.ListPodResourcesRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ListPodResourcesResponse:
        return pb.ListPodResourcesResponse(
            pod_resources=[
                pb.PodResources(
                    name="p",
                    namespace="n",
                    containers=[
                        pb.ContainerResources(
                            name="c",
                            devices=[pb.ContainerDevices(resource_name="nvidia.com/gpu", device_ids=[f"{GPU_A}::7"])],
                        )
                    ],
                )
            ]
        )


async def test_generated_servicer_and_client_agree(socket_path: Path) -> None:
    server = grpc.aio.server()
    pb_grpc.add_PodResourcesListerServicer_to_server(_TrimmedServicer(), server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"unix://{socket_path}")
    await server.start()
    try:
        allocations = await list_gpu_allocations(socket_path)
    finally:
        await server.stop(grace=None)

    assert allocations == [_alloc("n", "p", "c", "nvidia.com/gpu", f"{GPU_A}::7", GPU_A, mig=False, shared=True)]
