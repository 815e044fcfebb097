"""Flattening a List reply into allocations: order, filtering, fields."""

from __future__ import annotations

from wattplane.agent.podresources import podresources_pb2 as pb
from wattplane.agent.podresources.model import GpuAllocation, PodRef, allocations_from_response


def _pod(namespace: str, name: str, *containers: pb.ContainerResources) -> pb.PodResources:
    return pb.PodResources(namespace=namespace, name=name, containers=containers)


def _ctr(name: str, **devices: list[str]) -> pb.ContainerResources:
    # Keyword names stand for resource names: "gpu" → nvidia.com/gpu, "mig_1g" → nvidia.com/mig-1g.10gb...
    names = {"gpu": "nvidia.com/gpu", "mig_1g": "nvidia.com/mig-1g.10gb", "foo": "example.com/foo"}
    return pb.ContainerResources(
        name=name,
        devices=[pb.ContainerDevices(resource_name=names[key], device_ids=ids) for key, ids in devices.items()],
    )


def test_empty_reply_has_no_allocations() -> None:
    assert allocations_from_response(pb.ListPodResourcesResponse()) == []


def test_one_allocation_per_device_id_in_kubelet_order() -> None:
    reply = pb.ListPodResourcesResponse(
        pod_resources=[
            _pod("b", "p2", _ctr("c2", gpu=["GPU-2", "GPU-1::4"])),
            _pod("a", "p1", _ctr("c1", foo=["f0"], mig_1g=["MIG-9"]), _ctr("c0", gpu=["GPU-3"])),
        ]
    )

    allocations = allocations_from_response(reply)

    assert allocations == [
        GpuAllocation("b", "p2", "c2", "nvidia.com/gpu", "GPU-2", "GPU-2", mig=False, shared=False),
        GpuAllocation("b", "p2", "c2", "nvidia.com/gpu", "GPU-1::4", "GPU-1", mig=False, shared=True),
        GpuAllocation("a", "p1", "c1", "nvidia.com/mig-1g.10gb", "MIG-9", "MIG-9", mig=True, shared=False),
        GpuAllocation("a", "p1", "c0", "nvidia.com/gpu", "GPU-3", "GPU-3", mig=False, shared=False),
    ]
    assert allocations[1].pod_ref == PodRef("b", "p2", "c2")


def test_pods_and_containers_without_gpus_produce_nothing() -> None:
    reply = pb.ListPodResourcesResponse(
        pod_resources=[_pod("kube-system", "coredns", _ctr("coredns")), _pod("x", "y", _ctr("z", foo=["f1"]))]
    )

    assert allocations_from_response(reply) == []


def test_filter_can_select_other_resources_only() -> None:
    reply = pb.ListPodResourcesResponse(pod_resources=[_pod("a", "p", _ctr("c", gpu=["GPU-1"], foo=["f1", "f2"]))])

    allocations = allocations_from_response(reply, resource_names=("example.com/foo",), resource_prefixes=())

    assert [(a.resource_name, a.device_id) for a in allocations] == [
        ("example.com/foo", "f1"),
        ("example.com/foo", "f2"),
    ]
