"""Zeus as a cluster service: profile a job's power limits online, then keep the cheapest.

Zeus (You, Chung, Chowdhury, NSDI'23) runs inside the training script: it sets each power limit in
turn, skips a few warm-up iterations, measures time and GPU energy over a fixed number of iterations,
and picks the limit with the lowest cost ``eta·E + (1 − eta)·MaxPower·T``. Here the same sweep runs
from the outside, driven by the planner's rounds instead of the training loop: a pod exposes a
progress counter (``wattplane.io/progress-metric``), the agents report the GPUs' energy counters, and
:func:`advance` turns one observation of both into the next state of the job's profile.

All state lives in the :class:`~wattplane.api.v1alpha1.energypolicy.JobProfile` status model, so an
operator restart resumes a sweep where it stood. The state machine, one call per planning round:

* ``Profiling``/``Warmup``: the probe limit was just applied; wait ``warmupSeconds`` for clocks and
  throughput to settle. The first observation after that opens the measurement window.
* ``Profiling``/``Measure``: the first observation at least ``windowSeconds`` after the window opened
  closes it and records a :class:`ProfilePoint` (seconds and joules per unit of progress). The next
  limit is ``stepWatts`` lower (the floor itself is measured last); the sweep ends at the floor, or
  early once throughput falls below ``earlyStopFraction`` (f) of the best measured. Lower limits are
  slower still, and on such a curve the cut loses nothing whenever f ≤ 1 − eta: a point taking
  s > s_best / f seconds per unit costs at least (1 − eta)·P·s > P·s_best, more than the fastest point,
  whose energy per unit is at most P·s_best. (On the Zeus A40/V100 traces the default f = 0.5 cut 22 of
  121 sweeps short and changed no answer at eta 0.5 or 1.)
* ``Done``: :func:`choose_limit` picked ``chosen_watts``; after ``reprofileAfterSeconds`` the sweep
  starts again (the job, the data or the driver may have changed).
* ``NoProgressSignal``: no observation for more than a window past when one was due, or progress did
  not advance over a window. No limit is proposed; the sweep resumes at the limit it was measuring
  once observations come back (points already measured are kept: a pause for evaluation or a
  checkpoint does not invalidate them).
* ``Failed``: the power-limit range handed in is unusable (not finite, not positive).

A counter that goes backwards (a pod restarted and its counter began again at zero, or an agent
restarted) restarts the current limit's warm-up: a restarted pod spends its first minute loading, not
training, so measuring straight away would undercount its throughput.

Units. Progress is whatever the job counts (samples, steps, tokens); ``joules_per_unit`` is the
energy of all the job's GPUs per unit of progress, and ``seconds_per_unit`` wall time per unit. For
both cost terms to be joules per unit for the whole job, ``MaxPower`` is the job's maximum power:
``max_watts × GPUs`` (Zeus's ``ZeusCost`` does the same with ``world_size``). With one GPU this is
exactly Zeus's per-GPU cost.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from wattplane.api.v1alpha1.energypolicy import EfficiencySpec, JobProfile, ProfilePoint

#: The API keeps at most this many points per profile; the sweep step widens so a sweep fits.
MAX_POINTS: Final = 64

#: Limits closer than this are the same limit (float noise from repeated subtraction).
_WATTS_EPS: Final = 1e-6


@dataclass(frozen=True)
class JobObservation:
    """One reading of a job's progress and energy, taken at ``at``.

    Attributes:
        progress: The job's progress counter summed over its pods (monotonic while no pod restarts).
            Sum only complete readings: a pod whose scrape failed makes the sum look like a counter
            reset, which restarts the current measurement.
        energy_joules: Energy of all the job's GPUs, summed (monotonic GPU energy counters).
        at: When both were read.
        gpus: How many GPUs ``energy_joules`` covers; scales MaxPower in the Zeus cost.
    """

    progress: float
    energy_joules: float
    at: datetime
    gpus: int = 1


def _aware(when: datetime) -> datetime:
    """Treat a naive time as UTC so comparisons never mix naive and aware values."""
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def format_time(when: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix, the form the API server writes."""
    return _aware(when).astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: str | None) -> datetime | None:
    """Read a time :func:`format_time` wrote (or any ISO 8601 time); ``None`` when unreadable."""
    if not text:
        return None
    try:
        return _aware(datetime.fromisoformat(text.strip().replace("z", "Z")))
    except (ValueError, TypeError):
        return None


