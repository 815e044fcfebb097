"""How kubelet device ids are read: replica markers, MIG instances, GKE index names, AMD PCI addresses."""

from __future__ import annotations

import pytest
from wattplane.agent.podresources.model import (
    gke_board_index,
    is_gpu_resource,
    normalise_device_id,
    pci_address_key,
)

UUID = "GPU-8a2b3c4d-1111-2222-3333-444455556666"
MIG = "MIG-0f0e0d0c-aaaa-bbbb-cccc-ddddeeeeffff"


@pytest.mark.parametrize(
    ("resource", "device_id", "expected"),
    [
        ("nvidia.com/gpu", UUID, (UUID, False, False)),
        ("nvidia.com/gpu", f"{UUID}::0", (UUID, False, True)),
        ("nvidia.com/gpu", f"{UUID}::15", (UUID, False, True)),
        # MIG under the "single" strategy: the resource is plain nvidia.com/gpu, the id says MIG.
        ("nvidia.com/gpu", MIG, (MIG, True, False)),
        ("nvidia.com/gpu", f"{MIG}::3", (MIG, True, True)),
        # MIG under the "mixed" strategy: the resource name says MIG whatever the id looks like.
        ("nvidia.com/mig-1g.10gb", MIG, (MIG, True, False)),
        ("nvidia.com/mig-3g.40gb", "some-opaque-id", ("some-opaque-id", True, False)),
        ("nvidia.com/gpu", f"MIG-{UUID}/1/0", (f"MIG-{UUID}/1/0", True, False)),
        # GKE names boards by index, instances by GPU instance, replicas by /vgpuN.
        ("nvidia.com/gpu", "nvidia0", ("nvidia0", False, False)),
        ("nvidia.com/gpu", "nvidia12", ("nvidia12", False, False)),
        ("nvidia.com/gpu", "nvidia0/gi3", ("nvidia0/gi3", True, False)),
        ("nvidia.com/gpu", "nvidia0/gi3/vgpu1", ("nvidia0/gi3", True, True)),
        ("nvidia.com/gpu", "nvidia2/vgpu4", ("nvidia2", False, True)),
        # Not replica markers: a lone colon pair or a non-numeric suffix is part of the id.
        ("nvidia.com/gpu", f"{UUID}::", (f"{UUID}::", False, False)),
        ("nvidia.com/gpu", f"{UUID}::x", (f"{UUID}::x", False, False)),
        ("nvidia.com/gpu", "::1", ("::1", False, False)),
        # AMD's device plugin: a board by PCI address, a time-sliced replica with -slice-N, a partition.
        ("amd.com/gpu", "0000:c1:00.0", ("0000:c1:00.0", False, False)),
        ("amd.com/gpu", "0000:c1:00.0-slice-3", ("0000:c1:00.0", False, True)),
        ("amd.com/cpx_nps4", "amdgpu_xcp_12", ("amdgpu_xcp_12", False, False)),
        ("amd.com/gpu", "0000:c1:00.0-slice-", ("0000:c1:00.0-slice-", False, False)),
        # The -slice- marker is AMD's: on an NVIDIA resource it stays part of the id.
        ("nvidia.com/gpu", "odd-slice-1", ("odd-slice-1", False, False)),
    ],
)
def test_normalise_device_id(resource: str, device_id: str, expected: tuple[str, bool, bool]) -> None:
    assert normalise_device_id(resource, device_id) == expected


@pytest.mark.parametrize(
    ("gpu_id", "index"),
    [
        ("nvidia0", 0),
        ("nvidia7/gi2", 7),
        ("nvidia10/gi0/vgpu3", 10),
        ("nvidia", None),
        ("nvidiaX", None),
        ("nvidia0/gi", None),
        ("xnvidia0", None),
        (UUID, None),
    ],
)
def test_gke_board_index(gpu_id: str, index: int | None) -> None:
    assert gke_board_index(gpu_id) == index


@pytest.mark.parametrize(
    ("resource", "kept"),
    [
        ("nvidia.com/gpu", True),
        ("nvidia.com/mig-1g.5gb", True),
        ("nvidia.com/mig-7g.80gb", True),
        # The device plugin's time-slicing "renameByDefault" resource must be asked for explicitly.
        ("nvidia.com/gpu.shared", False),
        ("amd.com/gpu", True),
        # The AMD plugin's "mixed" strategy: one resource per compute and memory partition mode.
        ("amd.com/spx_nps1", True),
        ("amd.com/cpx_nps4", True),
        # PF passthrough to VMs (VFIO, named by IOMMU group): no amdgpu driver, nothing to measure.
        ("amd.com/gpu_pf", False),
        ("example.com/foo", False),
        ("", False),
    ],
)
def test_default_gpu_resources(resource: str, kept: bool) -> None:
    assert is_gpu_resource(resource) is kept


def test_resource_names_and_prefixes_are_configurable() -> None:
    assert is_gpu_resource("nvidia.com/gpu.shared", names=("nvidia.com/gpu.shared",), prefixes=())
    assert not is_gpu_resource("nvidia.com/mig-1g.5gb", names=("nvidia.com/gpu",), prefixes=())


@pytest.mark.parametrize(
    ("device_id", "key"),
    [
        ("0000:c1:00.0", "0000:c1:00.0"),  # sysfs, the AMD device plugin, AMD SMI
        ("00000000:C1:00.0", "0000:c1:00.0"),  # NVML
        ("0001:0A:1f.7", "0001:0a:1f.7"),
        (" 0000:c1:00.0\n", "0000:c1:00.0"),
        ("c1:00.0", None),  # no domain
        ("0000:c1:00.8", None),  # functions are 0-7
        ("amdgpu_xcp_3", None),
        (UUID, None),
    ],
)
def test_pci_address_key(device_id: str, key: str | None) -> None:
    assert pci_address_key(device_id) == key
