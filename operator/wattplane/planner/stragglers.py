"""Perseus-style straggler caps: slow down the pods of a job that would only wait for the slowest one.

In synchronous data-parallel training every step ends with a collective operation, so the job moves at
the pace of its slowest pod (a throttled or older GPU, a noisy neighbour). The other pods finish their
share early and wait, drawing power for nothing: Perseus (Chung et al., SOSP'24) calls this energy
bloat and removes it by running the non-critical work slower. Perseus plans from a profiled
time-energy frontier; here the controller is measurement-driven, one step per planning round:

* The **straggler** is the slowest pod this module has not capped. It sets the job's pace and is never
  capped. (If every pod with a rate is capped, the slowest of them becomes the straggler and is
  released.)
* A pod more than ``tolerance`` faster than the straggler is **lowered** by ``stepWatts`` (from its cap,
  or from its ceiling when uncapped), never below its floor.
* A capped pod more than ``tolerance`` slower than the straggler overshot (one step cost more speed
  than the tolerance band is wide): it is **raised** by ``stepWatts``, and the cap is removed once it
  reaches the ceiling. The raise leaves a :class:`Hold`: the pod will not be lowered below the raised
  cap again while the straggler keeps its pace, which is what stops a pod from cycling between a cap
  that is too fast and one that is too slow on a steep part of its power curve.
* A pod whose rate is unknown keeps its cap; with fewer than two rates there is no reference and no cap.

Rates must be each pod's own compute speed (e.g. steps per second of compute, excluding the time spent
waiting in collectives): the plain progress counters of synchronous pods all advance at the job's pace
and show no straggler at all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from wattplane.api.v1alpha1.energypolicy import StragglerSpec
from wattplane.planner.snapshot import PodKey


@dataclass(frozen=True)
class Hold:
    """Lowest cap known to keep a pod up with the straggler, learned when a step down overshot.

    Attributes:
        watts: Do not lower the pod's cap below this.
        straggler_rate: The straggler's rate when it was learned; the hold lapses once the straggler's
            rate moves by more than the tolerance (the pace to match has changed).
    """

    watts: float
    straggler_rate: float


@dataclass(frozen=True)
class CapDecision:
    """One pod's straggler cap for the next round, and why.

    Attributes:
        cap_watts: The cap, or ``None`` for no straggler cap.
        reason: Human-readable explanation for ``wattplane explain`` and the GPU target.
        hold: Memory to hand back next round (see :class:`Hold`).
    """

    cap_watts: float | None
    reason: str
    hold: Hold | None = None


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _name(key: PodKey) -> str:
    return f"{key[0]}/{key[1]}"


@dataclass(frozen=True)
class _Bounds:
    ceiling: float | None  # None: nothing known to cap from
    lowest: float  # the floor (or the ceiling, when no floor is known: no lowering)


def _bounds(key: PodKey, ceilings: Mapping[PodKey, float], floors: Mapping[PodKey, float]) -> _Bounds:
    ceiling = ceilings.get(key)
    if ceiling is None or not _finite(ceiling) or ceiling <= 0:
        return _Bounds(None, 0.0)
    floor = floors.get(key)
    if floor is None or not _finite(floor) or floor <= 0:
        return _Bounds(float(ceiling), float(ceiling))
    return _Bounds(float(ceiling), min(float(floor), float(ceiling)))


def _current(cap: float | None, bounds: _Bounds) -> float | None:
    """The pod's cap as it stands, made consistent with its bounds (``None``: uncapped)."""
    if cap is None or not _finite(cap) or bounds.ceiling is None:
        return None
    cap = max(float(cap), bounds.lowest)
    return cap if cap < bounds.ceiling else None


def _round_watts(value: float) -> float:
    return round(value, 3)


