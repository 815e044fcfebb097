"""A budget section over its nodes: which nodes it covers, each node's share, and the cut order.

The operator owns the node shares and nothing else: it never lowers a GPU's target for a budget.
Which GPUs give way, and how far, is the agent's decision alone, on measured power every tick
(:mod:`wattplane.planner.budget` says why). A share moves when the budget's footing changes, and
otherwise at most once per ``budget_interval_s``, past a dead band.

A node belongs to at most one budget: the highest-ranked policy whose node selector matches it.

Split in two so a round can skip the dear half: :func:`share_out` works on every covered GPU and
depends on the fleet only; :func:`settle_shares` decides whether the shares in force stand, which
depends on the round's time as well, and costs next to nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from wattplane.api.v1alpha1.energypolicy import BudgetStatus
from wattplane.api.v1alpha1.gpunode import BudgetPriority
from wattplane.planner import budget as budgeting
from wattplane.planner.schedule import BudgetTarget
from wattplane.planner.snapshot import GpuView, PolicyView


@dataclass(frozen=True)
class Sharing:
    """A budget's allocation over its covered nodes, before the shares in force are weighed."""

    nodes: tuple[str, ...]
    allocation: budgeting.BudgetAllocation
    footing: str
    previous: Mapping[str, float]
    dead_band_watts: float
    #: Each covered node's GPUs in cut order, for ``GpuNode.spec.budgetPriorities``.
    priorities: Mapping[str, tuple[BudgetPriority, ...]]
    measured_watts: float
    cut_gpus: int
    #: The target the shares were sized to (``allocation`` is empty when no target is in force).
    target: BudgetTarget
    #: Each covered node's GPUs' summed default limits (fractional windows and ramps are shares of it).
    node_reference: Mapping[str, float]


@dataclass(frozen=True)
class Outcome:
    """What a budget decided this round."""

    shares: Mapping[str, float]
    rebalance: budgeting.Rebalance
    status: BudgetStatus
    met: bool
    message: str


def budget_floor(gpu: GpuView) -> float:
    """The least a GPU can be held to: its minimum limit, or an idle GPU's lower draw.

    Agents enforce node shares on measured power, so an idle board drawing 30 W needs 30 W of its
    node's share, not the 100 W of its minimum limit; reserving the latter starves busy nodes.
    """
    if not gpu.pods and 0 < gpu.power_watts < gpu.min_watts:
        return gpu.power_watts
    return gpu.min_watts


def share_out(
    policy: PolicyView,
    nodes: Sequence[str],
    gpus_of: Mapping[str, Sequence[GpuView]],
    ceiling_of: Callable[[GpuView], float],
    rank_of: Callable[[GpuView], int],
    previous_node_budgets: Mapping[str, float],
    target: BudgetTarget,
) -> Sharing:
    """Allocate ``policy``'s budget target over its covered ``nodes`` (sorted), GPU by GPU.

    ``ceiling_of`` gives the highest limit the other sections allow a GPU (its target, or its
    default without one); ``rank_of`` its place in the cut order. Without a target in force
    (``target.watts`` is ``None``) nothing is shared out: the nodes run free.
    """
    spec = policy.spec.budget
    assert spec is not None
    entries = []
    priorities: dict[str, tuple[BudgetPriority, ...]] = {}
    measured: list[float] = []
    cut = 0
    for node in nodes:
        ranks = []
        for gpu in sorted(gpus_of[node], key=lambda g: g.index):
            rank = rank_of(gpu)
            ranks.append(BudgetPriority.model_construct(uuid=gpu.uuid, priority=rank))
            measured.append(gpu.power_watts)
            cut += gpu.budget_limited
            entries.append(
                budgeting.BudgetGpu(
                    node=node,
                    uuid=gpu.uuid,
                    priority_rank=rank,
                    floor_watts=budget_floor(gpu),
                    ceiling_watts=ceiling_of(gpu),
                    # A GPU the agent's budget loop holds down draws what it is allowed, not what it
                    # wants: its demand is its ceiling (else shares would shrink with every cut).
                    measured_watts=None if gpu.budget_limited else gpu.power_watts,
                )
            )
        priorities[node] = tuple(ranks)
    previous = {n: previous_node_budgets[n] for n in nodes if n in previous_node_budgets}
    watts = target.watts
    dead_band = 0.01 * watts / len(nodes) if nodes and watts is not None else 0.0
    allocation = (
        budgeting.allocate(watts, entries, previous, spec.hysteresis_fraction, dead_band_watts=dead_band)
        if watts is not None
        else budgeting.BudgetAllocation(0.0, {}, {}, {}, True, 0.0, 0.0, 0, 0, "no budget in force")
    )
    return Sharing(
        nodes=tuple(nodes),
        allocation=allocation,
        footing=budgeting.footing(watts if watts is not None else -1.0, spec.hysteresis_fraction, entries),
        previous=previous,
        dead_band_watts=dead_band,
        priorities=priorities,
        measured_watts=math.fsum(measured),
        cut_gpus=cut,
        target=target,
        node_reference=reference_by_node(nodes, gpus_of),
    )


