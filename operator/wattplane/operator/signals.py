"""Carbon signals for the policies: configuration, Secret credentials, refresh, planner inputs.

The planning round must never wait on a carbon API, so fetching runs beside it: :meth:`refresh`
is called from its own task, and a round only :meth:`inputs` what the shared cache holds. Every
policy on the same (provider, zone) shares one cache entry (the service keys on the source).

A ``Budgeted`` section with a ``price`` part gets the cost series instead of the bare intensity
(:mod:`wattplane.price.cost`): its price source is refreshed beside the carbon ones
(:class:`~wattplane.price.feed.PriceFeed`) and mixed in :meth:`CarbonSignals.inputs`.

Credentials come from the Secret an EnergyPolicy names (``carbon.source.credentialsSecretRef``), read
on refresh; the values go straight into the carbon service's credential store and are never logged,
put in an event, a status or a metric: only the Secret's ``namespace/name`` is ever mentioned.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import SecretStr, ValidationError
from wattplane.api.v1alpha1.energypolicy import CarbonSpec, PriceSpec
from wattplane.carbon.config import SourceConfig, TraceOptions
from wattplane.carbon.credentials import Credentials
from wattplane.carbon.model import CarbonSignal, FallbackMode, SignalKind
from wattplane.carbon.service import CarbonService
from wattplane.grid.events import PriceInterval as GridPrice
from wattplane.planner.context import CarbonInput
from wattplane.planner.snapshot import PolicyView
from wattplane.price.cost import cost_input
from wattplane.price.feed import PriceFeed, PriceView
from wattplane.price.series import PriceError, PriceSeries

logger = logging.getLogger(__name__)

#: Reads a Secret's ``data`` (base64 values) by namespace and name; raises ``LookupError`` with a
#: human-readable reason when it cannot.
SecretReader = Callable[[str, str], Awaitable[Mapping[str, str]]]

#: How much history is kept per source for forecast-less percentile ranking.
_HISTORY = timedelta(hours=72)


@dataclass(frozen=True)
class _Configured:
    config: SourceConfig | None
    error: str = ""


def source_config(spec: CarbonSpec, *, default_namespace: str) -> SourceConfig:
    """The carbon service's view of a policy's ``carbon`` section (raises ``ValueError`` on nonsense)."""
    src = spec.source
    ref = src.credentials_secret_ref
    credentials_ref = f"{ref.namespace or default_namespace}/{ref.name}" if ref is not None else None
    trace = None
    if src.provider == "trace":
        if not src.trace_path:
            raise ValueError("provider trace needs source.tracePath")
        trace = TraceOptions(path=Path(src.trace_path), speedup=src.trace_speedup)
    try:
        return SourceConfig(
            provider=src.provider,
            zone=src.zone,
            base_url=src.base_url,
            kind=SignalKind.MARGINAL if src.signal == "marginal" else SignalKind.AVERAGE,
            refresh_interval_s=src.refresh_interval_seconds,
            staleness_bound_s=spec.max_staleness_seconds,
            fallback=FallbackMode.FIXED if spec.fallback == "Fixed" else FallbackMode.LAST_GOOD,
            fallback_intensity_g_per_kwh=spec.fallback_intensity,
            credentials_ref=credentials_ref,
            include_forecast=True,
            forecast_horizon_h=max(1, min(72, round(spec.lookahead_hours))),
            trace=trace,
        )
    except ValidationError as exc:
        raise ValueError("; ".join(e["msg"] for e in exc.errors()[:3])) from None


def credentials_from_secret(provider: str, data: Mapping[str, str]) -> Credentials:
    """Credentials for ``provider`` from a Secret's base64 ``data`` (keys ``token`` / ``username``+``password``)."""

    def value(key: str) -> SecretStr | None:
        raw = data.get(key)
        if not raw:
            return None
        try:
            return SecretStr(base64.b64decode(raw, validate=True).decode().strip())
        except (ValueError, UnicodeDecodeError):
            raise LookupError(f"key {key!r} is not valid base64 text") from None

    if provider == "electricitymaps":
        return Credentials(electricitymaps_token=value("token"))
    if provider == "watttime":
        return Credentials(watttime_username=value("username"), watttime_password=value("password"))
    if provider == "carbon-aware-sdk":
        return Credentials(carbon_aware_sdk_token=value("token"))
    return Credentials()


def _unusable(source: str, message: str) -> CarbonInput:
    return CarbonInput(intensity=None, time=None, forecast=(), history=(), stale=True, source=source, message=message)


