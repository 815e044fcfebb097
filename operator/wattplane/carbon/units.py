"""Unit conversions and plausibility checks for intensities.

Every provider funnels its numbers through here so that the same rules apply everywhere: the
project speaks gCO2(eq)/kWh, and a value that cannot be a grid's intensity is an *error* with a
reason, never silently clamped. The upper bound of 5000 g/kWh is several times the dirtiest
generator (lignite is around 1100-1200 g/kWh); anything above is a unit mix-up or garbage.
"""

from __future__ import annotations

import math
from typing import Final

from wattplane.carbon.errors import CarbonResponseError, CarbonValueError

#: One pound in kilograms (exact, international avoirdupois pound).
KG_PER_LB: Final = 0.45359237
#: Largest intensity accepted from any source, gCO2(eq)/kWh.
MAX_PLAUSIBLE_G_PER_KWH: Final = 5000.0


def lbs_per_mwh_to_g_per_kwh(value: float) -> float:
    """Convert WattTime's lbs CO2 / MWh to g CO2 / kWh.

    1 lb/MWh = 453.59237 g / 1000 kWh = 0.45359237 g/kWh.
    """
    return value * KG_PER_LB


def kg_per_kwh_to_g_per_kwh(value: float) -> float:
    """Convert SGIP's kg CO2 / kWh to g CO2 / kWh."""
    return value * 1000.0


def number(value: object, *, what: str) -> float:
    """Return ``value`` as a float, or raise if the JSON held something else.

    ``bool`` is rejected although it is an ``int`` subclass: ``true`` is never an intensity.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CarbonResponseError(f"{what} is not a number (got {type(value).__name__})")
    return float(value)


def check_intensity(value: float, *, what: str = "intensity") -> float:
    """Reject NaN, infinities, negatives and values above :data:`MAX_PLAUSIBLE_G_PER_KWH`.

    Args:
        value: Intensity already converted to g/kWh.
        what: Names the value in the error message (e.g. ``"forecast point 3"``).

    Returns:
        ``value`` unchanged.

    Raises:
        CarbonValueError: The value is not a plausible intensity.
    """
    if math.isnan(value) or math.isinf(value):
        raise CarbonValueError(f"{what} is not finite ({value!r})")
    if value < 0:
        raise CarbonValueError(f"{what} is negative ({value:g} g/kWh)")
    if value > MAX_PLAUSIBLE_G_PER_KWH:
        raise CarbonValueError(
            f"{what} is implausibly high ({value:g} g/kWh > {MAX_PLAUSIBLE_G_PER_KWH:g}); wrong unit?"
        )
    return value


def check_percentile(value: float, *, what: str = "signal index") -> float:
    """Reject a WattTime percentile outside 0-100 (or not finite)."""
    if not math.isfinite(value) or not 0.0 <= value <= 100.0:
        raise CarbonValueError(f"{what} must be a percentile in [0, 100] (got {value!r})")
    return value
