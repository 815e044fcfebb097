"""OpenADR 2.0b events → budget windows and price series (pure: no I/O, no clock of its own).

openleadr hands the VEN each event as a dict (``event_descriptor``, ``active_period``,
``event_signals`` with ``intervals`` and an optional ``measurement``). :func:`map_event` turns one into
an :class:`EventPlan`: the :class:`~wattplane.api.v1alpha1.energypolicy.BudgetWindow` objects the
planner merges with ``budget.schedule``, the price intervals, and a message for every signal it had to
ignore. :class:`EventBook` keeps the latest plan per event id across modifications and cancellations,
and serialises itself so a restarted operator finds the same windows.

Signals understood:

* ``SIMPLE`` / ``simple`` (type ``level``): levels 1-3 → ``fraction`` from the policy's
  ``levelFractions``; level 0 is normal operation (no window).
* ``LOAD_DISPATCH`` ``setpoint``: the load target (``powerReal`` in W with an SI scale, so kW/MW
  arrive as scale ``k``/``M``) → ``watts``; ``delta``: that much below the standing budget;
  ``multiplier``: a ``fraction``.
* ``LOAD_CONTROL`` ``x-loadControlCapacity`` (fraction of capacity), ``x-loadControlPercentOffset``
  (percent to shed) → ``fraction``; ``x-loadControlSetpoint`` with a power measurement → ``watts``.
* ``ELECTRICITY_PRICE`` / ``ENERGY_PRICE`` / ``DEMAND_CHARGE`` (``price``, ``priceRelative``,
  ``priceMultiplier``) → :class:`PriceInterval`.

OpenADR's ramp-up period is time *before* the active period in which the load moves, so a window with
one starts that much earlier and its rate is chosen to reach the target at the event's start.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from wattplane.api.v1alpha1.energypolicy import BudgetWindow, DemandResponseSpec

Opt = Literal["optIn", "optOut"]

#: SI scale codes of OpenADR measurements (``siScaleCode``).
_SCALE = {
    "p": 1e-12,
    "n": 1e-9,
    "micro": 1e-6,
    "m": 1e-3,
    "c": 1e-2,
    "d": 1e-1,
    "none": 1.0,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
}
#: Power units a load target may carry, in watts.
_POWER_UNITS = {"W": 1.0, "kW": 1e3, "MW": 1e6, "GW": 1e9}
_PRICE_SIGNALS = ("ELECTRICITY_PRICE", "ENERGY_PRICE", "DEMAND_CHARGE")
_PRICE_PER = {"currencyPerKWh": "/kWh", "currencyPerKW": "/kW", "currencyPerThm": "/therm", "currency": ""}
#: Smallest fraction a window may ask for (a capacity of 0 means "shed all you can", not "no GPUs").
MIN_FRACTION = 0.01
#: An open-ended interval (duration 0) is held this long; the VTN re-sends or cancels well before.
OPEN_ENDED = timedelta(hours=24)
_NAME_ROOM = 100  # characters of the event id kept in a window name (names are at most 128)


@dataclass(frozen=True)
class PriceInterval:
    """A price in force from ``start`` to ``end`` (``unit`` e.g. ``USD/kWh``; ``kind`` the signal type)."""

    start: datetime
    end: datetime
    price: float
    unit: str
    signal: str = "ELECTRICITY_PRICE"
    kind: str = "price"

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form (ISO times)."""
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "price": self.price,
            "unit": self.unit,
            "signal": self.signal,
            "kind": self.kind,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PriceInterval:
        """Inverse of :meth:`to_json`."""
        return cls(
            start=datetime.fromisoformat(data["start"]),
            end=datetime.fromisoformat(data["end"]),
            price=float(data["price"]),
            unit=str(data["unit"]),
            signal=str(data.get("signal", "ELECTRICITY_PRICE")),
            kind=str(data.get("kind", "price")),
        )


@dataclass(frozen=True)
class EventPlan:
    """What one event (at one modification number) asks of the policy."""

    event_id: str
    modification_number: int
    status: str
    windows: tuple[BudgetWindow, ...] = ()
    prices: tuple[PriceInterval, ...] = ()
    messages: tuple[str, ...] = ()
    test_event: bool = False

    @property
    def cancelled(self) -> bool:
        """The VTN withdrew the event."""
        return self.status == "cancelled"


@dataclass(frozen=True)
class _Target:
    start: datetime
    end: datetime
    watts: float | None = None
    fraction: float | None = None


