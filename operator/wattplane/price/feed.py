"""The operator's price feed: one cache entry per price source, refreshed beside the planning round.

Like the carbon signals, fetching never happens inside a round: :meth:`PriceFeed.refresh` runs from the
signals' refresh task and a round only reads :meth:`PriceFeed.series`. A trace is loaded once and
replayed from the moment its source first appeared; an HTTP document is fetched at most every
``refreshIntervalSeconds`` and merged into what the feed already holds, so the recent past stays
available for the planner's persistence forecast after the server stops listing it. A failed fetch
keeps the last good series and reports why (the token never appears in the message).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiohttp
from wattplane.api.v1alpha1.energypolicy import PriceSpec
from wattplane.price.http import fetch_prices
from wattplane.price.series import PriceError, PriceSeries
from wattplane.price.trace import PriceReplay, load_price_trace
from yarl import URL

logger = logging.getLogger(__name__)

#: How much past and future a feed hands out (the API caps ``lookaheadHours`` at 72).
WINDOW = timedelta(hours=72)

#: Reads a Secret's ``data`` (base64 values); raises ``LookupError`` with a reason when it cannot.
SecretReader = Callable[[str, str], Awaitable[Mapping[str, str]]]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Entry:
    """One source's state."""

    series: PriceSeries | None = None
    replay: PriceReplay | None = None
    fetched_at: datetime | None = None
    error: str = ""
    attempts: int = 0


@dataclass(frozen=True)
class PriceView:
    """What a round reads for one policy: the series (or ``None``), where it came from, and any problem."""

    series: PriceSeries | None
    source: str
    message: str = ""


@dataclass
class PriceFeed:
    """Price sources of every policy (see the module docstring)."""

    session: Callable[[], aiohttp.ClientSession]
    read_secret: SecretReader
    default_namespace: str
    clock: Callable[[], datetime] = _utcnow
    _specs: dict[str, PriceSpec] = field(default_factory=dict)
    _entries: dict[tuple[object, ...], _Entry] = field(default_factory=dict)

    def _key(self, spec: PriceSpec) -> tuple[object, ...]:
        src = spec.source
        ref = src.credentials_secret_ref
        secret = f"{ref.namespace or self.default_namespace}/{ref.name}" if ref is not None else None
        if src.provider == "trace":
            return ("trace", src.trace_path, src.trace_speedup, spec.unit)
        return ("http", src.url, spec.unit, secret)

    def configure(self, specs: Mapping[str, PriceSpec]) -> bool:
        """Learn each policy's price source; returns whether a source appeared that was never tried."""
        self._specs = dict(specs)
        keys = {self._key(s) for s in self._specs.values()}
        for key in list(self._entries):
            if key not in keys:
                del self._entries[key]
        return any(self._entries.get(k) is None or self._entries[k].attempts == 0 for k in keys)

    async def refresh(self) -> None:
        """Load or fetch every configured source that is due; never raises."""
        due = {self._key(s): s for s in self._specs.values()}
        await asyncio.gather(*(self._refresh_one(k, s) for k, s in due.items()))

    async def _refresh_one(self, key: tuple[object, ...], spec: PriceSpec) -> None:
        entry = self._entries.setdefault(key, _Entry())
        now = self.clock()
        src = spec.source
        try:
            if src.provider == "trace":
                if entry.replay is None:
                    entry.attempts += 1
                    series = await asyncio.to_thread(load_price_trace, src.trace_path or "", unit=spec.unit)
                    entry.replay = PriceReplay(series, speedup=src.trace_speedup, started_at=now)
                    entry.error = ""
                return
            if entry.fetched_at is not None and (now - entry.fetched_at).total_seconds() < src.refresh_interval_seconds:
                return
            entry.attempts += 1
            entry.fetched_at = now
            token = await self._token(spec)
            fresh = await fetch_prices(self.session(), src.url or "", unit=spec.unit, token=token)
            keep_after = now - WINDOW
            entry.series = entry.series.merged(fresh, keep_after=keep_after) if entry.series else fresh
            entry.error = ""
        except (PriceError, LookupError) as exc:
            entry.error = str(exc)
            logger.warning("price source %s: %s", _label(spec), exc)
        except Exception as exc:  # a bug here must not stop the feed: report it as the source's error
            entry.error = f"unexpected failure: {type(exc).__name__}"
            logger.exception("price source %s: unexpected failure", _label(spec))

    async def _token(self, spec: PriceSpec) -> str | None:
        ref = spec.source.credentials_secret_ref
        if ref is None:
            return None
        namespace = ref.namespace or self.default_namespace
        data = await self.read_secret(namespace, ref.name)
        raw = data.get("token")
        if not raw:
            raise LookupError(f"credentials Secret {namespace}/{ref.name} has no key 'token'")
        try:
            return base64.b64decode(raw, validate=True).decode().strip()
        except (ValueError, UnicodeDecodeError):
            raise LookupError(f"credentials Secret {namespace}/{ref.name}: key 'token' is not valid base64") from None

    def series(self, policy: str) -> PriceView | None:
        """The price series a policy's round uses now (``None``: the policy has no price section)."""
        spec = self._specs.get(policy)
        if spec is None:
            return None
        entry = self._entries.get(self._key(spec))
        label = _label(spec)
        if entry is None:
            return PriceView(None, label, "no price fetched yet")
        if entry.replay is not None:
            now = self.clock()
            return PriceView(entry.replay.window(now, back=WINDOW, ahead=WINDOW), label, entry.error)
        if entry.series is None:
            return PriceView(None, label, entry.error or "no price fetched yet")
        return PriceView(entry.series, label, entry.error)


def _label(spec: PriceSpec) -> str:
    """Where a policy's prices come from, for status and logs (an URL without its query: it may hold a key)."""
    src = spec.source
    return f"trace/{src.trace_path}" if src.provider == "trace" else f"http/{URL(src.url or '').with_query(None)}"


__all__ = ["PriceFeed", "PriceView"]
