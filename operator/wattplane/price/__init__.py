"""Electricity prices as a signal for the budgeted carbon mode.

:mod:`~wattplane.price.series` (the price series type, validation, units), :mod:`~wattplane.price.trace`
(CSV traces and their replay), :mod:`~wattplane.price.http` (the JSON document over HTTP),
:mod:`~wattplane.price.feed` (the operator's cache of sources) and :mod:`~wattplane.price.cost` (the
cost series the planner minimises).
"""

from wattplane.price.series import PriceError, PriceInterval, PriceSeries

__all__ = ["PriceError", "PriceInterval", "PriceSeries"]
