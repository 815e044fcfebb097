"""Scenario 4 (cluster level): carbon sources failing under the real operator.

Four policies, each on its own Electricity Maps server on loopback and its own pod, each failing
differently from the start and declaring a different fallback:

=========  ==============================================  ==========  ==========================
source     failure                                         fallback    limit (A40, maxWatts 290)
=========  ==============================================  ==========  ==========================
down       nothing listens (connection refused)            Efficient   0.6 · 300 = 180 W
slow       every answer takes 12 s (request timeout 10 s)  Max         300 W, capped by 290 W
429        rate limited, Retry-After 5 s                   Fixed 300   w = 0.5 → 240 W
garbage    HTML, wrong shapes, negative values             LastGood    nothing to keep → 290 W
=========  ==============================================  ==========  ==========================

``SignalFresh=False`` must appear with the failure named, the fallback must reach the devices, the
planning loop must go on (an edit of the limits is applied while every source is still failing),
and once the sources recover the signal is fresh again and the curve decides.
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from carbongrid import GridServer
from controlplane import ControlPlane
from faults import FaultFleet, limits, record, running_fleet, sim_uuids, watch_until
from kubeapi import apply_policy, create_namespace, create_pod, eventually, get_cluster_object
from kubernetes_asyncio import client

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(300)]

NODE = "rel-carbon-n1"
NS = "rel-carbon"
TOKEN = "rel-carbon-token-81c3"
CASES = {  # failure → (fallback, fallbackIntensity, expected watts, expected watts after the edit to 200 W)
    "down": ("Efficient", None, 180.0, 180.0),
    "slow": ("Max", None, 290.0, 200.0),
    "429": ("Fixed", 300.0, 240.0, 200.0),
    "garbage": ("LastGood", None, 290.0, 200.0),
}
WORDS = {"down": "connect", "slow": "no answer within", "429": "429", "garbage": ""}


@pytest.fixture(scope="module")
def fleet(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultFleet]:
    env = {"WATTPLANE_OPERATOR_SIGNAL_REFRESH_S": "2", "WATTPLANE_OPERATOR_NAMESPACE": NS}
    with running_fleet(control_plane, tmp_path_factory.mktemp("carbon"), [NODE], operator_env=env) as fleet:
        yield fleet


@pytest.fixture
async def grids() -> AsyncIterator[dict[str, GridServer]]:
    servers = {failure: GridServer(token=TOKEN, intensity=400.0, slow_s=12.0, retry_after_s=5.0) for failure in CASES}
    for server in servers.values():
        await server.start()
    try:
        yield servers
    finally:
        for server in servers.values():
            await server.close()


def _spec(failure: str, url: str, max_watts: float) -> dict[str, Any]:
    fallback, intensity, _, _ = CASES[failure]
    carbon: dict[str, Any] = {
        "source": {
            "provider": "electricitymaps",
            "zone": "DE",
            "baseUrl": url,
            "refreshIntervalSeconds": 10,
            "credentialsSecretRef": {"name": "grid-token"},
        },
        "curve": {"basis": "Absolute", "points": [{"x": 100, "weight": 1.0}, {"x": 500, "weight": 0.0}]},
        "maxStalenessSeconds": 60,
        "fallback": fallback,
    }
    if intensity is not None:
        carbon["fallbackIntensity"] = intensity
    return {
        "selector": {"podSelector": {"matchLabels": {"grid": failure}}},
        "limits": {"maxWatts": max_watts},
        "carbon": carbon,
    }


SCENARIO = "4 carbon source failing (cluster)"


def _condition(ep: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in ep.get("status", {}).get("conditions", []) if c["type"] == type_), None)


async def _signal_state(api: client.ApiClient, *, fresh: bool) -> dict[str, dict[str, Any]] | None:
    """Every policy, once all show ``SignalFresh`` as wanted (a stale one must name its failure)."""
    out = {}
    for failure in CASES:
        ep = await get_cluster_object(api, "energypolicies", f"rel-grid-{failure}")
        cond = _condition(ep, "SignalFresh")
        if cond is None or cond["status"] != ("True" if fresh else "False"):
            return None
        if not fresh and WORDS[failure] not in cond["message"].lower():
            return None
        out[failure] = ep
    return out


async def _apply_all(api: client.ApiClient, grids: dict[str, GridServer], max_watts: float) -> None:
    for failure, server in grids.items():
        await apply_policy(api, f"rel-grid-{failure}", _spec(failure, server.url, max_watts))


async def _setup(api: client.ApiClient, fleet: FaultFleet) -> dict[str, str]:
    """Namespace, credentials Secret and one single-GPU pod per source; returns failure → GPU UUID."""
    await create_namespace(api, NS, {"team": NS})
    await client.CoreV1Api(api).create_namespaced_secret(
        NS, {"metadata": {"name": "grid-token"}, "data": {"token": base64.b64encode(TOKEN.encode()).decode()}}
    )
    for failure in CASES:
        await create_pod(api, NS, f"job-{failure}", node=NODE, gpus=1, labels={"grid": failure})

    async def attributed() -> dict[str, str] | None:
        gn = await get_cluster_object(api, "gpunodes", NODE)
        owners = {g["pods"][0]["name"].removeprefix("job-"): g["uuid"] for g in gn["status"]["gpus"] if g["pods"]}
        return owners if len(owners) == 4 else None

    gpu_of, _ = await eventually(attributed, within_s=30, what=f"pods attributed\n{fleet.logs()}")
    assert sorted(gpu_of.values()) == sorted(sim_uuids(NODE))
    return gpu_of


async def test_failing_sources_fall_back_and_planning_goes_on(
    fleet: FaultFleet, api: client.ApiClient, grids: dict[str, GridServer]
) -> None:
    gpu_of = await _setup(api, fleet)
    for failure, server in grids.items():
        await server.set_mode(failure)
    started = time.monotonic()
    await _apply_all(api, grids, 290)

    def at(index: int) -> dict[str, float] | None:
        now = limits(fleet, NODE)
        return now if now == {gpu_of[f]: case[index] for f, case in CASES.items()} else None

    await watch_until(lambda: at(2), within_s=60, what=f"every fallback on the devices\n{fleet.logs()}")
    record(SCENARIO, "policies applied → every fallback on its GPU", time.monotonic() - started)
    eps, _ = await eventually(
        lambda: _signal_state(api, fresh=False), within_s=60, interval=0.5, what=f"SignalFresh=False\n{fleet.logs()}"
    )
    record(SCENARIO, "policies applied → SignalFresh=False naming the cause", time.monotonic() - started)
    for failure, ep in eps.items():
        degraded, ready = _condition(ep, "Degraded"), _condition(ep, "Ready")
        assert degraded is not None and degraded["status"] == "True", (failure, degraded)
        assert ready is not None and ready["status"] == "True", (failure, ready)

    # The planning loop goes on while every source is still failing: an edit reaches the devices.
    edited = time.monotonic()
    await _apply_all(api, grids, 200)
    await watch_until(lambda: at(3), within_s=30, what=f"limits edit applied during the outage\n{fleet.logs()}")
    record(SCENARIO, "limits edit during the outage → devices", time.monotonic() - edited)

    # Recovery: the curve decides again (400 g/kWh: w = 0.25 → 210 W under the 290 W cap).
    for server in grids.values():
        await server.set_mode("ok")
    await _apply_all(api, grids, 290)
    recovered = time.monotonic()
    await eventually(
        lambda: _signal_state(api, fresh=True), within_s=90, interval=0.5, what=f"fresh again\n{fleet.logs()}"
    )
    await watch_until(lambda: set(limits(fleet, NODE).values()) == {210.0}, within_s=30, what="the curve decides")
    record(SCENARIO, "sources back → fresh, curve limits on the devices", time.monotonic() - recovered)
    assert all(TOKEN in server.tokens_seen for server in grids.values() if server.hits)
    assert fleet.operator is not None and fleet.operator.popen.poll() is None
