"""Perseus-style straggler caps, driven by the Zeus A40 power-limit curves.

A four-pod data-parallel job: pod 0's GPU runs at 0.85× the others' speed (a throttled or older card).
Each pod's compute rate at a limit comes from the trace (epochs/s = 1/time_per_epoch, scaled by the
pod's factor). Rounds of :func:`decide_caps` should settle the three fast pods just above the slow
pod's pace without ever capping the slow pod, keep the job's pace, and save energy.

Energy per job step is counted for each pod as compute power × compute time (the trace's average
power over the pod's own compute time) with the pods waiting at 0 W: the lower bound on savings,
since a GPU waiting in a collective really draws a good part of its compute power.

Data: ``zeus_summary_power_a40.csv`` as packaged with the agent (``agent/wattplane/agent/gpu/data``;
ml-energy/zeus, Apache-2.0, see the NOTICE.md there).
"""

from __future__ import annotations

import csv
import itertools
import math
from collections import defaultdict
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from repodata import GPU_DATA
from wattplane.api.v1alpha1.energypolicy import StragglerSpec
from wattplane.planner.snapshot import PodKey
from wattplane.planner.stragglers import CapDecision, Hold, advance_caps, decide_caps

DATA = GPU_DATA / "zeus_summary_power_a40.csv"
PODS: tuple[PodKey, ...] = tuple(("team", f"train-{i}") for i in range(4))
SLOW = PODS[0]
FACTOR = {SLOW: 0.85, **{p: 1.0 for p in PODS[1:]}}
CEILING, FLOOR = 300.0, 100.0
SPEC = StragglerSpec(tolerance=0.05, step_watts=25)


@dataclass(frozen=True)
class Curve:
    name: str
    points: dict[float, tuple[float, float]]  # limit → (seconds per epoch, average watts)

    def at(self, watts: float) -> tuple[float, float]:
        limits = sorted(self.points)
        watts = min(max(watts, limits[0]), limits[-1])
        for lo, hi in itertools.pairwise(limits):
            if lo <= watts <= hi:
                f = 0.0 if hi == lo else (watts - lo) / (hi - lo)
                (t0, p0), (t1, p1) = self.points[lo], self.points[hi]
                return t0 + f * (t1 - t0), p0 + f * (p1 - p0)
        return self.points[limits[-1]]

    @property
    def power_bound(self) -> bool:
        """Whether the limit matters: 20% slower at the floor than at the top (else the trace is noise)."""
        return self.points[FLOOR][0] >= 1.2 * self.points[CEILING][0]


def load_a40() -> list[Curve]:
    if not DATA.is_file():
        raise FileNotFoundError(f"Zeus trace {DATA} is missing from the agent package")
    grouped: dict[str, dict[float, tuple[float, float]]] = defaultdict(dict)
    with DATA.open(newline="") as handle:
        for row in csv.DictReader(handle):
            name = f"{row['dataset']}/{row['network']}/bs{row['batch_size']}"
            grouped[name][float(row["power_limit"])] = (float(row["time_per_epoch"]), float(row["average_power"]))
    return [Curve(n, p) for n, p in sorted(grouped.items()) if len(p) == 9]  # the full 25 W sweeps


CURVES = load_a40()


@dataclass
class Run:
    rounds: int
    caps: dict[PodKey, float | None]
    decisions: dict[PodKey, CapDecision]
    pace_history: list[float]  # job rate (min over pods) per round, relative to the uncapped job
    straggler_capped: bool


def rate(curve: Curve, pod: PodKey, cap: float | None) -> float:
    return FACTOR[pod] / curve.at(cap if cap is not None else CEILING)[0]


def energy_per_job_step(curve: Curve, caps: dict[PodKey, float | None]) -> float:
    """Joules per job step, each pod at its compute power for its compute time (waiting at 0 W)."""
    total = 0.0
    for pod in PODS:
        cap = caps[pod]
        seconds, watts = curve.at(cap if cap is not None else CEILING)
        total += seconds / FACTOR[pod] * watts
    return total


def simulate(curve: Curve, *, keep_holds: bool = True, max_rounds: int = 40) -> Run:
    caps: dict[PodKey, float | None] = dict.fromkeys(PODS)
    holds: dict[PodKey, Hold] = {}
    uncapped_pace = min(rate(curve, p, None) for p in PODS)
    history: list[float] = []
    straggler_capped = False
    decisions: dict[PodKey, CapDecision] = {}
    for n in range(1, max_rounds + 1):
        rates = {p: rate(curve, p, caps[p]) for p in PODS}
        history.append(min(rates.values()) / uncapped_pace)
        decisions = decide_caps(
            rates,
            caps,
            dict.fromkeys(PODS, CEILING),
            dict.fromkeys(PODS, FLOOR),
            SPEC,
            holds=holds if keep_holds else None,
        )
        new = {p: d.cap_watts for p, d in decisions.items()}
        holds = {p: d.hold for p, d in decisions.items() if d.hold is not None}
        straggler_capped |= new[SLOW] is not None
        if new == caps:
            return Run(n, caps, decisions, history, straggler_capped)
        caps = new
    return Run(max_rounds + 1, caps, decisions, history, straggler_capped)


