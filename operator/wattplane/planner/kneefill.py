"""Knee-aware water-filling: when watts must be taken from a priority class, take the cheap ones first.

A GPU's power-to-throughput curve is concave: near its ceiling a watt buys little work, and somewhere
below there is a *knee* (Zeus's efficient limit, the limit with the best energy per unit of work) under
which every watt taken costs a lot of throughput. Plain water-filling (one common cap level for the
class) ignores that: it cuts the GPU with the highest demand first, even when that GPU sits on the flat
part of its curve and another one, with a lower knee, would lose more work for the same watts.

:func:`knee_water_fill` cuts in two stages, each an ordinary water-fill with one common level:

1. **Above the knees.** Each GPU keeps at least ``min(knee, want)`` (its *effective knee*, never below
   its floor) and the class is levelled down from the wants: ``clamp(L₁, knee, want)``. This is enough
   whenever the amount covers every effective knee.
2. **Below the knees**, only once every GPU stands at its knee: ``clamp(L₂, floor, knee)``.

So no GPU of the class goes below its knee while another is above its own. A GPU without a known
knee (``None`` or missing) is treated as if every watt it asks for bought work (its knee is its want):
stage 1 leaves it alone and stage 2 cuts it with the others. That is the cautious reading of "no
profile yet": an unprofiled job is not assumed to waste watts, and the profiled ones give up only the
watts their own measurements show to be cheap.

Units are absolute watts throughout (wants, knees, floors and the amount for the whole class, floors
included), like :mod:`wattplane.planner.budget`'s levels. Pure, deterministic, O(n log n).
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def effective_knees(
    wants: Mapping[str, float], knees: Mapping[str, float | None], floors: Mapping[str, float]
) -> dict[str, float]:
    """Each key's knee clamped into ``[floor, want]``; a missing or unknown knee is the want itself."""
    out: dict[str, float] = {}
    for key, want in wants.items():
        floor = floors.get(key, 0.0)
        knee = knees.get(key)
        top = max(want, floor)
        out[key] = top if knee is None or not math.isfinite(knee) else min(max(knee, floor), top)
    return out


def knee_water_fill(
    wants: Mapping[str, float],
    knees: Mapping[str, float | None],
    floors: Mapping[str, float],
    amount: float,
) -> dict[str, float]:
    """Share ``amount`` watts among ``wants``, cutting above the knees before anyone goes below one.

    Args:
        wants: What each GPU asks for, watts (raised to its floor if lower).
        knees: Each GPU's efficient limit, watts; ``None`` or absent: unknown (see the module docstring).
        floors: Each GPU's lowest allowed cap, watts (absent: 0).
        amount: Watts for the whole class, floors included.

    Returns:
        Watts per key, each within ``[floor, want]``. When ``amount`` covers every want, the wants;
        when it covers the floors, a sum equal to ``amount`` (to float rounding); below the floors,
        the floors (the caller reports the shortfall).
    """
    lows = {k: max(floors.get(k, 0.0), 0.0) for k in wants}
    highs = {k: max(w, lows[k]) for k, w in wants.items()}
    if not highs:
        return {}
    amount = amount if math.isfinite(amount) else 0.0
    if amount >= math.fsum(highs.values()):
        return dict(highs)
    knee = effective_knees(highs, knees, lows)
    if amount >= math.fsum(knee.values()):
        level = water_level(knee, highs, amount)
        return {k: min(max(level, knee[k]), highs[k]) for k in highs}
    if amount <= math.fsum(lows.values()):
        return dict(lows)
    level = water_level(lows, knee, amount)
    return {k: min(max(level, lows[k]), knee[k]) for k in highs}


def water_level(lows: Mapping[str, float], highs: Mapping[str, float], target: float) -> float:
    """The level ``L`` with ``Σ clamp(L, low, high) = target``, for ``Σ low ≤ target ≤ Σ high``.

    Sweeps the sorted breakpoints: between two of them the sum rises linearly with the number of
    keys whose range contains ``L``. Outside the range the nearest end is returned.
    """
    events = sorted([(lows[k], 1) for k in lows] + [(highs[k], -1) for k in lows])
    if not events:
        return 0.0
    filled = math.fsum(lows.values())
    level = events[0][0]
    if target <= filled:
        return level
    slope = 0
    for value, delta in events:
        if value > level:
            rise = slope * (value - level)
            if filled + rise >= target:
                return level + (target - filled) / slope
            filled += rise
            level = value
        slope += delta
    return level
