"""The node's budget in force follows a ramp: never faster than the rate, from the draw down, back up to release."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wattplane.agent.budget import BudgetParams
from wattplane.agent.engine import NodeEngine
from wattplane.agent.gpu.simulated import SimulatedBackend
from wattplane.agent.journal import Journal
from wattplane.agent.ramp import RampState, budget_in_force, ramping
from wattplane.api.v1alpha1.gpunode import GpuTarget


def test_without_a_rate_or_a_clock_the_target_holds_at_once() -> None:
    assert budget_in_force(None, 500.0, None, 10.0, 900.0, 1200.0).watts == 500.0
    assert budget_in_force(None, 500.0, 50.0, None, 900.0, 1200.0).watts == 500.0


def test_a_ramp_down_starts_at_the_draw_and_moves_at_the_rate() -> None:
    state = budget_in_force(None, 500.0, 50.0, 0.0, 900.0, 1200.0)
    assert state.watts == 900.0  # the line touches the node's power, whatever budget was in force
    state = budget_in_force(state, 500.0, 50.0, 2.0, 880.0, 1200.0)
    assert state.watts == pytest.approx(800.0)
    assert ramping(state)
    state = budget_in_force(state, 500.0, 50.0, 100.0, 520.0, 1200.0)
    assert state.watts == 500.0
    assert not ramping(state)


def test_a_node_already_below_the_target_gets_the_target_at_once() -> None:
    assert budget_in_force(None, 500.0, 50.0, 0.0, 300.0, 1200.0).watts == 500.0


def test_a_new_lower_target_restarts_the_ramp_from_the_draw_not_from_an_old_high_budget() -> None:
    standing = RampState(2000.0, 2000.0, 0.0)
    state = budget_in_force(standing, 600.0, 40.0, 1.0, 1000.0, 1200.0)
    assert state.watts == 1000.0


def test_climbing_out_of_a_window_rises_at_the_rate_and_releases_above_the_ceilings() -> None:
    state = RampState(600.0, 600.0, 0.0)
    state = budget_in_force(state, None, 100.0, 3.0, 590.0, 1200.0)
    assert state.watts == pytest.approx(900.0)
    assert ramping(state)
    state = budget_in_force(state, None, 100.0, 6.0, 880.0, 1200.0)
    assert state.watts is None  # 1200 W reached: nothing is held any more
    assert not ramping(state)


@given(
    steps=st.lists(
        st.tuples(
            st.floats(min_value=0.01, max_value=5.0),
            st.one_of(st.none(), st.floats(min_value=100.0, max_value=3000.0)),
            st.floats(min_value=0.0, max_value=3000.0),
        ),
        min_size=1,
        max_size=40,
    ),
    rate=st.floats(min_value=1.0, max_value=500.0),
)
def test_the_line_never_rises_faster_than_the_rate_and_only_drops_to_meet_the_draw(
    steps: list[tuple[float, float | None, float]], rate: float
) -> None:
    now, state = 0.0, None
    for dt, target, power in steps:
        now += dt
        before = state
        state = budget_in_force(state, target, rate, now, power, 3000.0)
        if before is None or before.watts is None or state.watts is None:
            continue
        if state.watts > before.watts:
            assert state.watts - before.watts <= rate * dt + 1e-6
        elif state.watts < before.watts and target is not None:
            # A drop beyond the rate only to meet the draw (the start of a new ramp down).
            assert state.watts >= before.watts - rate * dt - 1e-6 or state.watts >= min(power, before.watts) - 1e-6
            assert state.watts >= target - 1e-6


def test_the_engine_walks_the_node_down_the_ramp(tmp_path: Path) -> None:
    clock = [0.0]
    backend = SimulatedBackend(node_name="n", gpu_count=4, model="A40", clock=lambda: clock[0])
    for device in backend.devices():
        device.set_load(1.0)
    engine = NodeEngine(backend, Journal(tmp_path / "j.json"), budget_params=BudgetParams())
    targets = [
        GpuTarget(uuid=d.identity.uuid, power_limit_watts=d.constraints().max_watts, priority=0, policy="p")
        for d in backend.devices()
    ]
    engine.reconcile(targets, now=0.0)
    drawn = sum(d.read().power_watts for d in backend.devices())
    target = drawn * 0.7
    rate = drawn * 0.3 / 30.0  # the whole cut takes 30 s
    seen = []
    for second in range(0, 41):
        clock[0] = float(second)
        engine.reconcile(targets, node_budget_watts=target, budget_ramp_watts_per_second=rate, now=float(second))
        seen.append((engine.budget_in_force_watts, sum(d.read().power_watts for d in backend.devices())))
    lines = [w for w, _ in seen]
    assert lines[0] == pytest.approx(drawn, rel=0.02)
    assert lines[15] == pytest.approx(drawn - 15 * rate, rel=0.02)  # half way down after 15 s
    assert lines[-1] == pytest.approx(target)
    assert not engine.budget_ramping
    # The node's power follows the line (within the budget loop's cut margin).
    assert all(power <= line * 1.0 + 1.0 for line, power in seen if line is not None)