def test_the_trace_has_power_bound_workloads() -> None:
    assert len(CURVES) >= 40
    assert sum(c.power_bound for c in CURVES) >= 20


@pytest.mark.parametrize("curve", CURVES, ids=lambda c: c.name)
def test_fast_pods_settle_at_the_stragglers_pace(curve: Curve) -> None:
    run = simulate(curve)
    steps = int((CEILING - FLOOR) / SPEC.step_watts)
    assert run.rounds <= steps + 4, "did not converge"
    assert not run.straggler_capped
    assert run.caps[SLOW] is None
    pace = rate(curve, SLOW, None)
    for pod in PODS[1:]:
        ratio = rate(curve, pod, run.caps[pod]) / pace
        decision = run.decisions[pod]
        if ratio > 1 + SPEC.tolerance:
            # Still faster: only where one more step is not allowed (the floor, or a step that overshot).
            assert run.caps[pod] == FLOOR or (decision.hold is not None and run.caps[pod] == decision.hold.watts), (
                ratio,
                decision,
            )
        else:
            assert ratio >= 1 - SPEC.tolerance, (ratio, decision)
    # The job keeps its pace (to within the tolerance) once settled; an overshoot costs at most one round.
    assert run.pace_history[-1] >= 1 - SPEC.tolerance
    assert sum(p < 1 - SPEC.tolerance for p in run.pace_history) <= 1


@pytest.mark.parametrize("curve", [c for c in CURVES if c.power_bound], ids=lambda c: c.name)
def test_capping_fast_pods_saves_energy(curve: Curve) -> None:
    run = simulate(curve)
    before = energy_per_job_step(curve, dict.fromkeys(PODS))
    after = energy_per_job_step(curve, run.caps)
    assert after < before, f"{curve.name}: {after:.0f} J vs {before:.0f} J per step"


def test_energy_saved_over_the_power_bound_workloads() -> None:
    saved = []
    for curve in (c for c in CURVES if c.power_bound):
        run = simulate(curve)
        saved.append(1 - energy_per_job_step(curve, run.caps) / energy_per_job_step(curve, dict.fromkeys(PODS)))
    mean = sum(saved) / len(saved)
    assert mean > 0.05, saved  # measured: about 15% of the job's GPU energy per step


def test_holds_stop_the_two_cap_cycle_on_steep_curves() -> None:
    """Without the holds a pod flips between a cap that is too fast and one that is too slow."""
    cycling = [c.name for c in CURVES if simulate(c, keep_holds=False).rounds > 40]
    assert cycling, "expected some curve steep enough to make a 25 W step overshoot the 5% band"
    assert "cifar100/shufflenetv2/bs1024" in cycling
    assert all(simulate(c).rounds <= 12 for c in CURVES)


def test_fewer_than_two_rates_means_no_caps() -> None:
    a, b, c = PODS[:3]
    caps = advance_caps({a: 10.0, b: None, c: math.nan}, {a: 200.0, b: 150.0}, {}, {}, SPEC)
    assert caps == {a: None, b: None, c: None}


def test_unknown_rate_keeps_its_cap_and_slowest_is_uncapped() -> None:
    a, b, c, d = PODS
    ceilings = dict.fromkeys(PODS, 300.0)
    floors = dict.fromkeys(PODS, 100.0)
    decisions = decide_caps(
        {a: 1.0, b: 1.5, c: None, d: 1.02}, {a: 250.0, b: 250.0, c: 200.0, d: None}, ceilings, floors, SPEC
    )
    # a is capped, d is the slowest uncapped pod: d sets the pace, a (slower, but within 5%) keeps its cap.
    assert decisions[d].cap_watts is None and "never capped" in decisions[d].reason
    assert decisions[a].cap_watts == 250.0
    assert decisions[b].cap_watts == 225.0 and "lowered 250 → 225 W" in decisions[b].reason
    assert decisions[c].cap_watts == 200.0 and "unknown" in decisions[c].reason


def test_capped_pod_that_falls_behind_is_raised_and_released() -> None:
    a, b = PODS[:2]
    ceilings, floors = {a: 300.0, b: 300.0}, {a: 100.0, b: 100.0}
    d = decide_caps({a: 1.0, b: 0.8}, {a: None, b: 250.0}, ceilings, floors, SPEC)
    assert d[b].cap_watts == 275.0 and "raised" in d[b].reason
    assert d[b].hold == Hold(275.0, 1.0)
    d = decide_caps({a: 1.0, b: 0.8}, {a: None, b: 290.0}, ceilings, floors, SPEC)
    assert d[b].cap_watts is None and "removed" in d[b].reason
    # Everybody capped (an operator restart kept stale caps): the slowest is released.
    d = decide_caps({a: 1.0, b: 1.3}, {a: 200.0, b: 200.0}, ceilings, floors, SPEC)
    assert d[a].cap_watts is None
    assert d[b].cap_watts == 175.0


