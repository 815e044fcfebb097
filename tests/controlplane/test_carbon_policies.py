"""Carbon-aware policies end to end: a carbon source → operator → GpuNode targets → agents → devices.

Two sources, both real to the operator process: a trace file on disk, and an Electricity Maps v3
server on loopback whose token lives in a Kubernetes Secret the policy names. The token must reach
the API (or the request fails) and must appear nowhere else: not in the operator's log, the policy
status, or events.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from fleet import Fleet
from kubeapi import apply_policy, connect, create_namespace, create_pod, eventually, get_cluster_object
from kubernetes_asyncio import client
from loopback import serving
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(240)]

TOKEN = "em-secret-token-4f9c2d"
TRACE_NS = "carbon-trace"
EM_NS = "carbon-em"


@pytest.fixture
async def api(fleet: Fleet) -> AsyncIterator[client.ApiClient]:
    async with await connect(fleet.cp.kubeconfig) as api_client:
        yield api_client


@pytest.fixture
async def electricitymaps() -> AsyncIterator[tuple[str, list[str]]]:
    """An Electricity Maps v3 server on loopback; returns its URL and the auth tokens it was sent."""
    seen: list[str] = []

    async def latest(request: web.Request) -> web.Response:
        seen.append(request.headers.get("auth-token", ""))
        if request.headers.get("auth-token") != TOKEN:
            return web.json_response({"error": "Invalid token"}, status=401)
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        return web.json_response(
            {"zone": "DE", "carbonIntensity": 420, "datetime": now.isoformat().replace("+00:00", ".000Z")}
        )

    async def forecast(request: web.Request) -> web.Response:
        if request.headers.get("auth-token") != TOKEN:
            return web.json_response({"error": "Invalid token"}, status=401)
        start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        points = [
            {"carbonIntensity": 300 + 10 * h, "datetime": (start + timedelta(hours=h + 1)).isoformat()}
            for h in range(24)
        ]
        return web.json_response({"zone": "DE", "forecast": points})

    app = web.Application()
    app.router.add_get("/v3/carbon-intensity/latest", latest)
    app.router.add_get("/v3/carbon-intensity/forecast", forecast)
    async with serving(app) as url:
        yield url, seen


async def _cli(fleet: Fleet, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wattplane.cli.main",
        *args,
        "--kubeconfig",
        str(fleet.cp.kubeconfig),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def _scrape(url: str) -> dict[str, list[Sample]]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        text = await response.text()
    return {f.name: list(f.samples) for f in text_string_to_metric_families(text)}


def _trace(path: Path, grams: float) -> Path:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
    rows = [f"{(start + timedelta(hours=h)).isoformat()},{grams}" for h in range(24 * 4)]
    path.write_text("timestamp,gco2_per_kwh\n" + "\n".join(rows) + "\n")
    return path


async def _targets_of_pod(api: client.ApiClient, fleet: Fleet, namespace: str, pod: str) -> list[dict[str, Any]]:
    out = []
    for node in fleet.nodes:
        gn = await get_cluster_object(api, "gpunodes", node)
        mine = {
            g["uuid"]
            for g in gn.get("status", {}).get("gpus", [])
            if any(p["namespace"] == namespace and p["name"] == pod for p in g.get("pods", []))
        }
        out += [t for t in gn.get("spec", {}).get("gpus", []) if t["uuid"] in mine]
    return out


def _condition(ep: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in ep.get("status", {}).get("conditions", []) if c["type"] == type_), None)


async def test_trace_signal_sets_limits_through_the_curve(fleet: Fleet, api: client.ApiClient, tmp_path: Path) -> None:
    n1, _, _ = fleet.nodes
    await create_namespace(api, TRACE_NS, {"team": "carbon"})
    await create_pod(api, TRACE_NS, "train-trace", node=n1, gpus=2, labels={"app": "trace"})
    trace = _trace(tmp_path / "grid.csv", 400.0)
    spec: dict[str, Any] = {
        "selector": {"podSelector": {"matchLabels": {"app": "trace"}}},
        "carbon": {
            "source": {"provider": "trace", "zone": "test-grid", "tracePath": str(trace)},
            "curve": {"basis": "Absolute", "points": [{"x": 100, "weight": 1.0}, {"x": 500, "weight": 0.0}]},
            "efficientFractionOfDefault": 0.6,
        },
    }
    await apply_policy(api, "carbon-trace", spec)

    # w = (500 - 400) / (500 - 100) = 0.25; limit = 0.6·300 + 0.25·(300 − 180) = 210 W.
    async def at(watts: float) -> list[dict[str, Any]] | None:
        targets = await _targets_of_pod(api, fleet, TRACE_NS, "train-trace")
        return targets if len(targets) == 2 and all(t["powerLimitWatts"] == watts for t in targets) else None

    targets, _ = await eventually(lambda: at(210.0), within_s=30, what=f"carbon limit 210 W\n{fleet.logs()}")
    assert all("carbon" in t["reason"] for t in targets), targets

    async def reported() -> dict[str, Any] | None:
        ep = await get_cluster_object(api, "energypolicies", "carbon-trace")
        carbon = ep.get("status", {}).get("carbon") or {}
        fresh = _condition(ep, "SignalFresh")
        return ep if carbon.get("intensity") == 400 and fresh and fresh["status"] == "True" else None

    ep, _ = await eventually(reported, within_s=40, what="carbon status")
    assert ep["status"]["carbon"]["weight"] == pytest.approx(0.25)
    assert ep["status"]["carbon"]["source"] == "trace/test-grid"

    # The operator's metrics show the signal and the weight the curve gave.
    families = await _scrape(fleet.operator_metrics_url)
    intensity = families["wattplane_grid_carbon_intensity_grams_per_kwh"]
    # (Other modules' policies may be left on the shared API server, with their own grids: look for ours.)
    assert ("trace", "test-grid", 400.0) in [(s.labels["source"], s.labels["zone"], s.value) for s in intensity]
    weights = {s.labels["policy"]: s.value for s in families["wattplane_policy_carbon_weight"]}
    assert weights["carbon-trace"] == pytest.approx(0.25)

    # The CLI tells the same story: the fleet at a glance, and why this pod's GPUs sit at 210 W.
    status = await _cli(fleet, "status")
    assert "carbon-trace" in status and "400 g/kWh" in status and all(n in status for n in fleet.nodes)
    explained = await _cli(fleet, "explain", "pod", f"{TRACE_NS}/train-trace")
    assert explained.count("target 210 W from policy carbon-trace") == 2, explained
    assert "carbon 400 g/kWh → w=0.25" in explained

    # A cleaner curve (400 g/kWh now counts as clean) runs the GPUs at full power.
    spec["carbon"]["curve"]["points"] = [{"x": 400, "weight": 1.0}, {"x": 800, "weight": 0.0}]
    await apply_policy(api, "carbon-trace", spec)
    await eventually(lambda: at(300.0), within_s=30, what="curve edit applied")


async def test_credentials_come_from_the_named_secret_and_never_leak(
    fleet: Fleet, api: client.ApiClient, electricitymaps: tuple[str, list[str]]
) -> None:
    url, seen = electricitymaps
    _, n2, _ = fleet.nodes
    await create_namespace(api, EM_NS, {"team": "carbon"})
    await create_pod(api, EM_NS, "train-em", node=n2, gpus=1, labels={"app": "em"})
    core = client.CoreV1Api(api)
    await core.create_namespaced_secret(
        EM_NS,
        {
            "metadata": {"name": "em-credentials"},
            "data": {"token": base64.b64encode(TOKEN.encode()).decode()},
        },
    )
    spec = {
        "selector": {"podSelector": {"matchLabels": {"app": "em"}}},
        "carbon": {
            "source": {
                "provider": "electricitymaps",
                "zone": "DE",
                "baseUrl": url,
                "credentialsSecretRef": {"name": "em-credentials", "namespace": EM_NS},
            },
            "curve": {"basis": "Absolute", "points": [{"x": 200, "weight": 1.0}, {"x": 420, "weight": 0.0}]},
        },
    }
    await apply_policy(api, "carbon-em", spec)

    async def fresh() -> dict[str, Any] | None:
        ep = await get_cluster_object(api, "energypolicies", "carbon-em")
        cond = _condition(ep, "SignalFresh")
        return ep if cond and cond["status"] == "True" else None

    ep, _ = await eventually(fresh, within_s=60, what=f"signal from Electricity Maps\n{fleet.logs()}")
    assert ep["status"]["carbon"]["intensity"] == 420
    assert TOKEN in seen, "the Secret's token never reached the API"

    # 420 g/kWh is the dirty end of the curve: w = 0, the efficient limit 0.6 × 300 W.
    async def efficient() -> list[dict[str, Any]] | None:
        targets = await _targets_of_pod(api, fleet, EM_NS, "train-em")
        return targets if targets and all(t["powerLimitWatts"] == 180.0 for t in targets) else None

    await eventually(efficient, within_s=30, what="efficient limit under a dirty grid")

    # A policy naming a Secret that does not exist: a clear condition, no limit guessed.
    missing = json.loads(json.dumps(spec))
    missing["selector"] = {"podSelector": {"matchLabels": {"app": "nothing-selected"}}}
    missing["carbon"]["source"]["credentialsSecretRef"] = {"name": "no-such-secret", "namespace": EM_NS}
    await apply_policy(api, "carbon-missing-secret", missing)

    async def reported_missing() -> dict[str, Any] | None:
        ep = await get_cluster_object(api, "energypolicies", "carbon-missing-secret")
        cond = _condition(ep, "SignalFresh")
        return ep if cond and cond["status"] == "False" and "no-such-secret" in cond["message"] else None

    ep_missing, _ = await eventually(reported_missing, within_s=60, what="missing Secret reported")
    assert "not found" in _condition(ep_missing, "SignalFresh")["message"]  # type: ignore[index]
    degraded = _condition(ep_missing, "Degraded")
    assert degraded is not None and degraded["status"] == "True"

    # The token appears nowhere the operator writes.
    assert fleet.operator is not None
    assert TOKEN not in fleet.operator.tail(100_000)
    for name in ("carbon-em", "carbon-missing-secret"):
        assert TOKEN not in json.dumps(await get_cluster_object(api, "energypolicies", name))
    events = await core.list_namespaced_event(EM_NS)
    assert all(TOKEN not in (e.message or "") for e in events.items)
    async with aiohttp.ClientSession() as session, session.get(fleet.operator_metrics_url) as response:
        assert TOKEN not in await response.text()
