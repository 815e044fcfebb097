"""The simulator behaves like NVML where the agent can tell: persistent state, NVML's refusals, energy.

Expected draws are read straight from the packaged Zeus trace (with the csv module, not the simulator's
parser): an A40 with no workload named runs the Zeus default ``imagenet/resnet50``, batch 256, adadelta.
"""

from __future__ import annotations

import csv
import json
import math
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wattplane.agent.gpu.base import GpuDevice
from wattplane.agent.gpu.errors import GpuInvalidArgumentError, GpuLostError, GpuNotSupportedError
from wattplane.agent.gpu.simmodels import MODELS, model_by_name
from wattplane.agent.gpu.simulated import SimulatedBackend, read_state_file
from wattplane.agent.gpu.workloads import TrainingWorkload


def zeus(
    limit: float, gpu: str = "a40", config: tuple[str, ...] = ("imagenet", "resnet50", "256", "adadelta")
) -> tuple[float, float]:
    """(seconds per epoch, average watts) of one row of the packaged Zeus trace."""
    text = resources.files("wattplane.agent.gpu").joinpath("data", f"zeus_summary_power_{gpu}.csv").read_text()
    for row in csv.DictReader(text.splitlines()):
        if (row["dataset"], row["network"], row["batch_size"], row["optimizer"]) == config and float(
            row["power_limit"]
        ) == limit:
            return float(row["time_per_epoch"]), float(row["average_power"])
    raise LookupError(limit)


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(path: Path | None, clock: Clock, **kwargs: object) -> SimulatedBackend:
    return SimulatedBackend(node_name="node-a", gpu_count=2, model="A40", state_file=path, clock=clock, **kwargs)


def test_devices_satisfy_the_protocol_and_have_stable_identities(tmp_path: Path) -> None:
    clock = Clock()
    a, b = make(None, clock).devices()
    assert isinstance(a, GpuDevice)
    assert (a.identity.index, b.identity.index) == (0, 1)
    assert a.identity.uuid != b.identity.uuid
    assert [d.identity.uuid for d in make(None, clock).devices()] == [a.identity.uuid, b.identity.uuid]
    other = SimulatedBackend(node_name="node-b", gpu_count=1, clock=clock).devices()[0]
    assert other.identity.uuid not in (a.identity.uuid, b.identity.uuid)
    c = a.constraints()
    assert (c.min_watts, c.max_watts, c.default_watts) == (100.0, 300.0, 300.0)


def test_state_persists_across_backend_instances(tmp_path: Path) -> None:
    path, clock = tmp_path / "sim.json", Clock()
    first = make(path, clock).devices()
    first[0].set_power_limit_watts(200)
    first[1].set_locked_clocks_mhz(300, 1200)
    first[1].set_power_limit_watts(250)
    first[1].set_power_limit_watts(260)
    clock.now += 50
    reading_before = first[0].read()

    again = make(path, clock).devices()
    assert again[0].read().power_limit_watts == 200.0
    assert again[1].read().locked_clocks_mhz == (300, 1200)
    assert [d.power_limit_writes for d in again] == [1, 2]
    assert again[1].state.clock_writes == 1
    assert again[0].read().energy_joules == pytest.approx(reading_before.energy_joules)
    assert read_state_file(path)[again[0].identity.uuid]["power_limit_watts"] == 200.0


def test_energy_stays_monotonic_across_restarts_without_a_clean_close(tmp_path: Path) -> None:
    path, clock = tmp_path / "sim.json", Clock()
    backend = make(path, clock)
    gpu = backend.devices()[0]
    clock.now += 1
    gpu.set_load(1.0)
    clock.now += 1
    reported = gpu.read().energy_joules
    assert reported is not None
    clock.now += 1
    # The agent crashed (no close()); the GPU kept running its work.
    restarted = make(path, clock).devices()[0]
    after = restarted.read()
    assert after.energy_joules is not None and after.energy_joules >= reported
    assert after.utilization_ratio == 1.0  # the work did not vanish with the agent


def test_energy_counts_downtime_at_the_power_drawn(tmp_path: Path) -> None:
    path, clock = tmp_path / "sim.json", Clock()
    backend = make(path, clock)
    backend.devices()[0].set_load(1.0)
    backend.devices()[0].set_power_limit_watts(200)
    backend.close()
    clock.now += 100
    again = make(path, clock).devices()[0]
    assert again.read().energy_joules == pytest.approx(zeus(200)[1] * 100)


