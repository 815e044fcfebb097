"""Grid carbon-intensity signals for wattplane: providers, cache, forecasts, traces, metrics.

Everything speaks one model (:class:`CarbonSignal` / :class:`IntensityReading`): intensity in
gCO2(eq)/kWh, aware UTC times, kind average or marginal. Typical use::

    async with CarbonService(credentials_by_ref={"ns/secret": creds}) as carbon:
        signal = await carbon.get(SourceConfig(provider="electricitymaps", zone="DE",
                                               credentials_ref="ns/secret"))
        if signal.usable:
            ...  # signal.intensity_g_per_kwh, signal.fresh, signal.forecast

Simulations load recorded traces synchronously with :func:`load_trace`; the forecast helpers
(:func:`value_at`, :func:`window_mean`, :func:`window_percentile`, :func:`cleanest_window`) are
pure. Providers: Electricity Maps v3, WattTime v3, UK Carbon Intensity, GSF Carbon Aware SDK
WebAPI, and trace replay.
"""

from wattplane.carbon.config import SourceConfig, TraceOptions
from wattplane.carbon.credentials import Credentials
from wattplane.carbon.errors import CarbonError
from wattplane.carbon.forecast import Window, cleanest_window, value_at, window_mean, window_percentile
from wattplane.carbon.model import CarbonSignal, FallbackMode, ForecastPoint, IntensityReading, SignalKind
from wattplane.carbon.retry import RetryPolicy
from wattplane.carbon.service import CarbonService, SourceState
from wattplane.carbon.trace import TraceReplay, TraceSeries, load_trace

__all__ = [
    "CarbonError",
    "CarbonService",
    "CarbonSignal",
    "Credentials",
    "FallbackMode",
    "ForecastPoint",
    "IntensityReading",
    "RetryPolicy",
    "SignalKind",
    "SourceConfig",
    "SourceState",
    "TraceOptions",
    "TraceReplay",
    "TraceSeries",
    "Window",
    "cleanest_window",
    "load_trace",
    "value_at",
    "window_mean",
    "window_percentile",
]
