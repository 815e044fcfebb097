"""POLCA-style power budget: share a node set's watts among its GPUs by priority.

POLCA (Patel et al., "POLCA: Power Oversubscription in LLM Cloud Providers", arXiv:2308.12908, 2023)
oversubscribes a power budget: GPUs rarely all draw their limit at once, so more of them fit
under a rack's feed than their nameplates suggest, and power is capped, lowest priority first, only
when the measured draw comes close. wattplane splits that into two loops, as Facebook's Dynamo (Wu et
al., ISCA 2016) did: this module (the operator's slow loop) turns the budget into one share per node,
and each node's agent enforces its share on *measured* power within a tick, cutting its
lowest-priority GPUs first.

**One owner per decision.** The operator owns the node shares and nothing below them; the agent owns
every GPU limit below the plan's targets. The operator never writes per-GPU budget caps: two loops
cutting the same GPUs through the API server chase each other (the agent's cut lowers the power the
operator plans from, the operator's new caps move the agent's ceilings), and a rack under a budget
then streams plans with nothing changing. The allocation below still works per GPU, because that is
how shares are sized by priority across nodes; its ``caps`` say how deep the agents will have to cut,
for the policy's status, and are not written anywhere.

**When shares move** (:func:`rebalance_due`). Shares rest on two kinds of input: the *footing* (the
budget, the covered nodes, each GPU's priority, whether it has pods, its ceiling), which changes with
pods and policies, and measured power, which changes all the time, not least because the agents cut.
A change of footing re-shares at once; measured power alone re-shares at most once per rebalance
interval (the operator's resync interval), and then only when some node's share moves by more than
the dead band (``hysteresis_fraction`` of the share, at least 1 % of the mean share): otherwise the
shares in force stand, as a whole (:func:`within_dead_band`). So a node gets at most one new share per
interval from power alone, whatever the agents do in between, and none while the rack is steady.

Allocation, in order:

1. Every GPU gets its floor (the device minimum): below that no cut can go. If the floors alone
   exceed the budget the allocation is infeasible: every GPU is capped at its floor, the node shares
   are the floors scaled down to the budget (the agents cut to the floor and report that they cannot
   meet it) and the message says by how much the budget is short.
2. Priority classes, highest first, get what they ask for on top of their floors until the budget
   runs out. The class where it runs out is water-filled: one common cap level L, each GPU at
   ``clamp(L, floor, demand)``, so within a priority no GPU is cut deeper than another. Lower
   classes stay at their floors. Sorting the breakpoints makes this O(n log n) for n GPUs.
3. Whatever is left (only when nobody was cut) is spread over the nodes in proportion to how far
   their GPUs could still rise (ceiling − allocation), as headroom for load changes between rounds.
4. Hysteresis: a node keeps its previous share when the new one differs by at most
   ``hysteresis_fraction`` of it, as long as that never puts the total above the budget (holds that
   raise the total are released, largest first, until it fits) and never leaves the node less than
   its GPUs were allocated. Agents therefore see few, meaningful changes.

Demand: what a GPU asks for. The decision here is **measured power plus a margin** (default 10 % of
the GPU's ceiling, clamped into [floor, ceiling]), not the ceiling: that is the oversubscription
POLCA is about. A rack whose GPUs idle gives its watts to a busy one, and a GPU is only cut when the
watts it actually draws (plus room to grow within one planning round) do not fit. A GPU the budget
cuts draws about its cap, so its next demand is cap + margin: it regains power step by step as the
budget frees, rather than all at once. The price is that the GPUs' limits may add up to more than the
budget; the agents' fast loop on measured power is what keeps the total under it, as the design
intends. A GPU without a measurement (``measured_watts=None``) asks for its ceiling. Passing
``demand_margin=None`` uses ceilings for every GPU: no oversubscription, and the GPU limits alone
then keep the budget even if no agent loop ran.

Priority rank (:func:`budget_rank`): GPUs without a pod are cut first, then pods by their
``wattplane.io/priority`` (low 0 < normal 500 < high 1000); inference pods rank as high at least,
since a slowed server misses latency targets while a slowed training job only finishes later.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final, NamedTuple, TypeGuard

from wattplane.api.annotations import PRIORITY_NAMES
from wattplane.planner.kneefill import water_level

DEFAULT_DEMAND_MARGIN: Final = 0.1
"""Room above measured power a GPU asks for, as a fraction of its ceiling."""

IDLE_RANK: Final = -1
"""Budget rank of a GPU no pod holds: cut before any pod's GPU."""

