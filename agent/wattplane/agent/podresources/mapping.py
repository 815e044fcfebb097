"""Attribute the node's GPUs (by NVML UUID) to the containers that hold them.

Power is measured and capped per board, so every allocation is resolved to a board UUID: a shared
replica (``GPU-x::2``) to its board, a MIG instance to its parent (MIG boards are attributed, never
capped per instance), a GKE index id through the caller's index map, an AMD board's PCI address
through the caller's alias map (AMD's device plugin names boards by PCI address, AMD SMI by UUID). One
board can therefore belong
to several containers at once (time-slicing, MPS, several MIG instances), so the result maps each
board to a tuple of :class:`~.model.PodRef`, sorted and without duplicates.

An id that cannot be resolved is returned in :attr:`GpuPodMap.unmapped` with the reason, never
dropped: a device plugin with another id strategy, or a MIG layout the caller did not describe,
must show up in logs rather than as a silently idle GPU.

No I/O here: the UUIDs and the MIG, index and alias maps come from the GPU backend.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass

from wattplane.agent.podresources.model import GpuAllocation, PodRef, gke_board_index, pci_address_key

# Drivers before R470 named MIG instances after their parent: MIG-GPU-<parent uuid>/<gi>/<ci>.
_LEGACY_MIG_ID = re.compile(r"^MIG-(?P<parent>GPU-[0-9A-Fa-f-]+)/\d+/\d+$")
# The AMD device plugin names the second and later compute partitions of a board after their platform device.
_AMD_PARTITION_ID = re.compile(r"^amdgpu_xcp_\d+$")


@dataclass(frozen=True)
class UnmappedDevice:
    """An allocation that could not be tied to a GPU of this node, and why."""

    allocation: GpuAllocation
    reason: str


@dataclass(frozen=True)
class GpuPodMap:
    """Which containers hold each GPU of the node.

    Attributes:
        pods_by_gpu: One entry per node GPU UUID, in the order the caller listed them; an empty
            tuple means no container holds the board.
        unmapped: Allocations whose device id matched no GPU of this node.
    """

    pods_by_gpu: Mapping[str, tuple[PodRef, ...]]
    unmapped: tuple[UnmappedDevice, ...]


def map_gpus_to_pods(
    allocations: Iterable[GpuAllocation],
    gpu_uuids: Iterable[str],
    *,
    mig_parents: Mapping[str, str] | None = None,
    gke_index_to_uuid: Mapping[int, str] | None = None,
    device_aliases: Mapping[str, str] | None = None,
) -> GpuPodMap:
    """Resolve each allocation to one of the node's boards and group the containers per board.

    Args:
        allocations: What :func:`~.client.list_gpu_allocations` returned.
        gpu_uuids: NVML UUIDs (``GPU-...``) of the boards on this node.
        mig_parents: MIG instance UUID (``MIG-...``) → parent board UUID, from NVML. Without it,
            only pre-R470 MIG ids (which embed the parent) resolve.
        gke_index_to_uuid: Board index → UUID, for GKE's ``nvidiaN`` ids. The index is the
            ``/dev/nvidiaN`` minor number, which the caller must take from NVML (minor number), not
            assume equal to the enumeration index.
        device_aliases: Other names of a board → its UUID; today the PCI address of each AMD board
            (``0000:c1:00.0``), which is how AMD's device plugin names it. PCI addresses match in any
            spelling (case, 4- or 8-digit domain).

    Returns:
        The grouping, plus every allocation that did not resolve.
    """
    boards = list(dict.fromkeys(gpu_uuids))
    holders: dict[str, set[PodRef]] = {uuid: set() for uuid in boards}
    unmapped: list[UnmappedDevice] = []
    aliases = {pci_address_key(name) or name: uuid for name, uuid in (device_aliases or {}).items()}
    for allocation in allocations:
        board, reason = _resolve(allocation, holders, mig_parents or {}, gke_index_to_uuid or {}, aliases)
        if board is None:
            unmapped.append(UnmappedDevice(allocation, reason))
        else:
            holders[board].add(allocation.pod_ref)
    return GpuPodMap(
        pods_by_gpu={uuid: tuple(sorted(holders[uuid])) for uuid in boards},
        unmapped=tuple(unmapped),
    )


def _resolve(
    allocation: GpuAllocation,
    node_boards: Container[str],
    mig_parents: Mapping[str, str],
    gke_index_to_uuid: Mapping[int, str],
    aliases: Mapping[str, str],
) -> tuple[str | None, str]:
    """Return ``(board uuid, "")`` or ``(None, why it did not resolve)``."""
    gpu_id = allocation.gpu_id
    if gpu_id in node_boards:
        return gpu_id, ""
    if (alias := aliases.get(pci_address_key(gpu_id) or gpu_id)) is not None:
        if alias not in node_boards:
            return None, f"device id names {alias}, not a GPU of this node"
        return alias, ""
    if pci_address_key(gpu_id) is not None:
        return None, "PCI address matches no GPU of this node (none, or several partitions, have it)"
    if _AMD_PARTITION_ID.match(gpu_id):
        return None, "compute partition of a partitioned AMD board: partitions are not attributed yet"
    if gpu_id.startswith("MIG-"):
        parent = mig_parents.get(gpu_id)
        if parent is None and (legacy := _LEGACY_MIG_ID.match(gpu_id)) is not None:
            parent = legacy["parent"]
        if parent is None:
            return None, "MIG instance with no known parent GPU"
        if parent not in node_boards:
            return None, f"MIG instance's parent {parent} is not a GPU of this node"
        return parent, ""
    if (index := gke_board_index(gpu_id)) is not None:
        board = gke_index_to_uuid.get(index)
        if board is None:
            return None, f"GKE device index {index} is not in the index map"
        if board not in node_boards:
            return None, f"GKE device index {index} maps to {board}, not a GPU of this node"
        return board, ""
    return None, "device id is not a GPU of this node"