def _finite(value: float | None) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _usable(observation: JobObservation | None) -> JobObservation | None:
    """The observation if its numbers make sense, else ``None`` (treated as missing)."""
    if observation is None:
        return None
    progress, energy = observation.progress, observation.energy_joules
    if not (_finite(progress) and _finite(energy)) or progress < 0 or energy < 0:
        return None
    if not isinstance(observation.at, datetime):
        return None
    gpus = observation.gpus if isinstance(observation.gpus, int) and observation.gpus >= 1 else 1
    return JobObservation(float(progress), float(energy), _aware(observation.at), gpus)


def _range(min_watts: float, max_watts: float) -> tuple[float, float] | None:
    """The sweep's ``(floor, top)``; ``None`` when the top is unusable. A bad floor means no sweep room."""
    if not _finite(max_watts) or max_watts <= 0:
        return None
    hi = float(max_watts)
    lo = float(min_watts) if _finite(min_watts) and 0 < min_watts <= hi else hi
    return lo, hi


def _clamp(value: float, lo: float, hi: float) -> float:
    """``value`` rounded to a milliwatt (no float dust in the status) and kept inside ``[lo, hi]``."""
    return min(max(round(value, 3), lo), hi)


def _point_ok(point: ProfilePoint) -> bool:
    return (
        _finite(point.watts)
        and _finite(point.seconds_per_unit)
        and _finite(point.joules_per_unit)
        and point.seconds_per_unit > 0
        and point.joules_per_unit >= 0
    )


def _in_range(points: Iterable[ProfilePoint], lo: float, hi: float) -> list[ProfilePoint]:
    return [p for p in points if _point_ok(p) and lo <= p.watts <= hi]


def zeus_cost(point: ProfilePoint, *, eta: float, max_power_watts: float) -> float:
    """Zeus's cost of one unit of progress at ``point``: ``eta·J + (1 − eta)·MaxPower·s`` (joules)."""
    return eta * point.joules_per_unit + (1.0 - eta) * max_power_watts * point.seconds_per_unit


def choose_limit(
    points: Iterable[ProfilePoint],
    eta: float,
    max_watts: float,
    max_slowdown: float | None = None,
    *,
    gpus: int = 1,
) -> float:
    """The limit among ``points`` that a Zeus sweep settles on.

    Without ``max_slowdown``: the lowest Zeus cost with ``MaxPower = max_watts × gpus``. With it: the
    lowest energy per unit among points at most ``1 + max_slowdown`` times slower than the fastest
    point. Ties go to the higher limit (the faster one, on a flat curve). Points with non-finite or
    non-positive measurements are ignored; with none left the answer is ``max_watts`` (no change).

    The simulator's hindsight oracle is this function over a workload's full curve.
    """
    usable = [p for p in points if _point_ok(p)]
    if not usable:
        return float(max_watts)
    if max_slowdown is not None and _finite(max_slowdown) and max_slowdown >= 0:
        fastest = min(p.seconds_per_unit for p in usable)
        allowed = [p for p in usable if p.seconds_per_unit <= (1.0 + max_slowdown) * fastest]
        best = min(allowed, key=lambda p: (p.joules_per_unit, -p.watts))
        return best.watts
    weight = min(max(eta, 0.0), 1.0) if _finite(eta) else 0.5
    max_power = float(max_watts) * max(int(gpus), 1) if _finite(max_watts) else 0.0
    best = min(usable, key=lambda p: (zeus_cost(p, eta=weight, max_power_watts=max_power), -p.watts))
    return best.watts


def oracle_limit(
    curve: Iterable[ProfilePoint],
    *,
    eta: float,
    max_slowdown: float | None = None,
    gpus: int = 1,
) -> float:
    """Best static limit in hindsight: :func:`choose_limit` over a whole measured curve.

    ``MaxPower`` is the curve's highest limit (what a sweep would start from), so an online sweep over
    the same limits and this oracle optimise the same cost.
    """
    points = [p for p in curve if _point_ok(p)]
    if not points:
        raise ValueError("the curve has no usable point")
    top = max(p.watts for p in points)
    return choose_limit(points, eta, top, max_slowdown, gpus=gpus)


