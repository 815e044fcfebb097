"""Watt quotas: a fixed power allowance for a group of pods, turned into per-GPU caps.

A budget (:mod:`wattplane.planner.budget`) protects a *feed*: a rack's or a row's watts, whichever pods
run there, enforced by the node agents on measured power. A quota protects a *tenant*: the GPUs of a
namespace (or of a label-selected group of pods, wherever they run) together may be capped at no more
than ``watts``. The two need different enforcement: a quota's GPUs are spread over nodes that also run
other tenants, so no node agent can own it; the planner writes per-GPU caps whose **sum never exceeds
the quota**, and the device limits keep it without any fast loop.

Because the caps are the enforcement, they must follow the load: a cap left on a GPU that went idle
wastes the tenant's allowance, and a cap kept low on a GPU that got busy slows it for nothing. Each
planning round therefore estimates what every GPU *asks for* (its demand) and shares the quota:

* **Running free** (drawing well below its cap): measured power plus a margin (``margin_fraction`` of its
  ceiling), so it can grow within a round.
* **Power-bound** (drawing within ``bound_fraction`` of its current cap, below its ceiling): its real
  demand is hidden by the cap, so it asks for its **ceiling**. A GPU that was lent out (capped low while
  idle) and then gets work therefore gets its fair share back in the very next round, not margin by margin.
* **Idle** (no work and drawing at most ``idle_fraction`` of its ceiling): only what it draws, without a
  margin: its headroom is lent to busy GPUs until it works again.
* Unknown power: the ceiling.

Demand is clamped into ``[floor, ceiling]``; the floor is the device minimum limit. Sharing, in order:

1. **Floors.** If the floors alone exceed the quota it is infeasible: every GPU at its floor, and the
   message says by how many watts the quota is short.
2. **Priority classes**, highest :func:`~wattplane.planner.budget.budget_rank` first, get their demand
   until the quota runs out. The class where it runs out is shared with
   :func:`~wattplane.planner.kneefill.knee_water_fill`: every GPU of the class is cut down to its knee
   (``efficient_watts``, the limit with the best energy per unit of work) before any goes below its
   knee, each stage at one common cap level. Lower classes stay at their floors.
3. **Headroom.** What is left when nobody was cut goes to the GPUs in proportion to how far they could
   still rise (ceiling − allocation), so a load step between rounds is not capped at once; the caps
   still add up to at most the quota.
4. **Hysteresis.** A GPU keeps its previous cap when the new one moved by at most
   ``hysteresis_fraction`` of it (or ``dead_band_watts``), the previous cap is at least what the GPU was
   allocated (holding never cuts), and the sum still fits; a hold that raises a GPU above its new cap
   is also refused when it would leave a higher-priority GPU cut below its demand. Holds that raise the
   total are released, largest first, until the sum fits.

Caps are rounded down to the milliwatt (never below the floor) so the rounding cannot push the sum
over the quota. Pure and deterministic: the order of the input does not matter.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple

from wattplane.planner.budget import IDLE_RANK
from wattplane.planner.kneefill import effective_knees, knee_water_fill

#: Room above measured power a running GPU asks for, as a fraction of its ceiling.
DEFAULT_MARGIN_FRACTION: Final = 0.1
#: A GPU drawing within this fraction of its current cap counts as power-bound.
DEFAULT_BOUND_FRACTION: Final = 0.05
#: A GPU with no work drawing at most this fraction of its ceiling counts as idle.
DEFAULT_IDLE_FRACTION: Final = 0.25

_MILLIWATT: Final = 1000.0
_EPS: Final = 1e-6

Reason = Literal["demand", "headroom", "knee", "cut", "floor", "infeasible", "held"]
"""Why a GPU has its cap:

