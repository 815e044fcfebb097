"""The agent's two publications on a real kube-apiserver: cap-range labels on its Node, and the readiness gate.

One fake node, its agent as a real process on simulated GPUs (faults injected through the sim
backend's faults file), no operator: the test writes the plan into the GpuNode itself, as the operator
would, so that every state of the gate can be reached on purpose.

* **Labels.** The Node gets ``power.wattplane.io/a40.{min,max,default}-watts`` with the simulated A40's
  range; a stale label under the prefix (a model the node no longer has) is removed and labels outside
  the prefix are left exactly as they were. When the node's GPUs change (the agent restarts on H100s),
  the H100's labels replace the A40's.
* **Readiness gate.** A pod with ``readinessGates: [{conditionType: wattplane.io/power-verified}]``
  gets that condition ``False``/``NoTarget`` while no plan targets its GPUs, ``True``/``Verified`` once
  the agent applied the plan's limit (the device holds it), ``False``/``GpuError`` while the new target
  cannot be written to one of its GPUs (injected ``NoPermission``), ``True`` again when the fault
  clears, and ``False``/``DryRun`` under a dry-run target. The pod's other conditions survive every
  write. A pod without the gate, holding a GPU under the same plan, never gets the condition. (kwok's
  pod-ready stage sets every readiness-gate condition ``True``, bare, once when it starts a pod, which
  a real kubelet never does; the test looks only after that, and the agent corrects it.)
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from controlplane import ControlPlane
from faults import FaultFleet, limits, running_fleet, set_faults, sim_uuids
from helmtool import require_tools
from kubeapi import GROUP, VERSION, connect, create_namespace, eventually
from kubernetes_asyncio import client
from wattplane.agent.gate import CONDITION_TYPE

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(240)]

NODE = "gate-n1"
NS = "gate-pods"
STALE = "power.wattplane.io/old-model.max-watts"
FOREIGN = {"team": "ml", "wattplane.io/rack": "r1", "power.example.com/max-watts": "1"}


def _seed_node_labels(fleet: FaultFleet) -> None:
    """Before the agent starts: a stale label under its prefix, and labels that are not its own."""

    async def seed() -> None:
        async with await connect(fleet.cp.kubeconfig) as api:
            await client.CoreV1Api(api).patch_node(NODE, {"metadata": {"labels": {STALE: "1", **FOREIGN}}})

    asyncio.run(seed())


@pytest.fixture(scope="module")
def fleet(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultFleet]:
    with running_fleet(
        control_plane,
        tmp_path_factory.mktemp("gate"),
        [NODE],
        before_agents=_seed_node_labels,
        start_operator=False,
    ) as fleet:
        yield fleet


@pytest.fixture
async def admin(control_plane: ControlPlane) -> AsyncIterator[client.ApiClient]:
    async with await connect(control_plane.kubeconfig) as api:
        yield api


def _kubectl(fleet: FaultFleet, *args: str) -> str:
    done = subprocess.run(
        [str(require_tools().kubectl), f"--kubeconfig={fleet.cp.kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def _node_labels(api: client.ApiClient) -> dict[str, str]:
    node = await client.CoreV1Api(api).read_node(NODE)
    return dict(node.metadata.labels or {})


def _ours(labels: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k.startswith("power.wattplane.io/")}


def _a40_labels() -> dict[str, str]:
    return {
        "power.wattplane.io/a40.min-watts": "100",
        "power.wattplane.io/a40.max-watts": "300",
        "power.wattplane.io/a40.default-watts": "300",
    }


async def _pod(api: client.ApiClient, name: str, gpus: int, *, gate: bool) -> None:
    spec: dict[str, Any] = {
        "nodeName": NODE,
        "containers": [
            {"name": "main", "image": "example.com/serve:1", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}
        ],
    }
    if gate:
        spec["readinessGates"] = [{"conditionType": CONDITION_TYPE}]
    await client.CoreV1Api(api).create_namespaced_pod(NS, {"metadata": {"name": name}, "spec": spec})


async def _conditions(api: client.ApiClient, name: str) -> dict[str, dict[str, Any]]:
    pod = api.sanitize_for_serialization(await client.CoreV1Api(api).read_namespaced_pod(name, NS))
    return {c["type"]: c for c in pod.get("status", {}).get("conditions") or []}


async def _started(api: client.ApiClient, name: str) -> bool:
    pod = await client.CoreV1Api(api).read_namespaced_pod(name, NS)
    return bool(pod.status and pod.status.pod_ip)


async def _gate_is(api: client.ApiClient, name: str, status: str, reason: str) -> dict[str, Any] | None:
    condition = (await _conditions(api, name)).get(CONDITION_TYPE)
    if condition and condition["status"] == status and condition.get("reason") == reason:
        return condition
    return None


async def _held_by(api: client.ApiClient, pod: str) -> list[int] | None:
    """Indexes of the GPUs the agent reports ``pod`` holding (``None`` until it reports any)."""
    status = (await client.CustomObjectsApi(api).get_cluster_custom_object(GROUP, VERSION, "gpunodes", NODE)).get(
        "status", {}
    )
    held = [g["index"] for g in status.get("gpus", []) if any(p["name"] == pod for p in g.get("pods", []))]
    return sorted(held) or None


async def _plan(api: client.ApiClient, generation: int, targets: dict[int, float], *, dry_run: bool = False) -> None:
    """Write the plan into the GpuNode, as the operator would: GPU index → watts."""
    uuids = sim_uuids(NODE)
    gpus = [
        {"uuid": uuids[i], "powerLimitWatts": w, "policy": "test", "job": "serve", "dryRun": dry_run}
        for i, w in targets.items()
    ]
    await client.CustomObjectsApi(api).patch_cluster_custom_object(
        GROUP,
        VERSION,
        "gpunodes",
        NODE,
        {"spec": {"planGeneration": generation, "gpus": gpus}},
        _content_type="application/merge-patch+json",
    )


async def test_cap_ranges_are_published_as_node_labels_and_stale_ones_removed(
    fleet: FaultFleet, admin: client.ApiClient
) -> None:
    async def published() -> dict[str, str] | None:
        labels = await _node_labels(admin)
        return labels if _ours(labels) == _a40_labels() else None

    labels, _ = await eventually(published, within_s=30, what="the A40's cap range as node labels")
    assert STALE not in labels
    assert {k: labels.get(k) for k in FOREIGN} == FOREIGN, "labels outside the prefix are left alone"

    # kubectl's view, as docs/user-guide.md shows it: one column per label, integer watts (which
    # nodeAffinity's Gt/Lt can compare).
    table = _kubectl(
        fleet, "get", "nodes", NODE, "-L", "power.wattplane.io/a40.min-watts,power.wattplane.io/a40.max-watts"
    )
    header, row = table.splitlines()
    assert header.split()[-2:] == ["A40.MIN-WATTS", "A40.MAX-WATTS"], table
    assert row.split()[0] == NODE and row.split()[-2:] == ["100", "300"], table
    assert all(v.isdigit() for v in _ours(labels).values())


async def test_power_verified_condition_follows_the_devices(fleet: FaultFleet, admin: client.ApiClient) -> None:
    await create_namespace(admin, NS)
    await _pod(admin, "serve", 2, gate=True)
    await _pod(admin, "plain", 1, gate=False)
    # kwok, the simulated kubelet, sets every readiness-gate condition True (bare: no reason) once, when
    # it starts the pod; a real kubelet never does. Past that point only the agent writes it.
    await eventually(lambda: _started(admin, "serve"), within_s=30, what="kwok to start the pod")
    await eventually(
        lambda: _gate_is(admin, "serve", "False", "NoTarget"), within_s=30, what="False/NoTarget before any plan"
    )
    others_before = set(await _conditions(admin, "serve")) - {CONDITION_TYPE}
    held, _ = await eventually(lambda: _held_by(admin, "serve"), within_s=30, what="the pod's GPUs in status")
    assert len(held) == 2
    first, second = held

    await _plan(admin, 1, {0: 200.0, 1: 200.0, 2: 200.0})
    verified, _ = await eventually(
        lambda: _gate_is(admin, "serve", "True", "Verified"), within_s=30, what="True once the cap is applied"
    )
    assert f"GPU {first} at 200 W, GPU {second} at 200 W" in verified["message"], verified
    uuids = sim_uuids(NODE)
    assert [limits(fleet, NODE)[u] for u in uuids[:3]] == [200.0] * 3  # the device holds it
    first_true = verified["lastTransitionTime"]

    set_faults(fleet, NODE, {str(second): {"set_power_limit": "NoPermission"}})
    await _plan(admin, 2, {0: 180.0, 1: 180.0, 2: 180.0})
    failed, _ = await eventually(
        lambda: _gate_is(admin, "serve", "False", "GpuError"), within_s=30, what="False/GpuError while a GPU fails"
    )
    assert f"GPU {second}" in failed["message"] and "NoPermission" in failed["message"], failed
    assert limits(fleet, NODE)[uuids[first]] == 180.0 and limits(fleet, NODE)[uuids[second]] == 200.0

    set_faults(fleet, NODE, {})
    again, _ = await eventually(
        lambda: _gate_is(admin, "serve", "True", "Verified"), within_s=30, what="True again once the GPU takes it"
    )
    assert f"GPU {second} at 180 W" in again["message"], again
    assert again["lastTransitionTime"] >= first_true

    await _plan(admin, 3, {0: 160.0, 1: 160.0, 2: 160.0}, dry_run=True)
    dry, _ = await eventually(
        lambda: _gate_is(admin, "serve", "False", "DryRun"), within_s=30, what="False/DryRun under a dry-run target"
    )
    assert "nothing verified" in dry["message"], dry

    conditions = await _conditions(admin, "serve")
    assert others_before <= set(conditions), "the pod's other conditions survive the agent's writes"
    # kubectl's view, as docs/user-guide.md shows it.
    jsonpath = '{.status.conditions[?(@.type=="wattplane.io/power-verified")]}'
    shown = json.loads(_kubectl(fleet, "get", "pod", "serve", "-n", NS, "-o", f"jsonpath={jsonpath}"))
    assert (shown["status"], shown["reason"]) == ("False", "DryRun"), shown
    condition = '.status.conditions[?(@.type=="wattplane.io/power-verified")]'
    columns = f"NAME:.metadata.name,VERIFIED:{condition}.status,WHY:{condition}.reason"
    table = _kubectl(fleet, "get", "pods", "-n", NS, "-o", f"custom-columns={columns}", "--sort-by=.metadata.name")
    assert [line.split() for line in table.splitlines()] == [
        ["NAME", "VERIFIED", "WHY"],
        ["plain", "<none>", "<none>"],
        ["serve", "False", "DryRun"],
    ], table
    header, row = _kubectl(fleet, "get", "pod", "serve", "-n", NS, "-o", "wide").splitlines()
    assert header.split()[-2:] == ["READINESS", "GATES"] and row.split()[-1] == "0/1", (header, row)
    assert CONDITION_TYPE not in await _conditions(admin, "plain"), "a pod without the gate is never patched"


async def test_labels_follow_the_gpus_when_they_change(fleet: FaultFleet, admin: client.ApiClient) -> None:
    fleet.agents[NODE].stop()
    for path in (fleet.state_file(NODE), fleet.journal(NODE)):
        path.unlink(missing_ok=True)
    fleet.agent_env["WATTPLANE_AGENT_SIM_MODEL"] = "H100"
    fleet.start_agent(NODE)
    h100 = {
        "power.wattplane.io/h100.min-watts": "200",
        "power.wattplane.io/h100.max-watts": "700",
        "power.wattplane.io/h100.default-watts": "700",
    }

    async def replaced() -> dict[str, str] | None:
        labels = await _node_labels(admin)
        return labels if _ours(labels) == h100 else None

    labels, _ = await eventually(replaced, within_s=30, what="the H100's labels in place of the A40's")
    assert {k: labels.get(k) for k in FOREIGN} == FOREIGN
