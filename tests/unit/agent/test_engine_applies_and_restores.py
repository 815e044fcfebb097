"""NodeEngine on simulated GPUs: clamped, idempotent, journaled, isolated writes."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from wattplane.agent.engine import NodeEngine, plan_expired
from wattplane.agent.gpu.errors import GpuLostError, GpuNoPermissionError
from wattplane.agent.gpu.simulated import SimulatedBackend, SimulatedGpu
from wattplane.agent.journal import Journal, PriorState
from wattplane.api.v1alpha1.energypolicy import ClockRangeMHz
from wattplane.api.v1alpha1.gpunode import GpuTarget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def backend(tmp_path: Path, clock: Clock) -> SimulatedBackend:
    return SimulatedBackend(node_name="node-a", gpu_count=4, model="A40", state_file=tmp_path / "sim.json", clock=clock)


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "journal.json")


def gpus(backend: SimulatedBackend) -> list[SimulatedGpu]:
    return list(backend.devices())


def target(device: SimulatedGpu, watts: float, **extra: object) -> GpuTarget:
    return GpuTarget(uuid=device.identity.uuid, power_limit_watts=watts, policy="cap", **extra)


def limits(backend: SimulatedBackend) -> list[float]:
    return [d.state.power_limit_watts for d in backend.devices()]


def writes(backend: SimulatedBackend) -> list[int]:
    return [d.power_limit_writes for d in backend.devices()]


def test_targets_are_applied_and_gpus_without_one_are_left_alone(backend: SimulatedBackend, journal: Journal) -> None:
    engine = NodeEngine(backend, journal)
    g = gpus(backend)
    outcomes = engine.reconcile([target(g[0], 180), target(g[2], 210)])
    assert limits(backend) == [180.0, 300.0, 210.0, 300.0]
    assert writes(backend) == [1, 0, 1, 0]
    assert outcomes[g[0].identity.uuid].state == "Applied"
    assert outcomes[g[0].identity.uuid].target_watts == 180.0
    assert outcomes[g[1].identity.uuid].state == "Default"
    assert journal.uuids() == {g[0].identity.uuid, g[2].identity.uuid}


@pytest.mark.parametrize(("wanted", "applied"), [(50.0, 100.0), (9000.0, 300.0)])
def test_out_of_range_targets_are_clamped_and_reported(
    backend: SimulatedBackend, journal: Journal, wanted: float, applied: float
) -> None:
    g = gpus(backend)[0]
    outcome = NodeEngine(backend, journal).reconcile([target(g, wanted)])[g.identity.uuid]
    assert g.state.power_limit_watts == applied
    assert outcome.state == "Applied"
    assert outcome.target_watts == applied
    assert "clamped" in outcome.message and f"{applied:g}" in outcome.message


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_target_is_refused_without_a_write(backend: SimulatedBackend, journal: Journal, bad: float) -> None:
    g = gpus(backend)
    # The wire model rejects these; model_construct stands in for a target that slipped through.
    poisoned = GpuTarget.model_construct(
        uuid=g[0].identity.uuid, power_limit_watts=bad, locked_clocks_mhz=None, dry_run=False
    )
    outcomes = NodeEngine(backend, journal).reconcile([poisoned, target(g[1], 200)])
    assert outcomes[g[0].identity.uuid].state == "Error"
    assert "not a finite number" in outcomes[g[0].identity.uuid].message
    assert writes(backend) == [0, 1, 0, 0]
    assert journal.get(g[0].identity.uuid) is None


def test_reconcile_is_idempotent(backend: SimulatedBackend, journal: Journal) -> None:
    engine = NodeEngine(backend, journal)
    g = gpus(backend)
    plan = [target(g[0], 180, locked_clocks_mhz=ClockRangeMHz(min_mhz=210, max_mhz=1200)), target(g[1], 250)]
    engine.reconcile(plan)
    before = (writes(backend), [d.state.clock_writes for d in g], engine.stats.writes)
    assert before[2] == 3
    engine.reconcile(plan)
    engine.reconcile(plan)
    assert (writes(backend), [d.state.clock_writes for d in g], engine.stats.writes) == before


def test_a_restarted_agent_writes_nothing_when_the_gpus_already_match(
    tmp_path: Path, backend: SimulatedBackend, journal: Journal, clock: Clock
) -> None:
    g = gpus(backend)
    NodeEngine(backend, journal).reconcile([target(g[0], 180)])
    backend.close()
    again = SimulatedBackend(node_name="node-a", gpu_count=4, state_file=tmp_path / "sim.json", clock=clock)
    engine = NodeEngine(again, Journal(tmp_path / "journal.json"))
    engine.reconcile([target(g[0], 180)])
    assert engine.stats.writes == 0
    assert writes(again) == [1, 0, 0, 0]


def test_journal_keeps_the_prior_state_and_restore_puts_back_exactly_that(
    backend: SimulatedBackend, journal: Journal
) -> None:
    g = gpus(backend)[0]
    g.set_power_limit_watts(250)  # a site's hand-set limit, not the 300 W default
    engine = NodeEngine(backend, journal)
    engine.reconcile([target(g, 180)])
    assert journal.get(g.identity.uuid) == PriorState(power_limit_watts=250.0, locked_clocks_mhz=None)
    engine.reconcile([target(g, 200)])  # a second target must not overwrite the prior state
    assert journal.get(g.identity.uuid) == PriorState(power_limit_watts=250.0, locked_clocks_mhz=None)
    outcome = engine.reconcile([])[g.identity.uuid]
    assert g.state.power_limit_watts == 250.0
    assert outcome.state == "Default" and "250" in outcome.message
    assert journal.get(g.identity.uuid) is None
    assert engine.stats.restores == 1


def test_restore_survives_an_agent_restart(tmp_path: Path, backend: SimulatedBackend, clock: Clock) -> None:
    g = gpus(backend)[1]
    g.set_power_limit_watts(260)
    NodeEngine(backend, Journal(tmp_path / "journal.json")).reconcile([target(g, 150)])
    backend.close()
    again = SimulatedBackend(node_name="node-a", gpu_count=4, state_file=tmp_path / "sim.json", clock=clock)
    NodeEngine(again, Journal(tmp_path / "journal.json")).reconcile([])
    assert limits(again) == [300.0, 260.0, 300.0, 300.0]


def test_an_expired_plan_restores_every_gpu(backend: SimulatedBackend, journal: Journal) -> None:
    engine = NodeEngine(backend, journal)
    g = gpus(backend)
    plan = [target(d, 180) for d in g]
    engine.reconcile(plan)
    outcomes = engine.reconcile(plan, expired=True)
    assert limits(backend) == [300.0] * 4
    assert {o.state for o in outcomes.values()} == {"Default"}
    assert journal.uuids() == set()


def test_plan_expired() -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    assert not plan_expired(None, 60, t0)
    assert not plan_expired(t0, 60, t0 + timedelta(seconds=60))
    assert plan_expired(t0, 60, t0 + timedelta(seconds=61))


def test_one_failing_gpu_is_marked_and_the_others_are_applied(backend: SimulatedBackend, journal: Journal) -> None:
    g = gpus(backend)
    g[1].inject_fault("set_power_limit", GpuNoPermissionError("needs CAP_SYS_ADMIN"))
    g[3].inject_fault("read", GpuLostError("fell off the bus"))
    engine = NodeEngine(backend, journal)
    outcomes = engine.reconcile([target(d, 200) for d in g])
    assert limits(backend) == [200.0, 300.0, 200.0, 300.0]
    bad = outcomes[g[1].identity.uuid]
    assert (bad.state, bad.error_reason) == ("Error", "NoPermission")
    assert "CAP_SYS_ADMIN" in bad.message
    assert outcomes[g[3].identity.uuid].error_reason == "GpuLost"
    assert [outcomes[d.identity.uuid].state for d in (g[0], g[2])] == ["Applied", "Applied"]
    assert engine.stats.errors == 2
    assert set(engine.stats.last_errors) == {g[1].identity.uuid, g[3].identity.uuid}

    g[1].inject_fault("set_power_limit", None)
    g[3].inject_fault("read", None)
    outcomes = engine.reconcile([target(d, 200) for d in g])
    assert limits(backend) == [200.0] * 4
    assert engine.stats.last_errors == {}
    assert {o.state for o in outcomes.values()} == {"Applied"}


def test_a_failed_write_is_still_restored_correctly(backend: SimulatedBackend, journal: Journal) -> None:
    g = gpus(backend)[0]
    g.set_power_limit_watts(240)
    g.inject_fault("set_power_limit", GpuNoPermissionError("no"))
    engine = NodeEngine(backend, journal)
    engine.reconcile([target(g, 150)])
    g.inject_fault("set_power_limit", None)
    engine.reconcile([])
    assert g.state.power_limit_watts == 240.0
    assert journal.get(g.identity.uuid) is None


@pytest.mark.parametrize("where", ["engine", "target"])
def test_dry_run_never_writes(backend: SimulatedBackend, journal: Journal, where: str) -> None:
    engine = NodeEngine(backend, journal, dry_run=where == "engine")
    g = gpus(backend)
    clocks = ClockRangeMHz(min_mhz=210, max_mhz=1200)
    outcomes = engine.reconcile([target(d, 50, dry_run=where == "target", locked_clocks_mhz=clocks) for d in g])
    engine.reconcile([])
    assert writes(backend) == [0] * 4
    assert [d.state.clock_writes for d in g] == [0] * 4
    assert engine.stats.writes == 0
    assert journal.uuids() == set()
    for outcome in outcomes.values():
        assert outcome.state == "DryRun"
        assert outcome.target_watts == 100.0  # what it would set: clamped
        assert "would set 100 W" in outcome.message


def test_switching_an_applied_gpu_to_dry_run_gives_it_back(backend: SimulatedBackend, journal: Journal) -> None:
    g = gpus(backend)[0]
    engine = NodeEngine(backend, journal)
    engine.reconcile([target(g, 180)])
    outcome = engine.reconcile([target(g, 180, dry_run=True)])[g.identity.uuid]
    assert g.state.power_limit_watts == 300.0
    assert outcome.state == "DryRun"


def test_locked_clocks_are_applied_and_restored(backend: SimulatedBackend, journal: Journal) -> None:
    g = gpus(backend)[0]
    engine = NodeEngine(backend, journal)
    engine.reconcile([target(g, 200, locked_clocks_mhz=ClockRangeMHz(min_mhz=210, max_mhz=1200))])
    assert g.state.locked_clocks_mhz == (210, 1200)
    # The plan drops the lock but keeps the cap: the lock goes back, the cap stays.
    engine.reconcile([target(g, 200)])
    assert g.state.locked_clocks_mhz is None
    assert g.state.power_limit_watts == 200.0
    engine.reconcile([target(g, 200, locked_clocks_mhz=ClockRangeMHz(min_mhz=300, max_mhz=1000))])
    engine.reconcile([])
    assert (g.state.locked_clocks_mhz, g.state.power_limit_watts) == (None, 300.0)


@pytest.mark.parametrize(
    ("asked", "locked"),
    [((100, 2500), (210, 1740)), ((1000, 9000), (1000, 1740)), ((2000, 2500), (1740, 1740)), ((0, 100), (210, 210))],
)
def test_a_lock_beyond_the_device_is_clamped_and_reported(
    backend: SimulatedBackend, journal: Journal, asked: tuple[int, int], locked: tuple[int, int]
) -> None:
    g = gpus(backend)[0]
    engine = NodeEngine(backend, journal)
    plan = [target(g, 200, locked_clocks_mhz=ClockRangeMHz(min_mhz=asked[0], max_mhz=asked[1]))]
    outcome = engine.reconcile(plan)[g.identity.uuid]
    assert g.state.locked_clocks_mhz == locked
    assert (outcome.state, outcome.reason, outcome.error_reason) == ("Applied", "Clamped", None)
    assert outcome.message == f"clock lock {asked[0]}-{asked[1]} MHz clamped to {locked[0]}-{locked[1]} MHz"
    clock_writes = g.state.clock_writes
    assert engine.reconcile(plan)[g.identity.uuid].state == "Applied"
    assert g.state.clock_writes == clock_writes  # clamped once, then idempotent: no retry storm
    engine.reconcile([])
    assert g.state.locked_clocks_mhz is None


def test_watts_and_clocks_clamped_together_are_both_reported(backend: SimulatedBackend, journal: Journal) -> None:
    g = gpus(backend)[0]
    plan = [target(g, 900, locked_clocks_mhz=ClockRangeMHz(min_mhz=100, max_mhz=1200))]
    outcome = NodeEngine(backend, journal).reconcile(plan)[g.identity.uuid]
    assert (g.state.power_limit_watts, g.state.locked_clocks_mhz) == (300.0, (210, 1200))
    assert outcome.reason == "Clamped"
    assert outcome.message == "target 900 W clamped to 300 W; clock lock 100-1200 MHz clamped to 210-1200 MHz"


def test_a_lock_wattplane_did_not_set_is_kept_and_restored(backend: SimulatedBackend, journal: Journal) -> None:
    g = gpus(backend)[0]
    g.set_locked_clocks_mhz(500, 1500)  # set by the site before wattplane
    engine = NodeEngine(backend, journal)
    engine.reconcile([target(g, 200)])
    assert g.state.locked_clocks_mhz == (500, 1500)
    engine.reconcile([target(g, 200, locked_clocks_mhz=ClockRangeMHz(min_mhz=210, max_mhz=1000))])
    assert g.state.locked_clocks_mhz == (210, 1000)
    engine.reconcile([])
    assert g.state.locked_clocks_mhz == (500, 1500)
    assert g.state.power_limit_watts == 300.0


def test_a_mig_board_is_never_capped(backend: SimulatedBackend, journal: Journal) -> None:
    g = gpus(backend)
    g[0].identity_ = dataclasses.replace(g[0].identity_, mig_enabled=True)
    engine = NodeEngine(backend, journal)
    outcomes = engine.reconcile([target(d, 200) for d in g])
    assert limits(backend) == [300.0, 200.0, 200.0, 200.0]
    assert outcomes[g[0].identity.uuid].state == "Error"
    assert "MIG" in outcomes[g[0].identity.uuid].message
    assert journal.get(g[0].identity.uuid) is None


def test_restore_all_reports_failures_and_restores_the_rest(backend: SimulatedBackend, journal: Journal) -> None:
    g = gpus(backend)
    engine = NodeEngine(backend, journal)
    engine.reconcile([target(d, 200) for d in g])
    g[2].inject_fault("set_power_limit", GpuLostError("gone"))
    failures = engine.restore_all()
    assert len(failures) == 1 and g[2].identity.uuid in failures[0]
    assert limits(backend) == [300.0, 300.0, 200.0, 300.0]
    assert journal.uuids() == {g[2].identity.uuid}  # still owed a restore


def test_read_all_returns_errors_per_gpu(backend: SimulatedBackend, journal: Journal) -> None:
    g = gpus(backend)
    g[1].inject_fault("read", GpuLostError("gone"))
    readings = NodeEngine(backend, journal).read_all()
    assert isinstance(readings[g[1].identity.uuid], GpuLostError)
    assert readings[g[0].identity.uuid].power_limit_watts == 300.0  # type: ignore[union-attr]