* ``demand``: it got what it asks for (no headroom was left to add);
* ``headroom``: what it asks for plus part of the unused quota;
* ``knee``: cut, but not below its efficient limit (the quota ran out in its class);
* ``cut``: cut below its knee (or it has none), above its floor;
* ``floor``: cut to its device minimum (a lower class than the one where the quota ran out);
* ``infeasible``: the floors alone exceed the quota; every GPU is at its floor;
* ``held``: hysteresis kept its previous cap.
"""


@dataclass(frozen=True)
class QuotaGpu:
    """One GPU of a quota's pods, as the planner sees it this round.

    Attributes:
        uuid: GPU UUID.
        priority_rank: :func:`~wattplane.planner.budget.budget_rank`; higher is cut later.
        floor_watts: Lowest cap the quota may set (the device minimum).
        ceiling_watts: Highest cap the other policy sections allow (the device default without them).
        measured_watts: Power drawn now; ``None`` when unknown (it then asks for its ceiling).
        cap_watts: The limit in force now (the last cap written), ``None`` when uncapped.
        busy: Whether the GPU has work (a pod using it, non-zero utilisation).
        efficient_watts: Its knee: the limit with the best energy per unit of work (Zeus), if profiled.
        node: Node the GPU is on (reporting only).
    """

    uuid: str
    priority_rank: int
    floor_watts: float
    ceiling_watts: float
    measured_watts: float | None = None
    cap_watts: float | None = None
    busy: bool = True
    efficient_watts: float | None = None
    node: str = ""


@dataclass(frozen=True)
class QuotaParams:
    """How demand is estimated and how much caps may move before they are rewritten."""

    margin_fraction: float = DEFAULT_MARGIN_FRACTION
    bound_fraction: float = DEFAULT_BOUND_FRACTION
    idle_fraction: float = DEFAULT_IDLE_FRACTION
    hysteresis_fraction: float = 0.05
    dead_band_watts: float = 0.0
    knee_aware: bool = True
    """Cut above the knees first within a class (:func:`~wattplane.planner.kneefill.knee_water_fill`);
    off: one common level down to the floors, as the budget does."""


@dataclass(frozen=True)
class QuotaAllocation:
    """A quota's caps for one round.

    Attributes:
        quota_watts: The quota, watts.
        caps: Cap per GPU UUID, within ``[floor, ceiling]``; their sum is at most the quota when feasible.
        reasons: Why each GPU has its cap (:data:`Reason`).
        demands: What each GPU asked for, watts.
        feasible: The floors fit in the quota.
        minimum_watts: Sum of the floors.
        demand_watts: Sum of the demands.
        allocated_watts: Sum of the caps.
        measured_watts: Sum of the known measurements.
        cut_gpus: GPUs capped below their demand.
        held_gpus: GPUs whose previous cap hysteresis kept.
        lent_watts: Headroom idle GPUs gave up: Σ (ceiling − cap) over idle GPUs.
        message: One line for the policy status.
    """

    quota_watts: float
    caps: Mapping[str, float]
    reasons: Mapping[str, Reason]
    demands: Mapping[str, float]
    feasible: bool
    minimum_watts: float
    demand_watts: float
    allocated_watts: float
    measured_watts: float
    cut_gpus: int
    held_gpus: int
    lent_watts: float
    message: str


class _Gpu(NamedTuple):
    uuid: str
    rank: int
    floor: float
    ceiling: float
    demand: float
    knee: float | None
    idle: bool


def demand_watts(gpu: QuotaGpu, params: QuotaParams = QuotaParams()) -> tuple[float, bool]:
    """What ``gpu`` asks for (clamped into ``[floor, ceiling]``) and whether it counts as idle."""
    floor = _positive(gpu.floor_watts)
    ceiling = max(_positive(gpu.ceiling_watts), floor)
    measured = gpu.measured_watts
    if measured is None or not math.isfinite(measured):
        return ceiling, False
    power = max(measured, 0.0)
    if not gpu.busy and power <= _positive(params.idle_fraction) * ceiling:
        return min(max(power, floor), ceiling), True
    cap = gpu.cap_watts
    bound = cap is not None and math.isfinite(cap) and cap < ceiling - _EPS
    if bound and cap is not None and power >= cap * (1.0 - _positive(params.bound_fraction)):
        return ceiling, False
    return min(max(power + _positive(params.margin_fraction) * ceiling, floor), ceiling), False


def allocate_quota(
    quota_watts: float,
    gpus: Iterable[QuotaGpu],
    previous_caps: Mapping[str, float] | None = None,
    params: QuotaParams = QuotaParams(),
) -> QuotaAllocation:
    """Share ``quota_watts`` among ``gpus`` as per-GPU caps (see the module docstring).

    Args:
        quota_watts: The quota; a non-finite or negative value counts as 0.
        gpus: The GPUs of the quota's pods (a repeated UUID counts once: the first given).
        previous_caps: Last round's caps by UUID, for hysteresis.
        params: Demand estimation and hysteresis.
    """
    quota = float(quota_watts) if math.isfinite(quota_watts) and quota_watts > 0 else 0.0
    unique = gpus_by_uuid(gpus)
    items = _clean(unique, params)
    minimum = math.fsum(g.floor for g in items)
    demands = {g.uuid: g.demand for g in items}
    demand_total = math.fsum(demands.values())
    measured = math.fsum(
        g.measured_watts for g in unique if g.measured_watts is not None and math.isfinite(g.measured_watts)
    )
    if not items:
        return QuotaAllocation(quota, {}, {}, {}, True, 0.0, 0.0, 0.0, measured, 0, 0, 0.0, "quota covers no GPU")

    if minimum > quota:
        caps = {g.uuid: g.floor for g in items}
        reasons: dict[str, Reason] = dict.fromkeys(caps, "infeasible")
        message = (
            f"infeasible: the {len(items)} GPU(s) need at least {minimum:.0f} W at their minimum limits, "
            f"{minimum - quota:.0f} W over the quota of {quota:.0f} W; every GPU held at its minimum"
        )
        cut = sum(1 for g in items if g.floor < g.demand - _EPS)
        return QuotaAllocation(
            quota_watts=quota,
            caps=caps,
            reasons=reasons,
            demands=demands,
            feasible=False,
            minimum_watts=minimum,
            demand_watts=demand_total,
            allocated_watts=minimum,
            measured_watts=measured,
            cut_gpus=cut,
            held_gpus=0,
            lent_watts=_lent(items, caps),
            message=message,
        )

    alloc, reasons, lowest_cut = _share(items, quota, params.knee_aware)
    caps = _headroom(items, alloc, quota) if lowest_cut is None else dict(alloc)
    for g in items:
        if lowest_cut is None and caps[g.uuid] > alloc[g.uuid] + _EPS:
            reasons[g.uuid] = "headroom"
    caps, held = _hysteresis(items, caps, alloc, quota, previous_caps, params, lowest_cut)
    caps = _trim(items, caps, quota)
    for uuid in held:
        reasons[uuid] = "held"
    total = math.fsum(caps.values())
    cut_gpus = sum(1 for g in items if caps[g.uuid] < g.demand - _EPS)
    if lowest_cut is not None:
        message = (
            f"demand {demand_total:.0f} W exceeds the quota of {quota:.0f} W: {cut_gpus} of {len(items)} GPU(s) "
            f"cut, lowest priority first, up to {_rank_label(lowest_cut)}"
        )
    else:
        message = f"demand {demand_total:.0f} W of {len(items)} GPU(s) fits the quota of {quota:.0f} W"
    if held:
        message += f"; {len(held)} cap(s) kept by hysteresis"
    return QuotaAllocation(
        quota_watts=quota,
        caps=caps,
        reasons=reasons,
        demands=demands,
        feasible=True,
        minimum_watts=minimum,
        demand_watts=demand_total,
        allocated_watts=total,
        measured_watts=measured,
        cut_gpus=cut_gpus,
        held_gpus=len(held),
        lent_watts=_lent(items, caps),
        message=message,
    )


def gpus_by_uuid(gpus: Iterable[QuotaGpu]) -> list[QuotaGpu]:
    """One entry per UUID (the first given), sorted by UUID: the result does not depend on input order."""
    seen: set[str] = set()
    out: list[QuotaGpu] = []
    for g in sorted(gpus, key=lambda g: g.uuid):
        if g.uuid not in seen:
            seen.add(g.uuid)
            out.append(g)
    return out


def _clean(unique: list[QuotaGpu], params: QuotaParams) -> list[_Gpu]:
    """Sanitised GPUs; demands rounded down to the milliwatt (never below the floor), like every cap."""
    out = []
    for g in unique:
        floor = _positive(g.floor_watts)
        ceiling = max(_positive(g.ceiling_watts), floor)
        raw, idle = demand_watts(g, params)
        demand = max(_down(raw), floor)
        knee = g.efficient_watts if g.efficient_watts is not None and math.isfinite(g.efficient_watts) else None
        rank = int(g.priority_rank) if isinstance(g.priority_rank, int) else IDLE_RANK
        out.append(_Gpu(g.uuid, rank, floor, ceiling, demand, knee, idle))
    return out


def _share(items: list[_Gpu], quota: float, knee_aware: bool) -> tuple[dict[str, float], dict[str, Reason], int | None]:
    """Floors, then demand by priority class; the class where the quota runs out is knee-filled."""
    alloc = {g.uuid: g.floor for g in items}
    reasons: dict[str, Reason] = {}
    spare = quota - math.fsum(alloc.values())
    lowest_cut: int | None = None
    for rank, group in itertools.groupby(sorted(items, key=lambda g: (-g.rank, g.uuid)), key=lambda g: g.rank):
        members = list(group)
        if lowest_cut is not None:
            for g in members:
                reasons[g.uuid] = "floor" if g.floor < g.demand - _EPS else "demand"
            continue
        need = math.fsum(g.demand - g.floor for g in members)
        if need <= spare + _EPS:
            for g in members:
                alloc[g.uuid] = g.demand
                reasons[g.uuid] = "demand"
            spare -= need
            continue
        lowest_cut = rank
        wants = {g.uuid: g.demand for g in members}
        floors = {g.uuid: g.floor for g in members}
        knees = {g.uuid: g.knee if knee_aware else None for g in members}
        amount = math.fsum(floors.values()) + max(spare, 0.0)
        shares = knee_water_fill(wants, knees, floors, amount)
        knee_of = effective_knees(wants, knees, floors)
        for g in members:
            share = shares[g.uuid]
            watts = g.demand if share >= g.demand - _EPS else max(_down(share), g.floor)
            alloc[g.uuid] = watts
            if watts >= g.demand - _EPS:
                reasons[g.uuid] = "demand"
            elif g.knee is not None and knee_aware and watts >= knee_of[g.uuid] - _EPS:
                reasons[g.uuid] = "knee"
            elif watts <= g.floor + _EPS:
                reasons[g.uuid] = "floor"
            else:
                reasons[g.uuid] = "cut"
        spare = 0.0
    return alloc, reasons, lowest_cut


def _headroom(items: list[_Gpu], alloc: Mapping[str, float], quota: float) -> dict[str, float]:
    """Spread the unused quota over the GPUs by how far each could still rise (ceiling − allocation)."""
    rest = quota - math.fsum(alloc.values())
    caps = dict(alloc)
    room = {g.uuid: g.ceiling - alloc[g.uuid] for g in items}
    total_room = math.fsum(room.values())
    if rest <= 0 or total_room <= 0:
        return caps
    share = min(1.0, rest / total_room)
    for g in items:
        caps[g.uuid] = min(g.ceiling, max(_down(alloc[g.uuid] + room[g.uuid] * share), alloc[g.uuid]))
    return caps


def _hysteresis(
    items: list[_Gpu],
    caps: dict[str, float],
    alloc: Mapping[str, float],
    quota: float,
    previous: Mapping[str, float] | None,
    params: QuotaParams,
    lowest_cut: int | None,
) -> tuple[dict[str, float], list[str]]:
    """Keep previous caps that moved little, never below the allocation, never over the quota."""
    fraction = _positive(params.hysteresis_fraction)
    band_watts = _positive(params.dead_band_watts)
    if not previous or (fraction == 0 and band_watts == 0):
        return caps, []
    final = dict(caps)
    held: dict[str, float] = {}
    for g in items:
        old = previous.get(g.uuid)
        new = caps[g.uuid]
        if old is None or not math.isfinite(old) or old == new or abs(new - old) > max(fraction * old, band_watts):
            continue
        if old < alloc[g.uuid] - _EPS or not (g.floor <= old <= g.ceiling):
            continue  # holding must never cut a GPU below what it was allocated
        if old > new and lowest_cut is not None and g.rank < lowest_cut:
            continue  # raising a lower class while a higher one is cut would invert priority
        held[g.uuid] = old
    final.update(held)
    excess = math.fsum(final.values()) - quota
    if excess > 0:
        for uuid in sorted((u for u in held if held[u] > caps[u]), key=lambda u: (caps[u] - held[u], u)):
            if excess <= 0:
                break
            excess -= held[uuid] - caps[uuid]
            final[uuid] = caps[uuid]
            del held[uuid]
        if math.fsum(final.values()) > quota:
            return caps, []
    return final, sorted(held)


def _trim(items: list[_Gpu], caps: dict[str, float], quota: float) -> dict[str, float]:
    """Take a floating-point sliver above the quota off the largest caps (never below a floor)."""
    excess = math.fsum(caps.values()) - quota
    for g in sorted(items, key=lambda g: (-(caps[g.uuid] - g.floor), g.uuid)):
        if excess <= 0:
            break
        take = min(math.ceil(excess * _MILLIWATT) / _MILLIWATT, caps[g.uuid] - g.floor)
        if take > 0:
            caps[g.uuid] -= take
            excess -= take
    return caps


def _lent(items: list[_Gpu], caps: Mapping[str, float]) -> float:
    return math.fsum(g.ceiling - caps[g.uuid] for g in items if g.idle)


def _rank_label(rank: int) -> str:
    return "GPUs without pods" if rank == IDLE_RANK else f"priority {rank}"


def _down(watts: float) -> float:
    """Round down to the milliwatt, so the rounding never adds up to more than the quota."""
    return math.floor(watts * _MILLIWATT) / _MILLIWATT


def _positive(value: float) -> float:
    return float(value) if math.isfinite(value) and value > 0 else 0.0
