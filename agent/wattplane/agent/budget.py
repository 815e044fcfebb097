"""The node budget loop's decision: which GPU limits to lower (or raise) so the node stays in budget.

A pure function of one tick's measurements, the plan and the previous decision; the engine applies
its result through the normal clamped, journaled, idempotent write path. Keeping it free of I/O is
what lets it be property-tested and lets it run every 100 ms without a thought.

How a tick decides:

1. **Estimate demand.** A GPU drawing close to its current limit is *power-bound*: its real demand
   is hidden by the cap, so it is assumed to want everything up to its ceiling (the plan's target,
   or the limit the GPU had before wattplane). Any other GPU wants what it draws now.
2. **Allocate the budget** (water-filling by priority). Every GPU is first granted what it would
   draw at its minimum limit; if that floor, plus the power of GPUs the loop may not touch (MIG
   boards, dry-run targets), already exceeds the budget, the budget is *infeasible*: every GPU goes to
   its minimum and the result says so. Otherwise the rest is handed out highest priority first; the
   first level that cannot be served in full shares what is left by water-filling (equal watts above
   the floor, the largest consumers cut first) and lower levels get nothing above their floor.
3. **Cut at once.** A GPU whose allocation is below what its current limit lets it draw is lowered
   in this tick. Allocations are watts drawn, limits are what NVML is told: a board seen drawing above
   its limit (some overshoot a low cap) gets a limit lower by that overshoot. If the GPUs behave as
   measured, power after the cut is at most the allocations' sum, so the budget holds whenever it is
   feasible; whatever the estimate missed, the next tick measures and cuts again. A node found over
   its budget is cut to a small margin below it, not to the line itself. Cuts also happen
   inside the budget when a higher-priority GPU is held back while a lower-priority one runs free:
   the loop never leaves priority upside down.
4. **Restore slowly** (hysteresis). A limit is raised only after node power stayed below
   ``budget × (1 − hysteresis)`` for ``restore_after_ticks`` ticks, by at most a step per GPU, highest
   priority first, and only as far as the headroom below that band allows (a raised GPU could grow to
   its new limit). After a raise the count starts again, so each step's effect is seen before the
   next. A GPU raised back to its ceiling is released.

Limits are watts. A GPU's limit never goes below its minimum constraint or above its ceiling.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Literal

#: Allocations closer than this are equal (well below NVML's milliwatt resolution).
_EPS = 1e-6

Action = Literal["none", "hold", "cut", "restore"]


@dataclass(frozen=True)
class BudgetGpu:
    """One GPU as the budget loop sees it in this tick."""

    uuid: str
    power_watts: float
    """Measured draw."""
    min_watts: float
    """Lowest limit the device accepts."""
    ceiling_watts: float
    """Highest limit the loop may leave in force: the plan's (clamped) target, else the prior limit."""
    priority: int = 0
    """Higher is cut later."""
    controllable: bool = True
    """False for GPUs the loop must not touch (MIG boards, dry-run targets): their power is a given."""


@dataclass(frozen=True)
class BudgetParams:
    """How cautiously limits are given back."""

    hysteresis_ratio: float = 0.05
    """Raise only while node power is below ``budget × (1 − hysteresis_ratio)``."""
    restore_after_ticks: int = 3
    """Consecutive ticks below that band before a raise."""
    restore_step_ratio: float = 0.1
    """Largest raise per step, as a fraction of the GPU's range (ceiling − minimum)."""
    cut_margin_ratio: float = 0.01
    """A node over budget is cut to ``budget × (1 − cut_margin_ratio)``, so noise and boards that
    overshoot a cap do not leave it hovering just above the line."""
    bound_ratio: float = 0.05
    """A GPU drawing within this fraction of its limit counts as power-bound (demand hidden); a capped
    board's one-second average sits a few percent under its limit."""


@dataclass(frozen=True)
class BudgetState:
    """What the loop carries from one tick to the next."""

    limits: Mapping[str, float] = field(default_factory=dict)
    """Limits imposed below a GPU's ceiling, by UUID (absent: the GPU runs at its ceiling)."""
    calm_ticks: int = 0
    """Consecutive ticks with node power below the hysteresis band."""


@dataclass(frozen=True)
class BudgetDecision:
    """The outcome of one tick."""

    budget_watts: float | None
    measured_watts: float
    """Node power measured at the start of the tick (all readable GPUs)."""
    floor_watts: float
    """Least the node can be brought to: untouchable GPUs plus every other GPU at its minimum."""
    limits: Mapping[str, float]
    """Limits to enforce below the GPUs' ceilings, by UUID (empty: nothing limited)."""
    state: BudgetState
    action: Action
    feasible: bool = True

    def describe(self) -> str:
        """One line for status messages and logs."""
        if self.budget_watts is None:
            return "no node budget"
        head = f"node {self.measured_watts:.0f} W of {self.budget_watts:.0f} W budget"
        if not self.feasible:
            return (
                f"{head}: cannot be met even with every GPU at its minimum limit "
                f"(floor {self.floor_watts:.0f} W); all controllable GPUs at minimum"
            )
        if self.limits:
            return f"{head}; {len(self.limits)} GPU(s) limited, lowest priority first"
        return head


