"""The Zeus state machine driven by real power-limit sweeps (the Zeus NSDI'23 traces).

A simulated job runs at the time per epoch and average power the trace measured at whatever limit the
profile currently probes; the test checks that the online sweep measures those numbers back and picks
the limit that an offline search of the same cost over the trace picks. The offline optimum is
computed here from the CSV with plain arithmetic, independently of ``choose_limit``.

Data: ``zeus_summary_power_{a40,v100}.csv`` as packaged with the agent (``agent/wattplane/agent/gpu/data``;
ml-energy/zeus, Apache-2.0, see the NOTICE.md there).
"""

from __future__ import annotations

import csv
import itertools
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from repodata import GPU_DATA
from wattplane.api.v1alpha1.energypolicy import EfficiencySpec, JobProfile, ProfilePoint
from wattplane.planner.efficiency import (
    MAX_POINTS,
    JobObservation,
    advance,
    choose_limit,
    efficiency_limit,
    oracle_limit,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Curve:
    """One workload's sweep: limit → (seconds per epoch, average watts)."""

    name: str
    points: dict[float, tuple[float, float]]

    @property
    def limits(self) -> list[float]:
        return sorted(self.points)

    @property
    def step(self) -> float:
        limits = self.limits
        return min(b - a for a, b in itertools.pairwise(limits))

    def at(self, watts: float) -> tuple[float, float]:
        """Linear interpolation between measured limits (the sweep only probes measured ones)."""
        limits = self.limits
        watts = min(max(watts, limits[0]), limits[-1])
        for lo, hi in itertools.pairwise(limits):
            if lo <= watts <= hi:
                f = 0.0 if hi == lo else (watts - lo) / (hi - lo)
                (t0, p0), (t1, p1) = self.points[lo], self.points[hi]
                return t0 + f * (t1 - t0), p0 + f * (p1 - p0)
        return self.points[limits[-1]]


def load_curves(gpu: str) -> list[Curve]:
    path = GPU_DATA / f"zeus_summary_power_{gpu}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"Zeus trace {path} is missing from the agent package")
    grouped: dict[str, dict[float, tuple[float, float]]] = defaultdict(dict)
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            name = f"{gpu}:{row['dataset']}/{row['network']}/bs{row['batch_size']}/{row['optimizer']}"
            grouped[name][float(row["power_limit"])] = (float(row["time_per_epoch"]), float(row["average_power"]))
    return [Curve(name, pts) for name, pts in sorted(grouped.items())]


CURVES = load_curves("a40") + load_curves("v100")


def offline_optimum(curve: Curve, limits: list[float], eta: float, gpus: int = 1) -> float:
    """Arg-min over ``limits`` of eta·E + (1 − eta)·gpus·Pmax·T per epoch, ties to the higher limit."""
    pmax = max(curve.limits) * gpus
    best: tuple[float, float] | None = None
    for watts in limits:
        t, p = curve.points[watts]
        cost = eta * gpus * t * p + (1 - eta) * pmax * t
        if best is None or cost < best[0] or (cost == best[0] and watts > best[1]):
            best = (cost, watts)
    assert best is not None
    return best[1]


@dataclass
class TraceJob:
    """A training job whose speed and power follow the trace at the limit in force.

    After a limit change the job keeps its old speed and power for ``settle_s`` seconds (clocks and
    the input pipeline settle), which is what the warm-up exists to skip.
    """

    curve: Curve
    gpus: int = 1
    settle_s: float = 0.0
    now: datetime = T0
    progress: float = 0.0
    energy: float = 0.0
    limit: float = 0.0
    previous: float = 0.0
    changed_at: datetime = T0
    limits_seen: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.limit = self.previous = max(self.curve.limits)

    def set_limit(self, watts: float) -> None:
        if watts != self.limit:
            self.previous, self.limit, self.changed_at = self.limit, watts, self.now
            self.limits_seen.append(watts)

    def run_until(self, until: datetime) -> None:
        while self.now < until:
            settle_end = self.changed_at + timedelta(seconds=self.settle_s)
            effective = self.previous if self.now < settle_end else self.limit
            stop = min(until, settle_end) if self.now < settle_end else until
            dt = (stop - self.now).total_seconds()
            seconds_per_epoch, watts = self.curve.at(effective)
            self.progress += dt / seconds_per_epoch
            self.energy += dt * watts * self.gpus
            self.now = stop

    def observe(self) -> JobObservation:
        return JobObservation(progress=self.progress, energy_joules=self.energy, at=self.now, gpus=self.gpus)


def run_sweep(
    curve: Curve, spec: EfficiencySpec, *, gpus: int = 1, settle_s: float = 0.0, interval_s: float = 15.0
) -> tuple[JobProfile, TraceJob]:
    job = TraceJob(curve, gpus=gpus, settle_s=settle_s)
    profile: JobProfile | None = None
    lo, hi = min(curve.limits), max(curve.limits)
    for _ in range(2000):
        job.run_until(job.now + timedelta(seconds=interval_s))
        profile = advance(
            profile,
            job="ns/train",
            gpu_model="A40",
            spec=spec,
            min_watts=lo,
            max_watts=hi,
            observation=job.observe(),
            now=job.now,
        )
        watts, _ = efficiency_limit(profile)
        if watts is not None:
            job.set_limit(watts)
        if profile.state == "Done":
            return profile, job
    raise AssertionError(f"{curve.name}: sweep did not finish ({profile})")


def spec_for(curve: Curve, **kwargs: object) -> EfficiencySpec:
    params: dict[str, object] = {"step_watts": curve.step, "warmup_seconds": 30, "window_seconds": 60}
    params.update(kwargs)
    return EfficiencySpec.model_validate(params)


def test_the_traces_cover_both_gpus() -> None:
    assert sum(c.name.startswith("a40:") for c in CURVES) >= 40
    assert sum(c.name.startswith("v100:") for c in CURVES) >= 60


@pytest.mark.parametrize("eta", [0.5, 1.0])
@pytest.mark.parametrize("curve", CURVES, ids=lambda c: c.name)
def test_online_sweep_picks_the_offline_optimum(curve: Curve, eta: float) -> None:
    profile, job = run_sweep(curve, spec_for(curve, eta=eta), settle_s=20.0)

    measured = sorted(p.watts for p in profile.points)
    # The probes are exactly the trace's limits, top down, and each was measured without the settling.
    assert set(measured) <= set(curve.limits)
    probes = sorted(measured, reverse=True)
    assert probes[0] == max(curve.limits)
    final = [profile.chosen_watts] if profile.chosen_watts != probes[-1] else []
    assert job.limits_seen == probes[1:] + final
    for point in profile.points:
        seconds, watts = curve.points[point.watts]
        assert point.seconds_per_unit == pytest.approx(seconds, rel=1e-9)
        assert point.joules_per_unit == pytest.approx(seconds * watts, rel=1e-9)

    assert profile.chosen_watts == offline_optimum(curve, measured, eta)
    full = measured == curve.limits
    if full:
        assert profile.chosen_watts == offline_optimum(curve, curve.limits, eta)
    else:
        # Early stop: the last probe was slower than half the best and everything below was skipped.
        slowest = min(profile.points, key=lambda p: p.watts)
        fastest = min(p.seconds_per_unit for p in profile.points)
        assert 1 / slowest.seconds_per_unit < 0.5 / fastest
    limit, reason = efficiency_limit(profile)
    assert limit is not None and limit == profile.chosen_watts
    assert reason.startswith(f"Zeus profile: {limit:g} W")


@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_early_stop_at_the_default_fraction_never_changes_the_answer_on_the_traces(eta: float) -> None:
    """The default early stop (half the best throughput) cuts sweeps short but never loses the optimum.

    For eta ≤ 0.5 it provably cannot on a curve whose throughput falls with the limit: a point with
    seconds s > 2·s_best costs at least (1 − eta)·P·s > P·s_best, which bounds the best point's cost
    (its energy per unit is at most P·s_best). For eta = 1 it is an empirical fact about these traces.
    """
    stopped = changed = 0
    for curve in CURVES:
        profile, _ = run_sweep(curve, spec_for(curve, eta=eta))
        measured = sorted(p.watts for p in profile.points)
        if measured == curve.limits:
            continue
        stopped += 1
        changed += profile.chosen_watts != offline_optimum(curve, curve.limits, eta)
    assert stopped >= 10  # the early stop really is exercised (22 of 121 workloads at 0.5)
    assert changed == 0


def test_warm_up_hides_the_settling_transient() -> None:
    curve = next(c for c in CURVES if c.name == "a40:cifar100/shufflenetv2/bs1024/adadelta")
    clean, _ = run_sweep(curve, spec_for(curve, warmup_seconds=30), settle_s=25.0)
    dirty, _ = run_sweep(curve, spec_for(curve, warmup_seconds=0), settle_s=25.0)
    exact = {w: t for w, (t, _) in curve.points.items()}
    assert all(p.seconds_per_unit == pytest.approx(exact[p.watts], rel=1e-9) for p in clean.points)
    assert any(p.seconds_per_unit != pytest.approx(exact[p.watts], rel=1e-3) for p in dirty.points)


@pytest.mark.parametrize("curve", [c for c in CURVES if c.name.startswith("a40:")][:12], ids=lambda c: c.name)
def test_multi_gpu_job_uses_job_max_power(curve: Curve) -> None:
    """Four data-parallel GPUs: 4× the energy per unit, MaxPower = 4 × max, same optimum as one GPU."""
    one, _ = run_sweep(curve, spec_for(curve, eta=0.5))
    four, _ = run_sweep(curve, spec_for(curve, eta=0.5), gpus=4)
    assert four.chosen_watts == one.chosen_watts
    measured = sorted(p.watts for p in four.points)
    assert four.chosen_watts == offline_optimum(curve, measured, 0.5, gpus=4)
    for p4, p1 in zip(four.points, one.points, strict=True):
        assert p4.joules_per_unit == pytest.approx(4 * p1.joules_per_unit, rel=1e-9)


def test_job_max_power_matters_for_multi_gpu_cost() -> None:
    """Using one GPU's max power against four GPUs' energy would weigh energy 4× too much."""
    points = [
        ProfilePoint(watts=300, seconds_per_unit=1.00, joules_per_unit=4 * 250.0),
        ProfilePoint(watts=200, seconds_per_unit=1.30, joules_per_unit=4 * 180.0),
    ]
    # gpus=4: 0.5·1000 + 0.5·1200·1.0 = 1100 vs 0.5·720 + 0.5·1200·1.3 = 1140 → 300 W.
    assert choose_limit(points, 0.5, 300, gpus=4) == 300
    # Pretending the job had one GPU: 500 + 150 = 650 vs 360 + 195 = 555 → 200 W.
    assert choose_limit(points, 0.5, 300, gpus=1) == 200


@pytest.mark.parametrize("slowdown", [0.05, 0.2])
@pytest.mark.parametrize("curve", [c for c in CURVES if c.name.startswith("v100:")][:15], ids=lambda c: c.name)
def test_max_slowdown_rule_on_traces(curve: Curve, slowdown: float) -> None:
    profile, _ = run_sweep(curve, spec_for(curve, max_slowdown=slowdown))
    measured = {p.watts for p in profile.points}
    fastest = min(curve.points[w][0] for w in measured)
    allowed = [w for w in measured if curve.points[w][0] <= (1 + slowdown) * fastest]
    expected = min(allowed, key=lambda w: (curve.points[w][0] * curve.points[w][1], -w))
    assert profile.chosen_watts == expected
    assert "least energy within" in efficiency_limit(profile)[1]


@pytest.mark.parametrize("curve", CURVES[:20], ids=lambda c: c.name)
def test_oracle_is_the_hindsight_optimum(curve: Curve) -> None:
    points = [ProfilePoint(watts=w, seconds_per_unit=t, joules_per_unit=t * p) for w, (t, p) in curve.points.items()]
    for eta in (0.0, 0.3, 0.5, 1.0):
        assert oracle_limit(points, eta=eta) == offline_optimum(curve, curve.limits, eta)
    assert oracle_limit(points, eta=0.0) in curve.limits


def test_oracle_needs_a_point() -> None:
    with pytest.raises(ValueError, match="no usable point"):
        oracle_limit([ProfilePoint(watts=100, seconds_per_unit=math.inf, joules_per_unit=1)], eta=0.5)


def test_choose_limit_ignores_broken_points_and_defaults_to_max() -> None:
    assert choose_limit([], 0.5, 250) == 250
    broken = [ProfilePoint(watts=100, seconds_per_unit=math.nan, joules_per_unit=1.0)]
    assert choose_limit(broken, 0.5, 250) == 250


# --- state machine edge cases -----------------------------------------------------------------


SPEC = EfficiencySpec(step_watts=50, warmup_seconds=30, window_seconds=60)


def step(
    profile: JobProfile | None, obs: JobObservation | None, at: datetime, lo: float = 100, hi: float = 300
) -> JobProfile:
    return advance(profile, job="ns/j", gpu_model="A40", spec=SPEC, min_watts=lo, max_watts=hi, observation=obs, now=at)


def obs(progress: float, energy: float, seconds: float) -> JobObservation:
    return JobObservation(progress, energy, T0 + timedelta(seconds=seconds))


def test_no_observation_means_no_signal_and_no_limit() -> None:
    profile = step(None, None, T0)
    assert profile.state == "NoProgressSignal"
    watts, reason = efficiency_limit(profile)
    assert watts is None
    assert "progress-metric" in reason
    # Progress appears: the sweep starts at the top.
    profile = step(profile, obs(0, 0, 10), T0 + timedelta(seconds=10))
    assert profile.state == "Profiling"
    assert efficiency_limit(profile)[0] == 300


def _measuring(at: float = 40) -> JobProfile:
    profile = step(None, obs(0, 0, 0), T0)
    profile = step(profile, obs(3, 900, at), T0 + timedelta(seconds=at))
    assert profile.phase == "Measure"
    return profile


def test_observation_missing_for_longer_than_a_window_is_reported() -> None:
    profile = _measuring()
    profile = step(profile, None, T0 + timedelta(seconds=40 + 119))
    assert profile.state == "Profiling"
    profile = step(profile, None, T0 + timedelta(seconds=40 + 121))
    assert profile.state == "NoProgressSignal"
    assert "no progress observation" in profile.message
    assert efficiency_limit(profile)[0] is None
    # Comes back: resume at the limit being measured, with a fresh warm-up.
    profile = step(profile, obs(50, 9000, 200), T0 + timedelta(seconds=200))
    assert (profile.state, profile.phase, profile.current_watts) == ("Profiling", "Warmup", 300)


def test_progress_that_does_not_advance_is_no_signal() -> None:
    profile = _measuring()
    profile = step(profile, obs(3, 20000, 101), T0 + timedelta(seconds=101))
    assert profile.state == "NoProgressSignal"
    assert "did not advance" in profile.message


def test_counter_reset_restarts_the_measurement_without_negative_rates() -> None:
    profile = _measuring()
    profile = step(profile, obs(1, 1000, 70), T0 + timedelta(seconds=70))  # a pod restarted: 3 → 1
    assert (profile.state, profile.phase) == ("Profiling", "Warmup")
    assert "backwards" in profile.message
    assert profile.points == []
    profile = step(profile, obs(2, 2000, 100), T0 + timedelta(seconds=100))
    profile = step(profile, obs(8, 5000, 160), T0 + timedelta(seconds=160))
    assert profile.points[0].seconds_per_unit == pytest.approx(10.0)
    assert profile.points[0].joules_per_unit == pytest.approx(500.0)


def test_done_profiles_are_redone_after_reprofile_interval() -> None:
    curve = CURVES[0]
    profile, job = run_sweep(curve, spec_for(curve))
    assert profile.completed_at is not None
    spec = spec_for(curve, reprofile_after_seconds=3600)
    lo, hi = min(curve.limits), max(curve.limits)

    def later(seconds: float, with_obs: bool = True) -> JobProfile:
        at = job.now + timedelta(seconds=seconds)
        o = JobObservation(job.progress + 1, job.energy + 1, at) if with_obs else None
        return advance(
            profile, job="ns/train", gpu_model="A40", spec=spec, min_watts=lo, max_watts=hi, observation=o, now=at
        )

    assert later(3599).state == "Done"
    assert later(7200, with_obs=False).state == "Done"  # no signal: keep the old answer
    again = later(3601)
    assert (again.state, again.current_watts, again.points) == ("Profiling", hi, [])


def test_done_profile_follows_spec_changes_without_a_new_sweep() -> None:
    curve = next(c for c in CURVES if c.name.startswith("v100:"))
    profile, job = run_sweep(curve, spec_for(curve, eta=0.0))
    lo, hi = min(curve.limits), max(curve.limits)
    at = job.now + timedelta(seconds=15)
    redone = advance(
        profile,
        job="ns/train",
        gpu_model="A40",
        spec=spec_for(curve, eta=1.0),
        min_watts=lo,
        max_watts=hi,
        observation=JobObservation(job.progress + 1, job.energy + 1, at),
        now=at,
    )
    assert redone.state == "Done"
    assert redone.chosen_watts == offline_optimum(curve, sorted(p.watts for p in profile.points), 1.0)


def test_sweep_probes_the_floor_even_off_the_step_grid() -> None:
    curve = next(c for c in CURVES if c.name.startswith("a40:") and len(c.points) == 9)
    job = TraceJob(curve)
    profile: JobProfile | None = None
    seen: list[float] = []
    for _ in range(400):
        job.run_until(job.now + timedelta(seconds=15))
        profile = advance(
            profile,
            job="ns/train",
            gpu_model="A40",
            spec=EfficiencySpec(step_watts=40, warmup_seconds=0, window_seconds=30, early_stop_fraction=0.01),
            min_watts=110,
            max_watts=300,
            observation=job.observe(),
            now=job.now,
        )
        watts, _ = efficiency_limit(profile)
        if watts is not None and (not seen or seen[-1] != watts) and profile.state == "Profiling":
            seen.append(watts)
            job.set_limit(watts)
        if profile.state == "Done":
            break
    assert profile is not None
    assert seen == [300, 260, 220, 180, 140, 110]


def test_sweep_fits_in_the_api_point_limit() -> None:
    profile: JobProfile | None = None
    spec = EfficiencySpec(step_watts=1, warmup_seconds=0, window_seconds=1)
    progress = 0.0
    for i in range(1000):
        progress += 1.0
        at = T0 + timedelta(seconds=2 * i)
        profile = advance(
            profile,
            job="ns/j",
            gpu_model="H100",
            spec=spec,
            min_watts=200,
            max_watts=700,
            observation=JobObservation(progress, progress * 300, at),
            now=at,
        )
        if profile.state == "Done":
            break
    assert profile is not None and profile.state == "Done"
    assert len(profile.points) <= MAX_POINTS
    assert min(p.watts for p in profile.points) == 200
    JobProfile.model_validate(profile.to_wire())  # the status accepts it


def test_unusable_range_fails_without_raising() -> None:
    profile = advance(
        None,
        job="ns/j",
        gpu_model="A40",
        spec=SPEC,
        min_watts=100,
        max_watts=math.nan,
        observation=obs(0, 0, 0),
        now=T0,
    )
    assert profile.state == "Failed"
    assert efficiency_limit(profile)[0] is None


def test_corrupt_status_times_restart_cleanly() -> None:
    profile = _measuring().model_copy(update={"phase_started_at": "yesterday"})
    again = step(profile, obs(10, 100, 200), T0 + timedelta(seconds=200))
    assert (again.state, again.phase) == ("Profiling", "Warmup")
    far = _measuring().model_copy(update={"phase_started_at": "9999-12-31T23:59:59Z"})
    assert step(far, obs(10, 100, 200), T0 + timedelta(seconds=200)).state == "Profiling"


# --- properties -----------------------------------------------------------------------------------

numbers = st.floats(allow_nan=True, allow_infinity=True, width=32) | st.integers(-10, 10**6).map(float)


@st.composite
def observation_sequences(draw: st.DrawFn) -> list[tuple[float, JobObservation | None]]:
    """Rounds at irregular times; observations missing, garbage, going backwards or in the past."""
    rounds: list[tuple[float, JobObservation | None]] = []
    t = 0.0
    progress = energy = 0.0
    for _ in range(draw(st.integers(1, 60))):
        t += draw(st.sampled_from([0.0, 1.0, 15.0, 15.0, 15.0, 45.0, 200.0, 5000.0]))
        kind = draw(st.sampled_from(["ok", "ok", "ok", "none", "junk", "reset", "stale"]))
        if kind == "ok":
            progress += draw(st.floats(0, 100))
            energy += draw(st.floats(0, 1e5))
            rounds.append((t, JobObservation(progress, energy, T0 + timedelta(seconds=t))))
        elif kind == "none":
            rounds.append((t, None))
        elif kind == "junk":
            rounds.append(
                (t, JobObservation(draw(numbers), draw(numbers), T0 + timedelta(seconds=t), draw(st.integers(-2, 8))))
            )
        elif kind == "reset":
            progress, energy = draw(st.floats(0, 10)), draw(st.floats(0, 100))
            rounds.append((t, JobObservation(progress, energy, T0 + timedelta(seconds=t))))
        else:
            rounds.append(
                (t, JobObservation(progress, energy, (T0 + timedelta(seconds=t - 1000)).replace(tzinfo=None)))
            )
    return rounds


specs = st.builds(
    EfficiencySpec,
    eta=st.floats(0, 1),
    max_slowdown=st.none() | st.floats(0.01, 2),
    step_watts=st.sampled_from([1.0, 10.0, 25.0, 77.5]),
    warmup_seconds=st.sampled_from([0.0, 10.0, 30.0]),
    window_seconds=st.sampled_from([1.0, 15.0, 60.0]),
    early_stop_fraction=st.floats(0.05, 1),
    reprofile_after_seconds=st.sampled_from([60, 3600]),
)
_odd_watts = st.sampled_from([math.nan, math.inf, -math.inf, -5.0, 0.0])
ranges = st.tuples(
    st.one_of(st.floats(50, 400), st.floats(50, 400), _odd_watts, st.floats(allow_nan=True, allow_infinity=True)),
    st.one_of(st.floats(100, 700), st.floats(100, 700), st.floats(100, 700), _odd_watts),
)


def _drive(
    spec: EfficiencySpec, bounds: tuple[float, float], rounds: list[tuple[float, JobObservation | None]]
) -> list[JobProfile]:
    profile: JobProfile | None = None
    out = []
    for t, o in rounds:
        profile = advance(
            profile,
            job="ns/j",
            gpu_model="A40",
            spec=spec,
            min_watts=bounds[0],
            max_watts=bounds[1],
            observation=o,
            now=T0 + timedelta(seconds=t),
        )
        out.append(profile)
    return out


@settings(max_examples=300, deadline=None)
@given(spec=specs, bounds=ranges, rounds=observation_sequences())
def test_state_machine_never_raises_and_stays_in_bounds(
    spec: EfficiencySpec, bounds: tuple[float, float], rounds: list[tuple[float, JobObservation | None]]
) -> None:
    lo, hi = bounds
    for profile in _drive(spec, bounds, rounds):
        watts, reason = efficiency_limit(profile)
        assert reason
        if watts is not None:
            assert math.isfinite(hi) and hi > 0
            floor = lo if math.isfinite(lo) and 0 < lo <= hi else hi
            assert floor <= watts <= hi
        assert len(profile.points) <= MAX_POINTS
        for point in profile.points:
            assert point.seconds_per_unit > 0 and point.joules_per_unit >= 0
        # Everything survives the trip through the API server.
        assert JobProfile.model_validate(profile.to_wire()) == profile


@settings(max_examples=100, deadline=None)
@given(spec=specs, bounds=ranges, rounds=observation_sequences())
def test_state_machine_is_deterministic(
    spec: EfficiencySpec, bounds: tuple[float, float], rounds: list[tuple[float, JobObservation | None]]
) -> None:
    first = [p.to_wire() for p in _drive(spec, bounds, rounds)]
    second = [p.to_wire() for p in _drive(spec, bounds, rounds)]
    assert first == second


@settings(max_examples=100, deadline=None)
@given(spec=specs, rounds=observation_sequences())
def test_advance_never_mutates_its_input(
    spec: EfficiencySpec, rounds: list[tuple[float, JobObservation | None]]
) -> None:
    profile: JobProfile | None = None
    for t, o in rounds:
        before = profile.model_dump() if profile is not None else None
        nxt = advance(
            profile,
            job="ns/j",
            gpu_model="A40",
            spec=spec,
            min_watts=100,
            max_watts=300,
            observation=o,
            now=T0 + timedelta(seconds=t),
        )
        if profile is not None:
            assert profile.model_dump() == before
        profile = nxt
