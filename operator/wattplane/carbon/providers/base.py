"""What every provider is given and what it must offer."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar, Protocol

import aiohttp
from wattplane.carbon.config import SourceConfig
from wattplane.carbon.credentials import Credentials
from wattplane.carbon.model import ForecastPoint, IntensityReading


@dataclass(frozen=True)
class ProviderContext:
    """Shared resources handed to a provider by the service.

    Attributes:
        session: The service's HTTP session (providers never open their own).
        credentials: Secrets for this provider instance.
        clock: Returns "now" as an aware UTC datetime (injected in tests).
    """

    session: aiohttp.ClientSession
    credentials: Credentials
    clock: Callable[[], datetime]


class Provider(Protocol):
    """One carbon API. ``fetch`` does a single attempt; the service retries."""

    name: ClassVar[str]

    def __init__(self, ctx: ProviderContext) -> None: ...

    async def fetch(self, config: SourceConfig) -> IntensityReading:
        """Fetch the current value (and the forecast if ``config.include_forecast``)."""
        ...


def request_timeout(config: SourceConfig) -> aiohttp.ClientTimeout:
    """The explicit per-request timeout derived from ``config.timeout_s``.

    Connecting gets at most 5 s of the total so that an unreachable host fails fast.
    """
    return aiohttp.ClientTimeout(total=config.timeout_s, sock_connect=min(config.timeout_s, 5.0))


def within_horizon(points: Iterable[ForecastPoint], start: datetime, hours: float) -> tuple[ForecastPoint, ...]:
    """Forecast points sorted by time, keeping those before ``start + hours``."""
    end = start + timedelta(hours=hours)
    return tuple(sorted((p for p in points if p.timestamp < end), key=lambda p: p.timestamp))
