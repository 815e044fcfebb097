"""Scenario 1: the agent is killed with SIGKILL in the middle of applying a plan, and again mid-restore.

A hung driver call (an injected 4 s delay on one GPU's limit write) holds the agent between its
writes: two GPUs already carry the new limit, one is journaled but not written, one is untouched.
SIGKILL lands right there. The restarted agent must finish the job from what the devices and its
journal say: write the two missing GPUs once each, leave the two done ones alone (no duplicate
writes), keep the journaled prior state of every GPU, and never let an energy counter or a pod's
energy total go backwards. Then the same once more while restoring: killed between two restores,
the restarted agent puts every GPU back at its exact prior limit and clock lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from controlplane import ControlPlane
from faults import (
    FaultFleet,
    kill,
    limits,
    record,
    running_fleet,
    seed_devices,
    set_faults,
    sim_uuids,
    watch_until,
    writes,
)
from kubeapi import apply_policy, create_namespace, create_pod, delete_cluster_object, eventually, get_cluster_object
from kubernetes_asyncio import client

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(240)]

NODE = "rel-crash-n1"
NS = "rel-crash"
CLOCKS = (900, 1500)
#: The site's own settings before wattplane: GPU 1 hand-set to 280 W with a clock lock.
PRIOR = {0: (300.0, None), 1: (280.0, CLOCKS), 2: (300.0, None), 3: (300.0, None)}


@pytest.fixture(scope="module")
def fleet(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultFleet]:
    def seed(fleet: FaultFleet) -> None:
        seed_devices(fleet.state_file(NODE), NODE, {i: p for i, p in PRIOR.items() if i == 1})

    with running_fleet(control_plane, tmp_path_factory.mktemp("crash"), [NODE], before_agents=seed) as fleet:
        yield fleet


class EnergyWatch:
    """Samples GpuNode status all along and remembers every GPU energy and pod energy value it saw."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.gpu: dict[str, list[float]] = {}
        self.pods: dict[str, list[float]] = {}

    async def run(self) -> None:
        last_rv = ""
        while True:
            with contextlib.suppress(Exception):
                gn = await get_cluster_object(self.api, "gpunodes", NODE)
                if gn["metadata"]["resourceVersion"] != last_rv:
                    last_rv = gn["metadata"]["resourceVersion"]
                    status = gn.get("status", {})
                    for g in status.get("gpus", []):
                        if g.get("energyJoules") is not None and not g.get("stale"):
                            self.gpu.setdefault(g["uuid"], []).append(float(g["energyJoules"]))
                    for p in status.get("podEnergy", []):
                        key = f"{p['namespace']}/{p['name']}/{p['container']}"
                        self.pods.setdefault(key, []).append(float(p["energyJoules"]))
            await asyncio.sleep(0.2)

    def assert_monotonic(self) -> None:
        for what, series in (("GPU energy", self.gpu), ("pod energy", self.pods)):
            assert series, f"no {what} observed"
            for key, values in series.items():
                drops = [(a, b) for a, b in itertools.pairwise(values) if b < a]
                assert not drops, f"{what} of {key} went backwards: {drops[:3]}"


@pytest.fixture
async def energy(api: client.ApiClient) -> AsyncIterator[EnergyWatch]:
    watch = EnergyWatch(api)
    task = asyncio.create_task(watch.run())
    try:
        yield watch
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _journal(fleet: FaultFleet) -> dict[str, Any]:
    path: Path = fleet.journal(NODE)
    return json.loads(path.read_text())["gpus"] if path.exists() else {}


def _clocks(fleet: FaultFleet) -> dict[str, Any]:
    state = json.loads(fleet.state_file(NODE).read_text())["devices"]
    return {u: d["locked_clocks_mhz"] for u, d in state.items()}


