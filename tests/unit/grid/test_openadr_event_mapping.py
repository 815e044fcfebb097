"""OpenADR events become budget windows and price series: units, levels, ramps, cancellations, opt rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from wattplane.api.v1alpha1.energypolicy import DemandResponseSpec
from wattplane.grid.events import MIN_FRACTION, EventBook, decide, map_event

NOW = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
START = NOW + timedelta(minutes=30)


def spec(**extra: Any) -> DemandResponseSpec:
    return DemandResponseSpec.model_validate(
        {"openadr": {"vtnUrl": "http://127.0.0.1:1/OpenADR2/Simple/2.0b", "venName": "rack-a"}, **extra}
    )


def event(
    *signals: dict[str, Any],
    event_id: str = "ev-1",
    modification: int = 0,
    status: str = "far",
    start: datetime = START,
    minutes: int = 60,
    ramp_up: timedelta | None = None,
    test_event: bool = False,
) -> dict[str, Any]:
    """The dict openleadr hands ``on_event`` (shape taken from openleadr 0.5.36's parser)."""
    active: dict[str, Any] = {"dtstart": start, "duration": timedelta(minutes=minutes)}
    if ramp_up is not None:
        active["ramp_up"] = ramp_up  # openleadr's parser names x-eiRampUp so
    return {
        "event_descriptor": {
            "event_id": event_id,
            "modification_number": modification,
            "event_status": status,
            "market_context": "oadr://test",
            "priority": 0,
            "test_event": test_event,
        },
        "active_period": active,
        "event_signals": list(signals),
        "targets": [{"ven_id": "ven-1"}],
        "response_required": "always",
    }


def signal(name: str, kind: str, *payloads: float, measurement: dict[str, Any] | None = None, start: datetime = START):
    intervals = [
        {"dtstart": start + timedelta(minutes=30 * i), "duration": timedelta(minutes=30), "signal_payload": p, "uid": i}
        for i, p in enumerate(payloads)
    ]
    out: dict[str, Any] = {"signal_name": name, "signal_type": kind, "signal_id": f"{name}-s", "intervals": intervals}
    if measurement is not None:
        out["measurement"] = measurement
    return out


def power(unit: str = "W", scale: str = "none") -> dict[str, Any]:
    return {"name": "powerReal", "description": "RealPower", "unit": unit, "scale": scale}


def test_simple_levels_become_the_policys_fractions() -> None:
    plan = map_event(event(signal("SIMPLE", "level", 2, 2)), spec=spec(), standing_watts=None, now=NOW)
    assert [(w.name, w.start, w.end, w.fraction, w.watts) for w in plan.windows] == [
        ("ev-1/0", START, START + timedelta(hours=1), 0.75, None)
    ]
    custom = spec(levelFractions={"level1": 0.8, "level2": 0.6, "level3": 0.3}, rampWattsPerSecond=50)
    plan = map_event(event(signal("SIMPLE", "level", 1, 3)), spec=custom, standing_watts=None, now=NOW)
    assert [(w.name, w.fraction, w.ramp_watts_per_second) for w in plan.windows] == [
        ("ev-1/0/0", 0.8, 50),
        ("ev-1/0/1", 0.3, 50),
    ]


def test_level_zero_is_normal_operation_and_out_of_range_levels_are_explained() -> None:
    plan = map_event(event(signal("SIMPLE", "level", 0)), spec=spec(), standing_watts=None, now=NOW)
    assert plan.windows == ()
    plan = map_event(event(signal("SIMPLE", "level", 7)), spec=spec(), standing_watts=None, now=NOW)
    assert plan.windows == () and "outside 0-3" in plan.messages[0]


@pytest.mark.parametrize(
    ("measurement", "payload", "watts"),
    [
        (power("W", "k"), 150.0, 150_000.0),
        (power("W", "M"), 1.5, 1_500_000.0),
        (power("W"), 9000, 9000.0),
        (power("kW"), 12, 12_000.0),
    ],
)
def test_load_dispatch_setpoints_are_converted_to_watts(
    measurement: dict[str, Any], payload: float, watts: float
) -> None:
    plan = map_event(
        event(signal("LOAD_DISPATCH", "setpoint", payload, measurement=measurement)),
        spec=spec(),
        standing_watts=None,
        now=NOW,
    )
    assert [w.watts for w in plan.windows] == [pytest.approx(watts)]


def test_a_load_target_without_a_power_unit_is_ignored_and_opted_out_of() -> None:
    plan = map_event(event(signal("LOAD_DISPATCH", "setpoint", 150.0)), spec=spec(), standing_watts=None, now=NOW)
    assert plan.windows == () and "unit unknown" in plan.messages[0]
    assert decide(plan, spec=spec(), standing_watts=None)[0] == "optOut"
    energy = {"name": "energyReal", "unit": "Wh", "scale": "k"}
    plan = map_event(
        event(signal("LOAD_DISPATCH", "setpoint", 1, measurement=energy)), spec=spec(), standing_watts=None, now=NOW
    )
    assert plan.windows == ()


def test_load_dispatch_delta_sheds_from_the_standing_budget() -> None:
    ev = event(signal("LOAD_DISPATCH", "delta", -20, measurement=power("W", "k")))
    assert [w.watts for w in map_event(ev, spec=spec(), standing_watts=100_000, now=NOW).windows] == [80_000]
    plan = map_event(ev, spec=spec(), standing_watts=None, now=NOW)
    assert plan.windows == () and "standing budget" in plan.messages[0]


def test_load_control_capacity_and_percent_offset_are_fractions() -> None:
    plan = map_event(
        event(
            signal("LOAD_CONTROL", "x-loadControlCapacity", 0.6),
            signal("LOAD_CONTROL", "x-loadControlPercentOffset", 30),
        ),
        spec=spec(),
        standing_watts=None,
        now=NOW,
    )
    assert sorted(w.fraction or 0 for w in plan.windows) == [0.6, pytest.approx(0.7)]
    zero = map_event(
        event(signal("LOAD_CONTROL", "x-loadControlCapacity", 0)), spec=spec(), standing_watts=None, now=NOW
    )
    assert [w.fraction for w in zero.windows] == [MIN_FRACTION]
    full = map_event(
        event(signal("LOAD_CONTROL", "x-loadControlCapacity", 1)), spec=spec(), standing_watts=None, now=NOW
    )
    assert full.windows == ()


def test_a_ramp_up_period_starts_the_window_early_at_the_rate_that_meets_the_start() -> None:
    ev = event(signal("LOAD_DISPATCH", "setpoint", 40, measurement=power("W", "k")), ramp_up=timedelta(minutes=5))
    (window,) = map_event(ev, spec=spec(rampWattsPerSecond=7), standing_watts=100_000, now=NOW).windows
    assert window.start == START - timedelta(minutes=5)
    assert window.end == START + timedelta(minutes=30)
    assert window.ramp_watts_per_second == pytest.approx(60_000 / 300)
    # Without a standing budget the ramp cannot become a rate: the policy's default, still starting early.
    (window,) = map_event(ev, spec=spec(rampWattsPerSecond=7), standing_watts=None, now=NOW).windows
    assert (window.start, window.ramp_watts_per_second) == (START - timedelta(minutes=5), 7)
    # No ramp-up period: starts on time with the default rate (none: at once).
    plain = event(signal("SIMPLE", "level", 3))
    (window,) = map_event(plain, spec=spec(), standing_watts=100_000, now=NOW).windows
    assert (window.start, window.ramp_watts_per_second) == (START, None)


def test_price_signals_become_a_price_series() -> None:
    per_kwh = {"name": "currencyPerKWh", "description": "currencyPerKWh", "unit": "USD", "scale": "none"}
    plan = map_event(
        event(signal("ELECTRICITY_PRICE", "price", 0.12, 0.30, measurement=per_kwh)),
        spec=spec(),
        standing_watts=None,
        now=NOW,
    )
    assert plan.windows == ()
    assert [(p.start, p.end, p.price, p.unit) for p in plan.prices] == [
        (START, START + timedelta(minutes=30), 0.12, "USD/kWh"),
        (START + timedelta(minutes=30), START + timedelta(hours=1), 0.30, "USD/kWh"),
    ]
    assert decide(plan, spec=spec(), standing_watts=None)[0] == "optIn"


def test_unknown_signals_are_explained_and_ignored() -> None:
    plan = map_event(
        event(signal("BID_LOAD", "setpoint", 5), signal("SIMPLE", "level", 1)),
        spec=spec(),
        standing_watts=None,
        now=NOW,
    )
    assert [w.fraction for w in plan.windows] == [0.9]
    assert plan.messages == ("signal BID_LOAD of type setpoint is not supported by wattplane: ignored",)


def test_test_events_are_acknowledged_but_not_enforced() -> None:
    plan = map_event(event(signal("SIMPLE", "level", 3), test_event=True), spec=spec(), standing_watts=None, now=NOW)
    assert plan.windows == () and plan.test_event
    assert decide(plan, spec=spec(), standing_watts=None)[0] == "optIn"


def test_opt_rules_never_and_floor() -> None:
    deep = map_event(event(signal("SIMPLE", "level", 3)), spec=spec(), standing_watts=None, now=NOW)
    assert decide(deep, spec=spec(optIn="Never"), standing_watts=None)[0] == "optOut"
    assert decide(deep, spec=spec(floorFraction=0.6), standing_watts=None)[0] == "optOut"
    assert decide(deep, spec=spec(floorFraction=0.5), standing_watts=None)[0] == "optIn"
    watts = map_event(
        event(signal("LOAD_DISPATCH", "setpoint", 30, measurement=power("W", "k"))),
        spec=spec(),
        standing_watts=None,
        now=NOW,
    )
    answer, why = decide(watts, spec=spec(floorFraction=0.5), standing_watts=100_000)
    assert answer == "optOut" and "30%" in why
    assert decide(watts, spec=spec(floorFraction=0.5), standing_watts=None)[0] == "optIn"  # nothing to compare to


def test_a_cancellation_ends_a_running_window_now_and_drops_a_future_one() -> None:
    book = EventBook()
    began = NOW - timedelta(minutes=10)
    running = event(signal("SIMPLE", "level", 2, start=began), event_id="run", start=began)
    future = event(signal("SIMPLE", "level", 2), event_id="later")
    for ev in (running, future):
        book.apply(map_event(ev, spec=spec(), standing_watts=None, now=NOW), "optIn", NOW)
    assert [w.name for w in book.windows()] == ["run/0", "later/0"]
    cancel_at = NOW + timedelta(minutes=1)
    for ev in (running, future):
        ev["event_descriptor"].update(event_status="cancelled", modification_number=1)
        plan = map_event(ev, spec=spec(), standing_watts=None, now=cancel_at)
        assert plan.cancelled and plan.windows == ()
        book.apply(plan, "optIn", cancel_at)
    (window,) = book.windows()
    assert (window.name, window.start, window.end) == ("run/0", NOW - timedelta(minutes=10), cancel_at)


def test_a_modification_replaces_the_windows_and_a_stale_one_is_ignored() -> None:
    book = EventBook()
    book.apply(map_event(event(signal("SIMPLE", "level", 1)), spec=spec(), standing_watts=None, now=NOW), "optIn", NOW)
    shorter = event(signal("SIMPLE", "level", 3), modification=2, minutes=30)
    book.apply(map_event(shorter, spec=spec(), standing_watts=None, now=NOW), "optIn", NOW)
    assert [(w.name, w.fraction, w.end) for w in book.windows()] == [("ev-1/2", 0.5, START + timedelta(minutes=30))]
    stale = map_event(event(signal("SIMPLE", "level", 1), modification=1), spec=spec(), standing_watts=None, now=NOW)
    assert book.known("ev-1", 1) is not None
    book.apply(stale, "optIn", NOW)
    assert [w.name for w in book.windows()] == ["ev-1/2"]


def test_opted_out_events_keep_their_prices_but_enforce_nothing() -> None:
    per_kwh = {"name": "currencyPerKWh", "unit": "EUR", "scale": "none"}
    ev = event(signal("SIMPLE", "level", 3), signal("ENERGY_PRICE", "price", 0.4, measurement=per_kwh))
    book = EventBook()
    book.apply(map_event(ev, spec=spec(), standing_watts=None, now=NOW), "optOut", NOW)
    assert book.windows() == ()
    assert [(p.price, p.unit, p.signal) for p in book.prices()] == [(0.4, "EUR/kWh", "ENERGY_PRICE")]


def test_the_book_survives_json_and_forgets_old_events() -> None:
    book = EventBook()
    ev = event(
        signal("LOAD_DISPATCH", "setpoint", 40, measurement=power("W", "k")),
        signal("ELECTRICITY_PRICE", "price", 0.2, measurement={"name": "currencyPerKWh", "unit": "USD"}),
        ramp_up=timedelta(minutes=2),
    )
    book.apply(map_event(ev, spec=spec(), standing_watts=50_000, now=NOW), "optIn", NOW)
    again = EventBook.from_json(book.to_json())
    assert again.windows() == book.windows() and again.prices() == book.prices()
    assert again.records["ev-1"].opt == "optIn"
    assert not again.prune(START + timedelta(hours=1, minutes=30))
    assert again.prune(START + timedelta(hours=3)) and again.records == {}
    with pytest.raises(ValueError, match="version 1"):
        EventBook.from_json('{"events": []}')


def test_back_to_back_equal_intervals_join_into_one_window() -> None:
    plan = map_event(event(signal("SIMPLE", "level", 2, 2, 1)), spec=spec(), standing_watts=None, now=NOW)
    assert [(w.name, w.start, w.end, w.fraction) for w in plan.windows] == [
        ("ev-1/0/0", START, START + timedelta(hours=1), 0.75),
        ("ev-1/0/1", START + timedelta(hours=1), START + timedelta(minutes=90), 0.9),
    ]