_MILLIWATT: Final = 1000.0
#: Node shares are written to the 0.1 W (rounded down): a sum this close to the budget per node fits it.
_WRITTEN_RESOLUTION_WATTS: Final = 0.1


@dataclass(frozen=True)
class BudgetGpu:
    """One GPU under a budget.

    Attributes:
        node: Node the GPU is in (its agent enforces the node's share).
        uuid: GPU UUID.
        priority_rank: :func:`budget_rank`; higher is cut later.
        floor_watts: Lowest limit the budget may set (the device minimum).
        ceiling_watts: Highest limit the other policy sections allow.
        measured_watts: Power the GPU draws now; ``None`` when unknown (it then asks for its ceiling).
    """

    node: str
    uuid: str
    priority_rank: int
    floor_watts: float
    ceiling_watts: float
    measured_watts: float | None = None


@dataclass(frozen=True)
class BudgetAllocation:
    """How a budget was shared out.

    Attributes:
        budget_watts: The budget, watts.
        node_shares: Watts per node, for ``GpuNode.spec.nodeBudgetWatts``; their sum never exceeds
            the budget, and equals it (to the milliwatt per GPU) when the budget is feasible, unless
            hysteresis kept some node at a lower previous share.
        gpu_watts: Each GPU's part of its node's share (before headroom), by UUID.
        caps: Power limits the budget forces, by UUID: only GPUs allocated less than they ask for
            (every GPU above its floor when infeasible); each within [floor, ceiling].
        feasible: The floors fit in the budget.
        minimum_watts: Sum of the floors: no cut gets below this.
        demand_watts: Sum of what the GPUs ask for.
        cut_gpus: ``len(caps)``.
        held_nodes: Nodes whose previous share hysteresis kept.
        message: One line for the policy status.
    """

    budget_watts: float
    node_shares: Mapping[str, float]
    gpu_watts: Mapping[str, float]
    caps: Mapping[str, float]
    feasible: bool
    minimum_watts: float
    demand_watts: float
    cut_gpus: int
    held_nodes: int
    message: str


def budget_rank(priority: int, workload: str | None, has_pod: bool) -> int:
    """A GPU's budget priority: idle < low < normal < high = inference (a GPU with several pods takes the max)."""
    if not has_pod:
        return IDLE_RANK
    rank = min(max(int(priority), PRIORITY_NAMES["low"]), PRIORITY_NAMES["high"])
    if workload == "inference":
        rank = max(rank, PRIORITY_NAMES["high"])
    return rank


class _Gpu(NamedTuple):  # a tuple: cheap to build a hundred thousand times per round
    node: str
    uuid: str
    rank: int
    floor: float
    demand: float
    ceiling: float


