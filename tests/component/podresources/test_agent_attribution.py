"""The agent's PodResources attribution source, against the fake kubelet.

Shared and MIG devices attribute at board level; idle boards carry no pod.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wattplane.agent.attribution import podresources_source

if TYPE_CHECKING:
    from tests.component.podresources.conftest import FakeKubelet

GPU_A = "GPU-aaaaaaaa-0000-0000-0000-000000000001"
GPU_C = "GPU-cccccccc-0000-0000-0000-000000000003"
GPU_BOARD_OF_MIG = "GPU-ffffffff-0000-0000-0000-000000000006"
GPU_IDLE = "GPU-eeeeeeee-0000-0000-0000-000000000005"
MIG_1 = "MIG-11111111-2222-3333-4444-555555555555"


async def test_agent_source_attributes_pods_to_boards(kubelet: FakeKubelet) -> None:
    source = podresources_source(
        kubelet.socket_path, [GPU_A, GPU_C, GPU_BOARD_OF_MIG, GPU_IDLE], lambda: {MIG_1: GPU_BOARD_OF_MIG}
    )
    assignment = await source()

    assert [(p.namespace, p.name, p.container) for p in assignment[GPU_A]] == [("ml-train", "llama-ft-0", "trainer")]
    assert sorted(p.name for p in assignment[GPU_C]) == ["vllm-7d9f-abc", "vllm-7d9f-def"]
    assert [p.name for p in assignment[GPU_BOARD_OF_MIG]] == ["notebook-alice"]
    assert GPU_IDLE not in assignment
