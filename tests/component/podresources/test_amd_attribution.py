"""Pods holding ``amd.com/gpu`` devices, attributed through the real gRPC path to the AMD backend's UUIDs.

AMD's device plugin (ROCm/k8s-device-plugin) names each board by its PCI address, the name of its
directory under ``/sys/module/amdgpu/drivers/pci:amdgpu/``, and time-sliced replicas
``<address>-slice-<n>``; AMD SMI names the same board by UUID. The fake kubelet below answers with those
ids, and the agent's source resolves them through the backend's ``device_id_aliases``, on an AMD-only
node and on a node with NVIDIA and AMD boards behind one backend.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from wattplane.agent.attribution import podresources_source
from wattplane.agent.gpu.amd import AmdSmiBackend
from wattplane.agent.gpu.multi import MultiBackend
from wattplane.agent.gpu.nvml import NvmlBackend

if TYPE_CHECKING:
    from tests.component.podresources.conftest import StartKubelet

# The library fakes live in tests/fakes/ (no packages under tests/).
_FAKES = str(Path(__file__).resolve().parents[2] / "fakes")
if _FAKES not in sys.path:
    sys.path.insert(0, _FAKES)

import fake_amdsmi  # noqa: E402
import fake_pynvml  # noqa: E402


def _pod(namespace: str, name: str, container: str, resource: str, *device_ids: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "containers": [{"name": container, "devices": [{"resource_name": resource, "device_ids": list(device_ids)}]}],
    }


@pytest.fixture
def amd() -> fake_amdsmi.FakeAmdSmi:
    """Boards at 0000:11:00.0, 0000:31:00.0 and 0000:51:00.0."""
    return fake_amdsmi.FakeAmdSmi([fake_amdsmi.MI300X, fake_amdsmi.MI300X, fake_amdsmi.MI300X])


async def test_amd_only_node(start_kubelet: StartKubelet, amd: fake_amdsmi.FakeAmdSmi) -> None:
    board = [g.bdf for g in amd.gpus]
    kubelet = await start_kubelet(
        [
            _pod("ml-train", "llama-ft-0", "trainer", "amd.com/gpu", board[0], board[1]),
            _pod("inference", "vllm-a", "server", "amd.com/gpu", f"{board[2]}-slice-0"),
            _pod("inference", "vllm-b", "server", "amd.com/gpu", f"{board[2]}-slice-1"),
            _pod("default", "fpga-job", "main", "example.com/foo", "foo-1"),
        ]
    )
    with AmdSmiBackend(lib=amd, clock=amd.monotonic) as backend:
        uuids = [d.identity.uuid for d in backend.devices()]
        source = podresources_source(kubelet.socket_path, uuids, device_aliases=backend.device_id_aliases)
        assignment = await source()

    assert {uuid: sorted((p.namespace, p.name, p.container) for p in pods) for uuid, pods in assignment.items()} == {
        amd.gpus[0].uuid: [("ml-train", "llama-ft-0", "trainer")],
        amd.gpus[1].uuid: [("ml-train", "llama-ft-0", "trainer")],
        amd.gpus[2].uuid: [("inference", "vllm-a", "server"), ("inference", "vllm-b", "server")],
    }


async def test_mixed_node_attributes_both_vendors(
    start_kubelet: StartKubelet, amd: fake_amdsmi.FakeAmdSmi, caplog: pytest.LogCaptureFixture
) -> None:
    nvml = fake_pynvml.FakeNvml([fake_pynvml.A40, fake_pynvml.H100_SXM])
    nvidia = [g.uuid for g in nvml.gpus]
    kubelet = await start_kubelet(
        [
            {
                "name": "hybrid-0",
                "namespace": "research",
                "containers": [
                    {
                        "name": "cuda",
                        "devices": [{"resource_name": "nvidia.com/gpu", "device_ids": [nvidia[1]]}],
                    },
                    {
                        "name": "rocm",
                        "devices": [{"resource_name": "amd.com/gpu", "device_ids": [amd.gpus[1].bdf]}],
                    },
                ],
            },
            _pod("ml-train", "bert-0", "trainer", "nvidia.com/gpu", f"{nvidia[0]}::0"),
            # The AMD plugin's "mixed" naming strategy, for an unpartitioned board.
            _pod("ml-train", "gemma-0", "trainer", "amd.com/spx_nps1", amd.gpus[0].bdf),
            # A second compute partition of a partitioned board, and a board of another node.
            _pod("ml-train", "tiny-0", "trainer", "amd.com/cpx_nps4", "amdgpu_xcp_12"),
            _pod("ml-train", "lost-0", "trainer", "amd.com/gpu", "0000:f1:00.0"),
        ]
    )
    backend = MultiBackend([NvmlBackend(lib=nvml, clock=nvml.monotonic), AmdSmiBackend(lib=amd, clock=amd.monotonic)])
    try:
        uuids = [d.identity.uuid for d in backend.devices()]
        source = podresources_source(
            kubelet.socket_path, uuids, backend.mig_parent_uuids, device_aliases=backend.device_id_aliases
        )
        with caplog.at_level(logging.WARNING, logger="wattplane.agent.attribution"):
            assignment = await source()
    finally:
        backend.close()

    held = {uuid: sorted((p.name, p.container) for p in pods) for uuid, pods in assignment.items()}
    assert held == {
        nvidia[0]: [("bert-0", "trainer")],
        nvidia[1]: [("hybrid-0", "cuda")],
        amd.gpus[0].uuid: [("gemma-0", "trainer")],
        amd.gpus[1].uuid: [("hybrid-0", "rocm")],
    }
    warnings = [r.getMessage() for r in caplog.records]
    assert any("amdgpu_xcp_12" in w and "partition" in w for w in warnings), warnings
    assert any("0000:f1:00.0" in w and "matches no GPU" in w for w in warnings), warnings