def allocate(
    budget_watts: float,
    gpus: Iterable[BudgetGpu],
    previous_shares: Mapping[str, float] | None = None,
    hysteresis_fraction: float = 0.0,
    *,
    demand_margin: float | None = DEFAULT_DEMAND_MARGIN,
    dead_band_watts: float = 0.0,
) -> BudgetAllocation:
    """Share ``budget_watts`` among ``gpus``; deterministic, O(n log n), never raises on odd numbers.

    Args:
        budget_watts: The budget; a non-finite or negative value counts as 0.
        gpus: The covered GPUs (a repeated UUID counts once, the first in (node, uuid) order).
        previous_shares: Last round's node shares, for hysteresis.
        hysteresis_fraction: Relative change below which a node keeps its previous share.
        demand_margin: Measured power + this fraction of the ceiling is what a GPU asks for;
            ``None``: every GPU asks for its ceiling.
        dead_band_watts: A node also keeps its previous share when it moved by at most this many
            watts (small shares would otherwise follow sensor noise).
    """
    budget = float(budget_watts) if _finite(budget_watts) and budget_watts > 0 else 0.0
    items = _clean(gpus, demand_margin)
    minimum = math.fsum(g.floor for g in items)
    demand = math.fsum(g.demand for g in items)
    nodes = len({g.node for g in items})
    if not items:
        return BudgetAllocation(budget, {}, {}, {}, True, 0.0, 0.0, 0, 0, f"budget {budget:.0f} W covers no GPU")

    if minimum > budget:
        alloc = {g.uuid: g.floor for g in items}
        caps = {g.uuid: g.floor for g in items if g.floor < g.ceiling}
        floors = _per_node(items, alloc)
        shares = {n: _down(w * budget / minimum) for n, w in floors.items()}
        message = (
            f"infeasible: the {len(items)} GPU(s) on {nodes} node(s) need at least {minimum:.0f} W, "
            f"{minimum - budget:.0f} W over the budget of {budget:.0f} W; every GPU held at its minimum"
        )
        final, held = _hysteresis(shares, shares, budget, previous_shares, hysteresis_fraction, dead_band_watts)
        final = _trim(final, budget)
        return BudgetAllocation(budget, final, alloc, caps, False, minimum, demand, len(caps), held, message)

    alloc, cut, lowest_cut = _fill(items, budget - minimum)
    caps = {g.uuid: cut[g.uuid] for g in items if g.uuid in cut}  # (node, uuid) order, like everything else
    given = _per_node(items, alloc)
    shares = _spread(items, alloc, given, budget)
    final, held = _hysteresis(shares, given, budget, previous_shares, hysteresis_fraction, dead_band_watts)
    final = _trim(final, budget)
    if caps:
        message = (
            f"demand {demand:.0f} W exceeds the budget of {budget:.0f} W: {len(caps)} of {len(items)} GPU(s) cut, "
            f"lowest priority first, up to {_rank_label(lowest_cut)}"
        )
    else:
        message = f"demand {demand:.0f} W of {len(items)} GPU(s) on {nodes} node(s) fits the budget of {budget:.0f} W"
    if held:
        message += f"; {held} node share(s) kept by hysteresis"
    return BudgetAllocation(budget, final, alloc, caps, True, minimum, demand, len(caps), held, message)


def _clean(gpus: Iterable[BudgetGpu], margin: float | None) -> list[_Gpu]:
    """Sanitised GPUs in (node, uuid) order, one per UUID: floor ≤ demand ≤ ceiling, all finite."""
    fraction = None if margin is None else (float(margin) if _finite(margin) and margin > 0 else 0.0)
    seen: set[str] = set()
    out: list[_Gpu] = []
    for g in sorted(gpus, key=lambda g: (g.node, g.uuid)):
        if g.uuid in seen:
            continue
        seen.add(g.uuid)
        floor = float(g.floor_watts) if _finite(g.floor_watts) and g.floor_watts > 0 else 0.0
        ceiling = max(float(g.ceiling_watts), floor) if _finite(g.ceiling_watts) else floor
        if fraction is None or not _finite(g.measured_watts):
            want = ceiling
        else:
            want = max(float(g.measured_watts), 0.0) + fraction * ceiling
        rank = int(g.priority_rank) if _finite(g.priority_rank) else IDLE_RANK
        out.append(_Gpu(g.node, g.uuid, rank, floor, min(max(want, floor), ceiling), ceiling))
    return out


