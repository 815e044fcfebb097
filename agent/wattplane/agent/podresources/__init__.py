"""Which pod holds which GPU, from the kubelet's PodResources v1 API.

The agent calls :func:`list_gpu_allocations` on the kubelet socket each tick, then
:func:`map_gpus_to_pods` with the NVML UUIDs of its boards to label power and energy per pod::

    allocations = await list_gpu_allocations(DEFAULT_SOCKET_PATH)
    gpu_pods = map_gpus_to_pods(allocations, uuids, mig_parents=mig_parents)

The gRPC code is generated from a trimmed proto (``podresources.proto``, see ``regenerate.sh``).
"""

from wattplane.agent.podresources.client import DEFAULT_SOCKET_PATH, list_gpu_allocations
from wattplane.agent.podresources.errors import (
    PodResourcesError,
    PodResourcesTimeoutError,
    PodResourcesUnavailableError,
    PodResourcesUnsupportedError,
)
from wattplane.agent.podresources.mapping import GpuPodMap, UnmappedDevice, map_gpus_to_pods
from wattplane.agent.podresources.model import (
    DEFAULT_RESOURCE_NAMES,
    DEFAULT_RESOURCE_PREFIXES,
    GpuAllocation,
    PodRef,
    allocations_from_response,
)

__all__ = [
    "DEFAULT_RESOURCE_NAMES",
    "DEFAULT_RESOURCE_PREFIXES",
    "DEFAULT_SOCKET_PATH",
    "GpuAllocation",
    "GpuPodMap",
    "PodRef",
    "PodResourcesError",
    "PodResourcesTimeoutError",
    "PodResourcesUnavailableError",
    "PodResourcesUnsupportedError",
    "UnmappedDevice",
    "allocations_from_response",
    "list_gpu_allocations",
    "map_gpus_to_pods",
]
