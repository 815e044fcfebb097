"""Bad input at scale: generated policies, pod annotations and carbon payloads, by the thousand.

* **Policies** (hypothesis, ``tests/support/fuzzing.py``): 10,000 near-valid specs through the models,
  the planner and the agent's engine; and 10,000 through the real API server (server-side dry run,
  strict field validation, 32 at a time). Each is rejected with a message or accepted and handled:
  nothing raises, no planned limit leaves its GPU's constraints, no write reaches a device outside
  them, and what the API server accepts the operator can use.
* **Pod annotations**: 10,000 maps of wattplane's annotations with good and garbage values, parsed and
  planned; and a sample of garbage-annotated pods on the real cluster, planned by the real operator.
* **Carbon payloads**: 4,000 JSON bodies in the carbon APIs' own vocabulary, served to the carbon
  service for each provider: every failure is a typed error, never an unexpected exception.

The figures (cases, rejections, time) are printed; ``bench/policy_fuzz.py`` runs the same at any size.
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import random
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import fuzzing
import pytest
from aiohttp import web
from controlplane import ControlPlane
from faults import FaultFleet, limits, running_fleet
from hypothesis import HealthCheck, given, settings
from kubeapi import apply_policy, create_namespace, create_pod, eventually, get_cluster_object
from kubernetes_asyncio import client
from loopback import serving
from pydantic import SecretStr
from wattplane.api.v1alpha1.energypolicy import EnergyPolicySpec
from wattplane.carbon import CarbonService, Credentials, RetryPolicy
from wattplane.carbon.config import SourceConfig
from wattplane.carbon.model import SignalKind
from wattplane.carbon.service import INTERNAL_ERROR
from wattplane.carbon.testing import InstantSleep

OFFLINE_CASES = 10_000
API_CASES = 10_000
ANNOTATION_CASES = 10_000
PAYLOAD_CASES = 4_000


def _fuzz(cases: int) -> settings:
    return settings(
        max_examples=cases,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


def _report(what: str, figures: dict[str, Any]) -> None:
    sys.stderr.write(f"\nfuzz: {what}: " + ", ".join(f"{k} {v}" for k, v in figures.items()) + "\n")


@pytest.mark.timeout(300)
def test_policies_through_models_planner_and_engine() -> None:
    tally: collections.Counter[str] = collections.Counter()
    started = time.monotonic()

    @_fuzz(OFFLINE_CASES)
    @given(fuzzing.policy_specs)
    def one(spec: dict[str, Any]) -> None:
        result = fuzzing.check_offline(spec)  # any exception here is a failure hypothesis shrinks
        tally["cases"] += 1
        tally["accepted" if result.model_ok else "rejected"] += 1
        tally["clock locks clamped"] += bool(result.clamped_clocks)
        if not result.model_ok:
            assert result.model_message, "a rejection without a message"
        assert not result.violations, result.violations
        assert not result.clock_refusals, result.clock_refusals  # clamped by the agent, never refused

    one()
    tally_s = {**tally, "seconds": round(time.monotonic() - started, 1)}
    _report("policies through models + planner + engine", tally_s)
    assert tally["cases"] == OFFLINE_CASES
    assert tally["accepted"] > OFFLINE_CASES // 5 and tally["rejected"] > OFFLINE_CASES // 5, tally


@pytest.mark.controlplane
@pytest.mark.timeout(300)
async def test_policies_through_the_real_api_server(control_plane: ControlPlane) -> None:
    specs = fuzzing.draw(fuzzing.policy_specs, API_CASES)
    answers, seconds = await fuzzing.through_api_server(control_plane.kubeconfig, specs, concurrency=32)
    tally: collections.Counter[str] = collections.Counter()
    disagreements: list[tuple[Any, int, str, str]] = []
    for spec, (status, answer) in zip(specs, answers, strict=True):
        server_ok = status == 201
        message = "" if server_ok else str(answer)
        stored = answer if server_ok else spec  # the operator reads what the server stored
        model, model_message = fuzzing.model_verdict(stored)
        tally["accepted" if server_ok else "rejected"] += 1
        if not server_ok:
            assert status in (400, 422), (status, message, spec)  # a verdict on the input, never a server error
            assert message and ("spec" in message or "unknown field" in message), (message, spec)
        if server_ok and model is None:
            disagreements.append((spec, status, message, model_message))
        if not server_ok and model is not None:
            tally["rejected by the schema only (stricter)"] += 1
        if server_ok and model is not None:
            result = fuzzing.check_offline(stored)
            assert not result.violations, (result.violations, stored)
    _report(
        "policies through the real API server (dry run)",
        {**tally, "cases": len(specs), "seconds": round(seconds, 1), "per second": round(len(specs) / seconds)},
    )
    assert len(specs) == API_CASES
    # What the API server lets in, the operator can use: otherwise a user sees "created" from kubectl
    # and InvalidSpec only in status.
    assert not disagreements, f"{len(disagreements)} accepted by the API server but not by the models: " + "\n".join(
        f"{m} <- {json.dumps(s)[:300]}" for s, _, _, m in disagreements[:5]
    )


@pytest.mark.controlplane
async def test_the_schema_refuses_selector_requirements_the_models_refuse(control_plane: ControlPlane) -> None:
    """Found by the fuzz above (In/NotIn without values were "created", then InvalidSpec); kept as a regression."""
    specs = [
        {"selector": {"podSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}, "dryRun": True},
        {
            "selector": {"podSelector": {"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["a"]}]}},
            "dryRun": True,
        },
    ]
    answers, _ = await fuzzing.through_api_server(control_plane.kubeconfig, specs, prefix="fz-gap")
    assert all(fuzzing.model_verdict(s)[0] is None for s in specs)
    assert [status for status, _ in answers] == [422, 422], answers


def test_a_clock_range_beyond_the_device_is_clamped_not_refused() -> None:
    """Found by the fuzz (the schema allows 0-10000 MHz): the agent clamps the lock, as it clamps watts."""
    spec = {"limits": {"maxWatts": 250, "lockedSmClockMHz": {"minMHz": 100, "maxMHz": 2500}}}
    result = fuzzing.check_offline(spec)
    assert result.model_ok
    assert not result.clock_refusals and not result.violations, (result.clock_refusals, result.violations)
    assert result.clamped_clocks and all("clamped to 210-1740 MHz" in c for c in result.clamped_clocks), result


@pytest.mark.timeout(300)
def test_pod_annotations_parsed_and_planned() -> None:
    specs = [
        EnergyPolicySpec.model_validate(s)
        for s in (
            {"limits": {"maxFractionOfDefault": 0.7, "minWatts": 120}},
            {"budget": {"watts": 900}, "limits": {"maxWatts": 280}},
            {"carbon": {"source": {"provider": "trace", "zone": "z", "tracePath": "/x.csv"}}, "stragglers": {}},
            {"efficiency": {}, "limits": {"maxWatts": 260}},
        )
    ]
    tally: collections.Counter[str] = collections.Counter()
    started = time.monotonic()

    @_fuzz(ANNOTATION_CASES)
    @given(fuzzing.annotation_maps)
    def one(annotations: dict[str, str]) -> None:
        tally["cases"] += 1
        violations = fuzzing.check_annotations(annotations, specs[tally["cases"] % len(specs)])
        assert not violations, (violations, annotations)

    one()
    _report(
        "pod annotations through parser + planner + engine", {**tally, "seconds": round(time.monotonic() - started, 1)}
    )
    assert tally["cases"] == ANNOTATION_CASES


@pytest.fixture
async def fuzz_server() -> AsyncIterator[tuple[str, list[Any]]]:
    """Answers every carbon API path with the next fuzzed body (WattTime's login always succeeds)."""
    bodies: list[Any] = []

    async def any_path(request: web.Request) -> web.Response:
        if request.path.endswith("/login"):
            return web.json_response({"token": "fuzz-token"})
        body = bodies[-1] if bodies else None
        return web.Response(text=json.dumps(body), content_type="application/json")

    app = web.Application()
    app.router.add_get("/{tail:.*}", any_path)
    async with serving(app) as url:
        yield url, bodies


@pytest.mark.timeout(300)
async def test_carbon_payloads_never_escape_as_unexpected_errors(fuzz_server: tuple[str, list[Any]]) -> None:
    url, bodies = fuzz_server
    configs = [
        SourceConfig(provider="electricitymaps", zone="DE", base_url=url),
        SourceConfig(provider="watttime", zone="CAISO_NORTH", base_url=url, kind=SignalKind.MARGINAL),
        SourceConfig(provider="ukcarbon", zone="national", base_url=url),
        SourceConfig(provider="carbon-aware-sdk", zone="eastus", base_url=url),
    ]
    credentials = Credentials(
        electricitymaps_token=SecretStr("t"), watttime_username=SecretStr("u"), watttime_password=SecretStr("p")
    )
    service = CarbonService(
        credentials=credentials, retry=RetryPolicy(attempts=1), sleep=InstantSleep(), rng=random.Random(1)
    )
    payloads = fuzzing.draw(fuzzing.carbon_payloads, PAYLOAD_CASES)
    tally: collections.Counter[str] = collections.Counter()
    started = time.monotonic()
    try:
        for i, payload in enumerate(payloads):
            bodies.append(payload)
            config = configs[i % len(configs)]
            signal = await service.refresh(config)
            assert signal.error != INTERNAL_ERROR, (config.provider, payload, signal.error_message)
            value = signal.intensity_g_per_kwh
            assert value is None or (math.isfinite(value) and value >= 0), (config.provider, payload, value)
            tally[signal.error or "reading"] += 1
    finally:
        await service.close()
    _report("carbon payloads", {**tally, "cases": len(payloads), "seconds": round(time.monotonic() - started, 1)})


NODES = ["rel-fuzz-n1", "rel-fuzz-n2"]
NS = "rel-fuzz"


@pytest.fixture(scope="module")
def fleet(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultFleet]:
    with running_fleet(control_plane, tmp_path_factory.mktemp("fuzz"), NODES) as fleet:
        yield fleet


@pytest.mark.controlplane
@pytest.mark.timeout(240)
async def test_garbage_annotated_pods_on_the_real_cluster(fleet: FaultFleet, api: client.ApiClient) -> None:
    annotations = fuzzing.draw(fuzzing.annotation_maps, 60)
    await create_namespace(api, NS, {"team": NS})
    core = client.CoreV1Api(api)
    created, refused = 0, 0
    for i, notes in enumerate(annotations):
        node = NODES[i % 2]
        try:
            await create_pod(
                api, NS, f"fz-{i}", node=node, gpus=1 if i < 8 else 0, labels={"app": NS}, annotations=notes
            )
            created += 1
        except client.exceptions.ApiException as exc:
            assert exc.status == 422 and "annotations" in exc.body, exc.body  # e.g. an invalid key
            refused += 1
    await apply_policy(api, "rel-fuzz", {"selector": {"podSelector": {"matchLabels": {"app": NS}}},
                                         "limits": {"maxWatts": 250, "minWatts": 110}})  # fmt: skip

    async def planned() -> list[dict[str, Any]] | None:
        gpus = [g for node in NODES for g in (await get_cluster_object(api, "gpunodes", node))["status"]["gpus"]]
        held = [g for g in gpus if g["pods"]]
        done = len(held) >= 4 and all(g["state"] == "Applied" and g["targetWatts"] is not None for g in held)
        return held if done else None

    held, _ = await eventually(planned, within_s=30, what=f"garbage-annotated pods planned\n{fleet.logs()}")
    assert all(100.0 <= g["powerLimitWatts"] <= 250.0 for g in held), held
    assert all(100.0 <= w <= 300.0 for node in NODES for w in limits(fleet, node).values())

    async def events_posted() -> int | None:
        events = await core.list_namespaced_event(NS, field_selector="reason=InvalidAnnotation")
        return len(events.items) or None

    posted, _ = await eventually(events_posted, within_s=20, what="InvalidAnnotation events")
    await asyncio.sleep(2.0)
    assert fleet.operator is not None and fleet.operator.popen.poll() is None
    problems = fleet.problems(fleet.operator) + [p for a in fleet.agents.values() for p in fleet.problems(a)]
    assert not problems, problems[:10]
    _report("garbage-annotated pods on the cluster", {"created": created, "refused by the API": refused,
                                                       "InvalidAnnotation events": posted})  # fmt: skip