def _fill(items: list[_Gpu], spare: float) -> tuple[dict[str, float], dict[str, float], int | None]:
    """Floors plus ``spare`` watts by priority class; returns allocations, caps and the highest cut rank."""
    alloc = {g.uuid: g.floor for g in items}
    caps: dict[str, float] = {}
    lowest_cut: int | None = None
    by_rank = sorted(items, key=lambda g: -g.rank)  # stable: (node, uuid) order within a class
    for rank, group in itertools.groupby(by_rank, key=lambda g: g.rank):
        members = list(group)
        need = math.fsum(g.demand - g.floor for g in members)
        if need <= spare:
            for g in members:
                alloc[g.uuid] = g.demand
            spare -= need
            continue
        level = _water_level(members, math.fsum(g.floor for g in members) + max(spare, 0.0))
        spare = 0.0
        if lowest_cut is None:
            lowest_cut = rank
        for g in members:
            watts = min(max(level, g.floor), g.demand)
            if watts < g.demand:
                watts = max(_down(watts), g.floor)  # round down: the sum must not creep above the budget
                caps[g.uuid] = watts
            alloc[g.uuid] = watts
    return alloc, caps, lowest_cut


def _water_level(members: list[_Gpu], target: float) -> float:
    """The level L with ``Σ clamp(L, floor, demand) = target`` (Σ floors ≤ target ≤ Σ demands)."""
    return water_level({g.uuid: g.floor for g in members}, {g.uuid: g.demand for g in members}, target)


def _per_node(items: list[_Gpu], watts: Mapping[str, float]) -> dict[str, float]:
    parts: dict[str, list[float]] = defaultdict(list)
    for g in items:
        parts[g.node].append(watts[g.uuid])
    return {node: math.fsum(values) for node, values in parts.items()}


def _spread(
    items: list[_Gpu], alloc: Mapping[str, float], given: Mapping[str, float], budget: float
) -> dict[str, float]:
    """Node shares: what each node's GPUs were given plus the unallocated rest, by room to rise."""
    rest = budget - math.fsum(given.values())
    if rest <= 0:
        return {n: _down(w) for n, w in given.items()}
    rooms: dict[str, list[float]] = defaultdict(list)
    for g in items:
        rooms[g.node].append(g.ceiling - alloc[g.uuid])
    room = {n: math.fsum(r) for n, r in rooms.items()}
    weights = room if math.fsum(room.values()) > 0 else dict(given)
    total = math.fsum(weights.values())
    if total <= 0:
        weights, total = dict.fromkeys(given, 1.0), float(len(given))
    return {n: _down(w + rest * weights[n] / total) for n, w in given.items()}


def _hysteresis(
    shares: Mapping[str, float],
    need: Mapping[str, float],
    budget: float,
    previous: Mapping[str, float] | None,
    fraction: float,
    dead_band: float = 0.0,
) -> tuple[dict[str, float], int]:
    """Keep previous shares that moved by little, within the budget and above ``need``.

    Little: at most ``fraction`` of the previous share, or ``dead_band`` watts, whichever is more.
    """
    final = dict(shares)
    fraction = fraction if _finite(fraction) and fraction > 0 else 0.0
    dead_band = dead_band if _finite(dead_band) and dead_band > 0 else 0.0
    if not previous or (fraction == 0 and dead_band == 0):
        return final, 0
    held: dict[str, float] = {}
    for node, new in shares.items():
        old = previous.get(node)
        if not _finite(old) or old <= 0 or old == new or abs(new - old) > max(fraction * old, dead_band):
            continue
        if old < min(need.get(node, new), new):
            continue  # never starve what the node's GPUs were allocated
        held[node] = old
    final.update(held)
    excess = math.fsum(final.values()) - budget
    if excess > 0:
        raising = sorted((-(held[n] - shares[n]), n) for n in held if held[n] > shares[n])
        for negative, node in raising:
            if excess <= 0:
                break
            final[node] = shares[node]
            del held[node]
            excess += negative
        if math.fsum(final.values()) > budget:  # rounding left a sliver: give up holding rather than exceed
            return dict(shares), 0
    return final, len(held)


