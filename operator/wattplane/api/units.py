"""Unit conversions, in one place so that no milliwatt leaks past a device boundary.

NVML speaks milliwatts, millijoules and MHz; the rest of wattplane speaks watts, joules and MHz. NVML
setters take unsigned ints, so conversions towards the device round to the nearest integer.
"""

from __future__ import annotations


def watts_to_milliwatts(watts: float) -> int:
    """Convert watts to the integer milliwatts NVML setters accept."""
    return round(watts * 1000.0)


def milliwatts_to_watts(milliwatts: int | float) -> float:
    """Convert NVML milliwatts to watts."""
    return float(milliwatts) / 1000.0


def millijoules_to_joules(millijoules: int | float) -> float:
    """Convert NVML millijoules to joules."""
    return float(millijoules) / 1000.0