async def test_sigkill_mid_apply_and_mid_restore_loses_nothing(
    fleet: FaultFleet, api: client.ApiClient, energy: EnergyWatch
) -> None:
    uuids = sim_uuids(NODE)
    await create_namespace(api, NS, {"team": NS})
    await create_pod(api, NS, "train", node=NODE, gpus=4, labels={"app": NS})

    async def attributed() -> bool:
        gn = await get_cluster_object(api, "gpunodes", NODE)
        gpus = gn.get("status", {}).get("gpus", [])
        return len(gpus) == 4 and all(g["pods"] and g["pods"][0]["name"] == "train" for g in gpus)

    await eventually(attributed, within_s=30, what=f"pod attributed\n{fleet.logs()}")
    await asyncio.sleep(2.5)  # a couple of status writes with pod energy in them
    before = writes(fleet)

    # The third GPU's limit write hangs for 4 s: the agent is caught between writes.
    set_faults(fleet, NODE, {"2": {"set_power_limit": {"delay_s": 4.0}}})
    await apply_policy(api, "rel-crash-cap", {"selector": {"podSelector": {"matchLabels": {"app": NS}}},
                                             "limits": {"maxWatts": 180}})  # fmt: skip

    def half_applied() -> bool:
        now = limits(fleet, NODE)
        return now[uuids[0]] == 180.0 and now[uuids[1]] == 180.0 and uuids[2] in _journal(fleet)

    await watch_until(half_applied, within_s=20, what="two GPUs written, the third journaled")
    kill(fleet.agents[NODE])
    now = limits(fleet, NODE)
    assert now[uuids[2]] == 300.0 and now[uuids[3]] == 300.0, f"the kill did not land mid-apply: {now}"
    journal = _journal(fleet)
    assert journal[uuids[1]] == {"power_limit_watts": 280.0, "locked_clocks_mhz": list(CLOCKS)}
    assert uuids[3] not in journal

    set_faults(fleet, NODE, {})
    killed_writes = writes(fleet)
    restarted = time.monotonic()
    fleet.start_agent(NODE)
    _, _seconds = await watch_until(
        lambda: all(w == 180.0 for w in limits(fleet, NODE).values()), within_s=30, what="plan finished after restart"
    )
    record("1 agent SIGKILL mid-apply", "restart → every GPU at its target", time.monotonic() - restarted)

    async def applied() -> bool:
        gn = await get_cluster_object(api, "gpunodes", NODE)
        gpus = gn.get("status", {}).get("gpus", [])
        return len(gpus) == 4 and all(g["state"] == "Applied" and g["powerLimitWatts"] == 180 for g in gpus)

    await eventually(applied, within_s=15, what=f"status Applied after restart\n{fleet.logs()}")
    await asyncio.sleep(2.0)  # several more ticks: still nothing to write
    after = writes(fleet)
    assert [after[u] - killed_writes[u] for u in uuids] == [0, 0, 1, 1], "restarted agent re-wrote or missed a GPU"
    assert [after[u] - before[u] for u in uuids] == [1, 1, 1, 1], "each GPU must be written exactly once per plan"
    journal = _journal(fleet)
    assert journal[uuids[1]] == {"power_limit_watts": 280.0, "locked_clocks_mhz": list(CLOCKS)}
    assert {u: journal[u]["power_limit_watts"] for u in (uuids[0], uuids[2], uuids[3])} == dict.fromkeys(
        (uuids[0], uuids[2], uuids[3]), 300.0
    )

    # Killed again, this time between two restores (the fourth GPU's restore hangs).
    set_faults(fleet, NODE, {"3": {"set_power_limit": {"delay_s": 4.0}}})
    await delete_cluster_object(api, "energypolicies", "rel-crash-cap")

    def half_restored() -> bool:
        now = limits(fleet, NODE)
        return now[uuids[0]] == 300.0 and now[uuids[1]] == 280.0 and now[uuids[2]] == 300.0

    await watch_until(half_restored, within_s=20, what="three GPUs restored, the fourth hanging")
    kill(fleet.agents[NODE])
    assert limits(fleet, NODE)[uuids[3]] == 180.0, "the kill did not land mid-restore"
    assert uuids[3] in _journal(fleet), "an unrestored GPU lost its journal entry"
    set_faults(fleet, NODE, {})
    restarted = time.monotonic()
    fleet.start_agent(NODE)
    expected = {u: PRIOR[i][0] for i, u in enumerate(uuids)}
    await watch_until(lambda: limits(fleet, NODE) == expected, within_s=30, what="exact prior limits back")
    record("1 agent SIGKILL mid-restore", "restart → every GPU at its prior state", time.monotonic() - restarted)
    assert _clocks(fleet) == {u: (list(CLOCKS) if i == 1 else None) for i, u in enumerate(uuids)}
    await watch_until(lambda: _journal(fleet) == {}, within_s=10, what="journal emptied after restore")

    await asyncio.sleep(2.5)  # let the watch see a few more statuses of the restarted agent
    energy.assert_monotonic()
    pod_series = energy.pods[f"{NS}/train/main"]
    assert pod_series[-1] > pod_series[0], "the pod's energy total did not keep growing across the kills"