@pytest.mark.parametrize("watts", [99.999, 300.001, 0.0, -5.0, math.nan, math.inf])
def test_limits_outside_the_constraints_are_refused(watts: float) -> None:
    gpu = make(None, Clock()).devices()[0]
    with pytest.raises(GpuInvalidArgumentError):
        gpu.set_power_limit_watts(watts)
    assert gpu.power_limit_writes == 0
    assert gpu.read().power_limit_watts == 300.0


@pytest.mark.parametrize("watts", [100.0, 300.0, 212.3456])
def test_limits_inside_the_constraints_are_stored_to_the_milliwatt(watts: float) -> None:
    gpu = make(None, Clock()).devices()[0]
    gpu.set_power_limit_watts(watts)
    assert gpu.read().power_limit_watts == round(watts, 3)


@pytest.mark.parametrize(("lo", "hi"), [(100, 1200), (300, 2000), (1200, 300)])
def test_clock_ranges_outside_the_model_are_refused(lo: int, hi: int) -> None:
    gpu = make(None, Clock()).devices()[0]
    with pytest.raises(GpuInvalidArgumentError):
        gpu.set_locked_clocks_mhz(lo, hi)
    assert gpu.read().locked_clocks_mhz is None


def test_resetting_unlocked_clocks_is_not_a_write() -> None:
    gpu = make(None, Clock()).devices()[0]
    gpu.reset_locked_clocks()
    assert gpu.state.clock_writes == 0
    gpu.set_locked_clocks_mhz(210, 1740)
    gpu.reset_locked_clocks()
    assert gpu.state.clock_writes == 2
    assert gpu.read().locked_clocks_mhz is None


def test_energy_integrates_power_over_the_injected_clock() -> None:
    clock = Clock()
    gpu = make(None, clock).devices()[0]
    idle = model_by_name("A40").idle_watts
    full, capped_watts = zeus(300)[1], zeus(150)[1]
    start = gpu.read().energy_joules
    assert start == 0.0
    clock.now += 10
    reading = gpu.read()
    assert reading.power_watts == idle
    assert reading.energy_joules == pytest.approx(10 * idle)
    assert reading.throttle_reasons == 0x1  # idle
    gpu.set_load(1.0)
    clock.now += 10
    assert gpu.read().energy_joules == pytest.approx(10 * idle + 10 * full)
    gpu.set_power_limit_watts(150)
    clock.now += 4
    capped = gpu.read()
    assert capped.power_watts == pytest.approx(capped_watts)
    assert capped.energy_joules == pytest.approx(10 * idle + 10 * full + 4 * capped_watts)
    assert capped.throttle_reasons & 0x4  # software power cap


def test_load_is_a_duty_cycle_for_training() -> None:
    clock = Clock()
    gpu = make(None, clock).devices()[0]
    idle = model_by_name("A40").idle_watts
    seconds, watts = zeus(200)
    gpu.set_power_limit_watts(200)
    gpu.set_load(0.25)
    clock.now += 1000
    assert gpu.read().power_watts == pytest.approx(idle + 0.25 * (watts - idle))
    assert gpu.progress_units() == pytest.approx(0.25 * 1000 / seconds)


def test_progress_follows_the_limit_and_is_monotonic() -> None:
    clock = Clock()
    gpu = make(None, clock).devices()[0]
    gpu.set_load(1.0)
    clock.now += zeus(300)[0]
    assert gpu.progress_units() == pytest.approx(1.0)
    gpu.set_power_limit_watts(100)
    clock.now += zeus(100)[0]
    assert gpu.progress_units() == pytest.approx(2.0)
    gpu.set_load(0.0)
    clock.now += 1000
    assert gpu.progress_units() == pytest.approx(2.0)  # an idle board does no work
    clock.now -= 50
    assert gpu.progress_units() == pytest.approx(2.0)  # a clock that goes backwards undoes nothing


def test_progress_and_workload_survive_a_restart_and_a_new_workload_starts_from_zero(tmp_path: Path) -> None:
    path, clock = tmp_path / "sim.json", Clock()
    gpu = make(path, clock).devices()[0]
    gpu.set_workload("squad/bert_base_uncased")
    gpu.set_load(1.0)
    clock.now += 500
    done = gpu.progress_units()
    assert done > 0
    again = make(path, clock).devices()[0]
    assert again.workload.name == "squad/bert_base_uncased@32:adamw"
    assert again.progress_units() == pytest.approx(done)
    again.set_workload("squad/bert_base_uncased")  # the same one again: nothing restarts
    assert again.progress_units() == pytest.approx(done)
    again.set_workload(None)
    assert again.workload.name == "imagenet/resnet50@256:adadelta"
    assert again.progress_units() == 0.0


