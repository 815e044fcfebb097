"""Attributing the node's boards to containers: sharing, MIG, GKE ids, AMD PCI addresses, unresolved ids."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from wattplane.agent.podresources.mapping import UnmappedDevice, map_gpus_to_pods
from wattplane.agent.podresources.model import GpuAllocation, PodRef, normalise_device_id

GPU_0 = "GPU-00000000-aaaa-bbbb-cccc-000000000000"
GPU_1 = "GPU-11111111-aaaa-bbbb-cccc-111111111111"
GPU_OTHER_NODE = "GPU-99999999-aaaa-bbbb-cccc-999999999999"
MIG_A = "MIG-aaaaaaaa-0000-0000-0000-00000000000a"
MIG_B = "MIG-bbbbbbbb-0000-0000-0000-00000000000b"


def alloc(pod: str, device_id: str, *, container: str = "main", resource: str = "nvidia.com/gpu") -> GpuAllocation:
    gpu_id, mig, shared = normalise_device_id(resource, device_id)
    return GpuAllocation("ns", pod, container, resource, device_id, gpu_id, mig=mig, shared=shared)


def ref(pod: str, container: str = "main") -> PodRef:
    return PodRef("ns", pod, container)


def test_every_node_gpu_is_a_key_idle_ones_hold_nobody() -> None:
    result = map_gpus_to_pods([alloc("a", GPU_1)], [GPU_0, GPU_1])

    assert list(result.pods_by_gpu) == [GPU_0, GPU_1]
    assert result.pods_by_gpu == {GPU_0: (), GPU_1: (ref("a"),)}
    assert result.unmapped == ()


def test_duplicate_node_uuids_collapse() -> None:
    assert list(map_gpus_to_pods([], [GPU_0, GPU_0, GPU_1]).pods_by_gpu) == [GPU_0, GPU_1]


def test_time_sliced_board_lists_every_holder_once_sorted() -> None:
    allocations = [
        alloc("zeta", f"{GPU_0}::0"),
        alloc("alpha", f"{GPU_0}::1"),
        alloc("alpha", f"{GPU_0}::2"),  # two replicas in one container still mean one holder
        alloc("alpha", f"{GPU_0}::3", container="sidecar"),
    ]

    result = map_gpus_to_pods(allocations, [GPU_0])

    assert result.pods_by_gpu[GPU_0] == (ref("alpha"), ref("alpha", "sidecar"), ref("zeta"))


def test_one_container_with_two_boards_appears_under_both() -> None:
    result = map_gpus_to_pods([alloc("a", GPU_0), alloc("a", GPU_1)], [GPU_0, GPU_1])

    assert result.pods_by_gpu == {GPU_0: (ref("a"),), GPU_1: (ref("a"),)}


def test_mig_instances_attribute_to_their_parent_board() -> None:
    allocations = [alloc("a", MIG_A, resource="nvidia.com/mig-1g.10gb"), alloc("b", MIG_B)]

    result = map_gpus_to_pods(allocations, [GPU_0, GPU_1], mig_parents={MIG_A: GPU_1, MIG_B: GPU_1})

    assert result.pods_by_gpu == {GPU_0: (), GPU_1: (ref("a"), ref("b"))}
    assert result.unmapped == ()


def test_mig_without_parent_map_is_reported_not_dropped() -> None:
    mig = alloc("a", MIG_A)

    result = map_gpus_to_pods([mig], [GPU_0])

    assert result.pods_by_gpu == {GPU_0: ()}
    assert result.unmapped == (UnmappedDevice(mig, "MIG instance with no known parent GPU"),)


def test_mig_whose_parent_is_not_on_this_node_is_reported() -> None:
    mig = alloc("a", MIG_A)

    result = map_gpus_to_pods([mig], [GPU_0], mig_parents={MIG_A: GPU_OTHER_NODE})

    assert [u.allocation for u in result.unmapped] == [mig]
    assert GPU_OTHER_NODE in result.unmapped[0].reason


def test_pre_r470_mig_ids_name_their_parent() -> None:
    result = map_gpus_to_pods([alloc("a", f"MIG-{GPU_1}/2/0")], [GPU_0, GPU_1])

    assert result.pods_by_gpu == {GPU_0: (), GPU_1: (ref("a"),)}


def test_parent_map_wins_over_the_legacy_id_form() -> None:
    legacy = f"MIG-{GPU_1}/2/0"

    result = map_gpus_to_pods([alloc("a", legacy)], [GPU_0, GPU_1], mig_parents={legacy: GPU_0})

    assert result.pods_by_gpu == {GPU_0: (ref("a"),), GPU_1: ()}


def test_gke_ids_resolve_through_the_index_map() -> None:
    allocations = [alloc("a", "nvidia0"), alloc("b", "nvidia1/gi2"), alloc("c", "nvidia1/gi2/vgpu1")]

    result = map_gpus_to_pods(allocations, [GPU_0, GPU_1], gke_index_to_uuid={0: GPU_0, 1: GPU_1})

    assert result.pods_by_gpu == {GPU_0: (ref("a"),), GPU_1: (ref("b"), ref("c"))}
    assert result.unmapped == ()


def test_gke_ids_without_a_usable_index_map_are_reported() -> None:
    no_entry, other_node = alloc("a", "nvidia3"), alloc("b", "nvidia0")

    result = map_gpus_to_pods([no_entry, other_node], [GPU_0], gke_index_to_uuid={0: GPU_OTHER_NODE})

    assert result.pods_by_gpu == {GPU_0: ()}
    assert [(u.allocation, u.reason) for u in result.unmapped] == [
        (no_entry, "GKE device index 3 is not in the index map"),
        (other_node, f"GKE device index 0 maps to {GPU_OTHER_NODE}, not a GPU of this node"),
    ]


def test_unknown_ids_are_reported_in_input_order() -> None:
    stranger, index_name = alloc("a", f"{GPU_OTHER_NODE}::1"), alloc("b", "gpu-0")

    result = map_gpus_to_pods([stranger, alloc("c", GPU_0), index_name], [GPU_0])

    assert result.pods_by_gpu == {GPU_0: (ref("c"),)}
    assert result.unmapped == (
        UnmappedDevice(stranger, "device id is not a GPU of this node"),
        UnmappedDevice(index_name, "device id is not a GPU of this node"),
    )


AMD_0 = "74a1ff00-0000-1000-8000-5e3c1d9a0000"  # AMD SMI UUIDs carry no GPU- prefix
AMD_1 = "74a2ff00-0000-1000-8001-5e3c1d9a0001"
AMD_ALIASES = {"0000:11:00.0": AMD_0, "0000:31:00.0": AMD_1}


def test_amd_pci_addresses_resolve_through_the_alias_map() -> None:
    allocations = [
        alloc("a", "0000:11:00.0", resource="amd.com/gpu"),
        alloc("b", "0000:31:00.0-slice-0", resource="amd.com/gpu"),
        alloc("c", "0000:31:00.0-slice-1", resource="amd.com/gpu"),
        alloc("d", GPU_0),
    ]

    result = map_gpus_to_pods(allocations, [GPU_0, AMD_0, AMD_1], device_aliases=AMD_ALIASES)

    assert result.pods_by_gpu == {GPU_0: (ref("d"),), AMD_0: (ref("a"),), AMD_1: (ref("b"), ref("c"))}
    assert result.unmapped == ()


def test_pci_addresses_match_in_any_spelling() -> None:
    result = map_gpus_to_pods(
        [alloc("a", "0000:c1:00.0", resource="amd.com/gpu")], [AMD_0], device_aliases={"00000000:C1:00.0": AMD_0}
    )

    assert result.pods_by_gpu == {AMD_0: (ref("a"),)}


def test_amd_ids_that_do_not_resolve_are_reported_with_the_reason() -> None:
    unknown = alloc("a", "0000:99:00.0", resource="amd.com/gpu")
    partition = alloc("b", "amdgpu_xcp_12", resource="amd.com/cpx_nps4")
    elsewhere = alloc("c", "0000:11:00.0", resource="amd.com/gpu")

    result = map_gpus_to_pods([unknown, partition, elsewhere], [AMD_1], device_aliases=AMD_ALIASES)

    assert result.pods_by_gpu == {AMD_1: ()}
    assert [(u.allocation, u.reason) for u in result.unmapped] == [
        (unknown, "PCI address matches no GPU of this node (none, or several partitions, have it)"),
        (partition, "compute partition of a partitioned AMD board: partitions are not attributed yet"),
        (elsewhere, f"device id names {AMD_0}, not a GPU of this node"),
    ]


def test_without_aliases_a_pci_address_is_not_guessed() -> None:
    amd = alloc("a", "0000:11:00.0", resource="amd.com/gpu")

    result = map_gpus_to_pods([amd], [AMD_0])

    assert result.pods_by_gpu == {AMD_0: ()}
    assert [u.allocation for u in result.unmapped] == [amd]


_pods = st.sampled_from(["p0", "p1", "p2"])
_boards = st.sampled_from([GPU_0, GPU_1, GPU_OTHER_NODE])
_suffixes = st.one_of(st.just(""), st.integers(0, 9).map(lambda n: f"::{n}"))


@given(st.lists(st.tuples(_pods, _boards, _suffixes), max_size=20))
def test_every_allocation_is_either_attributed_or_reported(rows: list[tuple[str, str, str]]) -> None:
    allocations = [alloc(pod, board + suffix) for pod, board, suffix in rows]

    result = map_gpus_to_pods(allocations, [GPU_0, GPU_1])

    for allocation in allocations:
        attributed = allocation.pod_ref in result.pods_by_gpu.get(allocation.gpu_id, ())
        reported = any(u.allocation == allocation for u in result.unmapped)
        assert attributed != reported
        assert reported == (allocation.gpu_id == GPU_OTHER_NODE)
    for holders in result.pods_by_gpu.values():
        assert list(holders) == sorted(set(holders))
