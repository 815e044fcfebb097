"""Where the agent learns which pod holds which GPU.

On GPU nodes the kubelet's PodResources API is the authority (device IDs are NVML UUIDs, possibly
with a ``::N`` time-slicing suffix or MIG UUIDs, which are attributed to their board, or the PCI
addresses AMD's device plugin uses, which the backend's alias map turns into UUIDs). On fake
nodes the simulated mapper in :mod:`podmap` stands in for the device plugin.

PodResources names pods by namespace and name only, but a pod deleted and created again under the
same name (a StatefulSet's pod, a Job retried with a fixed name) is another pod, and its energy
total must start afresh. The per-pod energy ledger keys on the pod's uid, so the uids come from the
agent's list of the pods bound to its node (:class:`PodUids`). That list is a second source, from
the API server: when it fails or hangs, attribution goes on with the uids already known.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from wattplane.agent.loop import AssignmentSource
from wattplane.agent.podresources import list_gpu_allocations, map_gpus_to_pods
from wattplane.api.v1alpha1.gpunode import PodRef

logger = logging.getLogger(__name__)

#: How long a pod sync waits for the node's pod list before it goes on with the uids it knows.
UID_LOOKUP_TIMEOUT_S = 5.0

#: The pods bound to this node, as the API server returns them (``NodeObjects.list_pods``).
NodePods = Callable[[], Awaitable[Sequence[Mapping[str, Any]]]]


class PodUids:
    """``(namespace, name)`` → uid of the pods that hold GPUs, from the node's pod list.

    Only the pods asked about are kept. A pod missing from a list that worked (deleted from the API
    while the kubelet still reports it) keeps the uid it had; one never seen has ``""`` until a list
    names it.
    """

    def __init__(self, node_pods: NodePods, *, timeout_s: float = UID_LOOKUP_TIMEOUT_S) -> None:
        self._node_pods = node_pods
        self._timeout_s = timeout_s
        self._known: dict[tuple[str, str], str] = {}
        self._failing = False

    async def lookup(self, wanted: Collection[tuple[str, str]]) -> Mapping[tuple[str, str], str]:
        """The uids of ``wanted`` pods, listing the node's pods afresh (never raises)."""
        fresh: dict[tuple[str, str], str] = {}
        if wanted:
            try:
                async with asyncio.timeout(self._timeout_s):
                    pods = await self._node_pods()
            except Exception as exc:  # the API server's trouble must not unattribute GPUs
                if not self._failing:
                    logger.warning(
                        "cannot list this node's pods for their uids (%s: %s); attribution goes on with the "
                        "uids known so far",
                        exc.__class__.__name__,
                        exc,
                    )
                self._failing = True
            else:
                if self._failing:
                    logger.info("this node's pods are listed again")
                self._failing = False
                for pod in pods:
                    meta = pod.get("metadata") or {}
                    if meta.get("uid"):
                        fresh[(meta.get("namespace", ""), meta.get("name", ""))] = meta["uid"]
        self._known = {key: fresh.get(key) or self._known.get(key, "") for key in wanted}
        return self._known


def podresources_source(
    socket_path: Path,
    gpu_uuids: Sequence[str],
    mig_parents: Callable[[], Mapping[str, str]] = dict,
    *,
    device_aliases: Callable[[], Mapping[str, str]] = dict,
    node_pods: NodePods | None = None,
    uid_timeout_s: float = UID_LOOKUP_TIMEOUT_S,
) -> AssignmentSource:
    """An assignment source backed by the kubelet PodResources ``List`` call.

    ``node_pods`` lists the pods bound to this node, for their uids; without it, pods carry no uid.
    ``device_aliases`` gives the backend's other names of its boards (AMD PCI addresses → UUIDs).
    """
    uids = PodUids(node_pods, timeout_s=uid_timeout_s) if node_pods is not None else None

    async def assignment() -> dict[str, list[PodRef]]:
        allocations = await list_gpu_allocations(socket_path)
        mapped = map_gpus_to_pods(allocations, gpu_uuids, mig_parents=mig_parents(), device_aliases=device_aliases())
        for device in mapped.unmapped:
            logger.warning("device %s not attributed: %s", device.allocation.device_id, device.reason)
        held = {(p.namespace, p.pod) for pods in mapped.pods_by_gpu.values() for p in pods}
        known = await uids.lookup(held) if uids is not None else {}
        return {
            uuid: [
                PodRef(
                    namespace=p.namespace, name=p.pod, uid=known.get((p.namespace, p.pod), ""), container=p.container
                )
                for p in pods
            ]
            for uuid, pods in mapped.pods_by_gpu.items()
            if pods
        }

    return assignment
