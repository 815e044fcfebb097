"""Fleet swarm, CI-sized: the real operator against 30 nodes whose agents one swarm process plays.

``bench/fleet_scale.py`` runs the same pieces at thousands of nodes; this keeps them honest in CI.
The swarm (``tests/support/agentswarm.py``) writes the statuses a real agent would, so the operator
cannot tell it apart at the API level. Asserted:

* **every GPU applies an edit**: after a static cap is edited, every GPU held by a selected pod on
  every node reports the new limit ``Applied`` (and the observed plan generation), and the idle GPUs
  stay at their default;
* **quiet means quiet**: while nothing changes, each node's GpuNode spec is written at most once per
  planning round (in practice not at all: no new plan generation), although the swarm keeps
  reporting status every 2 s and the operator plans at least every 5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agentswarm import swarm_command
from controlplane import ControlPlane, Process, free_port, spawn
from faults import create_nodes, http_get, log_problems, record
from kubeapi import GROUP, VERSION, apply_policy, create_namespace, create_pod
from kubernetes_asyncio import client, watch
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(120)]

NODES = [f"swarm-n{i}" for i in range(30)]
GPUS = 4
NS = "swarm"
POLICY = "swarm-cap"


@dataclass
class SwarmFleet:
    """The swarm and the operator, running."""

    swarm: Process
    operator: Process
    metrics_url: str
    stats: Path


@pytest.fixture(scope="module")
def swarm_fleet(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwarmFleet]:
    workdir = tmp_path_factory.mktemp("swarm")
    asyncio.run(create_nodes(control_plane, NODES))
    ready, stats = workdir / "ready", workdir / "stats.json"
    argv = swarm_command(
        control_plane.kubeconfig, NODES, gpus=GPUS, status_interval_s=2.0, pod_sync_s=0.5, stats=stats, ready_file=ready
    )
    swarm = spawn("agentswarm", argv, workdir, control_plane.python_env())
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert swarm.popen.poll() is None and time.monotonic() < deadline, swarm.tail()
        time.sleep(0.2)
    port = free_port()
    operator = control_plane.spawn_python(
        "operator-swarm",
        "wattplane.operator",
        [],
        WATTPLANE_OPERATOR_DEBOUNCE_S="0.2",
        WATTPLANE_OPERATOR_RESYNC_INTERVAL_S="5",
        WATTPLANE_OPERATOR_METRICS_HOST="127.0.0.1",
        WATTPLANE_OPERATOR_METRICS_PORT=str(port),
    )
    try:
        yield SwarmFleet(swarm, operator, f"http://127.0.0.1:{port}/metrics", stats)
    finally:
        operator.stop()
        swarm.stop()
        control_plane.processes.pop("operator-swarm", None)


def _metric(url: str, name: str) -> float:
    status, body = http_get(url)
    assert status == 200, body
    return sum(s.value for f in text_string_to_metric_families(body) if f.name == name for s in f.samples)


async def _gpunodes(api: client.ApiClient) -> dict[str, dict[str, Any]]:
    listing = await client.CustomObjectsApi(api).list_cluster_custom_object(GROUP, VERSION, "gpunodes")
    return {o["metadata"]["name"]: o for o in listing["items"] if o["metadata"]["name"] in NODES}


def _unapplied(objects: dict[str, dict[str, Any]], watts: float) -> list[str]:
    """What still differs from "every held GPU Applied at ``watts``, every idle one Default"."""
    wrong: list[str] = []
    for name in NODES:
        obj = objects.get(name, {})
        status, spec = obj.get("status") or {}, obj.get("spec") or {}
        if status.get("observedPlanGeneration") != spec.get("planGeneration"):
            wrong.append(f"{name}: observed {status.get('observedPlanGeneration')} of {spec.get('planGeneration')}")
        gpus = status.get("gpus") or []
        if len(gpus) != GPUS:
            wrong.append(f"{name}: {len(gpus)} GPUs in status")
        for gpu in gpus:
            held = any(p["namespace"] == NS for p in gpu.get("pods", []))
            want = ("Applied", watts) if held else ("Default", 300.0)
            if (gpu.get("state"), gpu.get("powerLimitWatts")) != want:
                wrong.append(f"{name}/{gpu['index']}: {gpu.get('state')} {gpu.get('powerLimitWatts')} W, want {want}")
    return wrong


async def _all_applied(api: client.ApiClient, fleet: SwarmFleet, watts: float, within_s: float) -> float:
    started = time.monotonic()
    wrong: list[str] = ["not read yet"]
    while time.monotonic() - started < within_s:
        wrong = _unapplied(await _gpunodes(api), watts)
        if not wrong:
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    raise AssertionError(
        f"{len(wrong)} GPUs/nodes not at {watts} W Applied after {within_s} s: {wrong[:10]}\n"
        f"--- operator\n{fleet.operator.tail(20)}\n--- swarm\n{fleet.swarm.tail(10)}"
    )


async def _converged(api: client.ApiClient, fleet: SwarmFleet, watts: float) -> float:
    """Pods, namespace and the cap exist (created on first use) and every GPU applied ``watts``; seconds taken."""
    namespaces = await client.CoreV1Api(api).list_namespace(field_selector=f"metadata.name={NS}")
    if not namespaces.items:
        await create_namespace(api, NS, {"team": NS})
        await apply_policy(api, POLICY, _cap(watts))
        for i, node in enumerate(NODES):
            await create_pod(api, NS, f"job-{i}", node=node, gpus=1 + i % 3, labels={"swarm-app": "cap"})
    return await _all_applied(api, fleet, watts, within_s=40)


def _cap(watts: float) -> dict[str, Any]:
    return {"selector": {"podSelector": {"matchLabels": {"swarm-app": "cap"}}}, "limits": {"maxWatts": watts}}


async def test_every_gpu_applies_an_edited_cap(swarm_fleet: SwarmFleet, api: client.ApiClient) -> None:
    await _converged(api, swarm_fleet, 200.0)
    for watts in (150.0, 250.0):
        await apply_policy(api, POLICY, _cap(watts))
        seconds = await _all_applied(api, swarm_fleet, watts, within_s=30)
        record("fleet swarm", f"edit to {watts:g} W applied on all {len(NODES)} nodes", seconds)
    stats = json.loads(swarm_fleet.stats.read_text()) if swarm_fleet.stats.exists() else {}
    assert stats.get("write_errors") == 0, stats
    assert log_problems(swarm_fleet.operator) == []


async def test_quiet_fleet_gets_at_most_one_spec_write_per_node_per_round(
    swarm_fleet: SwarmFleet, api: client.ApiClient
) -> None:
    await _converged(api, swarm_fleet, 250.0)
    custom = client.CustomObjectsApi(api)
    listing = await custom.list_cluster_custom_object(GROUP, VERSION, "gpunodes")
    specs = {o["metadata"]["name"]: o.get("spec") for o in listing["items"] if o["metadata"]["name"] in NODES}
    status_writes: Counter[str] = Counter()
    spec_writes: Counter[str] = Counter()
    rounds_before = _metric(swarm_fleet.metrics_url, "wattplane_operator_rounds")

    async def count() -> None:
        stream = watch.Watch().stream(
            custom.list_cluster_custom_object,
            GROUP,
            VERSION,
            "gpunodes",
            resource_version=listing["metadata"]["resourceVersion"],
            timeout_seconds=60,
        )
        async with stream as events:
            async for event in events:
                name = event["object"]["metadata"]["name"]
                if name not in NODES:
                    continue
                status_writes[name] += 1
                if event["object"].get("spec") != specs[name]:
                    spec_writes[name] += 1
                    specs[name] = event["object"].get("spec")

    watcher = asyncio.create_task(count())
    await asyncio.sleep(12.0)
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    rounds = _metric(swarm_fleet.metrics_url, "wattplane_operator_rounds") - rounds_before
    # The swarm kept reporting (every 2 s per node) and each report wakes the operator: it planned.
    assert sum(status_writes.values()) >= len(NODES) * 3, status_writes
    assert rounds >= 2, rounds
    assert max(spec_writes.values(), default=0) <= rounds, (rounds, spec_writes)
    generations = {n: (s or {}).get("planGeneration") for n, s in specs.items()}
    after = await _gpunodes(api)
    assert {n: o["spec"].get("planGeneration") for n, o in after.items()} == generations, "plans changed while quiet"
