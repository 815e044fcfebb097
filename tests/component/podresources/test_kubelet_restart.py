"""A kubelet restart deletes and recreates its socket; the next call must reach the new one."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from wattplane.agent.podresources import PodResourcesUnavailableError, list_gpu_allocations

if TYPE_CHECKING:
    from tests.component.podresources.conftest import StartKubelet

AFTER_RESTART = [
    {
        "name": "batch-42",
        "namespace": "jobs",
        "containers": [
            {"name": "worker", "devices": [{"resource_name": "nvidia.com/gpu", "device_ids": ["GPU-ffff::2"]}]}
        ],
    }
]


async def test_calls_fail_while_kubelet_is_down_and_recover_after(start_kubelet: StartKubelet) -> None:
    before = await start_kubelet()
    assert len(await list_gpu_allocations(before.socket_path)) == 5

    await before.stop()
    with pytest.raises(PodResourcesUnavailableError):
        await list_gpu_allocations(before.socket_path)

    after = await start_kubelet(AFTER_RESTART)
    allocations = await list_gpu_allocations(after.socket_path)

    assert [(a.namespace, a.pod, a.container, a.gpu_id, a.shared) for a in allocations] == [
        ("jobs", "batch-42", "worker", "GPU-ffff", True)
    ]
    assert (before.calls, after.calls) == (1, 1)


async def test_quick_restart_between_two_ticks_is_invisible(start_kubelet: StartKubelet) -> None:
    before = await start_kubelet()
    assert len(await list_gpu_allocations(before.socket_path)) == 5

    await before.stop()
    after = await start_kubelet(AFTER_RESTART)

    assert [a.pod for a in await list_gpu_allocations(after.socket_path)] == ["batch-42"]
    assert after.calls == 1