class CarbonSignals:
    """The operator's carbon feed: one per operator, shared by every policy."""

    def __init__(self, service: CarbonService, read_secret: SecretReader, *, default_namespace: str) -> None:
        self._service = service
        self._read_secret = read_secret
        self._namespace = default_namespace
        self._configured: dict[str, _Configured] = {}
        self._secret_errors: dict[str, str] = {}
        self._history: dict[tuple[object, ...], deque[tuple[datetime, float]]] = {}
        self._attempted: set[tuple[object, ...]] = set()
        self._prices = PriceFeed(service.http_session, read_secret, default_namespace, clock=service.now)
        self._price_specs: dict[str, PriceSpec] = {}
        self._lookahead: dict[str, float] = {}
        #: Price intervals a policy's OpenADR VEN received (set by the operator; ``None``: no VENs).
        self.grid_prices: Callable[[str], Sequence[GridPrice]] | None = None

    def configure(self, policies: Iterable[PolicyView]) -> bool:
        """Learn which source each policy uses; a nonsensical section becomes that policy's error.

        Returns whether a source appeared that was never tried yet (worth a refresh right away).
        """
        configured: dict[str, _Configured] = {}
        policies_list = list(policies)
        for policy in policies_list:
            if policy.spec.carbon is None or policy.deleting:
                continue
            try:
                configured[policy.name] = _Configured(
                    source_config(policy.spec.carbon, default_namespace=self._namespace)
                )
            except ValueError as exc:
                configured[policy.name] = _Configured(None, f"invalid carbon source: {exc}")
        self._configured = configured
        self._price_specs = {
            p.name: p.spec.carbon.price
            for p in policies_list
            if p.spec.carbon is not None and p.spec.carbon.price is not None and p.name in configured
        }
        self._lookahead = {p.name: p.spec.carbon.lookahead_hours for p in policies_list if p.spec.carbon is not None}
        fetched = {n: s for n, s in self._price_specs.items() if s.source.provider != "openadr"}
        new_price = self._prices.configure(fetched)
        return new_price or any(
            c.config is not None and c.config.cache_key not in self._attempted for c in configured.values()
        )

    async def refresh(self) -> None:
        """Load credentials and fetch every configured source once (cache permitting); never raises."""
        configs = {c.config.cache_key: c.config for c in self._configured.values() if c.config is not None}
        await asyncio.gather(*(self._refresh_one(c) for c in configs.values()), self._prices.refresh())

    async def _refresh_one(self, config: SourceConfig) -> None:
        self._attempted.add(config.cache_key)
        ref = config.credentials_ref
        if ref is not None:
            namespace, _, name = ref.partition("/")
            try:
                data = await self._read_secret(namespace, name)
                self._service.set_credentials(ref, credentials_from_secret(config.provider, data))
                self._secret_errors.pop(ref, None)
            except LookupError as exc:
                self._secret_errors[ref] = f"credentials Secret {ref}: {exc}"
                logger.warning("carbon source %s/%s: credentials Secret %s: %s", config.provider, config.zone, ref, exc)
                return
        try:
            signal = await self._service.get(config)
        except Exception:  # the service promises not to raise; a bug there must not stop the feed
            logger.exception("carbon source %s/%s: unexpected failure", config.provider, config.zone)
            return
        self._remember(config, signal)

    def _remember(self, config: SourceConfig, signal: CarbonSignal) -> None:
        reading = signal.reading
        if reading is None or reading.intensity_g_per_kwh is None:
            return
        history = self._history.setdefault(config.cache_key, deque())
        if not history or history[-1][0] < reading.timestamp:
            history.append((reading.timestamp, reading.intensity_g_per_kwh))
        while history and history[0][0] < reading.timestamp - _HISTORY:
            history.popleft()

    def inputs(self, now: datetime | None = None) -> dict[str, CarbonInput]:
        """Planner inputs per policy name, from what the caches hold now (with a price: the cost series)."""
        out = self._carbon_inputs()
        for name, spec in self._price_specs.items():
            view = self._openadr_prices(name, spec) if spec.source.provider == "openadr" else self._prices.series(name)
            if view is None:
                continue
            out[name] = cost_input(
                out.get(name),
                view.series,
                weight=spec.weight,
                now=now or self._prices.clock(),
                lookahead_hours=self._lookahead.get(name, 24.0),
                price_max_staleness_s=spec.max_staleness_seconds,
                price_source=view.source,
                price_message=view.message,
            )
        return out

    def _openadr_prices(self, name: str, spec: PriceSpec) -> PriceView:
        """The price signals a VEN received, as a series (an error names what was wrong with them)."""
        owner = spec.source.policy or name
        label = f"openadr/{owner}"
        intervals = list(self.grid_prices(owner)) if self.grid_prices is not None else []
        if not intervals:
            return PriceView(None, label, f"no price signal received by the VEN of policy {owner}")
        try:
            series = PriceSeries.from_intervals(
                ((i.start, i.end, i.price) for i in intervals), unit=spec.unit, source_unit=intervals[0].unit
            )
        except PriceError as exc:
            return PriceView(None, label, f"price signals from the VTN rejected: {exc}")
        return PriceView(series, label)

    def _carbon_inputs(self) -> dict[str, CarbonInput]:
        out: dict[str, CarbonInput] = {}
        for name, configured in self._configured.items():
            config = configured.config
            if config is None:
                out[name] = _unusable("", configured.error)
                continue
            source = f"{config.provider}/{config.zone}"
            secret_error = self._secret_errors.get(config.credentials_ref or "")
            signal = self._service.peek(config)
            if signal is None:
                message = secret_error or "no reading fetched yet"
                out[name] = _unusable(source, message)
                continue
            reading = signal.reading
            message = secret_error or signal.error_message or ""
            if signal.fallback is not None:
                message = f"{message}; fallback {signal.fallback.value}".lstrip("; ")
            out[name] = CarbonInput(
                intensity=signal.intensity_g_per_kwh,
                time=reading.timestamp if reading is not None else None,
                forecast=tuple((p.timestamp, p.intensity_g_per_kwh) for p in signal.forecast),
                history=tuple(self._history.get(config.cache_key, ())),
                stale=signal.stale,
                source=source,
                message=message,
            )
        return out
