"""What the kubelet says about GPUs, as plain values: who holds which device.

The kubelet reports devices by the ids the device plugin advertised, and those come in several
dialects that must be understood before a device can be matched to an NVML UUID:

* ``GPU-<uuid>`` — a whole GPU (the NVIDIA device plugin's default ``uuid`` strategy);
* ``GPU-<uuid>::3`` — replica 3 of a GPU shared by time-slicing or MPS; the suffix only makes the
  advertised id unique, the board is the same;
* ``MIG-<uuid>`` — a MIG instance (resource ``nvidia.com/gpu`` under the ``single`` strategy,
  ``nvidia.com/mig-1g.10gb``... under ``mixed``); drivers before R470 wrote ``MIG-GPU-<uuid>/<gi>/<ci>``;
* ``nvidia0``, ``nvidia0/gi0`` and ``.../vgpu1`` — GKE's own device plugin names boards by index,
  MIG instances by GPU-instance index, and time-shared replicas with a ``/vgpuN`` suffix;
* ``0000:c1:00.0`` — AMD's device plugin (ROCm/k8s-device-plugin) names a board by its PCI address,
  the name of its directory under ``/sys/module/amdgpu/drivers/pci:amdgpu/`` (lowercase hex, 4-digit
  domain), under ``amd.com/gpu`` or, with its ``mixed`` naming strategy, a partition-mode resource
  such as ``amd.com/spx_nps1``; time-sliced replicas carry a ``-slice-N`` suffix, and the second and
  later compute partitions of a partitioned MI300-class board are named after their platform device
  (``amdgpu_xcp_12``). The backend resolves PCI addresses to its own UUIDs (``device_aliases``).

This module has no I/O; :mod:`.client` feeds it the kubelet's reply.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass

from wattplane.agent.podresources import podresources_pb2 as pb

#: Whole GPUs (and MIG instances under the NVIDIA device plugin's ``single`` MIG strategy), and
#: AMD GPUs or partitions under the AMD device plugin's default ``single`` naming strategy.
DEFAULT_RESOURCE_NAMES: tuple[str, ...] = ("nvidia.com/gpu", "amd.com/gpu")
#: MIG instances under the ``mixed`` strategy, one resource per profile (``nvidia.com/mig-1g.10gb``), and
#: AMD boards and partitions under the AMD plugin's ``mixed`` strategy, one resource per compute and
#: memory partition mode (``amd.com/spx_nps1``, ``amd.com/cpx_nps4``).
DEFAULT_RESOURCE_PREFIXES: tuple[str, ...] = (
    "nvidia.com/mig-",
    "amd.com/spx_",
    "amd.com/dpx_",
    "amd.com/tpx_",
    "amd.com/qpx_",
    "amd.com/cpx_",
)

_REPLICA_SUFFIX = re.compile(r"^(?P<base>.+)::(?P<replica>\d+)$")
#: AMD's time-slicing replicas: ``<device id>-slice-<n>`` (ROCm/k8s-device-plugin ``timeslice.go``).
_AMD_SLICE_SUFFIX = re.compile(r"^(?P<base>.+)-slice-(?P<replica>\d+)$")
#: A PCI address as sysfs, Kubernetes device plugins and AMD SMI write it; NVML pads the domain to 8 digits.
_PCI_ADDRESS = re.compile(
    r"^(?P<domain>[0-9a-f]{4,8}):(?P<bus>[0-9a-f]{2}):(?P<device>[0-9a-f]{2})\.(?P<function>[0-7])$"
)
_GKE_ID = re.compile(r"^nvidia(?P<index>\d+)(?P<gi>/gi\d+)?(?P<vgpu>/vgpu\d+)?$")


@dataclass(frozen=True, order=True)
class PodRef:
    """One container of one pod; ordered so that lists of them print and compare stably."""

    namespace: str
    pod: str
    container: str


@dataclass(frozen=True)
class GpuAllocation:
    """One device id the kubelet has handed to one container.

    Attributes:
        namespace: Pod namespace.
        pod: Pod name.
        container: Container name.
        resource_name: Extended resource the device came from (``nvidia.com/gpu``...).
        device_id: The id exactly as the kubelet reported it.
        gpu_id: ``device_id`` without the sharing-replica marker (``::N`` or GKE's ``/vgpuN``),
            i.e. the id of the physical device or MIG instance.
        mig: The device is a MIG instance rather than a whole board.
        shared: The id carried a replica marker: other containers may hold the same board.
    """

    namespace: str
    pod: str
    container: str
    resource_name: str
    device_id: str
    gpu_id: str
    mig: bool
    shared: bool

    @property
    def pod_ref(self) -> PodRef:
        """The container this allocation belongs to."""
        return PodRef(self.namespace, self.pod, self.container)


def normalise_device_id(resource_name: str, device_id: str) -> tuple[str, bool, bool]:
    """Split a kubelet device id into what it names and how it is shared.

    Args:
        resource_name: The extended resource the id belongs to.
        device_id: The id as the kubelet reported it.

    Returns:
        ``(gpu_id, mig, shared)``: the id without its replica marker, whether it is a MIG instance,
        and whether it carried a replica marker.
    """
    gpu_id, shared = device_id, False
    if (replica := _REPLICA_SUFFIX.match(device_id)) is not None:
        gpu_id, shared = replica["base"], True
    elif resource_name.startswith("amd.com/") and (slice_ := _AMD_SLICE_SUFFIX.match(device_id)) is not None:
        gpu_id, shared = slice_["base"], True
    gke = _GKE_ID.match(gpu_id)
    if gke is not None and gke["vgpu"] is not None:
        gpu_id, shared = gpu_id.removesuffix(gke["vgpu"]), True
    mig = (
        gpu_id.startswith("MIG-")
        or resource_name.startswith("nvidia.com/mig-")
        or (gke is not None and gke["gi"] is not None)
    )
    return gpu_id, mig, shared


def pci_address_key(device_id: str) -> str | None:
    """The canonical form of a PCI address (``0000:c1:00.0``), or ``None`` if ``device_id`` is none.

    AMD SMI and sysfs write ``0000:c1:00.0``, NVML ``00000000:C1:00.0``; comparing this form makes the
    spelling irrelevant.
    """
    match = _PCI_ADDRESS.match(device_id.strip().lower())
    if match is None:
        return None
    return f"{int(match['domain'], 16):04x}:{match['bus']}:{match['device']}.{match['function']}"


def gke_board_index(gpu_id: str) -> int | None:
    """Return the board index of a GKE-style id (``nvidia3``, ``nvidia3/gi1``), else ``None``."""
    gke = _GKE_ID.match(gpu_id)
    return None if gke is None else int(gke["index"])


def is_gpu_resource(
    resource_name: str,
    names: Collection[str] = DEFAULT_RESOURCE_NAMES,
    prefixes: Collection[str] = DEFAULT_RESOURCE_PREFIXES,
) -> bool:
    """Tell whether a resource is one whose devices are GPUs (or MIG instances of one)."""
    return resource_name in names or any(resource_name.startswith(prefix) for prefix in prefixes)


def allocations_from_response(
    response: pb.ListPodResourcesResponse,
    *,
    resource_names: Collection[str] = DEFAULT_RESOURCE_NAMES,
    resource_prefixes: Collection[str] = DEFAULT_RESOURCE_PREFIXES,
) -> list[GpuAllocation]:
    """Flatten a ``List`` reply into one allocation per GPU device id, in the kubelet's order.

    Devices of other resources (NICs, FPGAs, ``example.com/foo``) are left out: the agent attributes
    GPU power only.
    """
    return list(_iter_allocations(response, resource_names, resource_prefixes))


def _iter_allocations(
    response: pb.ListPodResourcesResponse,
    resource_names: Collection[str],
    resource_prefixes: Collection[str],
) -> Iterator[GpuAllocation]:
    for pod in response.pod_resources:
        for container in pod.containers:
            for devices in container.devices:
                if not is_gpu_resource(devices.resource_name, resource_names, resource_prefixes):
                    continue
                for device_id in devices.device_ids:
                    gpu_id, mig, shared = normalise_device_id(devices.resource_name, device_id)
                    yield GpuAllocation(
                        namespace=pod.namespace,
                        pod=pod.name,
                        container=container.name,
                        resource_name=devices.resource_name,
                        device_id=device_id,
                        gpu_id=gpu_id,
                        mig=mig,
                        shared=shared,
                    )