def _describe_choice(
    chosen: float, eta: float, max_slowdown: float | None, measured: int, early: bool, gpus: int
) -> str:
    tail = f"{measured} limit{'s' if measured != 1 else ''} measured" + (", sweep stopped early" if early else "")
    if max_slowdown is not None:
        return f"{chosen:g} W uses the least energy within {max_slowdown:.0%} of the fastest ({tail})"
    power = "P" if gpus == 1 else f"{gpus}·P"
    return f"{chosen:g} W minimises {eta:g}·E + {1 - eta:g}·{power}·T per unit of progress ({tail})"


def _new(job: str, gpu_model: str, **fields: Any) -> JobProfile:
    return JobProfile(job=job, gpu_model=gpu_model, **fields)


def _probe(
    job: str,
    gpu_model: str,
    watts: float,
    points: Sequence[ProfilePoint],
    now: datetime,
    message: str,
) -> JobProfile:
    """Apply ``watts`` and warm up."""
    return _new(
        job,
        gpu_model,
        state="Profiling",
        current_watts=watts,
        phase="Warmup",
        phase_started_at=format_time(now),
        points=[p.model_copy() for p in points],
        message=message,
    )


def _no_signal(job: str, gpu_model: str, profile: JobProfile | None, message: str) -> JobProfile:
    """Stop proposing a limit; keep what a later resume needs (the limit being measured, the points)."""
    points = [p.model_copy() for p in profile.points] if profile is not None else []
    current = profile.current_watts if profile is not None else None
    return _new(job, gpu_model, state="NoProgressSignal", current_watts=current, points=points, message=message)


def _fresh(job: str, gpu_model: str, hi: float, now: datetime, why: str) -> JobProfile:
    return _probe(job, gpu_model, hi, [], now, f"{why}: warming up at {hi:g} W")


def _step(spec: EfficiencySpec, lo: float, hi: float) -> float:
    """The sweep step, widened if needed so that the whole sweep fits in :data:`MAX_POINTS`."""
    step = spec.step_watts if _finite(spec.step_watts) and spec.step_watts > 0 else 25.0
    return max(step, (hi - lo) / (MAX_POINTS - 1))


def advance(
    profile: JobProfile | None,
    *,
    job: str,
    gpu_model: str,
    spec: EfficiencySpec,
    min_watts: float,
    max_watts: float,
    observation: JobObservation | None,
    now: datetime,
) -> JobProfile:
    """One planning round of a job's Zeus sweep: the profile after seeing ``observation`` at ``now``.

    Args:
        profile: The job's profile from the policy status, ``None`` for a job never seen.
        job: ``namespace/job``.
        gpu_model: The GPU model the job runs on (profiles are per model).
        spec: The policy's efficiency section (fold a pod's ``max-slowdown`` annotation into
            ``spec.max_slowdown`` before calling).
        min_watts: Lowest limit the sweep may probe: the device minimum raised to the policy floor.
        max_watts: Where the sweep starts: the device maximum lowered by any static cap, so every
            probe is a limit the GPUs really run at.
        observation: The job's progress and energy now, or ``None`` when unavailable this round.
        now: The planning round's time.

    Returns:
        A new profile; ``profile`` is never modified. Never raises on odd numbers (NaN, counters
        going backwards, limits outside the range): those steer the state machine instead.
    """
    now = _aware(now)
    obs = _usable(observation)
    bounds = _range(min_watts, max_watts)
    if bounds is None:
        kept = [p.model_copy() for p in profile.points] if profile is not None else []
        return _new(
            job, gpu_model, state="Failed", points=kept, message=f"no usable power-limit range ({max_watts!r} W)"
        )
    lo, hi = bounds
    if profile is None or profile.job != job or profile.gpu_model != gpu_model:
        if obs is None:
            return _no_signal(job, gpu_model, None, _missing_message())
        return _fresh(job, gpu_model, hi, now, "sweep started")
    if profile.state == "Done":
        return _done(profile, spec, lo, hi, obs, now)
    if profile.state == "Profiling":
        return _profiling(profile, spec, lo, hi, obs, now)
    if obs is None:  # NoProgressSignal or Failed, still nothing to measure with
        if profile.state == "NoProgressSignal":
            return profile.model_copy(deep=True)
        return _no_signal(job, gpu_model, None, _missing_message())
    return _resume(profile, hi, lo, now)


