"""Errors raised by carbon providers, and the reasons they carry.

Callers of :class:`wattplane.carbon.service.CarbonService` never see these: the service turns
them into a :class:`~wattplane.carbon.model.CarbonSignal` whose ``error`` field holds the
``reason``. They exist so that providers can say *what kind* of trouble they met, and so that the
service can decide whether retrying makes sense (a timeout might pass, a bad zone will not)::

    CarbonError
    ├── CarbonConfigError        the configuration or credentials cannot work (no request sent)
    ├── CarbonTransportError     connection refused / reset, DNS, TLS           (retryable)
    │   └── CarbonTimeoutError   no complete answer within the ClientTimeout    (retryable)
    ├── CarbonHTTPError          an unexpected HTTP status
    │   ├── CarbonServerError    5xx                                            (retryable)
    │   ├── CarbonAuthError      401 / 403: bad, missing or insufficient credentials
    │   ├── CarbonRateLimitedError 429, with the server's Retry-After            (retryable)
    │   └── CarbonZoneError      the zone is unknown (404) or the API answered for another zone
    ├── CarbonResponseError      the body is not the documented JSON shape
    └── CarbonValueError         well-formed, but nonsense (negative, NaN, > 5000 g/kWh)
        ├── CarbonNoDataError    no value for this zone / time
        └── CarbonEmptyForecastError  a forecast with no points

Messages never contain credentials: providers build them from status codes, URLs without
secrets and short, truncated server texts.
"""

from __future__ import annotations


class CarbonError(Exception):
    """Base of every error a carbon provider raises."""

    #: Short machine-readable reason, used in signals, status conditions and metric labels.
    reason = "CarbonError"
    #: Whether trying again soon has a chance of succeeding.
    retryable = False


class CarbonConfigError(CarbonError):
    """The source configuration cannot work (unknown provider, missing credentials, bad zone syntax)."""

    reason = "ConfigError"


class CarbonTransportError(CarbonError):
    """The request did not get an HTTP answer (connection refused, reset, DNS, TLS)."""

    reason = "TransportError"
    retryable = True


class CarbonTimeoutError(CarbonTransportError):
    """The answer did not arrive within the request's ``aiohttp.ClientTimeout``."""

    reason = "Timeout"


class CarbonHTTPError(CarbonError):
    """The API answered with a status the provider does not expect."""

    reason = "HTTPError"

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class CarbonServerError(CarbonHTTPError):
    """The API failed on its side (HTTP 5xx); usually transient."""

    reason = "ServerError"
    retryable = True


class CarbonAuthError(CarbonHTTPError):
    """The API refused the credentials (401) or the plan does not cover the request (403)."""

    reason = "Unauthorized"


class CarbonForbiddenError(CarbonAuthError):
    """The credentials are valid but do not grant this endpoint or zone (HTTP 403)."""

    reason = "Forbidden"


class CarbonRateLimitedError(CarbonHTTPError):
    """HTTP 429. ``retry_after_s`` is the server's Retry-After, when it sent one."""

    reason = "RateLimited"
    retryable = True

    def __init__(self, message: str, *, status: int = 429, retry_after_s: float | None = None) -> None:
        super().__init__(message, status=status)
        self.retry_after_s = retry_after_s


class CarbonZoneError(CarbonHTTPError):
    """The zone is unknown to the API, or the API silently answered for a different zone."""

    reason = "UnknownZone"


class CarbonZoneMismatchError(CarbonZoneError):
    """The API answered for another zone than requested (Electricity Maps' caller-location fallback)."""

    reason = "ZoneMismatch"


class CarbonNotSupportedError(CarbonHTTPError):
    """The endpoint exists but cannot serve this request (e.g. the Carbon Aware SDK's 501 for forecasts)."""

    reason = "NotSupported"


class CarbonResponseError(CarbonError):
    """The body is not valid JSON or lacks the documented fields."""

    reason = "MalformedResponse"


class CarbonValueError(CarbonError):
    """The body is well-formed but its values are physically implausible or unusable."""

    reason = "InvalidValue"


class CarbonNoDataError(CarbonValueError):
    """The API answered but had no value for the zone and time asked about."""

    reason = "NoData"


class CarbonEmptyForecastError(CarbonValueError):
    """A forecast was requested and the API returned no points."""

    reason = "EmptyForecast"
