"""Operator settings, from the environment (``WATTPLANE_OPERATOR_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    """Everything the operator can be told. Units are in the names."""

    model_config = SettingsConfigDict(env_prefix="WATTPLANE_OPERATOR_", extra="ignore")

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
