"""Scenario 2: the operator is killed with SIGKILL in the middle of a planning round.

A job is half way through its Zeus sweep (efficiency section) and its policy has been accounting
energy and carbon (a trace signal) for a while. The job's progress endpoint answers slowly, so every
planning round spends most of its time scraping it: SIGKILL lands while a scrape is in flight, that
is, inside a round. A new operator must resume from what the old one left in EnergyPolicy status:
the sweep goes on from the limits already measured (not from the top), and ``energyJoules`` and
``carbonGrams`` only ever grow, across the kill included.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from controlplane import ControlPlane
from faults import FaultFleet, kill, record, running_fleet
from kubeapi import apply_policy, create_namespace, create_pod, eventually, get_cluster_object
from kubernetes_asyncio import client
from loopback import serving
from wattplane.agent.gpu.simmodels import builtin_catalog

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(300)]

NODE = "rel-opkill-n1"
NS = "rel-opkill"
POLICY = "rel-opkill"
SCRAPE_DELAY_S = 1.0


@pytest.fixture(scope="module")
def fleet(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultFleet]:
    operator_env = {"WATTPLANE_OPERATOR_STATUS_REFRESH_S": "2", "WATTPLANE_OPERATOR_SIGNAL_REFRESH_S": "2"}
    workdir = tmp_path_factory.mktemp("opkill")
    with running_fleet(control_plane, workdir, [NODE], operator_env=operator_env) as fleet:
        yield fleet


class SlowJob:
    """A training job's progress counter, moving at the calibrated A40 rate of its GPUs' real limits."""

    def __init__(self, fleet: FaultFleet) -> None:
        self.fleet = fleet
        self.curve, self.duty = builtin_catalog().workload("A40", None).operating_point(0.9)
        self.uuids: list[str] = []
        self.samples = 0.0
        self.last = time.monotonic()
        self.in_flight = asyncio.Event()

    async def metrics(self, _: web.Request) -> web.Response:
        self.in_flight.set()
        try:
            await asyncio.sleep(SCRAPE_DELAY_S)
        finally:
            self.in_flight.clear()
        now = time.monotonic()
        if self.uuids:
            devices = json.loads(self.fleet.state_file(NODE).read_text())["devices"]
            watts = [float(devices[u]["power_limit_watts"]) for u in self.uuids]
            rate = min(self.duty / self.curve.time_per_epoch(w) for w in watts) * len(watts)
            self.samples += 1000 * rate * (now - self.last)
        self.last = now
        return web.Response(text=f"# TYPE train_samples counter\ntrain_samples_total {self.samples}\n")


@pytest.fixture
async def job(fleet: FaultFleet) -> AsyncIterator[tuple[SlowJob, str]]:
    training = SlowJob(fleet)
    app = web.Application()
    app.router.add_get("/metrics", training.metrics)
    async with serving(app) as url:
        yield training, f"{url}/metrics#train_samples"


class StatusWatch:
    """Every EnergyPolicy status the test saw, to check totals and sweeps never go back."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.seen: list[dict[str, Any]] = []

    async def run(self) -> None:
        last_rv = ""
        while True:
            with contextlib.suppress(Exception):
                ep = await get_cluster_object(self.api, "energypolicies", POLICY)
                if ep["metadata"]["resourceVersion"] != last_rv and ep.get("status", {}).get("profiles"):
                    last_rv = ep["metadata"]["resourceVersion"]
                    self.seen.append(ep["status"])
            await asyncio.sleep(0.2)


def _trace(path: Path) -> Path:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
    rows = [f"{(start + timedelta(hours=h)).isoformat()},250" for h in range(24 * 4)]
    path.write_text("timestamp,gco2_per_kwh\n" + "\n".join(rows) + "\n")
    return path


