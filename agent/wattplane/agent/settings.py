"""Agent settings, from the environment (``WATTPLANE_AGENT_*``; ``NODE_NAME`` from the downward API).

Each field's docstring is its description: ``wattplane-agent --help`` and ``docs/settings.md`` are
rendered from this model (:mod:`wattplane.api.settingsdoc`), and :data:`FLAGS` says which settings
also have a command-line flag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class AgentSettings(BaseSettings):
    """Everything the agent can be told. Units are in the names."""

    model_config = SettingsConfigDict(env_prefix="WATTPLANE_AGENT_", extra="ignore", use_attribute_docstrings=True)

    node_name: str = Field(default="", validation_alias=AliasChoices("WATTPLANE_AGENT_NODE_NAME", "NODE_NAME"))
    """The node this agent manages (the DaemonSet sets NODE_NAME from spec.nodeName)."""
    backend: Literal["nvml", "amd", "auto", "sim"] = "nvml"
    """GPU backend: NVIDIA GPUs through NVML, AMD GPUs through AMD SMI (``wattplane[amd]`` and ROCm's
    libamd_smi), ``auto`` (every one of the two that finds GPUs, both on a mixed node), or simulated GPUs."""
    sim_gpu_count: int = Field(default=4, ge=0, le=64)
    """Simulated GPUs on this node (sim backend)."""
    sim_model: str = "A40"
    """Simulated GPU model (sim backend)."""
    sim_state_file: Path | None = None
    """Where simulated device state persists (it outlives the agent, like real device state)."""
    sim_faults_file: Path | None = None
    """Faults to inject into simulated GPUs, re-read when it changes (fault tests; see ``gpu/simfaults.py``)."""
    sim_load: float = Field(default=0.9, ge=0.0, le=1.0)
    """Load of a simulated GPU that a pod holds (duty cycle for training, share of peak batch for inference)."""
    sim_profiles: Annotated[tuple[str, ...], NoDecode] = ()
    """Extra Zeus-format power traces for the sim backend, comma-separated: ``path`` or ``MODEL=path``."""
    pod_mapper: Literal["auto", "podresources", "sim"] = "auto"
    """How GPUs are attributed to pods: the kubelet PodResources API, or the simulated mapper for simulated GPUs
    (which no kubelet knows). ``auto``: ``podresources`` with real GPUs, ``sim`` with the sim backend."""
    podresources_socket: Path = Path("/var/lib/kubelet/pod-resources/kubelet.sock")
    """The kubelet PodResources socket (mount its directory, not the socket)."""
    journal_path: Path = Path("/var/lib/wattplane/journal.json")
    """Node-local record of the GPUs' prior state (a hostPath in the chart)."""
    status_interval_s: float = Field(default=10.0, gt=0)
    """How often GpuNode status is written when nothing material changes, seconds."""
    tick_s: float = Field(default=1.0, ge=0.1, le=60)
    """Local control-loop period: device reads, budget enforcement, seconds (0.1 to 60)."""
    budget_hysteresis_ratio: float = Field(default=0.05, ge=0.0, le=0.5)
    """Node budget: limits are given back only while node power is below budget × (1 − this)."""
    budget_restore_after_ticks: int = Field(default=3, ge=1, le=600)
    """Node budget: ticks node power must stay below that band before each restore step."""
    budget_restore_step_ratio: float = Field(default=0.1, gt=0.0, le=1.0)
    """Node budget: largest raise per step, as a fraction of the GPU's limit range."""
    pod_sync_interval_s: float = Field(default=5.0, gt=0)
    """How often the pod-to-GPU mapping is refreshed, seconds."""
    restore_on_exit: bool = False
    """Restore every changed GPU on SIGTERM (set by the chart's restoreOnUninstall)."""
    dry_run: bool = False
    """Never write to devices; report what would be done."""
    metrics_port: int = Field(default=9402, ge=0, le=65535)
    """Port of /metrics, /healthz and /readyz (0 picks a free port)."""
    metrics_host: str = "0.0.0.0"
    """Address the metrics server binds."""
    kubeconfig: str | None = None
    """Kubeconfig path when running outside a pod (unset: the pod's service account, else the usual lookup)."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level."""

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        """Accept ``info`` as well as ``INFO``."""
        return value.upper() if isinstance(value, str) else value

    def effective_pod_mapper(self) -> Literal["podresources", "sim"]:
        """The pod mapper in use: ``auto`` resolved by backend (simulated GPUs are unknown to the kubelet)."""
        if self.pod_mapper == "auto":
            return "sim" if self.backend == "sim" else "podresources"
        return self.pod_mapper

    @field_validator("sim_profiles", mode="before")
    @classmethod
    def _split_profiles(cls, value: object) -> object:
        """Accept the environment's comma-separated list as well as a sequence."""
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value


#: Settings that also have a command-line flag (the flag wins over the environment).
FLAGS: dict[str, str] = {
    "node_name": "--node",
    "backend": "--backend",
    "pod_mapper": "--pod-mapper",
    "metrics_port": "--metrics-port",
    "kubeconfig": "--kubeconfig",
    "log_level": "--log-level",
}
