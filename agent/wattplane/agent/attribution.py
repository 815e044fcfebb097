"""Where the agent learns which pod holds which GPU.

On GPU nodes the kubelet's PodResources API is the authority (device IDs are NVML UUIDs, possibly
with a ``::N`` time-slicing suffix or MIG UUIDs, which are attributed to their board). On fake
nodes the simulated mapper in :mod:`podmap` stands in for the device plugin.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from wattplane.agent.loop import AssignmentSource
from wattplane.agent.podresources import list_gpu_allocations, map_gpus_to_pods
from wattplane.api.v1alpha1.gpunode import PodRef

logger = logging.getLogger(__name__)


def podresources_source(
    socket_path: Path,
    gpu_uuids: Sequence[str],
    mig_parents: Callable[[], Mapping[str, str]] = dict,
) -> AssignmentSource:
    """An assignment source backed by the kubelet PodResources ``List`` call."""

    async def assignment() -> dict[str, list[PodRef]]:
        allocations = await list_gpu_allocations(socket_path)
        mapped = map_gpus_to_pods(allocations, gpu_uuids, mig_parents=mig_parents())
        for device in mapped.unmapped:
            logger.warning("device %s not attributed: %s", device.allocation.device_id, device.reason)
        return {
            uuid: [PodRef(namespace=p.namespace, name=p.pod, container=p.container) for p in pods]
            for uuid, pods in mapped.pods_by_gpu.items()
            if pods
        }

    return assignment
