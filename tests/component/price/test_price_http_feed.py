"""The operator's price path against a real loopback HTTP server: the JSON document, its failures, the cost.

The carbon signals feed exactly as the operator wires it (:class:`CarbonSignals` over a
:class:`CarbonService`, a policy parsed from its wire form) fetches a price document from an aiohttp
server on 127.0.0.1 that checks a bearer token from the policy's Secret. Asserted: the policy's planner
input is the cost series (price-only here: negative hours cost 0); every kind of bad answer (HTTP 500,
a wrong token, malformed JSON, a NaN, an absurd magnitude) is reported by name, keeps the last good
series, never raises, and never shows the token. Through the real planner, rounds every 10 minutes run
the job uncapped while the price is negative and spend its slowdown budget in the dearest hours.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from repodata import SIM_DATA
from wattplane.api.annotations import JOB
from wattplane.api.v1alpha1.energypolicy import PolicySelector, PriceSourceRef
from wattplane.carbon import CarbonService, Credentials, RetryPolicy
from wattplane.carbon.testing import InstantSleep, ManualClock
from wattplane.operator.signals import CarbonSignals
from wattplane.operator.views import policy_parse
from wattplane.planner.context import PlanContext
from wattplane.planner.plan import plan
from wattplane.planner.snapshot import FleetSnapshot, GpuView, PodView, PolicyView
from wattplane.price.cost import PricedCarbonInput

TOKEN = "price-s3cret-7c1d"
START = datetime(2023, 7, 2, 10, 30, tzinfo=UTC)
HOUR0 = START.replace(minute=0)
#: Hourly prices from HOUR0 − 2 h: a negative midday (the DE-LU 2 July 2023 pattern) and a dear evening.
PRICES = [80.0, 60.0, 20.0, -5.0, -500.0, -50.0, 10.0, 90.0, 150.0, 180.0, 120.0, 100.0]


class PriceServer:
    """Serves ``/prices`` in one of several modes; counts requests."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.hits = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/prices", self.prices)
        return app

    async def prices(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        if request.headers.get("Authorization") != f"Bearer {TOKEN}" or self.mode == "401":
            return web.json_response({"error": "bad token"}, status=401)
        if self.mode == "500":
            return web.json_response({"error": "database on fire"}, status=500)
        if self.mode == "malformed":
            return web.Response(text='{"prices": [', content_type="application/json")
        items = [
            {"start": (HOUR0 + timedelta(hours=k - 2)).isoformat(), "durationSeconds": 3600, "price": p}
            for k, p in enumerate(PRICES)
        ]
        text = json.dumps({"unit": "EUR/MWh", "prices": items})
        if self.mode == "nan":
            text = text.replace("-500.0", "NaN")
        if self.mode == "absurd":
            text = text.replace("180.0", "1.8e8")
        return web.Response(text=text, content_type="application/json")


@pytest.fixture
async def server() -> AsyncIterator[tuple[PriceServer, str]]:
    backend = PriceServer()
    test_server = TestServer(backend.app(), host="127.0.0.1", port=0)
    await test_server.start_server()
    yield backend, str(test_server.make_url("/prices"))
    await test_server.close()


def policy(url: str, weight: float = 1.0) -> PolicyView:
    body: dict[str, Any] = {
        "apiVersion": "wattplane.io/v1alpha1",
        "kind": "EnergyPolicy",
        "metadata": {"name": "price-budget", "generation": 1},
        "spec": {
            "carbon": {
                "mode": "Budgeted",
                "lookaheadHours": 6,
                "source": {
                    "provider": "trace",
                    "zone": "DE",
                    "tracePath": str(SIM_DATA / "electricitymaps_DE-LU_2023_hourly.csv"),
                },
                "price": {
                    "weight": weight,
                    "source": {
                        "provider": "http",
                        "url": url,
                        "refreshIntervalSeconds": 60,
                        "credentialsSecretRef": {"name": "prices"},
                    },
                },
            }
        },
    }
    view = policy_parse(body).view
    assert view is not None
    return view


async def read_secret(namespace: str, name: str) -> dict[str, str]:
    assert (namespace, name) == ("wattplane-system", "prices")
    return {"token": base64.b64encode(TOKEN.encode()).decode()}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
async def feed(clock: ManualClock) -> AsyncIterator[CarbonSignals]:
    service = CarbonService(
        credentials=Credentials(),
        clock=clock,
        retry=RetryPolicy(attempts=1),
        sleep=InstantSleep(),
        rng=random.Random(1),
    )
    yield CarbonSignals(service, read_secret, default_namespace="wattplane-system")
    await service.close()


async def test_the_policy_plans_on_the_price_document_it_fetched(
    server: tuple[PriceServer, str], feed: CarbonSignals
) -> None:
    backend, url = server
    assert feed.configure([policy(url)]) is True  # a new source: refresh at once
    await feed.refresh()
    got = feed.inputs()["price-budget"]
    assert isinstance(got, PricedCarbonInput)
    assert not got.stale, got.message
    assert got.price == 20.0 and got.price_unit == "EUR/MWh" and got.time == HOUR0
    ahead = dict(got.forecast)
    assert ahead[HOUR0 + timedelta(hours=1)] == 0.0  # −5 EUR/MWh costs nothing
    assert ahead[HOUR0 + timedelta(hours=2)] == 0.0  # −500 neither: no negative cost reaches the planner
    assert got.intensity is not None
    assert ahead[HOUR0 + timedelta(hours=6)] > ahead[HOUR0 + timedelta(hours=5)] > got.intensity  # dear evening
    assert [t for t, _ in got.history] == [HOUR0 - timedelta(hours=2), HOUR0 - timedelta(hours=1)]
    assert "price http/" in got.source and backend.hits == 1


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        ("500", "HTTP 500: database on fire"),
        ("401", "HTTP 401"),
        ("malformed", "not valid JSON"),
        ("nan", "not finite"),
        ("absurd", "beyond ±100,000 per MWh"),
    ],
)
async def test_a_bad_answer_is_named_and_the_last_good_series_is_kept(
    server: tuple[PriceServer, str], feed: CarbonSignals, clock: ManualClock, mode: str, words: str
) -> None:
    backend, url = server
    feed.configure([policy(url)])
    await feed.refresh()
    good = feed.inputs()["price-budget"]
    backend.mode = mode
    clock.advance(120)  # past the refresh interval
    await feed.refresh()  # must not raise
    after = feed.inputs()["price-budget"]
    assert backend.hits == 2
    assert words in after.message and TOKEN not in after.message
    assert not after.stale  # the last good document still covers now, and still shapes the plan:
    assert [t for t, _ in after.forecast] == [t for t, _ in good.forecast]
    assert shape(after) == pytest.approx(shape(good))  # same prices (the mean's window moved 2 minutes)


