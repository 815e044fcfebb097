"""Prometheus metrics read from the service's state at scrape time.

A custom collector (rather than gauges updated on every fetch) means a scrape always sees the
current age and staleness, even when nobody called ``get`` for a while. Metric names:

* ``wattplane_grid_carbon_intensity_grams_per_kwh{source,zone,kind}`` — last good intensity.
* ``wattplane_grid_carbon_signal_age_seconds{source,zone,kind}`` — since the last good fetch.
* ``wattplane_grid_carbon_signal_stale{source,zone,kind}`` — 1 when older than the staleness bound.
* ``wattplane_grid_carbon_signal_index_percent{source,zone}`` — WattTime ``signal-index`` (0-100).
* ``wattplane_carbon_fetch_errors_total{source,zone,reason}`` — failed fetches by reason (every reason
  starts at 0, so ``increase()`` sees the first failure).
* ``wattplane_carbon_fetches_total{source,zone}`` — fetches attempted.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from wattplane.carbon.errors import CarbonError
from wattplane.carbon.service import INTERNAL_ERROR, CarbonService


def _reasons(cls: type[CarbonError]) -> list[str]:
    return [cls.reason, *(r for sub in cls.__subclasses__() for r in _reasons(sub))]


#: Every reason a fetch can fail with (the error classes' and the service's own), each exported from the start.
FETCH_ERROR_REASONS: tuple[str, ...] = tuple(sorted({*_reasons(CarbonError), INTERNAL_ERROR}))


class CarbonCollector(Collector):
    """Exposes :meth:`CarbonService.snapshot` as Prometheus metrics."""

    def __init__(self, service: CarbonService) -> None:
        self._service = service

    def collect(self) -> Iterable[Metric]:
        """Build the metric families from the current snapshot (called by the registry per scrape)."""
        labels = ["source", "zone", "kind"]
        intensity = GaugeMetricFamily(
            "wattplane_grid_carbon_intensity_grams_per_kwh",
            "Grid carbon intensity of the last good reading, gCO2(eq)/kWh.",
            labels=labels,
        )
        age = GaugeMetricFamily(
            "wattplane_grid_carbon_signal_age_seconds",
            "Seconds since the last successful fetch of the signal.",
            labels=labels,
        )
        stale = GaugeMetricFamily(
            "wattplane_grid_carbon_signal_stale",
            "1 when the signal is older than its staleness bound (or was never fetched).",
            labels=labels,
        )
        index = GaugeMetricFamily(
            "wattplane_grid_carbon_signal_index_percent",
            "WattTime signal-index: percentile (0-100) of the current MOER within the next 24 h.",
            labels=["source", "zone"],
        )
        errors = CounterMetricFamily(
            "wattplane_carbon_fetch_errors",
            "Failed carbon-signal fetches, by reason.",
            labels=["source", "zone", "reason"],
        )
        fetches = CounterMetricFamily(
            "wattplane_carbon_fetches", "Carbon-signal fetches attempted.", labels=["source", "zone"]
        )
        for state in self._service.snapshot():
            values = [state.source, state.zone, state.kind.value]
            reading = state.reading
            if reading is not None and reading.intensity_g_per_kwh is not None:
                intensity.add_metric(values, reading.intensity_g_per_kwh)
            if reading is not None and reading.percentile is not None:
                index.add_metric([state.source, state.zone], reading.percentile)
            if state.age_seconds is not None:
                age.add_metric(values, state.age_seconds)
            stale.add_metric(values, 0.0 if state.fresh else 1.0)
            counts = dict.fromkeys(FETCH_ERROR_REASONS, 0)
            counts.update(state.errors_total)
            for reason, count in sorted(counts.items()):
                errors.add_metric([state.source, state.zone, reason], float(count))
            fetches.add_metric([state.source, state.zone], float(state.fetches_total))
        yield from (intensity, age, stale, index, errors, fetches)


def register_metrics(service: CarbonService, registry: CollectorRegistry) -> CarbonCollector:
    """Register a :class:`CarbonCollector` for ``service`` on ``registry`` and return it."""
    collector = CarbonCollector(service)
    registry.register(collector)
    return collector