@dataclass(frozen=True)
class Rebalance:
    """A budget's last re-share of its watts: on what footing, and when (see :func:`rebalance_due`)."""

    footing: str
    at: datetime


def footing(budget_watts: float, hysteresis_fraction: float, gpus: Iterable[BudgetGpu]) -> str:
    """A digest of what a budget's shares rest on besides measured power.

    The budget, the covered nodes and each GPU's priority and ceiling (whole watts): what pods,
    annotations and policies decide. Measured power (and the floor of a GPU without pods, its idle
    draw) is left out on purpose: it moves with every agent cut.
    """
    digest = hashlib.blake2b(repr((float(budget_watts), float(hysteresis_fraction))).encode(), digest_size=12)
    for g in sorted(gpus, key=lambda g: (g.node, g.uuid)):
        ceiling = round(g.ceiling_watts) if _finite(g.ceiling_watts) else -1
        digest.update(f"|{g.node}/{g.uuid}/{g.priority_rank}/{ceiling}".encode())
    return digest.hexdigest()


def rebalance_due(
    previous: Rebalance | None,
    current_footing: str,
    now: datetime,
    interval_s: float,
    previous_shares: Mapping[str, float],
    nodes: Iterable[str],
    budget_watts: float,
) -> bool:
    """Whether the budget's node shares may be computed afresh in this round.

    Yes when there is no earlier re-share, its footing changed (pods, priorities, targets, the
    policy), a covered node has no share, the shares in force no longer fit the budget, or the
    rebalance interval has passed. Otherwise the shares in force stand: only measured power moved,
    and following it round by round is how the operator and the agents would chase each other.
    """
    if previous is None or previous.footing != current_footing:
        return True
    covered = list(nodes)
    if set(previous_shares) != set(covered) or not all(_finite(previous_shares[n]) for n in covered):
        return True
    if math.fsum(previous_shares[n] for n in covered) > budget_watts + _WRITTEN_RESOLUTION_WATTS * len(covered):
        return True
    return (now - previous.at).total_seconds() >= interval_s


def within_dead_band(
    shares: Mapping[str, float], previous: Mapping[str, float], fraction: float, dead_band_watts: float
) -> bool:
    """Whether every node's new share is within the dead band of its share in force.

    The band is ``fraction`` of the share in force or ``dead_band_watts``, whichever is more. Under a
    binding budget the shares add up to the budget, so their moves cancel out: some nodes gain what
    others lose, and :func:`allocate`'s per-node hysteresis (which never holds a node below what its
    GPUs were allocated) lets them all through. Measured power alone should not move a share by a
    few percent, so a re-share whose every move is that small keeps the shares in force, as a whole.
    """
    if set(shares) != set(previous):
        return False
    for node, new in shares.items():
        old = previous[node]
        if not _finite(old) or abs(new - old) > max(fraction * old, dead_band_watts):
            return False
    return True


def _rank_label(rank: int | None) -> str:
    return "GPUs without pods" if rank == IDLE_RANK else f"priority {rank}"


def _trim(shares: dict[str, float], budget: float) -> dict[str, float]:
    """Take a floating-point sliver above the budget off the largest share, so the sum never exceeds it."""
    excess = math.fsum(shares.values()) - budget
    if excess > 0 and shares:
        node = min(shares, key=lambda n: (-shares[n], n))
        shares[node] = max(shares[node] - math.ceil(excess * _MILLIWATT) / _MILLIWATT, 0.0)
    return shares


def _down(watts: float) -> float:
    """Round down to the milliwatt (shares and caps are written with that precision)."""
    return math.floor(watts * _MILLIWATT) / _MILLIWATT


def _finite(value: object) -> TypeGuard[float]:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool)  # ints are always finite