async def test_new_operator_resumes_profiles_and_accounting(
    fleet: FaultFleet, api: client.ApiClient, job: tuple[SlowJob, str], tmp_path: Path
) -> None:
    training, url = job
    await create_namespace(api, NS, {"team": NS})
    await create_pod(
        api,
        NS,
        "train-0",
        node=NODE,
        gpus=2,
        labels={"app": NS},
        annotations={"wattplane.io/job": "train", "wattplane.io/progress-metric": url},
    )

    async def attributed() -> list[str] | None:
        gn = await get_cluster_object(api, "gpunodes", NODE)
        uuids = [g["uuid"] for g in gn.get("status", {}).get("gpus", []) if g.get("pods")]
        return uuids if len(uuids) == 2 else None

    training.uuids, _ = await eventually(attributed, within_s=30, what="pod attributed")
    spec = {
        "selector": {"podSelector": {"matchLabels": {"app": NS}}},
        "efficiency": {"eta": 0.5, "stepWatts": 25, "warmupSeconds": 0, "windowSeconds": 3},
        # A clean grid by this curve (w = 1): carbon never tightens the sweep's probes, but it is counted.
        "carbon": {
            "source": {"provider": "trace", "zone": "rel-grid", "tracePath": str(_trace(tmp_path / "grid.csv"))},
            "curve": {"basis": "Absolute", "points": [{"x": 0, "weight": 1.0}, {"x": 1000, "weight": 1.0}]},
        },
    }
    await apply_policy(api, POLICY, spec)
    watch = StatusWatch(api)
    watcher = asyncio.create_task(watch.run())
    try:

        async def mid_sweep() -> dict[str, Any] | None:
            ep = await get_cluster_object(api, "energypolicies", POLICY)
            status = ep.get("status", {})
            profiles = status.get("profiles", [])
            busy = profiles and profiles[0]["state"] == "Profiling" and len(profiles[0]["points"]) >= 2
            return status if busy and status.get("energyJoules", 0) > 0 and status.get("carbonGrams", 0) > 0 else None

        await eventually(mid_sweep, within_s=120, what=f"sweep under way with totals\n{fleet.logs()}")
        await asyncio.wait_for(training.in_flight.wait(), timeout=20)  # the operator is inside a round
        assert fleet.operator is not None
        kill(fleet.operator)
        killed_at = time.monotonic()
        last = (await get_cluster_object(api, "energypolicies", POLICY))["status"]
        points_then = last["profiles"][0]["points"]
        await asyncio.sleep(3.0)  # the agents keep the last plan meanwhile

        fleet.start_operator()
        restarted = time.monotonic()

        async def resumed() -> dict[str, Any] | None:
            status = (await get_cluster_object(api, "energypolicies", POLICY))["status"]
            profile = status["profiles"][0]
            moved_on = len(profile["points"]) > len(points_then) or profile["state"] == "Done"
            return status if moved_on and status["energyJoules"] > last["energyJoules"] else None

        status, _ = await eventually(resumed, within_s=90, interval=0.2, what=f"sweep resumed\n{fleet.logs()}")
        record("2 operator SIGKILL mid-round", "new operator → sweep's next point and totals growing",
               time.monotonic() - restarted)  # fmt: skip
        record(
            "2 operator SIGKILL mid-round", "kill → sweep's next point (incl. 3 s outage)", time.monotonic() - killed_at
        )
        profile = status["profiles"][0]
        assert profile["points"][: len(points_then)] == points_then, "the sweep restarted instead of resuming"
        assert profile["points"][0]["watts"] == 300.0
        assert status["carbonGrams"] >= last["carbonGrams"]
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher

    # Across everything the test saw, totals never dropped and the sweep never lost a point.
    for before, after in zip(watch.seen, watch.seen[1:], strict=False):
        assert after.get("energyJoules", 0) >= before.get("energyJoules", 0), (before, after)
        assert after.get("carbonGrams", 0) >= before.get("carbonGrams", 0), (before, after)
        assert len(after["profiles"][0]["points"]) >= len(before["profiles"][0]["points"]), (before, after)
    assert len(watch.seen) >= 3
