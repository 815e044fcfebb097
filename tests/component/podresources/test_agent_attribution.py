"""The agent's PodResources attribution source, against the fake kubelet.

Shared and MIG devices attribute at board level; idle boards carry no pod. Pods get their uids from
the node's pod list (PodResources names them only), so a pod created again under the same name
starts a new energy total; when that list fails or hangs, attribution goes on with the uids known.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from wattplane.agent.attribution import podresources_source
from wattplane.agent.status import PodEnergyLedger

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


class NodePods:
    """The node's pod list as the API server would return it: uids per pod, and failures on demand."""

    def __init__(self, uids: dict[tuple[str, str], str]) -> None:
        self.uids = uids
        self.fail: Exception | None = None
        self.hang = False
        self.calls = 0

    async def __call__(self) -> list[dict[str, Any]]:
        self.calls += 1
        if self.hang:
            await asyncio.Event().wait()
        if self.fail is not None:
            raise self.fail
        return [{"metadata": {"namespace": ns, "name": name, "uid": uid}} for (ns, name), uid in self.uids.items()]


LLAMA = ("ml-train", "llama-ft-0")


def _energy(ledger: PodEnergyLedger) -> dict[tuple[str, str], float]:
    return {(e.name, e.uid): e.energy_joules for e in ledger.entries()}


async def test_a_pod_created_again_under_its_name_starts_a_new_energy_total(kubelet: FakeKubelet) -> None:
    pods = NodePods({LLAMA: "uid-1", ("inference", "vllm-7d9f-abc"): "uid-v1", ("default", "fpga-job"): "uid-f"})
    source = podresources_source(kubelet.socket_path, [GPU_A, GPU_C], node_pods=pods, uid_timeout_s=0.5)
    ledger = PodEnergyLedger()

    first = await source()
    assert [(p.name, p.uid, p.container) for p in first[GPU_A]] == [("llama-ft-0", "uid-1", "trainer")]
    assert {p.name: p.uid for p in first[GPU_C]} == {"vllm-7d9f-abc": "uid-v1", "vllm-7d9f-def": ""}  # not listed
    ledger.update({GPU_A: 1000.0}, first, now=0)
    ledger.update({GPU_A: 1600.0}, first, now=1)
    assert _energy(ledger)[("llama-ft-0", "uid-1")] == 600.0

    pods.uids[LLAMA] = "uid-2"  # deleted and created again, same name, same GPU
    second = await source()
    assert [(p.name, p.uid) for p in second[GPU_A]] == [("llama-ft-0", "uid-2")]
    ledger.update({GPU_A: 1700.0}, second, now=2)
    energy = _energy(ledger)
    assert energy[("llama-ft-0", "uid-2")] == 100.0  # afresh, not 700 J continued from the old pod
    assert energy[("llama-ft-0", "uid-1")] == 600.0  # the old pod's final total, until it is forgotten


async def test_attribution_goes_on_with_known_uids_when_the_pod_list_fails_or_hangs(kubelet: FakeKubelet) -> None:
    pods = NodePods({LLAMA: "uid-1"})
    source = podresources_source(kubelet.socket_path, [GPU_A, GPU_C], node_pods=pods, uid_timeout_s=0.3)
    assert [p.uid for p in (await source())[GPU_A]] == ["uid-1"]

    pods.fail = ConnectionError("API server unreachable")
    failed = await source()
    assert [p.uid for p in failed[GPU_A]] == ["uid-1"]
    assert sorted(p.name for p in failed[GPU_C]) == ["vllm-7d9f-abc", "vllm-7d9f-def"]

    pods.fail, pods.hang = None, True
    started = asyncio.get_running_loop().time()
    hung = await source()
    assert asyncio.get_running_loop().time() - started < 2.0  # bounded by the lookup timeout
    assert [p.uid for p in hung[GPU_A]] == ["uid-1"]

    pods.hang = False
    pods.uids[LLAMA] = "uid-2"
    assert [p.uid for p in (await source())[GPU_A]] == ["uid-2"]
    assert pods.calls == 4
