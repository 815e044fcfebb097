"""The ``trace`` provider: a recorded file replayed as if it were a live API (demos, simulations)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import ClassVar

from wattplane.carbon.config import SourceConfig
from wattplane.carbon.errors import CarbonConfigError, CarbonResponseError
from wattplane.carbon.model import IntensityReading
from wattplane.carbon.providers.base import ProviderContext
from wattplane.carbon.trace import TraceReplay, TraceSeries, load_trace


class TraceProvider:
    """Loads each file once (in a worker thread) and keeps one replay per configuration."""

    name: ClassVar[str] = "trace"

    def __init__(self, ctx: ProviderContext) -> None:
        self._ctx = ctx
        self._series: dict[tuple[str, str], TraceSeries] = {}
        self._replays: dict[SourceConfig, TraceReplay] = {}

    async def _replay(self, config: SourceConfig) -> TraceReplay:
        opts = config.trace
        if opts is None:
            raise CarbonConfigError("trace provider needs trace options")
        replay = self._replays.get(config)
        if replay is None:
            key = (str(opts.path), opts.column)
            series = self._series.get(key)
            if series is None:
                try:
                    series = await asyncio.to_thread(load_trace, opts.path, column=opts.column)
                except OSError as exc:
                    raise CarbonConfigError(f"cannot read trace {opts.path}: {exc.strerror}") from None
                self._series[key] = series
            if series.kind is not config.kind:
                raise CarbonResponseError(
                    f"trace {opts.path.name} holds {series.kind.value} intensity, "
                    f"configured kind is {config.kind.value}"
                )
            replay = TraceReplay(
                series,
                speedup=opts.speedup,
                start_offset=timedelta(seconds=opts.start_offset_s),
                loop=opts.loop,
                clock=self._ctx.clock,
            )
            self._replays[config] = replay
        return replay

    async def fetch(self, config: SourceConfig) -> IntensityReading:
        """The replayed value for now (and the forecast, when asked)."""
        replay = await self._replay(config)
        assert config.trace is not None  # checked in _replay
        return replay.reading(
            zone=config.zone,
            source=self.name,
            include_forecast=config.include_forecast,
            horizon=timedelta(seconds=config.trace.forecast_horizon_s),
        )
