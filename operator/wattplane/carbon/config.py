"""How a caller describes one carbon source: :class:`SourceConfig`.

The operator builds one from an ``EnergyPolicy``'s ``carbon`` section, the CLI from its flags,
a simulation by hand. It is frozen and hashable so that it can key caches, and it validates
early (e.g. a fixed fallback without a value) so that misconfiguration surfaces as a
validation error instead of a mysterious signal later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from wattplane.carbon.model import FallbackMode, SignalKind

ProviderName = Literal["electricitymaps", "watttime", "ukcarbon", "carbon-aware-sdk", "trace"]

#: Public base URLs used when ``SourceConfig.base_url`` is not set.
DEFAULT_BASE_URLS: dict[str, str] = {
    "electricitymaps": "https://api.electricitymaps.com",
    "watttime": "https://api.watttime.org",
    "ukcarbon": "https://api.carbonintensity.org.uk",
    # The Carbon Aware SDK WebAPI is self-hosted; this is its container's default listen address.
    "carbon-aware-sdk": "http://localhost:8080",
    "trace": "",
}


class TraceOptions(BaseModel):
    """Replay settings for the ``trace`` provider.

    Attributes:
        path: CSV / CSV.gz / JSON file (formats in :mod:`wattplane.carbon.trace`).
        column: For Electricity Maps CSVs, which intensity column: ``direct`` or ``lca``.
        speedup: Trace seconds that pass per wall-clock second (3600: one hour per second).
        start_offset_s: Where in the trace the replay starts, seconds after its first row.
        loop: Wrap around at the end instead of holding the last value.
        forecast_horizon_s: Length of the forecast handed out; for traces without recorded
            forecasts the "forecast" is the trace's own future (perfect foresight).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path
    column: Literal["direct", "lca"] = "direct"
    speedup: float = Field(default=1.0, gt=0)
    start_offset_s: float = Field(default=0.0, ge=0)
    loop: bool = True
    forecast_horizon_s: float = Field(default=24 * 3600.0, gt=0)


class SourceConfig(BaseModel):
    """One carbon source for one zone, plus how to treat its failures.

    Attributes:
        provider: Which API (or ``trace``).
        zone: Zone / region / location in the provider's own vocabulary: an Electricity Maps
            zone (``DE``), a WattTime region (``CAISO_NORTH``), for the UK ``national``,
            ``regionid:13`` or ``postcode:RG10``, a Carbon Aware SDK location (``eastus``); free
            text for traces.
        base_url: Overrides the provider's public URL (proxies, self-hosted SDK, tests).
        kind: Average or marginal; a provider that cannot deliver the kind is a config error.
        refresh_interval_s: Minimum seconds between fetches; ``get`` serves the cache meanwhile.
        staleness_bound_s: A reading older than this (since its fetch) is stale.
        fallback: What a stale signal carries (``last-good`` or ``fixed``).
        fallback_intensity_g_per_kwh: The value for ``fixed``.
        credentials_ref: Which credentials to use (opaque name resolved by the service; the
            operator uses ``<namespace>/<secret>``). ``None``: the service's default.
        include_forecast: Fetch the forecast along with the current value.
        forecast_horizon_h: Hours of forecast to ask for where the API takes a horizon.
        timeout_s: Total time allowed per HTTP request.
        emission_factor_type: Electricity Maps only: ``lifecycle`` (the API's default) or ``direct``.
        trace: Replay options, required when ``provider == "trace"``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: ProviderName
    zone: str = Field(min_length=1)
    base_url: str | None = None
    kind: SignalKind = SignalKind.AVERAGE
    refresh_interval_s: float = Field(default=300.0, gt=0)
    staleness_bound_s: float = Field(default=3600.0, gt=0)
    fallback: FallbackMode = FallbackMode.LAST_GOOD
    fallback_intensity_g_per_kwh: float | None = Field(default=None, ge=0, le=5000)
    credentials_ref: str | None = None
    include_forecast: bool = False
    forecast_horizon_h: int = Field(default=24, ge=1, le=72)
    timeout_s: float = Field(default=10.0, gt=0)
    emission_factor_type: Literal["lifecycle", "direct"] = "lifecycle"
    trace: TraceOptions | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.fallback is FallbackMode.FIXED and self.fallback_intensity_g_per_kwh is None:
            raise ValueError("fallback 'fixed' needs fallback_intensity_g_per_kwh")
        if self.provider == "trace" and self.trace is None:
            raise ValueError("provider 'trace' needs trace options (at least a path)")
        return self

    @property
    def effective_base_url(self) -> str:
        """The base URL requests go to, without a trailing slash."""
        return (self.base_url or DEFAULT_BASE_URLS[self.provider]).rstrip("/")

    @property
    def cache_key(self) -> tuple[str, str, str, str, str | None]:
        """Identity of the cache entry: one per (source, zone), shared by every caller.

        The kind, base URL and credentials belong to the source's identity: WattTime's average
        and marginal signals are different series, and two base URLs are two services.
        """
        return (self.provider, self.zone, self.kind.value, self.effective_base_url, self.credentials_ref)
