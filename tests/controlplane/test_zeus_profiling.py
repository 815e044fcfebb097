"""Zeus as a cluster service, end to end: no change to the job, only two annotations.

The "training job" is a loopback HTTP server that serves the pod's progress counter the way a
training loop would (Prometheus text). Its speed follows the calibrated A40 curve of the simulated
GPUs at whatever limit the agent has actually set on the device (read from the simulated device state,
as a real job would simply run faster or slower). The operator sweeps the job's limits, measures
progress from the counter and energy from the agents' GpuNode status, and must settle on a limit whose
true Zeus cost is close to the best one the curve allows.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from fleet import Fleet
from kubeapi import apply_policy, connect, create_namespace, create_pod, eventually, get_cluster_object
from kubernetes_asyncio import client
from loopback import serving
from wattplane.agent.gpu.simmodels import builtin_catalog

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(300)]

NS = "zeus-ml"
ETA = 0.5
LOAD = 0.9  # the fleet's simulated load of a busy GPU (agent default)


@pytest.fixture
async def api(fleet: Fleet) -> AsyncIterator[client.ApiClient]:
    async with await connect(fleet.cp.kubeconfig) as api_client:
        yield api_client


class TrainingJob:
    """Progress of one pod: integrates the curve's rate at the limits its GPUs really have."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.curve, self.duty = builtin_catalog().workload("A40", None).operating_point(LOAD)
        self.gpus: list[tuple[str, str]] = []  # (node, uuid)
        self.samples = 0.0
        self.last = time.monotonic()

    def _limits(self) -> list[float]:
        out = []
        for node, uuid in self.gpus:
            devices = json.loads(self.fleet.state_file(node).read_text())["devices"]
            out.append(float(devices[uuid]["power_limit_watts"]))
        return out

    async def metrics(self, _: web.Request) -> web.Response:
        now = time.monotonic()
        if self.gpus:
            # 1000 samples per epoch per GPU; a data-parallel job moves at its slowest GPU.
            rate = min(self.duty / self.curve.time_per_epoch(w) for w in self._limits()) * len(self.gpus)
            self.samples += 1000 * rate * (now - self.last)
        self.last = now
        body = f"# TYPE train_samples counter\ntrain_samples_total {self.samples}\n"
        return web.Response(text=body, content_type="text/plain")


@pytest.fixture
async def job(fleet: Fleet) -> AsyncIterator[tuple[TrainingJob, str]]:
    training = TrainingJob(fleet)
    app = web.Application()
    app.router.add_get("/metrics", training.metrics)
    async with serving(app) as url:
        yield training, f"{url}/metrics#train_samples"


def _true_cost(job: TrainingJob, watts: float, max_watts: float) -> float:
    """Zeus cost per unit of progress at ``watts`` according to the curve the job really follows."""
    seconds = job.curve.time_per_epoch(watts) / job.duty
    joules = seconds * (job.duty * job.curve.power(watts))  # idle share of the duty cycle left out
    return ETA * joules + (1 - ETA) * max_watts * seconds


async def test_sweep_finds_a_near_optimal_limit_and_keeps_it(
    fleet: Fleet, api: client.ApiClient, job: tuple[TrainingJob, str]
) -> None:
    training, url = job
    node = fleet.nodes[0]
    await create_namespace(api, NS, {"team": "zeus"})
    await create_pod(
        api,
        NS,
        "resnet-0",
        node=node,
        gpus=2,
        labels={"app": "resnet"},
        annotations={"wattplane.io/job": "resnet", "wattplane.io/progress-metric": url},
    )

    async def attributed() -> list[str] | None:
        gn = await get_cluster_object(api, "gpunodes", node)
        uuids = [g["uuid"] for g in gn.get("status", {}).get("gpus", []) if g.get("pods")]
        return uuids if len(uuids) == 2 else None

    uuids, _ = await eventually(attributed, within_s=60, what="pod attributed")
    training.gpus = [(node, u) for u in uuids]

    spec = {
        "selector": {"podSelector": {"matchLabels": {"app": "resnet"}}},
        "efficiency": {"eta": ETA, "stepWatts": 50, "warmupSeconds": 2, "windowSeconds": 12},
    }
    await apply_policy(api, "zeus", spec)

    async def done() -> dict[str, Any] | None:
        ep = await get_cluster_object(api, "energypolicies", "zeus")
        profiles = ep.get("status", {}).get("profiles", [])
        return profiles[0] if profiles and profiles[0]["state"] == "Done" else None

    profile, seconds = await eventually(done, within_s=200, what=f"Zeus sweep finished\n{fleet.logs()}")
    sys.stderr.write(f"\nzeus e2e: sweep of {len(profile['points'])} limits done in {seconds:.0f} s\n")
    assert profile["job"] == f"{NS}/resnet" and profile["gpuModel"] == "A40"
    measured = [p["watts"] for p in profile["points"]]
    assert measured[0] == 300.0 and len(measured) >= 3, measured
    chosen = profile["chosenWatts"]
    assert chosen in measured

    # The choice is judged by the curve the job really follows, not by the noisy measurements.
    best = min(measured, key=lambda w: _true_cost(training, w, 300.0))
    regret = _true_cost(training, chosen, 300.0) / _true_cost(training, best, 300.0) - 1
    sys.stderr.write(f"zeus e2e: chose {chosen:g} W, best measured {best:g} W, cost regret {regret:.1%}\n")
    assert regret < 0.05

    async def applied() -> list[dict[str, Any]] | None:
        gn = await get_cluster_object(api, "gpunodes", node)
        targets = [t for t in gn["spec"].get("gpus", []) if t["uuid"] in uuids]
        return targets if len(targets) == 2 and all(t["powerLimitWatts"] == chosen for t in targets) else None

    targets, _ = await eventually(applied, within_s=15, what="chosen limit applied")
    assert all("Zeus" in t["reason"] for t in targets)
