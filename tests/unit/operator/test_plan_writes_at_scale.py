"""Plan writes on a large fleet: concurrent PATCHes, renewals spread over time, failures contained.

The reconciler's write step runs with a stand-in for the API server's custom-objects endpoint that
takes a little time per PATCH (as a real one does) and records how many are in flight.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException
from wattplane.api.v1alpha1.energypolicy import EnergyPolicySpec
from wattplane.api.v1alpha1.gpunode import GpuNodeSpec
from wattplane.operator.decisions import RENEW_FRACTION, RENEW_SPREAD, renewal_due
from wattplane.operator.reconcile import Reconciler
from wattplane.operator.settings import OperatorSettings
from wattplane.operator.state import FleetState, NodeRecord
from wattplane.planner.plan import plan
from wattplane.planner.snapshot import FleetSnapshot, GpuView, PodView, PolicyView

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


class SlowCustomObjects:
    """Answers merge-patches after ``delay`` seconds; fails the nodes in ``failing`` with a 500."""

    def __init__(self, delay: float, failing: frozenset[str] = frozenset()) -> None:
        self.delay = delay
        self.failing = failing
        self.in_flight = 0
        self.most_in_flight = 0
        self.patched: list[str] = []

    async def patch_cluster_custom_object(
        self, group: str, version: str, plural: str, name: str, body: Any, **_: Any
    ) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            if name in self.failing:
                raise ApiException(status=500, reason="Internal Server Error")
            self.patched.append(name)
        finally:
            self.in_flight -= 1


def _fleet(nodes: int) -> tuple[FleetState, FleetSnapshot, list[PolicyView]]:
    state = FleetState()
    by_node = {}
    pods = {}
    for n in range(nodes):
        name = f"node-{n:04d}"
        key = ("ml", f"train-{n}")
        pods[key] = PodView(namespace="ml", name=key[1], node=name, labels={"app": "train"})
        gpus = tuple(
            GpuView(
                node=name,
                uuid=f"GPU-{n}-{i}",
                index=i,
                model="A40",
                min_watts=100.0,
                max_watts=300.0,
                default_watts=300.0,
                pods=(key,),
            )
            for i in range(4)
        )
        by_node[name] = gpus
        state.nodes[name] = NodeRecord(spec=GpuNodeSpec(), gpus=gpus)
    spec = EnergyPolicySpec.model_validate(
        {"selector": {"podSelector": {"matchLabels": {"app": "train"}}}, "limits": {"maxWatts": 200}}
    )
    snapshot = FleetSnapshot(pods=pods, nodes=tuple(sorted(by_node)), by_node=by_node)
    return state, snapshot, [PolicyView(name="cap", spec=spec, generation=1)]


def _reconciler(state: FleetState, api: SlowCustomObjects, concurrency: int) -> Reconciler:
    settings = OperatorSettings(write_concurrency=concurrency, metrics_port=0)
    reconciler = Reconciler(settings, state, object(), signals=None, observer=None)  # type: ignore[arg-type]
    reconciler._custom = api  # type: ignore[assignment]
    return reconciler


def test_plans_are_written_concurrently_within_the_bound() -> None:
    state, snapshot, policies = _fleet(64)
    api = SlowCustomObjects(delay=0.05)
    reconciler = _reconciler(state, api, concurrency=8)
    started = asyncio.run(_timed(reconciler._write_plans(plan(snapshot, policies), NOW)))
    assert sorted(api.patched) == sorted(state.nodes)
    assert api.most_in_flight == 8
    assert started < 64 * 0.05 / 4  # one at a time would take 3.2 s
    assert all(r.spec.plan_generation == 1 and r.spec.gpus[0].power_limit_watts == 200 for r in state.nodes.values())


def test_a_failed_write_fails_the_round_after_the_others_landed() -> None:
    state, snapshot, policies = _fleet(10)
    api = SlowCustomObjects(delay=0.01, failing=frozenset({"node-0003"}))
    reconciler = _reconciler(state, api, concurrency=4)
    result = plan(snapshot, policies)
    with pytest.raises(ApiException):
        asyncio.run(reconciler._write_plans(result, NOW))
    assert len(api.patched) == 9
    assert state.nodes["node-0003"].spec.plan_generation == 0  # not recorded as written
    api.failing = frozenset()
    api.patched.clear()
    asyncio.run(reconciler._write_plans(result, NOW + timedelta(seconds=1)))
    assert api.patched == ["node-0003"]  # the next round writes only what did not land


def test_unchanged_plans_are_not_rewritten_until_renewal() -> None:
    state, snapshot, policies = _fleet(20)
    api = SlowCustomObjects(delay=0.0)
    reconciler = _reconciler(state, api, concurrency=4)
    result = plan(snapshot, policies)
    asyncio.run(reconciler._write_plans(result, NOW))
    api.patched.clear()
    asyncio.run(reconciler._write_plans(result, NOW + timedelta(seconds=30)))
    assert api.patched == []
    ttl = reconciler.settings.plan_ttl_s
    asyncio.run(reconciler._write_plans(result, NOW + timedelta(seconds=ttl / 2 + 1)))
    assert sorted(api.patched) == sorted(state.nodes)  # every plan renewed by half its TTL
    assert {r.spec.plan_generation for r in state.nodes.values()} == {1}  # renewals keep the generation


def test_renewals_of_plans_written_together_spread_over_a_sixth_of_the_ttl() -> None:
    ttl = 600
    spec = GpuNodeSpec(issued_at=NOW, ttl_seconds=ttl)
    due_after = []
    for n in range(2000):
        node = f"node-{n:05d}"
        seconds = next(s for s in range(0, ttl) if renewal_due(spec, NOW + timedelta(seconds=s), ttl, node=node))
        due_after.append(seconds)
    assert min(due_after) >= ttl * RENEW_FRACTION
    assert max(due_after) <= ttl * (RENEW_FRACTION + RENEW_SPREAD) + 1
    per_10s = [sum(1 for s in due_after if lo <= s < lo + 10) for lo in range(200, 300, 10)]
    assert max(per_10s) < 2000 / 10 * 1.5  # no wave: about a tenth of the nodes in each 10 s


async def _timed(work: Any) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    await work
    return loop.time() - started
