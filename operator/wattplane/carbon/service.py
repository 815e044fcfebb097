"""The carbon service: one shared cache per (source, zone), and signals that never raise.

:class:`CarbonService` owns the aiohttp session, one provider instance per (provider, base
URL, credentials) — so WattTime's token is shared — and one cache entry per
:attr:`SourceConfig.cache_key`. Every caller asking for the same source and zone shares that
entry; concurrent callers of a due entry wait for one fetch instead of sending one each.

Rules applied by :meth:`CarbonService.get`:

* A cached reading younger than ``refresh_interval_s`` is served without I/O.
* A fetch tries up to ``RetryPolicy.attempts`` times with exponential backoff and jitter,
  sleeping the server's ``Retry-After`` on HTTP 429 (bounded by ``max_retry_after_s``).
* After a failed fetch the source is left alone for a while (longer after each consecutive
  failure, capped at the refresh interval; at least the server's ``Retry-After``), so a broken
  provider is not hammered by every reconcile loop.
* A reading older than ``staleness_bound_s`` is stale; the signal then carries the configured
  fallback (last good value, or a fixed intensity).
* Provider trouble never escapes: it becomes ``CarbonSignal.error`` (a reason code) and
  ``error_message``, and is counted per reason for metrics.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self

import aiohttp
from wattplane.carbon.config import SourceConfig
from wattplane.carbon.credentials import Credentials
from wattplane.carbon.errors import CarbonConfigError, CarbonError, CarbonRateLimitedError
from wattplane.carbon.model import CarbonSignal, FallbackMode, IntensityReading, SignalKind
from wattplane.carbon.providers import Provider, ProviderContext, build_provider
from wattplane.carbon.retry import RetryPolicy, Sleep, call_with_retries

log = logging.getLogger(__name__)

#: Reason recorded when a provider fails in a way it did not anticipate (a bug, not the API).
INTERNAL_ERROR = "InternalError"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Entry:
    """Mutable cache state of one (source, zone)."""

    config: SourceConfig
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    reading: IntensityReading | None = None
    fetched_at: datetime | None = None
    error: str | None = None
    error_message: str | None = None
    failures: int = 0
    not_before: datetime | None = None
    errors_total: collections.Counter[str] = field(default_factory=collections.Counter)
    fetches_total: int = 0


@dataclass(frozen=True, slots=True)
class SourceState:
    """Read-only view of one cache entry, for metrics and status reporting.

    Attributes:
        source: Provider name.
        zone: Zone.
        kind: Average or marginal.
        reading: Last good reading, if any.
        age_seconds: Seconds since it was fetched, if any.
        fresh: Younger than the entry's staleness bound.
        error: Reason of the latest failure, ``None`` after a success.
        errors_total: Failed fetches so far, by reason.
        fetches_total: Fetches attempted so far (a fetch may include retries).
    """

    source: str
    zone: str
    kind: SignalKind
    reading: IntensityReading | None
    age_seconds: float | None
    fresh: bool
    error: str | None
    errors_total: Mapping[str, int]
    fetches_total: int


class CarbonService:
    """Shared, cached access to every configured carbon source.

    Use as an async context manager (or call :meth:`close`) so the HTTP session is closed::

        async with CarbonService() as carbon:
            signal = await carbon.get(SourceConfig(provider="ukcarbon", zone="national"))

    Args:
        credentials: Default credentials (for configs without ``credentials_ref``); ``None``
            reads the ``WATTPLANE_*`` environment variables (standalone mode).
        credentials_by_ref: Credentials per ``SourceConfig.credentials_ref`` (the operator's
            Secrets). Update later with :meth:`set_credentials`.
        session: An existing session to use (not closed by the service); by default the service
            opens and owns one.
        clock: Returns aware UTC "now" (inject for tests and simulations).
        retry: Retry policy for each fetch.
        sleep: Awaitable sleep used between retries (inject for tests).
        rng: Jitter source (inject for deterministic tests).
    """

    def __init__(
        self,
        *,
        credentials: Credentials | None = None,
        credentials_by_ref: Mapping[str, Credentials] | None = None,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], datetime] = _utcnow,
        retry: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._default_credentials = credentials if credentials is not None else Credentials.from_env()
        self._credentials_by_ref: dict[str, Credentials] = dict(credentials_by_ref or {})
        self._session = session
        self._owns_session = session is None
        self._clock = clock
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._entries: dict[tuple[str, str, str, str, str | None], _Entry] = {}
        self._providers: dict[tuple[str, str, str | None], Provider] = {}
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the owned HTTP session (idempotent)."""
        self._closed = True
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("CarbonService is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=60, sock_connect=10),
                headers={"User-Agent": "wattplane-carbon/0.1"},
            )
        return self._session

    def now(self) -> datetime:
        """The service's clock (the price feed shares it, so both feeds judge age alike)."""
        return self._clock()

    def http_session(self) -> aiohttp.ClientSession:
        """The service's HTTP session, shared with the price feed (one pool, closed by :meth:`close`)."""
        return self._get_session()

    def set_credentials(self, ref: str | None, credentials: Credentials) -> None:
        """Install or replace credentials (e.g. after a Secret changed).

        Providers using them are rebuilt (WattTime logs in again) and sources waiting after a
        failure are allowed to try again at once.
        """
        if ref is None:
            self._default_credentials = credentials
        else:
            self._credentials_by_ref[ref] = credentials
        for key in [k for k in self._providers if k[2] == ref]:
            del self._providers[key]
        for entry in self._entries.values():
            if entry.config.credentials_ref == ref:
                entry.not_before = None

    def _credentials(self, ref: str | None) -> Credentials:
        if ref is None:
            return self._default_credentials
        try:
            return self._credentials_by_ref[ref]
        except KeyError:
            raise CarbonConfigError(f"no credentials registered under {ref!r}") from None

    def provider(self, config: SourceConfig) -> Provider:
        """The (shared) provider instance for ``config``, for calls beyond ``get`` (history, regions)."""
        key = (config.provider, config.effective_base_url, config.credentials_ref)
        prov = self._providers.get(key)
        if prov is None:
            ctx = ProviderContext(
                session=self._get_session(), credentials=self._credentials(config.credentials_ref), clock=self._clock
            )
            prov = build_provider(config.provider, ctx)
            self._providers[key] = prov
        return prov

    def _due(self, entry: _Entry, config: SourceConfig, now: datetime) -> bool:
        if entry.not_before is not None and now < entry.not_before:
            return False
        if entry.fetched_at is None:
            return True
        return (now - entry.fetched_at).total_seconds() >= config.refresh_interval_s

    async def get(self, config: SourceConfig) -> CarbonSignal:
        """The signal for ``config``: cached, refreshed when due, never raising for provider trouble."""
        entry = self._entries.get(config.cache_key)
        if entry is None:
            entry = self._entries[config.cache_key] = _Entry(config)
        if self._due(entry, config, self._clock()):
            async with entry.lock:
                if self._due(entry, config, self._clock()):  # another caller may have fetched meanwhile
                    await self._fetch(entry, config)
        return self._signal(entry, config, self._clock())

    async def refresh(self, config: SourceConfig) -> CarbonSignal:
        """Fetch now regardless of the refresh interval and any failure backoff (CLI, tests)."""
        entry = self._entries.get(config.cache_key)
        if entry is None:
            entry = self._entries[config.cache_key] = _Entry(config)
        async with entry.lock:
            await self._fetch(entry, config)
        return self._signal(entry, config, self._clock())

    def peek(self, config: SourceConfig) -> CarbonSignal | None:
        """The signal from the cache only (no I/O); ``None`` if never requested."""
        entry = self._entries.get(config.cache_key)
        return None if entry is None else self._signal(entry, config, self._clock())

    async def _fetch(self, entry: _Entry, config: SourceConfig) -> None:
        label = f"carbon {config.provider}/{config.zone}"
        entry.fetches_total += 1
        try:
            provider = self.provider(config)
            reading = await call_with_retries(
                lambda: provider.fetch(config), self._retry, what=label, sleep=self._sleep, rng=self._rng
            )
        except CarbonError as exc:
            self._record_failure(entry, config, exc.reason, str(exc), exc)
        except Exception as exc:  # a provider bug must not take down the caller's loop
            log.exception("%s: unexpected failure", label)
            self._record_failure(entry, config, INTERNAL_ERROR, f"{type(exc).__name__} (see log)", None)
        else:
            entry.reading = reading
            entry.fetched_at = self._clock()
            entry.error = entry.error_message = None
            entry.failures = 0
            entry.not_before = None
            log.debug("%s: %s g/kWh at %s", label, reading.intensity_g_per_kwh, reading.timestamp)

    def _record_failure(
        self, entry: _Entry, config: SourceConfig, reason: str, message: str, exc: CarbonError | None
    ) -> None:
        now = self._clock()
        entry.error, entry.error_message = reason, message
        entry.errors_total[reason] += 1
        entry.failures += 1
        pause = min(config.refresh_interval_s, self._retry.backoff(entry.failures - 1, self._rng))
        if isinstance(exc, CarbonRateLimitedError) and exc.retry_after_s is not None:
            pause = max(pause, exc.retry_after_s)
        entry.not_before = now + timedelta(seconds=pause)
        log.warning(
            "carbon %s/%s: fetch failed (%s): %s; next try in %.1fs",
            config.provider,
            config.zone,
            reason,
            message,
            pause,
        )

    @staticmethod
    def _freshness(entry: _Entry, config: SourceConfig, now: datetime) -> tuple[float | None, bool]:
        if entry.fetched_at is None:
            return None, False
        age = max(0.0, (now - entry.fetched_at).total_seconds())
        return age, age <= config.staleness_bound_s

    def _signal(self, entry: _Entry, config: SourceConfig, now: datetime) -> CarbonSignal:
        age, fresh = self._freshness(entry, config, now)
        reading = entry.reading
        fallback: FallbackMode | None = None
        if fresh and reading is not None:
            value = reading.intensity_g_per_kwh
        elif config.fallback is FallbackMode.FIXED:
            value, fallback = config.fallback_intensity_g_per_kwh, FallbackMode.FIXED
        elif reading is not None:
            value, fallback = reading.intensity_g_per_kwh, FallbackMode.LAST_GOOD
        else:
            value = None
        return CarbonSignal(
            source=config.provider,
            zone=config.zone,
            kind=config.kind,
            intensity_g_per_kwh=value,
            fresh=fresh,
            age_seconds=age,
            reading=reading,
            error=entry.error,
            error_message=entry.error_message,
            fallback=fallback,
            fetched_at=entry.fetched_at,
        )

    def snapshot(self) -> list[SourceState]:
        """State of every cache entry now (no I/O), for metrics and status."""
        now = self._clock()
        out = []
        for entry in self._entries.values():
            age, fresh = self._freshness(entry, entry.config, now)
            out.append(
                SourceState(
                    source=entry.config.provider,
                    zone=entry.config.zone,
                    kind=entry.config.kind,
                    reading=entry.reading,
                    age_seconds=age,
                    fresh=fresh,
                    error=entry.error,
                    errors_total=dict(entry.errors_total),
                    fetches_total=entry.fetches_total,
                )
            )
        return out
