"""Price in the simulator: the bill is exact, price-weighted budgets cut it, weight 0 is the carbon policy."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from repodata import SIM_DATA
from wattplane.sim.carbon import CarbonTrack
from wattplane.sim.catalog import Catalog
from wattplane.sim.engine import SimOptions
from wattplane.sim.fleet import expand, parse_fleet
from wattplane.sim.jobs import synthetic_training
from wattplane.sim.oracles import carbon_schedule, lower_hull, slots
from wattplane.sim.price import PriceTrack
from wattplane.sim.results import RunResult, compare
from wattplane.sim.scenario import (
    RunSpec,
    Scenario,
    resolve_workloads,
    run_all,
    run_specs,
    shipped_policy,
    with_price_weight,
)

CATALOG = Catalog.builtin()
START = datetime(2023, 7, 1, tzinfo=UTC)  # a weekend with negative DE-LU prices
CARBON = CarbonTrack.load(SIM_DATA / "electricitymaps_DE-LU_2023_hourly.csv", START)
DELU_PRICE = SIM_DATA / "energycharts_dayahead_DE-LU_2023_hourly.csv"


def scenario(price: PriceTrack | None, *, hours: float = 24.0) -> Scenario:
    nodes = expand(parse_fleet("1x8xA40"))
    jobs = synthetic_training(
        seed=3,
        duration_s=hours * 3600.0,
        fleet_gpus=8,
        workloads=CATALOG.families("A40"),
        utilisation=0.6,
        median_hours=3.0,
    )
    return Scenario(
        nodes=nodes,
        catalog=CATALOG,
        jobs=resolve_workloads(jobs, CATALOG, nodes),
        carbon=CARBON,
        options=SimOptions(duration_s=hours * 3600.0, timeline_step_s=900.0),
        oracle_slowdown=0.05,
        price=price,
    )


def by_name(results: list[RunResult]) -> dict[str, RunResult]:
    return {r.name: r for r in results}


def test_the_bill_is_energy_times_the_price_in_force_exactly(tmp_path: Path) -> None:
    """With prices equal to the carbon intensity, EUR per MWh and kg CO2 per (g/kWh × MWh) are the same number."""
    series = CARBON.series
    path = tmp_path / "mirror.csv"
    path.write_text(
        "timestamp_utc,price_eur_per_mwh\n"
        + "".join(f"{t.isoformat()},{v!r}\n" for t, v in zip(series.times, series.values, strict=True))
    )
    s = scenario(PriceTrack.load(path, START))
    [base] = run_all(s, run_specs(s, [], {}))
    assert base.cost is not None and base.cost_currency == "EUR"
    assert base.cost == pytest.approx(base.carbon_kg, rel=1e-9)
    assert sum(r.cost or 0.0 for r in base.receipts) == pytest.approx(base.cost, rel=1e-12)


def test_a_price_weighted_budget_cuts_the_bill_more_than_the_carbon_only_one(tmp_path: Path) -> None:
    """A strong price pattern (dear afternoons) on an ordinary carbon day: the price policy shifts its slowdown."""
    path = tmp_path / "pattern.csv"
    rows = [(START + timedelta(hours=h), 400.0 if 12 <= h % 24 < 20 else 20.0) for h in range(-24, 72)]
    path.write_text("timestamp_utc,price_eur_per_mwh\n" + "".join(f"{t.isoformat()},{p}\n" for t, p in rows))
    s = scenario(PriceTrack.load(path, START))
    specs = run_specs(s, ["price-budget", "price-oracle"], {})
    carbon_only = with_price_weight([dataclasses.replace(specs[1], name="price weight 0")], 0.0)
    results = by_name(run_all(s, [*specs, *carbon_only]))
    base = results["uncapped"]
    price, weight0, oracle = (compare(results[n], base) for n in ("price-budget", "price weight 0", "price-oracle"))
    assert price.cost_change is not None and weight0.cost_change is not None and oracle.cost_change is not None
    assert price.cost_change < weight0.cost_change - 0.01, (price.cost_change, weight0.cost_change)
    assert oracle.cost_change <= price.cost_change + 1e-3  # the oracle is a bound
    assert price.max_run_time_change is not None and price.max_run_time_change <= 0.05 + 0.01


def test_on_real_de_lu_prices_the_price_policy_cuts_the_bill_against_uncapped() -> None:
    s = scenario(PriceTrack.load(DELU_PRICE, START))
    results = by_name(run_all(s, run_specs(s, ["price-budget"], {})))
    change = compare(results["price-budget"], results["uncapped"])
    assert results["uncapped"].cost is not None and results["uncapped"].cost > 0
    assert change.cost_change is not None and change.cost_change < -0.02


def test_weight_zero_runs_exactly_as_the_carbon_budget_policy() -> None:
    s = scenario(PriceTrack.load(DELU_PRICE, START), hours=12.0)
    weight0 = with_price_weight([RunSpec("carbon via price", shipped_policy("price-budget"))], 0.0)
    carbon = RunSpec("carbon-budget", shipped_policy("carbon-budget"))
    results = by_name(run_all(s, [RunSpec("uncapped", baseline="uncapped"), carbon, *weight0]))
    a, b = results["carbon-budget"], results["carbon via price"]
    assert (a.energy_kwh, a.carbon_kg, a.cost) == (b.energy_kwh, b.carbon_kg, b.cost)
    assert [(r.id, r.end_s) for r in a.receipts] == [(r.id, r.end_s) for r in b.receipts]
    assert a.energy_kwh < results["uncapped"].energy_kwh  # and the policy did do something


def test_price_runs_without_a_price_trace_are_refused() -> None:
    s = scenario(None)
    with pytest.raises(ValueError, match=r"price-oracle need.*--price-trace"):
        run_specs(s, ["price-oracle"], {})


@pytest.mark.parametrize("family", CATALOG.families("A40"))
def test_the_price_oracle_handles_negative_prices_within_its_deadline(family: str) -> None:
    """Negative hours run flat out (the cost is concave there); done by the deadline, never dearer than uncapped."""
    curve = CATALOG.workload("A40", family).curve
    prices = [90.0, 120.0, -5.0, -500.0, -40.0, 60.0, 200.0, 150.0] * 2

    def at(t: float) -> float:
        return prices[int(t // 3600) % len(prices)]

    def nxt(t: float) -> float:
        return (int(t // 3600) + 1) * 3600.0

    t0 = curve.time_per_unit(300.0)
    work = 6 * 3600.0 / t0
    fastest = lower_hull(curve, 150.0, 300.0)[-1].rate
    plan = carbon_schedule(
        curve,
        lo=150.0,
        hi=300.0,
        work=work,
        start=0.0,
        uncapped_watts=300.0,
        slowdown=0.05,
        intensity_at=at,
        next_change=nxt,
    )
    assert plan.end <= 1.05 * 6 * 3600.0 + 1e-6
    done = cost = 0.0
    for k, segment in enumerate(plan.segments):
        stop = plan.segments[k + 1].start if k + 1 < len(plan.segments) else plan.end
        for a, b, c in slots(segment.start, stop, at, nxt):
            done += (b - a) * curve.rate(segment.watts)
            cost += (b - a) * curve.power(segment.watts) * c / 3.6e6
            if c < 0:  # flat out while energy pays (the fastest limit of the curve's lower hull)
                assert curve.rate(segment.watts) == pytest.approx(fastest, rel=1e-9)
    assert done == pytest.approx(work, rel=1e-9)
    assert cost == pytest.approx(plan.carbon_per_gpu_g, rel=1e-9)
    uncapped = sum((b - a) * curve.power(300.0) * c / 3.6e6 for a, b, c in slots(0.0, 6 * 3600.0, at, nxt))
    assert plan.carbon_per_gpu_g <= uncapped + 1e-9