def test_unknown_workloads_are_refused_and_named() -> None:
    gpu = make(None, Clock()).devices()[0]
    with pytest.raises(KeyError, match="imagenet/resnet50"):
        gpu.set_workload("mnist/lenet")
    with pytest.raises(KeyError, match="known"):
        SimulatedBackend(node_name="n", gpu_count=1, workload="mnist/lenet")


def test_a_straggler_progresses_slower_at_the_same_draw() -> None:
    clock = Clock()
    fast, slow = make(None, clock).devices()
    for gpu in (fast, slow):
        gpu.set_load(1.0)
    slow.set_speed_ratio(0.8)
    clock.now += 1000
    assert slow.progress_units() == pytest.approx(0.8 * fast.progress_units())
    assert slow.read().power_watts == fast.read().power_watts
    with pytest.raises(ValueError, match="speed ratio"):
        slow.set_speed_ratio(0.0)


def test_locking_clocks_lowers_power_speed_and_reported_clock_monotonically() -> None:
    clock = Clock()
    gpu = make(None, clock).devices()[0]
    gpu.set_load(1.0)
    model = model_by_name("A40")
    previous = None
    for top in (model.max_sm_clock_mhz, 1500, 1200, 900, 600, model.min_sm_clock_mhz):
        gpu.set_locked_clocks_mhz(model.min_sm_clock_mhz, top)
        before = gpu.progress_units()
        clock.now += 100
        rate = (gpu.progress_units() - before) / 100
        reading = gpu.read()
        state = (reading.power_watts, rate, reading.sm_clock_mhz)
        if previous is not None:
            assert all(now <= then for now, then in zip(state, previous, strict=True))
        previous = state
        assert reading.sm_clock_mhz is not None and reading.sm_clock_mhz <= top
    assert previous is not None and previous[0] < zeus(300)[1] and previous[1] < 1 / zeus(300)[0]
    gpu.reset_locked_clocks()
    assert gpu.read().power_watts == pytest.approx(zeus(300)[1])  # unlocked at max: the free draw again


def test_a_lock_at_the_top_clock_changes_nothing() -> None:
    gpu = make(None, Clock()).devices()[0]
    gpu.set_load(1.0)
    unlocked = gpu.read()
    model = model_by_name("A40")
    gpu.set_locked_clocks_mhz(model.min_sm_clock_mhz, model.max_sm_clock_mhz)
    locked = gpu.read()
    assert (locked.power_watts, locked.sm_clock_mhz) == (unlocked.power_watts, unlocked.sm_clock_mhz)


def test_pascal_boards_refuse_locked_clocks_like_nvml() -> None:
    gpu = SimulatedBackend(node_name="n", gpu_count=1, model="P100", clock=Clock()).devices()[0]
    with pytest.raises(GpuNotSupportedError, match="Volta"):
        gpu.set_locked_clocks_mhz(600, 1000)
    with pytest.raises(GpuNotSupportedError):
        gpu.reset_locked_clocks()
    assert gpu.state.clock_writes == 0


@pytest.mark.parametrize("noise", [0.0, 0.02])
def test_runs_are_deterministic_for_a_clock_and_seed(noise: float) -> None:
    def trace(seed: int) -> list[tuple[float, float | None, float]]:
        clock = Clock()
        gpu = SimulatedBackend(node_name="n", gpu_count=1, clock=clock, noise_ratio=noise, seed=seed).devices()[0]
        out = []
        for step, (load, limit) in enumerate([(1.0, 300), (0.5, 180), (1.0, 120), (0.0, 250)] * 3):
            gpu.set_load(load)
            gpu.set_power_limit_watts(limit)
            clock.now += 7.5 + step
            reading = gpu.read()
            out.append((reading.power_watts, reading.energy_joules, gpu.progress_units()))
        return out

    assert trace(1) == trace(1)
    differs = trace(1) != trace(2)
    assert differs is (noise > 0)  # only the noise depends on the seed
    if noise:
        clean = [e for _, e, _ in trace(1)]
        assert clean == [e for _, e, _ in trace(2)]  # the energy counter integrates the true draw


