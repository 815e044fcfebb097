"""Operator settings, from the environment (``WATTPLANE_OPERATOR_*``).

Each field's docstring is its description: ``wattplane-operator --help`` and ``docs/settings.md`` are
rendered from this model (:mod:`wattplane.api.settingsdoc`), and :data:`FLAGS` says which settings
also have a command-line flag.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from wattplane.api.selectors import LabelSelector
from wattplane.api.selectorsyntax import parse_selector

#: The finalizer an operator puts on the EnergyPolicies it governs (a shard's gets its name appended).
FINALIZER = "wattplane.io/restore-gpus"


class OperatorSettings(BaseSettings):
    """Everything the operator can be told. Units are in the names."""

    model_config = SettingsConfigDict(env_prefix="WATTPLANE_OPERATOR_", extra="ignore", use_attribute_docstrings=True)

    debounce_s: float = Field(default=0.3, ge=0, le=30)
    """Quiet time after a change before planning, so a burst of events costs one round, seconds."""
    resync_interval_s: float = Field(default=30.0, gt=0)
    """Plan at least this often even without events, seconds."""
    plan_ttl_s: int = Field(default=600, ge=10, le=86400)
    """Plans expire on the agents after this long without renewal (fail-safe), seconds."""
    write_concurrency: int = Field(default=16, ge=1, le=256)
    """GpuNode plan writes in flight at once (a large fleet's round otherwise waits on each PATCH in turn)."""
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
    serving_scrape_interval_s: float = Field(default=15.0, ge=1, le=3600)
    """Least time between two reads of the inference pods' serving metrics (token counts), seconds."""
    peering: str | None = None
    """kopf peering name (needs kopf's peering CRDs); unset: standalone, run exactly one replica."""
    liveness_endpoint: str | None = None
    """kopf's liveness endpoint, e.g. ``http://0.0.0.0:8080/healthz`` (unset: none)."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level."""
    node_selector: str = ""
    """Shard: plan only the GpuNodes of Nodes with these labels (``kubectl -l`` syntax, e.g. ``pool=a``,
    ``pool in (a,b)``, ``!gpu-pool``); empty: every node."""
    policy_selector: str = ""
    """Shard: govern only EnergyPolicies with these labels (same syntax); empty: every policy."""
    shard: str = Field(default="", max_length=50, pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$")
    """Shard name (a DNS label), required with a selector: names this operator's finalizer
    (``wattplane.io/restore-gpus-<shard>``) so shards never remove each other's."""

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        """Accept ``info`` as well as ``INFO``."""
        return value.upper() if isinstance(value, str) else value

    @field_validator("node_selector", "policy_selector")
    @classmethod
    def _selector_parses(cls, value: str) -> str:
        """Refuse a bad selector at startup, with the parser's message, rather than select nothing."""
        parse_selector(value)
        return value.strip()

    @model_validator(mode="after")
    def _shard_named(self) -> OperatorSettings:
        """Shards need distinct finalizers: kopf removes its finalizer from objects its filters skip."""
        if (self.node_selector or self.policy_selector) and not self.shard:
            raise ValueError("a node or policy selector needs a shard name (WATTPLANE_OPERATOR_SHARD, --shard)")
        return self

    @property
    def node_label_selector(self) -> LabelSelector | None:
        """The parsed ``node_selector``; ``None`` when every node belongs to this operator."""
        return parse_selector(self.node_selector) if self.node_selector else None

    @property
    def policy_label_selector(self) -> LabelSelector | None:
        """The parsed ``policy_selector``; ``None`` when every policy belongs to this operator."""
        return parse_selector(self.policy_selector) if self.policy_selector else None

    @property
    def finalizer(self) -> str:
        """This operator's finalizer on the EnergyPolicies it governs."""
        return f"{FINALIZER}-{self.shard}" if self.shard else FINALIZER


#: Settings that also have a command-line flag (the flag wins over the environment).
FLAGS: dict[str, str] = {
    "peering": "--peering",
    "liveness_endpoint": "--liveness",
    "metrics_port": "--metrics-port",
    "kubeconfig": "--kubeconfig",
    "log_level": "--log-level",
    "node_selector": "--node-selector",
    "policy_selector": "--policy-selector",
    "shard": "--shard",
}
