"""Status reports the node budget (BudgetMet, per-GPU budget limits) and GPUs that stop answering."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from wattplane.agent.budget import BudgetDecision, BudgetState
from wattplane.agent.engine import NodeEngine
from wattplane.agent.gpu.errors import GpuLostError
from wattplane.agent.gpu.simulated import SimulatedBackend
from wattplane.agent.journal import Journal
from wattplane.agent.status import PodEnergyLedger, budget_condition, build_status
from wattplane.api.conditions import get_condition
from wattplane.api.v1alpha1.gpunode import GpuNodeStatus, GpuTarget

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def status_of(engine: NodeEngine) -> GpuNodeStatus:
    return build_status(
        backend="sim",
        devices=engine.devices,
        readings=engine.readings,
        constraints=engine.constraints,
        outcomes=engine.outcomes,
        assignment={},
        ledger=PodEnergyLedger(),
        plan_generation=3,
        previous_conditions=[],
        problems=[],
        now=NOW,
        last_good=engine.last_good,
        budget=engine.budget,
        dry_run=engine.dry_run,
    )


def decision(budget: float | None, *, limits: dict[str, float] | None = None, feasible: bool = True) -> BudgetDecision:
    limits = limits or {}
    return BudgetDecision(budget, 900.0, 400.0, limits, BudgetState(limits), "hold", feasible)


@pytest.mark.parametrize(
    ("budget", "power", "status", "reason"),
    [
        (None, 500.0, "True", "NoBudget"),
        (decision(None), 500.0, "True", "NoBudget"),
        (decision(1000.0), 500.0, "True", "WithinBudget"),
        (decision(1000.0, limits={"GPU-a": 150.0}), 990.0, "True", "Limiting"),
        (decision(1000.0, limits={"GPU-a": 150.0}), 1010.0, "False", "OverBudget"),
        (decision(300.0, limits={"GPU-a": 100.0}, feasible=False), 420.0, "False", "Infeasible"),
    ],
)
def test_budget_met_condition(budget: BudgetDecision | None, power: float, status: str, reason: str) -> None:
    cond = budget_condition(budget, power)
    assert (cond.type, cond.status, cond.reason) == ("BudgetMet", status, reason)
    if budget is not None and budget.budget_watts is not None:
        assert f"{budget.budget_watts:.0f} W" in cond.message


def test_a_dry_run_budget_says_what_it_would_do() -> None:
    cond = budget_condition(decision(1000.0, limits={"GPU-a": 150.0, "GPU-b": 120.0}), 1200.0, dry_run=True)
    assert (cond.status, cond.reason) == ("False", "DryRun")
    assert "would limit 2 GPU(s)" in cond.message


def test_status_carries_budget_limits_per_gpu_and_the_condition() -> None:
    t = [0.0]
    backend = SimulatedBackend(node_name="n", gpu_count=3, clock=lambda: t[0])
    devices = backend.devices()
    for d in devices:
        d.set_load(1.0)
    engine = NodeEngine(backend, Journal(None))
    plan = [
        GpuTarget(uuid=d.identity.uuid, power_limit_watts=d.constraints().max_watts, priority=i)
        for i, d in enumerate(devices)
    ]
    engine.reconcile(plan)
    drawn = sum(r.power_watts for r in engine.read_all().values() if not isinstance(r, Exception))
    engine.reconcile(plan, node_budget_watts=0.8 * drawn)
    status = status_of(engine)
    limited = [g for g in status.gpus if g.budget_limit_watts is not None]
    assert limited, "some GPU must be held back"
    for g in limited:
        assert g.reason == "NodeBudget"
        assert g.power_limit_watts == pytest.approx(g.budget_limit_watts)
        assert g.target_watts is not None and g.budget_limit_watts < g.target_watts
        assert "node budget" in g.message
    assert status.gpus[2].budget_limit_watts is None  # highest priority, untouched
    cond = get_condition(status.conditions, "BudgetMet")
    assert cond is not None and cond.reason in ("Limiting", "OverBudget")
    # The wire form carries the new fields under their camelCase names.
    wire = status.to_wire()
    assert any("budgetLimitWatts" in g for g in wire["gpus"])


def test_a_gpu_that_stops_answering_stays_in_status_marked_stale_and_recovers() -> None:
    t = [0.0]
    backend = SimulatedBackend(node_name="n", gpu_count=3, clock=lambda: t[0])
    devices = backend.devices()
    engine = NodeEngine(backend, Journal(None))
    plan = [GpuTarget(uuid=d.identity.uuid, power_limit_watts=d.constraints().min_watts + 50) for d in devices]
    engine.reconcile(plan)
    before = status_of(engine).gpus[1]

    devices[1].inject_fault("read", GpuLostError("fell off the bus"))
    t[0] = 5.0
    engine.reconcile(plan)
    status = status_of(engine)
    lost = status.gpus[1]
    assert (lost.uuid, lost.state, lost.reason, lost.stale) == (devices[1].identity.uuid, "Error", "GpuLost", True)
    assert lost.power_limit_watts == before.power_limit_watts  # last known values, flagged stale
    assert [g.state for g in (status.gpus[0], status.gpus[2])] == ["Applied", "Applied"]
    ready = get_condition(status.conditions, "Ready")
    assert ready is not None and (ready.status, ready.reason) == ("False", "GpuErrors")
    assert "fell off the bus" in ready.message
    # Node power counts only GPUs measured now.
    assert status.node_power_watts == pytest.approx(status.gpus[0].power_watts + status.gpus[2].power_watts, abs=1e-2)

    devices[1].inject_fault("read", None)
    engine.reconcile(plan)
    healed = status_of(engine)
    assert (healed.gpus[1].state, healed.gpus[1].stale) == ("Applied", False)
    ready = get_condition(healed.conditions, "Ready")
    assert ready is not None and ready.status == "True"
