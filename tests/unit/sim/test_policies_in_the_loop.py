"""The real planner and agents in virtual time: what a policy changes, and what it must not."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wattplane.sim.carbon import CarbonTrack
from wattplane.sim.catalog import Catalog
from wattplane.sim.engine import SimOptions
from wattplane.sim.fleet import expand, parse_fleet
from wattplane.sim.jobs import Demand, JobSpec, synthetic_training
from wattplane.sim.results import RunResult
from wattplane.sim.scenario import RunSpec, Scenario, load_policies, run_all, run_specs, with_budget

CATALOG = Catalog.builtin()
TRACE = Path(__file__).resolve().parents[3] / "operator" / "wattplane" / "sim" / "data"
TRACE /= "electricitymaps_US-CAL-CISO_2023_hourly.csv"
CARBON = CarbonTrack.load(TRACE, datetime(2023, 6, 1, tzinfo=UTC))

NO_CHANGE = """
apiVersion: wattplane.io/v1alpha1
kind: EnergyPolicy
metadata: {name: no-change}
spec:
  limits: {maxFractionOfDefault: 1.0}
"""


def scenario(jobs: list[JobSpec], *, fleet: str = "2x4xA40", hours: float = 4.0) -> Scenario:
    return Scenario(
        nodes=expand(parse_fleet(fleet)),
        catalog=CATALOG,
        jobs=tuple(jobs),
        carbon=CARBON,
        options=SimOptions(duration_s=hours * 3600.0, timeline_step_s=600.0),
    )


def training(seed: int, gpus: int = 8, hours: float = 4.0) -> list[JobSpec]:
    return synthetic_training(
        seed=seed, duration_s=hours * 3600.0, fleet_gpus=gpus, workloads=CATALOG.families("A40"), median_hours=1.0
    )


def physics(result: RunResult) -> dict[str, object]:
    """Everything a run measured about the GPUs and jobs (not its own bookkeeping counters)."""
    data = dataclasses.asdict(result)
    for key in ("name", "plan_rounds", "agent_ticks", "events", "wall_s", "notes"):
        data.pop(key)
    return data


def test_a_policy_that_changes_nothing_reproduces_uncapped_exactly() -> None:
    s = scenario(training(seed=11))
    base, same = run_all(s, [RunSpec("uncapped", baseline="uncapped"), RunSpec("no-change", load_policies(NO_CHANGE))])
    assert same.plan_rounds > 100  # the planner really ran ...
    assert physics(same) == physics(base)  # ... and not one number moved


def test_static_cap_through_the_planner_caps_training_and_restores_at_the_end() -> None:
    s = scenario(training(seed=12))
    specs = run_specs(s, ["static-cap"], {})
    base, capped = run_all(s, specs)
    assert capped.energy_kwh < base.energy_kwh
    for r in capped.receipts:
        # 70 % of 300 W, after at most the debounce (1 s) at the default limit when the job starts
        assert r.mean_limit_watts <= 210.0 + 90.0 * 1.0 / max(r.end_s - r.start_s, 1.0) + 1e-6  # type: ignore[operator]


def test_inference_is_not_selected_by_the_training_cap() -> None:
    service = JobSpec(
        id="svc",
        submit_s=0.0,
        gpus=1,
        workload="squad/bert_base_uncased",
        kind="inference",
        demand=Demand.constant(0.9),
    )
    s = scenario([service], hours=1.0)
    base, capped = run_all(s, run_specs(s, ["static-cap"], {}))
    assert physics(capped) == physics(base)


@settings(max_examples=5, deadline=None)
@given(low=st.floats(min_value=0.5, max_value=0.9), extra=st.floats(min_value=0.01, max_value=0.3))
def test_more_budget_never_hurts(low: float, extra: float) -> None:
    """A larger budget never costs work done within the run, beyond the agents' path dependence.

    The agents cut and restore with hysteresis, so the outcome is path-dependent and not monotone to the
    last digit: over 42 random budget pairs in this range (3 job mixes) the worst reversal was 0.11 % of
    all work and 0.59 % of the high-priority work; nearer the floor (46 % vs 47.5 % of nameplate, the
    floor is 33 %) 0.7 % of all work (see docs/results.md). The bounds keep that from growing unnoticed;
    the exact cases are the next two tests.
    """
    jobs = [dataclasses.replace(j, priority="high" if i % 3 == 0 else "low") for i, j in enumerate(training(seed=5))]
    s = scenario(jobs, hours=2.0)
    polca = run_specs(s, ["polca"], {})[1].policies
    nameplate = s.nameplate_watts
    small = RunSpec("small", with_budget(polca, low * nameplate))
    large = RunSpec("large", with_budget(polca, min(1.0, low + extra) * nameplate))
    base, a, b = run_all(s, [RunSpec("uncapped", baseline="uncapped"), small, large])
    work = [sum(r.window_work_gpu_s for r in run.receipts) for run in (a, b, base)]
    assert work[0] <= work[1] * 1.0025 and work[1] <= work[2] * (1 + 1e-9)
    assert a.high_priority_work_gpu_s <= b.high_priority_work_gpu_s * 1.01
    assert b.high_priority_work_gpu_s <= base.high_priority_work_gpu_s * (1 + 1e-9)


def test_a_budget_that_never_binds_changes_nothing() -> None:
    s = scenario(training(seed=5), hours=2.0)
    polca = run_specs(s, ["polca"], {})[1].policies
    base, roomy = run_all(s, [RunSpec("uncapped", baseline="uncapped"), RunSpec("roomy", with_budget(polca, 1e6))])
    assert roomy.agent_ticks > 0
    assert physics(roomy) | {"scopes": ()} == physics(base) | {"scopes": ()}


def test_skipping_idle_agent_ticks_is_exact() -> None:
    """The simulator skips ticks that cannot change anything; ticking every second gives the same run."""
    jobs = [dataclasses.replace(j, priority="high" if i % 3 == 0 else "low") for i, j in enumerate(training(seed=5))]
    s = scenario(jobs, hours=1.0)
    spec = run_specs(dataclasses.replace(s, budget_fraction=0.5), ["polca"], {})[1]
    every = dataclasses.replace(s, options=dataclasses.replace(s.options, skip_idle_ticks=False))
    (skipping,) = run_all(s, [spec])
    (ticking,) = run_all(every, [spec])
    assert ticking.agent_ticks > 5 * skipping.agent_ticks
    assert physics(ticking) == physics(skipping)


@pytest.mark.parametrize("fraction", [0.5, 0.7])
def test_the_agents_hold_a_feasible_budget_within_a_tick(fraction: float) -> None:
    s = scenario(training(seed=3), hours=3.0)
    specs = run_specs(dataclasses.replace(s, budget_fraction=fraction), ["polca"], {})
    base, budgeted = run_all(s, specs)
    scope = budgeted.scopes[0]
    assert scope.watts == pytest.approx(fraction * s.nameplate_watts)
    assert base.scopes[0].over_s > 0  # the uncapped fleet does exceed it
    assert scope.longest_over_s <= 2.0  # the agents cut within one tick of a job starting
