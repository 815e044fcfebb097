"""Which pod holds which simulated GPU, for nodes without a kubelet device plugin.

On a real GPU node the kubelet's PodResources API says which GPU UUIDs each container got. Fake
nodes (kwok, kind, the simulator) have no device plugin, so this mapper plays its part: containers
that request ``nvidia.com/gpu`` get the lowest free simulated GPUs, in creation order, and keep them
for as long as they live — the same stable, exclusive allocation a device plugin makes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wattplane.api.v1alpha1.gpunode import PodRef

GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class GpuRequest:
    """One container's GPU request."""

    namespace: str
    pod: str
    uid: str
    container: str
    count: int
    created: str = ""

    @property
    def key(self) -> tuple[str, str]:
        """Identity of the requesting container."""
        return (self.uid, self.container)


def gpu_requests_of(pod: Mapping[str, Any]) -> list[GpuRequest]:
    """The GPU requests of a pod object (a dict as the API server returns it)."""
    meta = pod.get("metadata", {})
    phase = pod.get("status", {}).get("phase", "Pending")
    if phase in ("Succeeded", "Failed") or meta.get("deletionTimestamp"):
        return []
    out: list[GpuRequest] = []
    for container in pod.get("spec", {}).get("containers", []):
        limits = (container.get("resources") or {}).get("limits") or {}
        raw = limits.get(GPU_RESOURCE)
        try:
            count = int(str(raw)) if raw is not None else 0
        except ValueError:
            count = 0
        if count > 0:
            out.append(
                GpuRequest(
                    namespace=meta.get("namespace", ""),
                    pod=meta.get("name", ""),
                    uid=meta.get("uid", ""),
                    container=container.get("name", ""),
                    count=count,
                    created=str(meta.get("creationTimestamp", "")),
                )
            )
    return out


class SimulatedPodMapper:
    """Sticky, exclusive assignment of simulated GPUs to containers."""

    def __init__(self, gpu_uuids: Sequence[str]) -> None:
        self._gpus = list(gpu_uuids)
        self._held: dict[tuple[str, str], list[str]] = {}
        self._refs: dict[tuple[str, str], PodRef] = {}
        #: Containers that asked for more GPUs than were free (reported in status).
        self.unsatisfied: list[str] = []

    def assign(self, requests: Iterable[GpuRequest]) -> dict[str, list[PodRef]]:
        """Update the assignment for the live requests; return GPU UUID → pods."""
        live = {r.key: r for r in requests}
        for key in list(self._held):
            if key not in live:
                del self._held[key]
                del self._refs[key]
        taken = {u for uuids in self._held.values() for u in uuids}
        self.unsatisfied = []
        for request in sorted(live.values(), key=lambda r: (r.created, r.namespace, r.pod, r.container)):
            if request.key in self._held:
                continue
            free = [u for u in self._gpus if u not in taken]
            if len(free) < request.count:
                self.unsatisfied.append(f"{request.namespace}/{request.pod}:{request.container}")
                continue
            self._held[request.key] = free[: request.count]
            self._refs[request.key] = PodRef(
                namespace=request.namespace, name=request.pod, uid=request.uid, container=request.container
            )
            taken.update(free[: request.count])
        out: dict[str, list[PodRef]] = {}
        for key, uuids in self._held.items():
            for uuid in uuids:
                out.setdefault(uuid, []).append(self._refs[key])
        return out