def map_event(
    event: Mapping[str, Any], *, spec: DemandResponseSpec, standing_watts: float | None, now: datetime
) -> EventPlan:
    """Turn one openleadr event dict into windows and prices; ignored signals are explained in ``messages``."""
    descriptor = event.get("event_descriptor") or {}
    event_id = str(descriptor.get("event_id", ""))
    modification = int(descriptor.get("modification_number") or 0)
    status = str(descriptor.get("event_status") or "none")
    test_event = bool(descriptor.get("test_event"))
    active = event.get("active_period") or {}
    active_start = _aware(active.get("dtstart"), now)
    # On the wire: ``x-eiRampUp``, which openleadr's parser names ``ramp_up`` (its own objects: ``ramp_up_period``).
    ramp_up = active.get("ramp_up", active.get("ramp_up_period"))
    ramp_up = ramp_up if isinstance(ramp_up, timedelta) and ramp_up > timedelta(0) else None
    messages: list[str] = []
    targets: list[_Target] = []
    prices: list[PriceInterval] = []
    for signal in _signals(event):
        name = str(signal.get("signal_name", ""))
        kind = str(signal.get("signal_type", ""))
        intervals = list(_intervals(signal, active_start, messages))
        if name in _PRICE_SIGNALS:
            prices.extend(_prices(name, kind, signal.get("measurement"), intervals, messages))
            continue
        for start, end, value in intervals:
            target = _target(name, kind, value, signal.get("measurement"), spec, standing_watts, messages)
            if target is not None:
                targets.append(_Target(start, end, *target))
    if test_event and targets:
        messages.append("test event: its targets are acknowledged, not enforced")
        targets = []
    if status in ("cancelled", "completed"):
        targets = []
    windows = _windows(event_id, modification, _merged(targets), active_start, ramp_up, spec, standing_watts)
    return EventPlan(
        event_id=event_id,
        modification_number=modification,
        status=status,
        windows=windows,
        prices=tuple(prices),
        messages=tuple(dict.fromkeys(messages)),
        test_event=test_event,
    )


def decide(plan: EventPlan, *, spec: DemandResponseSpec, standing_watts: float | None) -> tuple[Opt, str]:
    """Opt in or out of an event under the policy's rule; returns the answer and why."""
    if spec.opt_in == "Never":
        return "optOut", "the policy opts out of every event (optIn: Never)"
    if plan.cancelled:
        return "optIn", "cancellation acknowledged"
    if not plan.windows and not plan.prices and plan.messages and not plan.test_event:
        return "optOut", "no signal this VEN can honour: " + "; ".join(plan.messages)
    deepest = _deepest_fraction(plan.windows, standing_watts)
    if spec.floor_fraction is not None and deepest is not None and deepest < spec.floor_fraction:
        return "optOut", f"target {deepest:.0%} of the budget is below the floor {spec.floor_fraction:.0%}"
    return "optIn", "taking part"


def _deepest_fraction(windows: Iterable[BudgetWindow], standing_watts: float | None) -> float | None:
    fractions: list[float] = []
    for window in windows:
        if window.fraction is not None:
            fractions.append(window.fraction)
        elif window.watts is not None and standing_watts:
            fractions.append(window.watts / standing_watts)
    return min(fractions) if fractions else None