def shape(signal: PricedCarbonInput | Any) -> list[float]:
    values = [v for _, v in signal.forecast]
    return [v / max(values) for v in values]


@pytest.mark.parametrize(
    ("mode", "words"), [("500", "HTTP 500"), ("malformed", "not valid JSON"), ("nan", "not finite")]
)
async def test_without_any_good_document_the_cost_is_stale_with_the_reason(
    server: tuple[PriceServer, str], feed: CarbonSignals, mode: str, words: str
) -> None:
    backend, url = server
    backend.mode = mode
    feed.configure([policy(url)])
    await feed.refresh()
    got = feed.inputs()["price-budget"]
    assert got.stale and got.intensity is None
    assert words in got.message and "no price fetched yet" in got.message


async def test_weight_zero_keeps_the_carbon_signal_and_only_shows_the_price(
    server: tuple[PriceServer, str], feed: CarbonSignals
) -> None:
    _, url = server
    feed.configure([policy(url, weight=0.0)])
    await feed.refresh()
    got = feed.inputs()["price-budget"]
    assert isinstance(got, PricedCarbonInput)
    assert got.intensity == got.carbon_intensity is not None and got.price == 20.0


async def test_the_planner_runs_uncapped_while_energy_pays_and_slows_the_dearest_hours(
    server: tuple[PriceServer, str], feed: CarbonSignals, clock: ManualClock
) -> None:
    """Rounds every 10 minutes from 10:30 to 19:00 through the real planner, the account carried over."""
    _, url = server
    view = policy(url)
    view = PolicyView(
        name=view.name,
        generation=1,
        spec=view.spec.model_copy(update={"selector": PolicySelector.model_validate({"podSelector": {}})}),
    )
    pod = PodView(namespace="ml", name="train-0", uid="u0", node="n1", labels={}, annotations={JOB: "train"})
    gpu = GpuView(
        node="n1", uuid="GPU-0", index=0, model="A40", min_watts=100.0, max_watts=300.0,
        default_watts=300.0, limit_watts=300.0, pods=(pod.key,),
    )  # fmt: skip
    budgets: dict[str, Any] = {}
    limits: dict[int, list[float]] = {}
    feed.configure([view])
    while clock() < HOUR0 + timedelta(hours=9):
        await feed.refresh()
        snapshot = FleetSnapshot(gpus=(gpu,), pods={pod.key: pod}, nodes=("n1",), namespace_labels={"ml": {}})
        result = plan(snapshot, [view], PlanContext(now=clock(), carbon=feed.inputs(), carbon_budgets=budgets))
        budgets = dict(result.carbon_budgets)
        [target] = [t for ts in result.nodes.values() for t in ts]
        limits.setdefault(clock().hour, []).append(target.power_limit_watts or 300.0)
        gpu = dataclasses.replace(gpu, limit_watts=target.power_limit_watts or 300.0)
        clock.advance(600)
    assert set(limits[11]) == set(limits[12]) == set(limits[13]) == {300.0}  # −5, −500, −50 EUR/MWh: energy pays
    assert min(limits[16]) < 300.0 and min(limits[17]) < 300.0  # 150 and 180 EUR/MWh: the budget is spent here
    assert set(limits[14]) == {300.0}  # 10 EUR/MWh: cheap
    account = budgets["ml/train"]
    assert account.used_seconds <= account.allowed_seconds * 1.01