def _missing_message() -> str:
    return (
        "no progress signal: the job's pods need a readable wattplane.io/progress-metric "
        "(a Prometheus counter) for the efficiency section to profile them"
    )


def _resume(profile: JobProfile, hi: float, lo: float, now: datetime) -> JobProfile:
    """Observations are back: continue the sweep where it stood, or start one."""
    current = profile.current_watts
    if profile.state == "NoProgressSignal" and _finite(current) and current is not None:
        watts = _clamp(current, lo, hi)
        return _probe(
            profile.job,
            profile.gpu_model,
            watts,
            profile.points,
            now,
            f"progress signal back: warming up at {watts:g} W ({len(profile.points)} limit(s) measured)",
        )
    return _fresh(profile.job, profile.gpu_model, hi, now, "progress signal found, sweep started")


def _done(
    profile: JobProfile, spec: EfficiencySpec, lo: float, hi: float, obs: JobObservation | None, now: datetime
) -> JobProfile:
    completed = parse_time(profile.completed_at)
    if obs is not None and (completed is None or (now - completed).total_seconds() >= spec.reprofile_after_seconds):
        why = "profile expired" if completed is not None else "profile has no completion time"
        return _fresh(profile.job, profile.gpu_model, hi, now, f"{why}, sweep restarted")
    if obs is None:
        # Without the GPU count the cost cannot be recomputed; keep the answer, inside the range.
        chosen = profile.chosen_watts if _finite(profile.chosen_watts) else None
        if chosen is not None and lo <= chosen <= hi:
            return profile  # unchanged: nobody mutates profiles, so no copy is needed
        kept = _clamp(chosen if chosen is not None else hi, lo, hi)
        return profile.model_copy(deep=True, update={"chosen_watts": kept})
    points = _in_range(profile.points, lo, hi)
    if not points:
        return _fresh(profile.job, profile.gpu_model, hi, now, "no measured limit inside the allowed range")
    # Re-choose every round: a changed eta, slowdown bound or range takes effect without a new sweep.
    chosen = choose_limit(points, spec.eta, hi, spec.max_slowdown, gpus=obs.gpus)
    early = _stopped_early(points, lo)
    message = _describe_choice(chosen, spec.eta, spec.max_slowdown, len(points), early, obs.gpus)
    if chosen == profile.chosen_watts and message == profile.message:
        return profile  # the steady state of a finished sweep: no copy (it is most rounds of a job's life)
    return profile.model_copy(deep=True, update={"chosen_watts": chosen, "message": message})


def _stopped_early(points: Sequence[ProfilePoint], lo: float) -> bool:
    return bool(points) and min(p.watts for p in points) > lo + _WATTS_EPS