def enforce(
    gpus: Sequence[BudgetGpu],
    budget_watts: float | None,
    state: BudgetState,
    params: BudgetParams = BudgetParams(),
) -> BudgetDecision:
    """Decide this tick's budget limits; deterministic for equal inputs, whatever their order."""
    measured = math.fsum(g.power_watts for g in gpus)  # fsum: independent of input order
    fixed = math.fsum(g.power_watts for g in gpus if not g.controllable)
    if budget_watts is None:
        return BudgetDecision(None, measured, fixed, {}, BudgetState(), "restore" if state.limits else "none")
    views = [_view(g, state, params) for g in sorted(gpus, key=lambda g: (-g.priority, g.uuid)) if g.controllable]
    floor_total = math.fsum([fixed, *(v.floor for v in views)])
    aim = budget_watts * (1.0 - params.cut_margin_ratio) if measured > budget_watts else budget_watts
    allocation = _allocate(views, aim - floor_total)
    ideal = {v.gpu.uuid: v.limit_for(allocation[v.gpu.uuid]) for v in views}

    limits = {v.gpu.uuid: v.current for v in views}
    cut = False
    for uuid, watts in ideal.items():
        if watts < limits[uuid] - _EPS:
            limits[uuid] = watts
            cut = True

    band = budget_watts * (1.0 - params.hysteresis_ratio)
    calm = state.calm_ticks + 1 if measured <= band and not cut else 0
    action: Action = "cut" if cut else "hold"
    if not cut and calm >= params.restore_after_ticks and _raise(views, limits, ideal, band - measured, params):
        action, calm = "restore", 0

    imposed = {v.gpu.uuid: limits[v.gpu.uuid] for v in views if limits[v.gpu.uuid] < v.ceiling - _EPS}
    if action == "hold" and not imposed and not state.limits:
        action = "none"
    return BudgetDecision(
        budget_watts=budget_watts,
        measured_watts=measured,
        floor_watts=floor_total,
        limits=imposed,
        state=BudgetState(limits=imposed, calm_ticks=calm),
        action=action,
        feasible=floor_total <= budget_watts + _EPS,
    )


@dataclass(frozen=True)
class _View:
    """One controllable GPU in power terms.

    ``offset`` is how far the GPU draws above the limit in force (a board's average can sit a little
    over a low cap); limits are chosen so that ``limit + offset`` fits the allocation.
    """

    gpu: BudgetGpu
    ceiling: float
    current: float
    offset: float
    demand: float
    """Draw it would have at its ceiling, as far as can be told."""
    floor: float
    """Draw at its minimum limit (or its demand, if lower)."""

    def limit_for(self, allocation: float) -> float:
        """The limit that keeps this GPU within ``allocation`` watts (its ceiling when fully served)."""
        if allocation >= self.demand - _EPS:
            return self.ceiling
        return min(self.ceiling, max(self.gpu.min_watts, _floor_mw(allocation - self.offset)))


def _view(gpu: BudgetGpu, state: BudgetState, params: BudgetParams) -> _View:
    ceiling = max(gpu.min_watts, gpu.ceiling_watts)
    current = min(ceiling, max(gpu.min_watts, state.limits.get(gpu.uuid, ceiling)))
    power = max(0.0, gpu.power_watts)
    offset = max(0.0, power - current)
    bound = power >= current * (1.0 - params.bound_ratio)
    # Held down by an imposed limit: its real demand is hidden, assume it wants its ceiling.
    demand = ceiling + offset if bound and current < ceiling - _EPS else power
    floor = demand if demand <= gpu.min_watts + offset else gpu.min_watts + offset
    return _View(gpu, ceiling, current, offset, demand, floor)


def _allocate(ordered: Sequence[_View], spare: float) -> dict[str, float]:
    """Floors for everyone, then the spare watts by priority level, water-filling inside a level."""
    allocation = {v.gpu.uuid: v.floor for v in ordered}
    remaining = max(0.0, spare)
    for _, level in groupby(ordered, key=lambda v: v.gpu.priority):
        grants = _water_fill({v.gpu.uuid: v.demand - v.floor for v in level}, remaining)
        for uuid, grant in grants.items():
            allocation[uuid] += grant
        remaining = max(0.0, remaining - math.fsum(grants.values()))
    return allocation


def _water_fill(wants: Mapping[str, float], amount: float) -> dict[str, float]:
    """Share ``amount`` so every want is met up to one common level (equal watts, smallest wants first)."""
    if math.fsum(wants.values()) <= amount:
        return dict(wants)
    grants: dict[str, float] = {}
    left = amount
    pending = sorted(wants.items(), key=lambda kv: (kv[1], kv[0]))
    for position, (uuid, want) in enumerate(pending):
        grant = min(want, left / (len(pending) - position))
        grants[uuid] = grant
        left -= grant
    return grants


def _raise(
    ordered: Sequence[_View],
    limits: dict[str, float],
    ideal: Mapping[str, float],
    headroom: float,
    params: BudgetParams,
) -> bool:
    """One restore step into ``headroom``, highest priority first; return whether anything rose."""
    raised = False
    for _, group in groupby(ordered, key=lambda v: v.gpu.priority):
        if headroom <= _EPS:
            break
        level = {v.gpu.uuid: v for v in group}
        candidates: dict[str, float] = {}
        costs: dict[str, float] = {}
        for uuid, v in level.items():
            if ideal[uuid] <= limits[uuid] + _EPS:
                continue
            step = max(1.0, params.restore_step_ratio * (v.ceiling - v.gpu.min_watts))
            candidates[uuid] = min(ideal[uuid], limits[uuid] + step)
            # A raised GPU may grow from what it draws now to its new limit (plus what it overshoots by).
            costs[uuid] = max(0.0, candidates[uuid] + v.offset - v.gpu.power_watts)
        grants = _water_fill(costs, headroom)
        for uuid, grant in grants.items():
            v = level[uuid]
            new = min(candidates[uuid], _floor_mw(v.gpu.power_watts + grant - v.offset))
            if new > limits[uuid] + _EPS:
                limits[uuid] = new
                raised = True
            headroom -= grant
    return raised


def _floor_mw(watts: float) -> float:
    """Round down to NVML's milliwatt so rounding can never push power over the budget."""
    return math.floor(watts * 1000.0 + 1e-9) / 1000.0