async def test_a_trace_source_is_replayed_from_when_it_appeared_and_a_missing_file_is_reported(
    tmp_path: Path, feed: CarbonSignals, clock: ManualClock
) -> None:
    path = tmp_path / "prices.csv"
    path.write_text("timestamp_utc,price_eur_per_mwh\n2023-07-02T10:00:00Z,-3\n2023-07-02T11:00:00Z,70\n")
    spec = policy("http://unused.invalid/").spec
    assert spec.carbon is not None and spec.carbon.price is not None
    source = {"provider": "trace", "tracePath": str(path), "traceSpeedup": 3600.0}  # one trace hour per second
    price = spec.carbon.price.model_copy(update={"source": PriceSourceRef.model_validate(source)})
    view = PolicyView(
        name="replay",
        generation=1,
        spec=spec.model_copy(update={"carbon": spec.carbon.model_copy(update={"price": price})}),
    )
    feed.configure([view])
    await feed.refresh()
    assert feed.inputs()["replay"].price == -3.0  # the first row starts when the source appeared
    clock.advance(1.5)
    assert feed.inputs()["replay"].price == 70.0
    path.unlink()
    broken = PolicyView(name="broken", generation=1, spec=view.spec.model_copy(deep=True))
    assert broken.spec.carbon is not None and broken.spec.carbon.price is not None
    broken.spec.carbon.price.source.trace_path = str(tmp_path / "gone.csv")
    feed.configure([broken])
    await feed.refresh()  # must not raise
    got = feed.inputs()["broken"]
    assert got.stale and "gone.csv: cannot read" in got.message


async def test_price_signals_from_a_ven_feed_the_cost_series(feed: CarbonSignals) -> None:
    from wattplane.grid.events import PriceInterval as GridPrice

    view = policy("http://unused.invalid/prices")
    assert view.spec.carbon is not None and view.spec.carbon.price is not None
    source = view.spec.carbon.price.source.model_copy(update={"provider": "openadr", "policy": "rack-dr", "url": None})
    price = view.spec.carbon.price.model_copy(update={"source": source})
    carbon = view.spec.carbon.model_copy(update={"price": price})
    view = dataclasses.replace(view, spec=view.spec.model_copy(update={"carbon": carbon}))
    feed.configure([view])
    await feed.refresh()
    got = feed.inputs()["price-budget"]
    assert "no price signal received by the VEN of policy rack-dr" in got.message
    # The VEN of policy rack-dr has received prices in EUR/kWh: a dear evening, a free hour.
    received = [
        GridPrice(HOUR0 + timedelta(hours=h), HOUR0 + timedelta(hours=h + 1), p, "EUR/kWh")
        for h, p in enumerate([0.05, 0.05, 0.0, 0.30, 0.40, 0.10])
    ]
    asked: list[str] = []
    feed.grid_prices = lambda owner: asked.append(owner) or received  # type: ignore[func-returns-value]
    got = feed.inputs()["price-budget"]
    assert asked == ["rack-dr"]
    assert isinstance(got, PricedCarbonInput)
    assert got.price == 50.0 and got.price_unit == "EUR/MWh"  # converted from EUR/kWh
    ahead = dict(got.forecast)
    assert ahead[HOUR0 + timedelta(hours=4)] > ahead[HOUR0 + timedelta(hours=1)] > ahead[HOUR0 + timedelta(hours=2)]
    assert "openadr/rack-dr" in got.source
    # Prices in another currency than the policy's are refused by name, not mixed in.
    feed.grid_prices = lambda owner: [GridPrice(HOUR0, HOUR0 + timedelta(hours=1), 0.1, "USD/kWh")]
    assert "price signals from the VTN rejected" in feed.inputs()["price-budget"].message