def _profiling(
    profile: JobProfile, spec: EfficiencySpec, lo: float, hi: float, obs: JobObservation | None, now: datetime
) -> JobProfile:
    job, model = profile.job, profile.gpu_model
    current = profile.current_watts
    if current is None or not _finite(current):
        return _fresh(job, model, hi, now, "profile had no probe limit, sweep restarted")
    if not lo <= current <= hi:
        watts = _clamp(current, lo, hi)
        return _probe(job, model, watts, profile.points, now, f"allowed range changed: warming up at {watts:g} W")
    started = parse_time(profile.phase_started_at)
    if started is None:
        return _probe(job, model, current, profile.points, now, f"warming up at {current:g} W")
    warmup, window = spec.warmup_seconds, spec.window_seconds
    # Elapsed seconds, never ``started + timedelta``: a corrupt far-future time must not overflow.
    waited = (now - started).total_seconds()
    if profile.phase != "Measure":
        if obs is not None and (obs.at - started).total_seconds() >= warmup:
            return profile.model_copy(
                deep=True,
                update={
                    "phase": "Measure",
                    "phase_started_at": format_time(obs.at),
                    "start_progress": obs.progress,
                    "start_energy_joules": obs.energy_joules,
                    "message": f"measuring {current:g} W for {spec.window_seconds:g} s",
                },
            )
        if waited >= warmup + window:
            return _no_signal(job, model, profile, f"no progress observation since the warm-up at {current:g} W ended")
        return profile.model_copy(deep=True)
    start_progress, start_energy = profile.start_progress, profile.start_energy_joules
    if start_progress is None or start_energy is None or not (_finite(start_progress) and _finite(start_energy)):
        return _probe(job, model, current, profile.points, now, f"window lost its start, warming up at {current:g} W")
    if obs is None or obs.at <= started:
        if waited >= 2 * window:
            return _no_signal(job, model, profile, f"no progress observation for over {spec.window_seconds:g} s")
        return profile.model_copy(deep=True)
    if obs.progress < start_progress or obs.energy_joules < start_energy:
        return _probe(
            job,
            model,
            current,
            profile.points,
            now,
            f"a counter went backwards (pod or agent restarted?): warming up at {current:g} W again",
        )
    seconds = (obs.at - started).total_seconds()
    if seconds < window:
        return profile.model_copy(deep=True)
    progress = obs.progress - start_progress
    if progress <= 0 or not math.isfinite(seconds / progress):
        return _no_signal(job, model, profile, f"progress did not advance in {seconds:g} s at {current:g} W")
    point = ProfilePoint(
        watts=current,
        seconds_per_unit=seconds / progress,
        joules_per_unit=(obs.energy_joules - start_energy) / progress,
    )
    points = [p.model_copy() for p in profile.points if abs(p.watts - current) > _WATTS_EPS] + [point]
    points.sort(key=lambda p: -p.watts)
    return _next(profile, spec, lo, hi, points, point, obs, now)


def _next(
    profile: JobProfile,
    spec: EfficiencySpec,
    lo: float,
    hi: float,
    points: list[ProfilePoint],
    latest: ProfilePoint,
    obs: JobObservation,
    now: datetime,
) -> JobProfile:
    """After measuring ``latest``: probe the next limit down, or finish."""
    valid = _in_range(points, lo, hi)
    best_rate = max(1.0 / p.seconds_per_unit for p in valid)
    slow = 1.0 / latest.seconds_per_unit < spec.early_stop_fraction * best_rate
    at_floor = latest.watts <= lo + _WATTS_EPS
    if slow or at_floor or len(points) >= MAX_POINTS:
        chosen = choose_limit(valid, spec.eta, hi, spec.max_slowdown, gpus=obs.gpus)
        early = slow and not at_floor
        message = _describe_choice(chosen, spec.eta, spec.max_slowdown, len(valid), early, obs.gpus)
        return _new(
            profile.job,
            profile.gpu_model,
            state="Done",
            points=points,
            chosen_watts=chosen,
            completed_at=format_time(now),
            message=message,
        )
    nxt = _clamp(latest.watts - _step(spec, lo, hi), lo, hi)
    rate = 1.0 / latest.seconds_per_unit
    return _probe(
        profile.job,
        profile.gpu_model,
        nxt,
        points,
        now,
        f"{latest.watts:g} W: {rate:.4g} units/s, {latest.joules_per_unit:.4g} J/unit; warming up at {nxt:g} W",
    )


def efficiency_limit(profile: JobProfile | None) -> tuple[float | None, str]:
    """The limit the efficiency section proposes for a job's GPUs, and why.

    The probe limit while profiling (the sweep measures what the GPUs run at), the chosen limit when
    done, and ``None`` otherwise: without a progress signal there is nothing to optimise for.
    """
    if profile is None:
        return None, "Zeus: no profile yet (waiting for a progress signal)"
    if profile.state == "Profiling" and _finite(profile.current_watts) and profile.current_watts is not None:
        phase = "warm-up" if profile.phase != "Measure" else "measuring"
        count = len(profile.points)
        measured = f"{count} limit{'s' if count != 1 else ''} measured"
        return profile.current_watts, f"Zeus profiling: {phase} at {profile.current_watts:g} W ({measured})"
    if profile.state == "Done" and _finite(profile.chosen_watts) and profile.chosen_watts is not None:
        return profile.chosen_watts, f"Zeus profile: {profile.message}" if profile.message else "Zeus profile"
    return None, f"Zeus: {profile.message}" if profile.message else f"Zeus: {profile.state}"