def test_holds_lapse_when_the_pace_changes() -> None:
    a, b = PODS[:2]
    ceilings, floors = {a: 300.0, b: 300.0}, {a: 100.0, b: 100.0}
    hold = {b: Hold(250.0, 1.0)}
    kept = decide_caps({a: 1.0, b: 1.2}, {b: 250.0}, ceilings, floors, SPEC, holds=hold)
    assert kept[b].cap_watts == 250.0 and "kept pace" in kept[b].reason
    lapsed = decide_caps({a: 0.8, b: 1.2}, {b: 250.0}, ceilings, floors, SPEC, holds=hold)
    assert lapsed[b].cap_watts == 225.0 and lapsed[b].hold is None


def test_missing_bounds_never_cap() -> None:
    a, b = PODS[:2]
    d = decide_caps({a: 1.0, b: 2.0}, {b: 200.0}, {a: 300.0}, {a: 100.0}, SPEC)
    assert d[b].cap_watts is None and "no ceiling" in d[b].reason
    d = decide_caps({a: 1.0, b: 2.0}, {}, {a: 300.0, b: 300.0}, {}, SPEC)
    assert d[b].cap_watts is None  # no floor: never lowered


# --- properties -----------------------------------------------------------------------------------

keys = st.sampled_from([("ns", f"p{i}") for i in range(6)])
maybe_rate = st.none() | st.floats(allow_nan=True, allow_infinity=True) | st.floats(0.01, 100)
watts = st.floats(allow_nan=True, allow_infinity=True) | st.floats(50, 500)


Rates = dict[PodKey, float | None]
Bounds = dict[PodKey, float]


@st.composite
def rounds_input(draw: st.DrawFn) -> tuple[Rates, Rates, Bounds, Bounds]:
    rates = draw(st.dictionaries(keys, maybe_rate, max_size=6))
    caps = draw(st.dictionaries(keys, st.none() | watts, max_size=6))
    ceilings = draw(st.dictionaries(keys, watts, max_size=6))
    floors = draw(st.dictionaries(keys, watts, max_size=6))
    return rates, caps, ceilings, floors


@settings(max_examples=500, deadline=None)
@given(
    data=rounds_input(),
    spec=st.builds(StragglerSpec, tolerance=st.floats(0.001, 1), step_watts=st.floats(1, 500)),
)
def test_caps_stay_within_floor_and_ceiling_and_are_deterministic(
    data: tuple[Rates, Rates, Bounds, Bounds], spec: StragglerSpec
) -> None:
    rates, caps, ceilings, floors = data
    first = decide_caps(rates, caps, ceilings, floors, spec)
    assert first == decide_caps(dict(reversed(rates.items())), caps, ceilings, floors, spec)
    assert set(first) == set(rates)
    for key, decision in first.items():
        assert decision.reason
        if decision.cap_watts is None:
            continue
        ceiling, floor = ceilings[key], floors[key]  # a cap needs both bounds
        assert math.isfinite(decision.cap_watts)
        assert min(floor, ceiling) <= decision.cap_watts < ceiling
    known = [k for k, r in rates.items() if r is not None and math.isfinite(r) and r > 0]
    if len(known) >= 2:
        # Someone among the pods with a rate is left uncapped: the pace-setter.
        assert any(first[k].cap_watts is None for k in known)


@settings(max_examples=200, deadline=None)
@given(
    curve=st.sampled_from(CURVES),
    factors=st.lists(st.floats(0.5, 1.0), min_size=2, max_size=6),
    tolerance=st.sampled_from([0.02, 0.05, 0.1]),
)
def test_the_slowest_gpu_is_never_capped_while_rates_track_limits(
    curve: Curve, factors: list[float], tolerance: float
) -> None:
    pods = [("ns", f"p{i}") for i in range(len(factors))]
    spec = StragglerSpec(tolerance=tolerance, step_watts=25)
    slowest = min(pods, key=lambda p: (factors[pods.index(p)], p))
    caps: dict[PodKey, float | None] = dict.fromkeys(pods)
    holds: dict[PodKey, Hold] = {}
    for _ in range(30):
        rates = {p: factors[i] / curve.at(caps[p] or CEILING)[0] for i, p in enumerate(pods)}
        decisions = decide_caps(
            rates, caps, dict.fromkeys(pods, CEILING), dict.fromkeys(pods, FLOOR), spec, holds=holds
        )
        caps = {p: d.cap_watts for p, d in decisions.items()}
        holds = {p: d.hold for p, d in decisions.items() if d.hold is not None}
        assert caps[slowest] is None
