"""Static caps (the ``limits`` section): from a policy and a device to one power limit.

MIT Lincoln Lab's supercomputing centre capped GPUs at 60-80% of their default limit and measured a
modest slowdown for a sizeable energy saving; ``maxFractionOfDefault: 0.6-0.8`` is the reference use.
Watts and fractions may be combined: the tightest cap wins, and the result always lies inside the
device's constraints (the agent clamps again, as defence in depth).
"""

from __future__ import annotations

from dataclasses import dataclass

from wattplane.api.v1alpha1.energypolicy import PowerLimits
from wattplane.planner.snapshot import GpuView


@dataclass(frozen=True)
class CapDecision:
    """A GPU's limit from the static section, and how it was reached."""

    watts: float
    reason: str
    clamped: bool


def static_cap(limits: PowerLimits, gpu: GpuView) -> CapDecision | None:
    """The cap ``limits`` imposes on ``gpu``, or ``None`` when it sets no upper bound."""
    caps: list[tuple[float, str]] = []
    if limits.max_watts is not None:
        caps.append((limits.max_watts, f"maxWatts {limits.max_watts:g} W"))
    if limits.max_fraction_of_default is not None:
        watts = limits.max_fraction_of_default * gpu.default_watts
        caps.append((watts, f"maxFractionOfDefault {limits.max_fraction_of_default:g} × {gpu.default_watts:g} W"))
    if not caps:
        return None
    watts, why = min(caps)
    floor = lower_bound(limits, gpu)
    if floor is not None and floor > watts:
        watts, why = floor, f"{why} raised to the policy minimum {floor:g} W"
    return _within_device(watts, why, gpu)


def lower_bound(limits: PowerLimits, gpu: GpuView) -> float | None:
    """The floor the policy puts under every other section, watts."""
    floors = [w for w in (limits.min_watts,) if w is not None]
    if limits.min_fraction_of_default is not None:
        floors.append(limits.min_fraction_of_default * gpu.default_watts)
    return max(floors) if floors else None


def _within_device(watts: float, why: str, gpu: GpuView) -> CapDecision:
    if watts < gpu.min_watts:
        return CapDecision(gpu.min_watts, f"{why} → {watts:g} W, raised to device minimum {gpu.min_watts:g} W", True)
    if watts > gpu.max_watts:
        return CapDecision(gpu.max_watts, f"{why} → {watts:g} W, lowered to device maximum {gpu.max_watts:g} W", True)
    # Milliwatt resolution like NVML; rounding must not step outside the range (bounds stay exact).
    rounded = min(max(round(watts, 3), gpu.min_watts), gpu.max_watts)
    return CapDecision(rounded, f"{why} → {watts:g} W", False)