def test_a_clock_that_goes_backwards_adds_no_energy() -> None:
    clock = Clock()
    gpu = make(None, clock).devices()[0]
    clock.now += 10
    energy = gpu.read().energy_joules
    clock.now -= 5
    assert gpu.read().energy_joules == energy


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 50), st.floats(0, 1), st.floats(100, 300)), min_size=1, max_size=20))
def test_energy_is_monotonic_and_power_stays_within_what_the_trace_allows(
    steps: list[tuple[float, float, float]],
) -> None:
    clock = Clock()
    gpu = make(None, clock).devices()[0]
    workload = gpu.workload
    assert isinstance(workload, TrainingWorkload)
    curve = workload.curve
    # Zeus' A40 boards drew up to ~21 % above a 100 W limit on average; the simulator may do no more.
    overshoot = max(1.0, *(p / x for x, p in zip(curve.limits, curve.watts, strict=True)))
    last, elapsed = 0.0, 0.0
    for dt, load, limit in steps:
        gpu.set_load(load)
        gpu.set_power_limit_watts(limit)
        clock.now += dt
        elapsed += dt
        reading = gpu.read()
        assert reading.energy_joules is not None and reading.energy_joules >= last
        assert reading.power_watts <= limit * overshoot + 1e-3  # the limit is stored in whole milliwatts
        last = reading.energy_joules
    assert last <= max(curve.watts) * elapsed + 1e-6


def test_injected_faults_raise_until_cleared() -> None:
    gpu = make(None, Clock()).devices()[0]
    gpu.inject_fault("read", GpuLostError("off the bus"))
    gpu.inject_fault("constraints", GpuLostError("off the bus"))
    with pytest.raises(GpuLostError):
        gpu.read()
    with pytest.raises(GpuLostError):
        gpu.constraints()
    gpu.inject_fault("read", None)
    assert gpu.read().power_limit_watts == 300.0


def test_unknown_models_are_named_in_the_error() -> None:
    with pytest.raises(KeyError, match="A40"):
        model_by_name("B9000")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_are_self_consistent(name: str) -> None:
    m = MODELS[name]
    assert 0 < m.idle_watts < m.min_watts <= m.default_watts <= m.max_watts
    assert 0 < m.min_sm_clock_mhz < m.max_sm_clock_mhz
    clock = Clock()
    gpu = SimulatedBackend(node_name="n", gpu_count=1, model=name, clock=clock).devices()[0]
    assert gpu.constraints().default_watts == m.default_watts
    assert gpu.read().power_watts == m.idle_watts
    gpu.set_load(1.0)
    free = gpu.read()
    assert m.idle_watts < free.power_watts <= m.default_watts
    assert free.sm_clock_mhz == m.max_sm_clock_mhz and free.throttle_reasons == 0
    gpu.set_power_limit_watts(m.min_watts)
    capped = gpu.read()
    assert capped.power_watts < free.power_watts
    assert capped.sm_clock_mhz is not None and capped.sm_clock_mhz < m.max_sm_clock_mhz
    if m.supports_locked_clocks:
        gpu.set_power_limit_watts(m.max_watts)
        gpu.set_locked_clocks_mhz(m.min_sm_clock_mhz, m.max_sm_clock_mhz // 2)
        assert gpu.read().power_watts < free.power_watts


def test_only_a_changed_load_is_persisted(tmp_path: Path) -> None:
    gpu = make(tmp_path / "sim.json", Clock()).devices()[0]
    calls: list[int] = []
    gpu.on_change = lambda: calls.append(1)
    gpu.set_load(0.5)
    gpu.set_load(0.5)  # the agent's loop repeats the same load every second
    gpu.set_load(2.0)  # clipped to 1.0
    gpu.set_load(1.0)
    assert len(calls) == 2
    assert gpu.state.load == 1.0


def test_a_state_file_from_before_workloads_still_loads(tmp_path: Path) -> None:
    path, clock = tmp_path / "sim.json", Clock()
    uuid = make(None, clock).devices()[0].identity.uuid
    old = {"power_limit_watts": 250.0, "locked_clocks_mhz": None, "energy_joules": 1234.5, "last_time": clock.now}
    path.write_text(json.dumps({"node": "node-a", "devices": {uuid: {**old, "load": 1.0, "retired_field": 7}}}))
    gpu = make(path, clock).devices()[0]
    assert gpu.read().energy_joules == 1234.5
    assert (gpu.state.progress_units, gpu.state.workload, gpu.state.speed_ratio) == (0.0, None, 1.0)
    clock.now += 10
    assert gpu.read().energy_joules == pytest.approx(1234.5 + 10 * zeus(250)[1])