def reference_by_node(nodes: Sequence[str], gpus_of: Mapping[str, Sequence[GpuView]]) -> dict[str, float]:
    """Each node's GPUs' summed default limits: the full power a node set can ask for."""
    return {node: math.fsum(g.default_watts for g in gpus_of[node]) for node in nodes}


def settle_shares(
    policy: PolicyView,
    sharing: Sharing,
    last: budgeting.Rebalance | None,
    now: datetime,
    interval_s: float,
) -> Outcome:
    """The shares in force after this round: the new allocation, or the old shares kept."""
    spec = policy.spec.budget
    assert spec is not None
    allocation, previous, target = sharing.allocation, sharing.previous, sharing.target
    if target.watts is None:
        return Outcome(
            shares={},
            rebalance=budgeting.Rebalance(sharing.footing, now),
            status=_status(sharing, {}, allocation),
            met=True,
            message="no budget in force: no standing budget and no window active"
            + ("; nodes ramping back up" if target.ramp_watts_per_second is not None else ""),
        )
    watts = target.watts
    shares: Mapping[str, float] = allocation.node_shares
    message = allocation.message
    if target.window is not None:
        message = f"window {target.window}: target {watts:.0f} W; {message}"
    if not budgeting.rebalance_due(last, sharing.footing, now, interval_s, previous, sharing.nodes, watts):
        assert last is not None
        rebalance = last
        shares = previous  # only measured power moved since the last re-share: the shares stand
        message += "; node shares kept until the next rebalance"
    elif (
        last is not None
        and last.footing == sharing.footing
        and budgeting.within_dead_band(
            allocation.node_shares, previous, spec.hysteresis_fraction, sharing.dead_band_watts
        )
    ):
        rebalance = budgeting.Rebalance(sharing.footing, now)
        shares = previous  # a re-share on measured power alone that moves nothing far: no new plan
        message += "; node shares kept (every change within the dead band)"
    else:
        rebalance = budgeting.Rebalance(sharing.footing, now)
    met = allocation.feasible and sharing.measured_watts <= watts * (1 + spec.hysteresis_fraction)
    return Outcome(
        shares=shares, rebalance=rebalance, status=_status(sharing, shares, allocation), met=met, message=message
    )


def _status(sharing: Sharing, shares: Mapping[str, float], allocation: budgeting.BudgetAllocation) -> BudgetStatus:
    target = sharing.target
    watts = target.watts or 0.0
    return BudgetStatus(
        watts=watts,
        standing_watts=target.standing_watts,
        window=target.window,
        ramp_watts_per_second=target.ramp_watts_per_second,
        shortfall_watts=round(max(sharing.measured_watts - watts, 0.0), 3) if target.watts is not None else 0.0,
        next_change=(
            target.next_change_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if target.next_change_at else None
        ),
        allocated_watts=round(math.fsum(shares.values()), 3),
        measured_watts=round(sharing.measured_watts, 3),
        minimum_watts=round(allocation.minimum_watts, 3),
        nodes=len(sharing.nodes),
        # The agents' cuts, as they report them: the operator plans shares, not cuts.
        cut_gpus=sharing.cut_gpus,
    )