def decide_caps(
    rates: Mapping[PodKey, float | None],
    caps: Mapping[PodKey, float | None],
    ceilings: Mapping[PodKey, float],
    floors: Mapping[PodKey, float],
    spec: StragglerSpec,
    *,
    holds: Mapping[PodKey, Hold] | None = None,
) -> dict[PodKey, CapDecision]:
    """One round of straggler control for the pods of one job.

    Args:
        rates: Each pod's compute step rate (higher is faster); ``None``/NaN/≤ 0 when unknown.
            The result has one entry per key of ``rates``.
        caps: The straggler caps in force (absent or ``None``: uncapped).
        ceilings: Per pod, the limit it would run at without a straggler cap (what the other sections
            allow), watts. A pod without a ceiling is never capped.
        floors: Per pod, the lowest straggler cap allowed (the policy floor), watts. A pod without a
            floor is never lowered.
        spec: The policy's ``stragglers`` section.
        holds: The holds the previous round returned.

    Returns:
        The next cap, reason and hold of every pod. Pure and deterministic; caps lie in
        ``[floor, ceiling)`` or are ``None``.
    """
    holds = holds or {}
    known = {k: float(r) for k, r in rates.items() if r is not None and _finite(r) and r > 0}
    if len(known) < 2:
        why = "fewer than two pods report a step rate: no straggler caps"
        return {k: CapDecision(None, why) for k in sorted(rates)}
    bounds = {k: _bounds(k, ceilings, floors) for k in rates}
    current = {k: _current(caps.get(k), bounds[k]) for k in rates}
    uncapped = [k for k in known if current[k] is None]
    straggler = min(uncapped or known, key=lambda k: (known[k], k))
    pace = known[straggler]
    out: dict[PodKey, CapDecision] = {}
    for key in sorted(rates):
        hold = _live_hold(holds.get(key), pace, spec.tolerance)
        if key == straggler:
            out[key] = CapDecision(None, f"slowest pod ({pace:.4g}/s) sets the job's pace: never capped")
        elif key not in known:
            out[key] = CapDecision(current[key], "step rate unknown: cap unchanged", hold)
        else:
            ceiling = bounds[key].ceiling
            if ceiling is None:
                out[key] = CapDecision(None, "no ceiling known: not capped")
            else:
                ratio = known[key] / pace
                out[key] = _step(ratio, current[key], ceiling, bounds[key].lowest, hold, pace, straggler, spec)
    return out


def _live_hold(hold: Hold | None, pace: float, tolerance: float) -> Hold | None:
    if hold is None or not (_finite(hold.watts) and _finite(hold.straggler_rate)) or hold.straggler_rate <= 0:
        return None
    return hold if abs(pace / hold.straggler_rate - 1.0) <= tolerance else None


def _step(
    ratio: float,
    cap: float | None,
    ceiling: float,
    floor: float,
    hold: Hold | None,
    pace: float,
    straggler: PodKey,
    spec: StragglerSpec,
) -> CapDecision:
    """Move one non-straggler pod by at most one step."""
    tol = spec.tolerance
    relative = f"{abs(ratio - 1):.1%} {'faster' if ratio >= 1 else 'slower'} than the slowest pod {_name(straggler)}"
    if ratio > 1 + tol:
        lowest = max(floor, hold.watts) if hold is not None else floor
        base = cap if cap is not None else ceiling
        if base <= lowest:
            where = "its floor" if hold is None or floor >= hold.watts else "the lowest cap that kept pace"
            return CapDecision(cap, f"{relative}, but already at {where} ({base:g} W)", hold)
        new = max(_round_watts(base - spec.step_watts), lowest)
        if new >= ceiling:  # a step lost in float rounding on an absurd ceiling: nothing to cap
            return CapDecision(None, f"{relative}, but a {spec.step_watts:g} W step does not lower {base:g} W", hold)
        return CapDecision(new, f"{relative}: lowered {base:g} → {new:g} W", hold)
    if ratio < 1 - tol and cap is not None:
        raised = _round_watts(cap + spec.step_watts)
        learned = Hold(min(raised, ceiling), pace)
        if raised >= ceiling:
            return CapDecision(None, f"{relative}: cap {cap:g} W removed", learned)
        return CapDecision(raised, f"{relative}: raised {cap:g} → {raised:g} W", learned)
    where = f"kept at {cap:g} W" if cap is not None else "left uncapped"
    return CapDecision(cap, f"within {tol:.0%} of the slowest pod's pace: {where}", hold)


def advance_caps(
    rates: Mapping[PodKey, float | None],
    caps: Mapping[PodKey, float | None],
    ceilings: Mapping[PodKey, float],
    floors: Mapping[PodKey, float],
    spec: StragglerSpec,
    *,
    holds: Mapping[PodKey, Hold] | None = None,
) -> dict[PodKey, float | None]:
    """The caps of :func:`decide_caps` alone.

    Without ``holds`` carried between rounds a pod can cycle between two adjacent caps when one step
    changes its rate by more than twice the tolerance; use :func:`decide_caps` and keep its holds.
    """
    return {k: d.cap_watts for k, d in decide_caps(rates, caps, ceilings, floors, spec, holds=holds).items()}
