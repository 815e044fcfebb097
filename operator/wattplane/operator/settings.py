"""Operator settings, from the environment (``WATTPLANE_OPERATOR_*``).

Each field's docstring is its description: ``wattplane-operator --help`` and ``docs/settings.md`` are
rendered from this model (:mod:`wattplane.api.settingsdoc`), and :data:`FLAGS` says which settings
also have a command-line flag.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    """Everything the operator can be told. Units are in the names."""

    model_config = SettingsConfigDict(env_prefix="WATTPLANE_OPERATOR_", extra="ignore", use_attribute_docstrings=True)

    debounce_s: float = Field(default=0.3, ge=0, le=30)
    """Quiet time after a change before planning, so a burst of events costs one round, seconds."""
    resync_interval_s: float = Field(default=30.0, gt=0)
    """Plan at least this often even without events, seconds."""
    plan_ttl_s: int = Field(default=600, ge=10, le=86400)
    """Plans expire on the agents after this long without renewal (fail-safe), seconds."""
    status_refresh_s: float = Field(default=30.0, gt=0)
    """Measurement-only changes to EnergyPolicy status are written at most this often, seconds."""
    kubeconfig: str | None = None
    """Kubeconfig path when running outside a pod."""
    namespace: str = "wattplane-system"
    """Namespace wattplane is installed in: default namespace of credential Secrets (the chart sets it)."""
    signal_refresh_s: float = Field(default=30.0, ge=1)
    """How often the carbon feed checks its sources (each source's own refresh interval still applies)."""
    metrics_port: int = Field(default=8081, ge=0, le=65535)
    """Port of the Prometheus endpoint (``/metrics``); 0 turns it off."""
    metrics_host: str = "0.0.0.0"
    """Address the metrics endpoint binds to."""
    progress_timeout_s: float = Field(default=2.0, gt=0, le=30)
    """Timeout of one scrape of a pod's progress metric, seconds."""
    peering: str | None = None
    """kopf peering name (needs kopf's peering CRDs); unset: standalone, run exactly one replica."""
    liveness_endpoint: str | None = None
    """kopf's liveness endpoint, e.g. ``http://0.0.0.0:8080/healthz`` (unset: none)."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level."""

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        """Accept ``info`` as well as ``INFO``."""
        return value.upper() if isinstance(value, str) else value


#: Settings that also have a command-line flag (the flag wins over the environment).
FLAGS: dict[str, str] = {
    "peering": "--peering",
    "liveness_endpoint": "--liveness",
    "metrics_port": "--metrics-port",
    "kubeconfig": "--kubeconfig",
    "log_level": "--log-level",
}
