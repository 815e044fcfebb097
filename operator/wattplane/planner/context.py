"""What a planning round knows besides the fleet: the time and the outside signals.

The operator turns its caches (carbon service, stored profiles) into these plain values before it
calls the planner, so the planner stays free of clients and clocks: the same context gives the same
plan. Times are aware datetimes (UTC); a naive one is read as UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from wattplane.api.v1alpha1.energypolicy import BudgetWindow, JobCarbonBudget, JobProfile
from wattplane.planner.budget import Rebalance
from wattplane.planner.snapshot import PodKey


@dataclass(frozen=True)
class CarbonInput:
    """One carbon signal as a policy's ``carbon`` section sees it.

    Attributes:
        intensity: Current intensity, gCO2eq/kWh; ``None`` when no usable value exists.
        time: When ``intensity`` applies (start of its interval); ``None`` when unknown.
        forecast: ``(start, g/kWh)`` points ahead of ``time``, as the provider forecast them.
        history: ``(start, g/kWh)`` points of the recent past, measured.
        stale: The carbon service already judged the signal too old or failed to refresh it.
        source: ``provider/zone``, for reasons and status.
        message: Why the signal is what it is (fetch errors, estimated values).
        price_weight: Set when the series is a cost blending carbon and electricity price
            (:mod:`wattplane.price.cost`): the price's weight; ``None`` for a plain carbon signal.
        carbon_intensity: With ``price_weight``: the real carbon intensity now (``intensity`` is the cost).
        price: With ``price_weight``: the price now, in ``price_unit``.
    """

    intensity: float | None = None
    time: datetime | None = None
    forecast: tuple[tuple[datetime, float], ...] = ()
    history: tuple[tuple[datetime, float], ...] = ()
    stale: bool = False
    source: str = ""
    message: str = ""
    price_weight: float | None = None
    carbon_intensity: float | None = None
    price: float | None = None
    price_unit: str = ""


@dataclass(frozen=True)
class ServingKnob:
    """A serving pod's knob (:mod:`wattplane.planner.servingcap`): an SM clock lock or a power cap.

    Attributes:
        kind: ``clock`` (the highest SM clock, MHz) or ``cap`` (a power limit, watts).
        value: The clock's upper bound or the cap.
        reason: Why the controller chose it (for the target's reason).
    """

    kind: Literal["clock", "cap"]
    value: float
    reason: str = ""


@dataclass(frozen=True)
class PlanContext:
    """Everything a round needs besides the fleet and the policies.

    Attributes:
        now: The round's time (aware UTC); carbon staleness and profile phases are judged against it.
        carbon: Each carbon policy's signal, by policy name.
        profiles: Zeus profiles by ``(job id, GPU model)``, as the operator's observer advanced them.
        straggler_caps: Perseus caps by pod, watts, as the observer advanced them.
        previous_node_budgets: The node budgets last written, for the budget's hysteresis.
        budget_rebalances: Each budget policy's last re-share of its node shares, as the last plan
            left them (:func:`wattplane.planner.budget.rebalance_due`).
        budget_interval_s: Measured power alone re-shares a budget at most this often, seconds (the
            operator's planning interval).
        carbon_budgets: Slowdown accounts of budgeted carbon jobs by job id, as the last plan left them.
        grid_windows: Budget windows from outside the policies (demand-response events), by policy
            name; a budget holds them like its own ``schedule``.
        previous_quota_caps: The quota caps in force (targets written with section ``quota``), by
            GPU UUID, for the quota's hysteresis.
        serving_knobs: Each serving pod's knob, as the operator's serving controller advanced it.
    """

    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    carbon: Mapping[str, CarbonInput] = field(default_factory=dict)
    profiles: Mapping[tuple[str, str], JobProfile] = field(default_factory=dict)
    straggler_caps: Mapping[PodKey, float] = field(default_factory=dict)
    previous_node_budgets: Mapping[str, float] = field(default_factory=dict)
    budget_rebalances: Mapping[str, Rebalance] = field(default_factory=dict)
    budget_interval_s: float = 30.0
    carbon_budgets: Mapping[str, JobCarbonBudget] = field(default_factory=dict)
    grid_windows: Mapping[str, tuple[BudgetWindow, ...]] = field(default_factory=dict)
    previous_quota_caps: Mapping[str, float] = field(default_factory=dict)
    serving_knobs: Mapping[PodKey, ServingKnob] = field(default_factory=dict)