def _signals(event: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    signals = event.get("event_signals") or []
    if isinstance(signals, Mapping):  # openleadr sometimes keeps the XML's extra nesting
        signals = signals.get("event_signals") or []
    return [s for s in signals if isinstance(s, Mapping)]


def _aware(value: object, fallback: datetime) -> datetime:
    if not isinstance(value, datetime):
        return fallback
    return value if value.tzinfo is not None else value.replace(tzinfo=fallback.tzinfo)


def _intervals(
    signal: Mapping[str, Any], active_start: datetime, messages: list[str]
) -> Iterable[tuple[datetime, datetime, float]]:
    """(start, end, payload) per interval; intervals without a start follow each other from the event's."""
    cursor = active_start
    for interval in signal.get("intervals") or []:
        start = _aware(interval.get("dtstart"), active_start) if interval.get("dtstart") else cursor
        duration = interval.get("duration")
        if not isinstance(duration, timedelta) or duration <= timedelta(0):
            messages.append(f"open-ended interval held for {OPEN_ENDED} (until the VTN modifies the event)")
            duration = OPEN_ENDED
        try:
            value = float(interval.get("signal_payload"))
        except (TypeError, ValueError):
            messages.append(f"signal {signal.get('signal_name')}: interval without a numeric payload ignored")
            continue
        cursor = start + duration
        yield start, cursor, value


def _power_scale(measurement: object) -> float | None:
    """Watts per unit of the payload, or None when the measurement is not a real power."""
    if not isinstance(measurement, Mapping):
        return None
    unit = str(measurement.get("unit") or "")
    if unit not in _POWER_UNITS:
        return None
    name = str(measurement.get("name") or "powerReal")
    if name not in ("powerReal", "customUnit"):
        return None
    return _POWER_UNITS[unit] * _SCALE.get(str(measurement.get("scale") or "none"), 1.0)


def _target(
    name: str,
    kind: str,
    value: float,
    measurement: object,
    spec: DemandResponseSpec,
    standing_watts: float | None,
    messages: list[str],
) -> tuple[float | None, float | None] | None:
    """(watts, fraction) for one interval, or None (normal operation, or ignored with a message)."""
    if name in ("SIMPLE", "simple"):
        level = round(value)
        if level == 0:
            return None
        fractions = spec.level_fractions
        by_level = {1: fractions.level1, 2: fractions.level2, 3: fractions.level3}
        if level not in by_level:
            messages.append(f"SIMPLE level {value:g} is outside 0-3: ignored")
            return None
        return None, by_level[level]
    if name == "LOAD_DISPATCH" and kind in ("setpoint", "delta"):
        scale = _power_scale(measurement)
        if scale is None:
            messages.append(f"LOAD_DISPATCH {kind} without a real-power measurement in W (unit unknown): ignored")
            return None
        if kind == "setpoint":
            return (value * scale, None) if value > 0 else (None, MIN_FRACTION)
        if standing_watts is None:
            messages.append("LOAD_DISPATCH delta needs a standing budget (budget.watts): ignored")
            return None
        watts = standing_watts - abs(value) * scale
        return (watts, None) if watts > 0 else (None, MIN_FRACTION)
    if name == "LOAD_DISPATCH" and kind == "multiplier":
        return _fraction(value)
    if name == "LOAD_CONTROL" and kind == "x-loadControlCapacity":
        return _fraction(value)
    if name == "LOAD_CONTROL" and kind == "x-loadControlPercentOffset":
        return _fraction(1 - abs(value) / 100)
    if name == "LOAD_CONTROL" and kind == "x-loadControlSetpoint":
        scale = _power_scale(measurement)
        if scale is None:
            messages.append("LOAD_CONTROL x-loadControlSetpoint is not a power in W: ignored")
            return None
        return (value * scale, None) if value > 0 else (None, MIN_FRACTION)
    messages.append(f"signal {name or '?'} of type {kind or '?'} is not supported by wattplane: ignored")
    return None


def _fraction(value: float) -> tuple[float | None, float | None] | None:
    if value >= 1:
        return None  # full capacity: no curtailment
    return None, max(MIN_FRACTION, value)


def _prices(
    name: str,
    kind: str,
    measurement: object,
    intervals: Iterable[tuple[datetime, datetime, float]],
    messages: list[str],
) -> list[PriceInterval]:
    if kind not in ("price", "priceRelative", "priceMultiplier"):
        messages.append(f"price signal {name} of type {kind} is not supported: ignored")
        return []
    scale = 1.0
    if kind == "priceMultiplier":
        unit = "multiplier"
    elif isinstance(measurement, Mapping):
        per = _PRICE_PER.get(str(measurement.get("name") or ""), "")
        unit = f"{measurement.get('unit') or '?'}{per}"
        scale = _SCALE.get(str(measurement.get("scale") or "none"), 1.0)
        if kind == "priceRelative":
            unit += " (relative)"
    else:
        unit = "unknown" if kind == "price" else "unknown (relative)"
    return [
        PriceInterval(start=start, end=end, price=value * scale, unit=unit, signal=name, kind=kind)
        for start, end, value in intervals
    ]


def _merged(targets: list[_Target]) -> list[_Target]:
    """One target per stretch: back-to-back intervals with equal targets join; overlaps keep both."""
    out: list[_Target] = []
    for target in sorted(targets, key=lambda t: t.start):
        last = out[-1] if out else None
        if last and last.end == target.start and (last.watts, last.fraction) == (target.watts, target.fraction):
            out[-1] = replace(last, end=target.end)
        else:
            out.append(target)
    return out


def _windows(
    event_id: str,
    modification: int,
    targets: list[_Target],
    active_start: datetime,
    ramp_up: timedelta | None,
    spec: DemandResponseSpec,
    standing_watts: float | None,
) -> tuple[BudgetWindow, ...]:
    base = f"{event_id[:_NAME_ROOM]}/{modification}"
    windows: list[BudgetWindow] = []
    for index, target in enumerate(targets):
        start, rate = target.start, spec.ramp_watts_per_second
        if ramp_up is not None and target.start <= active_start:
            start = target.start - ramp_up
            drop = _drop(target, standing_watts)
            if drop is not None and drop > 0:
                rate = drop / ramp_up.total_seconds()
        windows.append(
            BudgetWindow(
                name=base if len(targets) == 1 else f"{base}/{index}",
                start=start,
                end=target.end,
                watts=target.watts,
                fraction=target.fraction,
                ramp_watts_per_second=rate,
            )
        )
    return tuple(windows)


def _drop(target: _Target, standing_watts: float | None) -> float | None:
    """Watts the budget must fall by to reach the target (None without a standing budget)."""
    if standing_watts is None:
        return None
    if target.watts is not None:
        return standing_watts - target.watts
    assert target.fraction is not None
    return standing_watts * (1 - target.fraction)


@dataclass
class EventRecord:
    """The latest word on one event: its modification, the VEN's answer, its windows and prices."""

    event_id: str
    modification_number: int
    opt: Opt
    windows: tuple[BudgetWindow, ...] = ()
    prices: tuple[PriceInterval, ...] = ()

    def ends(self) -> datetime | None:
        """When the last of its windows or prices ends (None when it holds neither)."""
        ends = [w.end for w in self.windows] + [p.end for p in self.prices]
        return max(ends) if ends else None


@dataclass
class EventBook:
    """Every event a VEN has answered, newest modification only (the state the store persists)."""

    records: dict[str, EventRecord] = field(default_factory=dict)

    def known(self, event_id: str, modification_number: int) -> EventRecord | None:
        """The record when this exact modification was already answered (a re-delivery), else None."""
        record = self.records.get(event_id)
        if record is not None and record.modification_number >= modification_number:
            return record
        return None

    def apply(self, plan: EventPlan, opt: Opt, now: datetime) -> EventRecord:
        """Record a newer modification of an event; a cancellation ends its windows now (or drops them)."""
        old = self.records.get(plan.event_id)
        if old is not None and old.modification_number >= plan.modification_number:
            return old
        if plan.cancelled:
            windows = _cut(old.windows if old else (), now)
            prices = tuple(p for p in (old.prices if old else ()) if p.start < now)
            record = EventRecord(plan.event_id, plan.modification_number, old.opt if old else opt, windows, prices)
        else:
            record = EventRecord(plan.event_id, plan.modification_number, opt, plan.windows, plan.prices)
        self.records[plan.event_id] = record
        return record

    def windows(self) -> tuple[BudgetWindow, ...]:
        """Windows of the events the VEN opted into, by start."""
        found = [w for r in self.records.values() if r.opt == "optIn" for w in r.windows]
        return tuple(sorted(found, key=lambda w: (w.start, w.name)))

    def prices(self) -> tuple[PriceInterval, ...]:
        """Price intervals of every event, by start (prices inform; they need no opt-in)."""
        found = [p for r in self.records.values() for p in r.prices]
        return tuple(sorted(found, key=lambda p: (p.start, p.signal)))

    def prune(self, now: datetime, keep: timedelta = timedelta(hours=1)) -> bool:
        """Forget events that ended more than ``keep`` ago; True when something was dropped."""
        stale = [k for k, r in self.records.items() if (end := r.ends()) is not None and end < now - keep]
        for key in stale:
            del self.records[key]
        return bool(stale)

    def to_json(self) -> str:
        """Compact JSON for the ConfigMap."""
        return json.dumps(
            {
                "version": 1,
                "events": [
                    {
                        "eventId": r.event_id,
                        "modificationNumber": r.modification_number,
                        "opt": r.opt,
                        "windows": [w.model_dump(mode="json", by_alias=True, exclude_none=True) for w in r.windows],
                        "prices": [p.to_json() for p in r.prices],
                    }
                    for r in sorted(self.records.values(), key=lambda r: r.event_id)
                ],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> EventBook:
        """Inverse of :meth:`to_json` (raises ``ValueError`` on anything else)."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != 1:
            raise ValueError("not a wattplane event book (version 1)")
        book = cls()
        for item in data.get("events", []):
            opt: Opt = "optIn" if item.get("opt") == "optIn" else "optOut"
            book.records[str(item["eventId"])] = EventRecord(
                event_id=str(item["eventId"]),
                modification_number=int(item["modificationNumber"]),
                opt=opt,
                windows=tuple(BudgetWindow.model_validate(w) for w in item.get("windows", [])),
                prices=tuple(PriceInterval.from_json(p) for p in item.get("prices", [])),
            )
        return book


def _cut(windows: Iterable[BudgetWindow], now: datetime) -> tuple[BudgetWindow, ...]:
    """Windows as a cancellation at ``now`` leaves them: not yet started ones go, running ones end now."""
    out: list[BudgetWindow] = []
    for window in windows:
        if window.start >= now:
            continue
        out.append(window.model_copy(update={"end": now}) if window.end > now else window)
    return tuple(out)
