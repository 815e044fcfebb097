"""The engine enforces the node budget on simulated GPUs: within one tick, by priority, with hysteresis.

Watts are read from the devices (readings and constraints), never assumed from the power model, so
these tests hold whatever curve the simulator is calibrated with.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from wattplane.agent.budget import BudgetParams
from wattplane.agent.engine import NodeEngine
from wattplane.agent.gpu.base import GpuReading
from wattplane.agent.gpu.errors import GpuNoPermissionError
from wattplane.agent.gpu.simulated import SimulatedBackend, SimulatedGpu
from wattplane.agent.journal import Journal
from wattplane.api.v1alpha1.gpunode import GpuTarget

PARAMS = BudgetParams(hysteresis_ratio=0.05, restore_after_ticks=3, restore_step_ratio=0.1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def backend(clock: Clock) -> SimulatedBackend:
    sim = SimulatedBackend(node_name="node-b", gpu_count=4, model="A40", clock=clock)
    for device in sim.devices():
        device.set_load(1.0)
    return sim


def devices(backend: SimulatedBackend) -> list[SimulatedGpu]:
    return list(backend.devices())


def reading(device: SimulatedGpu) -> GpuReading:
    return device.read()


def node_power(backend: SimulatedBackend) -> float:
    return sum(reading(d).power_watts for d in backend.devices())


def limit(device: SimulatedGpu) -> float:
    return reading(device).power_limit_watts


def at_max(backend: SimulatedBackend, priorities: list[int]) -> list[GpuTarget]:
    return [
        GpuTarget(uuid=d.identity.uuid, power_limit_watts=d.constraints().max_watts, priority=p, policy="fast")
        for d, p in zip(backend.devices(), priorities, strict=True)
    ]


def test_a_breach_is_answered_within_the_tick_that_measured_it(backend: SimulatedBackend, tmp_path: Path) -> None:
    g = devices(backend)
    engine = NodeEngine(backend, Journal(tmp_path / "j.json"), budget_params=PARAMS)
    plan = at_max(backend, [0, 0, 5, 10])
    engine.reconcile(plan)
    drawn = node_power(backend)
    floor = sum(min(reading(d).power_watts, d.constraints().min_watts) for d in g)
    budget = floor + 0.6 * (drawn - floor)  # feasible, and well below what the node draws
    assert drawn > budget

    limits_before = [limit(d) for d in g]
    engine.reconcile(plan, node_budget_watts=budget)

    # The tick that measured the breach lowered limits before it ended.
    assert engine.budget is not None and engine.budget.action == "cut"
    assert engine.budget.measured_watts == pytest.approx(drawn)
    assert [limit(d) for d in g] != limits_before
    assert all(limit(d) <= before for d, before in zip(g, limits_before, strict=True))
    # A board may draw a little above a low cap, which no tick can know before trying: the next
    # ticks measure that and finish the job.
    for _ in range(3):
        if node_power(backend) <= budget:
            break
        engine.reconcile(plan, node_budget_watts=budget)
    assert node_power(backend) <= budget + 1e-6
    # The priority-10 GPU keeps its target; every GPU of lower priority than a cut one is at minimum.
    assert limit(g[3]) == pytest.approx(g[3].constraints().max_watts)
    cut_priorities = [p for d, p in zip(g, [0, 0, 5, 10], strict=True) if limit(d) < d.constraints().max_watts]
    for d, p in zip(g, [0, 0, 5, 10], strict=True):
        if cut_priorities and p < max(cut_priorities):
            assert limit(d) == pytest.approx(d.constraints().min_watts)
    outcome = engine.outcomes[g[0].identity.uuid]
    assert outcome.reason == "NodeBudget" and outcome.budget_limit_watts == pytest.approx(limit(g[0]))
    assert "node budget" in outcome.message
    assert engine.stats.budget_cuts == 1


def test_limits_come_back_only_after_calm_ticks_in_steps(
    backend: SimulatedBackend, tmp_path: Path, clock: Clock
) -> None:
    g = devices(backend)
    engine = NodeEngine(backend, Journal(tmp_path / "j.json"), budget_params=PARAMS)
    plan = at_max(backend, [0, 1, 2, 3])
    engine.reconcile(plan)
    budget = 0.7 * node_power(backend)
    engine.reconcile(plan, node_budget_watts=budget)
    cut = {d.identity.uuid: limit(d) for d in g if limit(d) < d.constraints().max_watts}
    assert cut

    for d in g:  # the work winds down: plenty of headroom
        d.set_load(0.0)
    history: list[dict[str, float]] = []
    for _ in range(60):
        clock.now += 1
        engine.reconcile(plan, node_budget_watts=budget)
        history.append({d.identity.uuid: limit(d) for d in g})
    first_rise = next(i for i, limits in enumerate(history) if any(limits[u] > cut[u] for u in cut))
    assert first_rise == PARAMS.restore_after_ticks - 1  # not before k calm ticks
    # Each step raises a limit by at most restore_step_ratio of its range.
    for before, after in zip([{u: cut[u] for u in cut}, *history], history, strict=False):
        for u in cut:
            d = next(x for x in g if x.identity.uuid == u)
            c = d.constraints()
            assert after[u] - before[u] <= PARAMS.restore_step_ratio * (c.max_watts - c.min_watts) + 1e-6
    assert all(history[-1][d.identity.uuid] == pytest.approx(d.constraints().max_watts) for d in g)
    assert engine.budget is not None and engine.budget.limits == {}


def test_an_untargeted_gpu_is_capped_for_the_budget_and_restored_exactly_after(
    backend: SimulatedBackend, tmp_path: Path, clock: Clock
) -> None:
    g = devices(backend)
    g[1].set_power_limit_watts(260.0)  # a site's own limit, not the default
    journal = Journal(tmp_path / "j.json")
    engine = NodeEngine(backend, journal, budget_params=PARAMS)
    plan = [GpuTarget(uuid=g[0].identity.uuid, power_limit_watts=g[0].constraints().max_watts, priority=5)]
    engine.reconcile(plan)
    budget = 0.6 * node_power(backend)
    engine.reconcile(plan, node_budget_watts=budget)
    assert limit(g[1]) < 260.0
    assert journal.get(g[1].identity.uuid) is not None  # journaled before the first write
    assert engine.outcomes[g[1].identity.uuid].state == "Applied"
    assert engine.outcomes[g[1].identity.uuid].target_watts is None

    for _ in range(80):  # the budget goes away: every limit returns, exactly
        clock.now += 1
        engine.reconcile(plan, node_budget_watts=None)
    assert limit(g[1]) == 260.0
    assert journal.get(g[1].identity.uuid) is None
    assert engine.outcomes[g[1].identity.uuid].state == "Default"


def test_a_restarted_engine_keeps_the_cuts_instead_of_flapping(backend: SimulatedBackend, tmp_path: Path) -> None:
    plan = at_max(backend, [0, 0, 1, 1])
    NodeEngine(backend, Journal(tmp_path / "j.json"), budget_params=PARAMS).reconcile(plan)
    budget = 0.7 * node_power(backend)
    NodeEngine(backend, Journal(tmp_path / "j.json"), budget_params=PARAMS).reconcile(plan, node_budget_watts=budget)
    limits = [limit(d) for d in backend.devices()]

    again = NodeEngine(backend, Journal(tmp_path / "j.json"), budget_params=PARAMS)
    again.reconcile(plan, node_budget_watts=budget)
    assert again.stats.writes == 0
    assert [limit(d) for d in backend.devices()] == limits


def test_a_gpu_that_refuses_writes_is_worked_around_and_recovers(backend: SimulatedBackend, tmp_path: Path) -> None:
    g = devices(backend)
    engine = NodeEngine(backend, Journal(tmp_path / "j.json"), budget_params=PARAMS)
    plan = at_max(backend, [0, 5, 5, 5])
    engine.reconcile(plan)
    floor = sum(d.constraints().min_watts for d in g[1:]) + reading(g[0]).power_watts
    budget = (floor + node_power(backend)) / 2
    g[0].inject_fault("set_power_limit", GpuNoPermissionError("needs CAP_SYS_ADMIN"))

    engine.reconcile(plan, node_budget_watts=budget)  # the lowest priority would be cut first, and fails
    bad = engine.outcomes[g[0].identity.uuid]
    assert (bad.state, bad.error_reason) == ("Error", "NoPermission")
    engine.reconcile(plan, node_budget_watts=budget)  # next tick: the others make room
    assert node_power(backend) <= budget + 1e-6
    assert {engine.outcomes[d.identity.uuid].state for d in g[1:]} == {"Applied"}
    assert engine.stats.errors_by_gpu[(g[0].identity.uuid, "NoPermission")] == 1

    g[0].inject_fault("set_power_limit", None)
    engine.reconcile(plan, node_budget_watts=budget)
    assert engine.outcomes[g[0].identity.uuid].state == "Applied"
    assert engine.stats.last_errors == {}


def test_dry_run_plays_the_budget_out_and_writes_nothing(backend: SimulatedBackend, tmp_path: Path) -> None:
    g = devices(backend)
    engine = NodeEngine(backend, Journal(tmp_path / "j.json"), dry_run=True, budget_params=PARAMS)
    plan = at_max(backend, [0, 0, 0, 9])
    engine.reconcile(plan)
    budget = 0.6 * node_power(backend)
    limits = [limit(d) for d in g]
    outcomes = engine.reconcile(plan, node_budget_watts=budget)
    assert [limit(d) for d in g] == limits
    assert engine.stats.writes == 0
    assert engine.budget is not None and engine.budget.limits
    limited = [o for o in outcomes.values() if o.budget_limit_watts is not None]
    assert limited and all(o.state == "DryRun" and "would set" in o.message for o in limited)
    assert engine.restore_all() == []
    assert [limit(d) for d in g] == limits


def test_an_infeasible_budget_puts_everyone_at_minimum_and_says_so(backend: SimulatedBackend, tmp_path: Path) -> None:
    g = devices(backend)
    engine = NodeEngine(backend, Journal(tmp_path / "j.json"), budget_params=PARAMS)
    plan = at_max(backend, [0, 1, 2, 3])
    engine.reconcile(plan, node_budget_watts=1.0)
    assert engine.budget is not None and not engine.budget.feasible
    assert [limit(d) for d in g] == [d.constraints().min_watts for d in g]
    assert "cannot be met" in engine.budget.describe()


def test_an_expired_plan_takes_its_budget_with_it(backend: SimulatedBackend, tmp_path: Path) -> None:
    g = devices(backend)
    engine = NodeEngine(backend, Journal(tmp_path / "j.json"), budget_params=PARAMS)
    before = [limit(d) for d in g]
    plan = at_max(backend, [0, 0, 0, 0])
    engine.reconcile(plan, node_budget_watts=0.5 * node_power(backend))
    assert [limit(d) for d in g] != before
    engine.reconcile(plan, expired=True, node_budget_watts=0.5 * node_power(backend))
    assert [limit(d) for d in g] == before


def test_a_backend_bug_on_one_gpu_is_contained(backend: SimulatedBackend, tmp_path: Path) -> None:
    g = devices(backend)
    engine = NodeEngine(backend, Journal(tmp_path / "j.json"), budget_params=PARAMS)
    g[1].inject_fault("read", ZeroDivisionError("division by zero"))  # not a GpuError: a bug
    g[2].inject_fault("set_power_limit", KeyError("oops"))
    plan = [GpuTarget(uuid=d.identity.uuid, power_limit_watts=d.constraints().min_watts + 30) for d in g]
    outcomes = engine.reconcile(plan, node_budget_watts=10_000.0)
    assert [outcomes[d.identity.uuid].state for d in g] == ["Applied", "Error", "Error", "Applied"]
    assert outcomes[g[1].identity.uuid].error_reason == "DriverError"
    assert "ZeroDivisionError" in outcomes[g[1].identity.uuid].message
    assert "KeyError" in outcomes[g[2].identity.uuid].message
    assert [limit(d) == d.constraints().min_watts + 30 for d in (g[0], g[3])] == [True, True]
