"""Scenario 7: a node is deleted and comes back.

* **Deleted**: the Node object goes (and with it, as the pod garbage collector would do, its pods and
  the agent's DaemonSet pod). The GpuNode, owned by the Node, is garbage-collected by the real
  kube-controller-manager, and the policy stops counting the node's GPUs.
* **Re-added** under the same name (a new Node object, a new UID): a new agent creates a fresh GpuNode
  owned by the new Node, with a fresh plan; GPUs the old agent left capped go back to their journaled
  prior state (no stale plan survives), and a new pod on the node is capped again.
* **Node deleted under a running agent** (``kubectl delete node`` on a live node; the kubelet
  re-registers it): the agent must notice that its GpuNode is gone and create it again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from controlplane import ControlPlane
from faults import FaultFleet, create_nodes, kill, limits, record, running_fleet, watch_until
from kubeapi import apply_policy, create_namespace, create_pod, eventually, get_cluster_object
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(240)]

NODES = ["rel-node-n1", "rel-node-n2"]
NS = "rel-node"
POLICY = "rel-node"


@pytest.fixture(scope="module")
def fleet(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultFleet]:
    with running_fleet(control_plane, tmp_path_factory.mktemp("node"), NODES) as fleet:
        yield fleet


async def _gpunode_or_none(api: client.ApiClient, name: str) -> dict[str, Any] | None:
    try:
        return await get_cluster_object(api, "gpunodes", name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


async def _is_absent(api: client.ApiClient, node: str) -> bool:
    return await _gpunode_or_none(api, node) is None


async def _delete_node(api: client.ApiClient, node: str) -> str:
    """Delete the Node and the pods bound to it (the pod GC's job, not run in this control plane)."""
    core = client.CoreV1Api(api)
    uid = (await core.read_node(node)).metadata.uid
    await core.delete_node(node)
    pods = await core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}")
    for pod in pods.items:
        await core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0)
    return str(uid)


async def test_deleted_node_is_collected_and_comes_back_fresh(
    control_plane: ControlPlane, fleet: FaultFleet, api: client.ApiClient
) -> None:
    node = NODES[1]
    await create_namespace(api, NS, {"team": NS})
    await create_pod(api, NS, "train-a", node=node, gpus=4, labels={"app": NS})
    await apply_policy(
        api, POLICY, {"selector": {"podSelector": {"matchLabels": {"app": NS}}}, "limits": {"maxWatts": 200}}
    )
    await watch_until(lambda: set(limits(fleet, node).values()) == {200.0}, within_s=30, what=f"capped\n{fleet.logs()}")
    old = await get_cluster_object(api, "gpunodes", node)

    kill(fleet.agents[node])  # the node, its DaemonSet pod and the agent go together
    deleted = time.monotonic()
    old_node_uid = await _delete_node(api, node)
    assert old["metadata"]["ownerReferences"][0]["uid"] == old_node_uid

    await eventually(
        lambda: _is_absent(api, node), within_s=60, interval=0.2, what="GpuNode garbage-collected with its Node"
    )
    record("7 node deleted", "Node delete → GpuNode garbage-collected", time.monotonic() - deleted)

    async def uncounted() -> bool:
        status = (await get_cluster_object(api, "energypolicies", POLICY)).get("status", {})
        return status.get("matchedGpus") == 0 and status.get("matchedPods") == 0

    await eventually(uncounted, within_s=20, what=f"policy no longer counts the node\n{fleet.logs()}")

    # The node comes back under the same name: a new object, a new agent, a fresh GpuNode.
    await create_nodes(control_plane, [node])
    readded = time.monotonic()
    fleet.start_agent(node)
    new_node_uid = (await client.CoreV1Api(api).read_node(node)).metadata.uid

    async def fresh() -> dict[str, Any] | None:
        gn = await _gpunode_or_none(api, node)
        return gn if gn is not None and gn.get("status", {}).get("gpus") else None

    new, _ = await eventually(fresh, within_s=30, what=f"fresh GpuNode\n{fleet.logs()}")
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    assert new["metadata"]["ownerReferences"][0]["uid"] == new_node_uid != old_node_uid
    assert not new.get("spec", {}).get("gpus"), "a stale plan survived the node's deletion"
    assert not new["status"].get("podEnergy"), "pod energy of the old node's pods leaked into the new GpuNode"
    # The old agent was killed with GPUs capped: the new one owes them their prior state.
    await watch_until(lambda: set(limits(fleet, node).values()) == {300.0}, within_s=20, what="prior state back")
    record("7 node re-added", "Node re-created → fresh GpuNode, GPUs at prior state", time.monotonic() - readded)

    await create_pod(api, NS, "train-b", node=node, gpus=4, labels={"app": NS})
    placed = time.monotonic()
    await watch_until(lambda: set(limits(fleet, node).values()) == {200.0}, within_s=30, what="new pod capped")
    record("7 node re-added", "new pod on the re-added node → capped", time.monotonic() - placed)


async def test_agent_recreates_its_gpunode_when_the_node_object_is_replaced(
    control_plane: ControlPlane, fleet: FaultFleet, api: client.ApiClient
) -> None:
    node = NODES[0]
    await eventually(lambda: _gpunode_or_none(api, node), within_s=20, what="GpuNode present")
    core = client.CoreV1Api(api)
    old_uid = (await core.read_node(node)).metadata.uid
    await core.delete_node(node)  # the agent keeps running, as on a live node whose kubelet re-registers
    await eventually(lambda: _is_absent(api, node), within_s=60, interval=0.2, what="GpuNode collected")
    await create_nodes(control_plane, [node])
    readded = time.monotonic()
    new_uid = (await core.read_node(node)).metadata.uid
    assert new_uid != old_uid

    async def recreated() -> dict[str, Any] | None:
        gn = await _gpunode_or_none(api, node)
        return gn if gn is not None and gn.get("status", {}).get("gpus") else None

    gn, _ = await eventually(recreated, within_s=20, what=f"GpuNode re-created by the running agent\n{fleet.logs()}")
    record("7 node replaced under a running agent", "Node re-created → GpuNode back", time.monotonic() - readded)
    assert gn["metadata"]["ownerReferences"][0]["uid"] == new_uid
