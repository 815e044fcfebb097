"""Scenario 4 (component level): a carbon source down, slow, rate-limiting or talking garbage for an hour.

The operator's carbon path exactly as the operator wires it (the carbon service, the
:class:`CarbonSignals` feed, the pure planner and the policy-status decision) runs against an
Electricity Maps server on loopback, with an injected clock: 10 minutes of good readings, an hour of
one kind of failure, then 10 minutes of good readings again, one planning round per simulated
minute. Four policies share the source and differ only in their declared fallback.

Asserted for every failure kind:

* the loop never stops: every round plans every GPU, within the device's limits;
* ``SignalFresh`` stays True while the last reading is younger than ``maxStalenessSeconds`` and
  turns False after, with the failure named in its message;
* each policy's declared fallback decides the limit while the signal is stale;
* the source is not hammered (bounded requests per simulated hour);
* once the source answers again, the signal is fresh within two refresh intervals.

The cluster-level counterpart (the real operator, real processes) is ``test_carbon_outage_cluster.py``.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from carbongrid import GridServer
from pydantic import SecretStr
from wattplane.api.v1alpha1.energypolicy import EnergyPolicyStatus
from wattplane.carbon import CarbonService, Credentials, RetryPolicy
from wattplane.carbon.config import SourceConfig
from wattplane.carbon.testing import InstantSleep, ManualClock
from wattplane.operator import signals as signals_module
from wattplane.operator.decisions import policy_status
from wattplane.operator.signals import CarbonSignals
from wattplane.operator.views import policy_parse
from wattplane.planner.context import PlanContext
from wattplane.planner.plan import plan
from wattplane.planner.snapshot import FleetSnapshot, GpuView, PodView

ZONE = "DE"
REFRESH_S = 60.0
STALE_S = 300.0
RETRY_AFTER_S = 120.0
GOOD = 400.0  # g/kWh: w = (500 − 400) / (500 − 100) = 0.25 → 180 + 0.25 · 120 = 210 W
#: What each fallback must give while the signal is stale (A40: 100-300 W, efficient 0.6 · 300 = 180 W).
EXPECTED_STALE = {"LastGood": 210.0, "Fixed": 240.0, "Efficient": 180.0, "Max": 300.0}
FAILURE_WORDS = {
    "down": ("connect", "Connect", "refused", "Transport"),
    "slow": ("no answer within", "Timeout"),
    "429": ("429", "RateLimited", "rate"),
    "garbage": ("not valid JSON", "expected a JSON object", "missing field", "is not a number", "is negative"),
}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2025, 3, 1, 8, 0, tzinfo=UTC))


@pytest.fixture
async def grid(clock: ManualClock) -> AsyncIterator[GridServer]:
    server = GridServer(clock, zone=ZONE, intensity=GOOD, slow_s=0.3, retry_after_s=RETRY_AFTER_S)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def _policy(fallback: str, base_url: str) -> dict[str, Any]:
    carbon: dict[str, Any] = {
        "source": {
            "provider": "electricitymaps",
            "zone": ZONE,
            "baseUrl": base_url,
            "refreshIntervalSeconds": REFRESH_S,
        },
        "curve": {"basis": "Absolute", "points": [{"x": 100, "weight": 1.0}, {"x": 500, "weight": 0.0}]},
        "maxStalenessSeconds": STALE_S,
        "fallback": fallback,
    }
    if fallback == "Fixed":
        carbon["fallbackIntensity"] = 300.0  # w = 0.5 → 240 W
    body = {
        "metadata": {"name": f"grid-{fallback.lower()}", "generation": 1},
        "spec": {"selector": {"podSelector": {"matchLabels": {"fallback": fallback}}}, "carbon": carbon},
    }
    return body


def _fleet() -> FleetSnapshot:
    gpus, pods = [], {}
    for i, fallback in enumerate(EXPECTED_STALE):
        pod = PodView(namespace="ml", name=f"job-{i}", uid=f"u{i}", node="n1", labels={"fallback": fallback})
        pods[pod.key] = pod
        gpus.append(
            GpuView(
                node="n1", uuid=f"GPU-{i}", index=i, model="A40", min_watts=100.0, max_watts=300.0,
                default_watts=300.0, limit_watts=300.0, pods=(pod.key,),
            )
        )  # fmt: skip
    return FleetSnapshot(gpus=tuple(gpus), pods=pods, nodes=("n1",), namespace_labels={"ml": {}})


@pytest.mark.parametrize("failure", ["down", "slow", "429", "garbage"])
async def test_an_hour_of_a_failing_source(
    failure: str, clock: ManualClock, grid: GridServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = grid
    real_config = signals_module.source_config

    def short_timeout(spec: Any, *, default_namespace: str) -> SourceConfig:
        """The operator's own config, with a 0.1 s request timeout so "slow" costs no real time."""
        return real_config(spec, default_namespace=default_namespace).model_copy(update={"timeout_s": 0.1})

    monkeypatch.setattr(signals_module, "source_config", short_timeout)
    service = CarbonService(
        credentials=Credentials(electricitymaps_token=SecretStr("grid-token")),
        clock=clock,
        retry=RetryPolicy(attempts=3, base_delay_s=0.5, max_delay_s=30.0, max_retry_after_s=60.0),
        sleep=InstantSleep(),
        rng=random.Random(7),
    )

    async def no_secrets(_ns: str, _name: str) -> dict[str, str]:
        raise LookupError("no Secrets in this test")

    feed = CarbonSignals(service, no_secrets, default_namespace="wattplane-system")
    bodies = {f: _policy(f, server.url) for f in EXPECTED_STALE}
    snapshot = _fleet()
    statuses: dict[str, dict[str, Any]] = {f: {} for f in EXPECTED_STALE}
    timeline: list[tuple[int, str, bool, float, str]] = []  # (minute, fallback, fresh, watts, message)
    hits_at_outage = 0
    try:
        for minute in range(80):
            if minute == 10:
                await server.set_mode(failure)
                hits_at_outage = server.hits
            if minute == 70:
                await server.set_mode("ok")
            parsed = {f: policy_parse({**body, "status": statuses[f]}) for f, body in bodies.items()}
            views = [p.view for p in parsed.values() if p.view is not None]
            feed.configure(views)
            await feed.refresh()
            now = clock()
            result = plan(snapshot, views, PlanContext(now=now, carbon=feed.inputs()))
            targets = {t.uuid: t.power_limit_watts for ts in result.nodes.values() for t in ts}
            assert len(targets) == 4, f"minute {minute}: a GPU went unplanned: {targets}"
            assert all(100.0 <= w <= 300.0 for w in targets.values()), targets
            for i, fallback in enumerate(EXPECTED_STALE):
                name = parsed[fallback].name
                status = policy_status(parsed[fallback], result.policies.get(name), now=now)
                statuses[fallback] = status.to_wire()
                cond = next(c for c in status.conditions if c.type == "SignalFresh")
                timeline.append((minute, fallback, cond.status == "True", targets[f"GPU-{i}"], cond.message))
                EnergyPolicyStatus.model_validate(statuses[fallback])
            if minute == 69:
                outage_hits = server.hits - hits_at_outage
            clock.advance(60)
    finally:
        await service.close()

    by_minute = {(m, f): (fresh, watts, msg) for m, f, fresh, watts, msg in timeline}
    for fallback, stale_watts in EXPECTED_STALE.items():
        for minute in range(10):
            assert by_minute[(minute, fallback)][:2] == (True, 210.0), (minute, fallback, by_minute[(minute, fallback)])
        # The last good reading was fetched at minute 9 (its age is counted from the fetch).
        for minute in range(10, 80):
            fresh, watts, message = by_minute[(minute, fallback)]
            age_s = (minute - 9) * 60
            if minute < 70 and age_s > STALE_S:
                assert not fresh, f"{fallback} minute {minute}: still fresh {age_s} s after the last reading"
                assert watts == stale_watts, f"{fallback} minute {minute}: {watts} W, fallback wants {stale_watts}"
                assert any(word in message for word in FAILURE_WORDS[failure]), message
            elif minute < 70 and age_s <= STALE_S:
                assert fresh and watts == 210.0, (fallback, minute, fresh, watts)
        recovered = next(m for m in range(70, 80) if by_minute[(m, fallback)][0])
        # A server that said "retry after" is believed; otherwise the next refresh interval or the one after.
        bound_s = RETRY_AFTER_S + REFRESH_S if failure == "429" else 2 * REFRESH_S
        assert (recovered - 70) * 60 <= bound_s, f"{fallback}: fresh again only at minute {recovered}"
        assert all(by_minute[(m, fallback)][:2] == (True, 210.0) for m in range(recovered, 80))
    # At most one fetch (of up to 3 attempts, latest and forecast) per refresh interval: no hammering.
    assert outage_hits <= 60 / (REFRESH_S / 60) * 3 * 2, f"{outage_hits} requests during the hour"
