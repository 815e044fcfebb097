"""GpuNode: one per Kubernetes node, named after it and owned by the Node object.

The operator writes ``spec`` (what each GPU should be set to and why); the node's agent writes
``status`` (what the GPUs are doing). Nobody else writes either, so there is never a write conflict.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field
from wattplane.api.base import ApiModel, LenientApiModel
from wattplane.api.conditions import Condition
from wattplane.api.crd import CrdInfo, PrinterColumn
from wattplane.api.v1alpha1.energypolicy import ClockRangeMHz

CRD = CrdInfo(
    kind="GpuNode",
    plural="gpunodes",
    singular="gpunode",
    short_names=("gn",),
    printer_columns=(
        PrinterColumn("Backend", "string", ".status.backend"),
        PrinterColumn("GPUs", "integer", ".status.gpuCount"),
        PrinterColumn("Power W", "number", ".status.nodePowerWatts", "Measured node GPU power"),
        PrinterColumn("Budget W", "number", ".spec.nodeBudgetWatts", "Node GPU power budget"),
        PrinterColumn("Targets", "integer", ".status.targetedGpus", "GPUs under a policy target"),
        PrinterColumn("Ready", "string", '.status.conditions[?(@.type=="Ready")].status'),
        PrinterColumn("Heartbeat", "date", ".status.heartbeat", priority=1),
        PrinterColumn("Age", "date", ".metadata.creationTimestamp"),
    ),
)


class GpuTarget(ApiModel):
    """What one GPU should be set to, and why."""

    uuid: str = Field(min_length=1, max_length=96)
    """NVML UUID of the board."""
    power_limit_watts: float = Field(gt=0, le=10000)
    """Power limit to apply, watts (the agent clamps it into the device's constraints)."""
    locked_clocks_mhz: ClockRangeMHz | None = Field(default=None, alias="lockedClocksMHz")
    """Locked SM clock range, if any."""
    policy: str = ""
    """EnergyPolicy that produced this target."""
    job: str = ""
    """Job the GPU's pod belongs to."""
    priority: int = 0
    """Pod priority (higher is cut later by the node budget loop)."""
    reason: str = ""
    """Human-readable explanation of the value."""
    dry_run: bool = False
    """Report only: the agent must not touch the device."""


class GpuNodeSpec(ApiModel):
    """The plan for one node. Written by the operator only."""

    plan_generation: int = Field(default=0, ge=0)
    """Increments whenever the targets change."""
    issued_at: datetime | None = None
    """When the operator last confirmed this plan (renewed well within ``ttlSeconds``)."""
    ttl_seconds: int = Field(default=600, ge=10, le=86400)
    """If the plan is not renewed within this time the agent restores device defaults (fail-safe)."""
    node_budget_watts: float | None = Field(default=None, gt=0)
    """Power budget for all GPUs of the node, enforced locally by the agent."""
    gpus: list[GpuTarget] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["uuid"]},
    )
    """Per-GPU targets; a GPU absent here is restored to its prior state."""


class PowerConstraintsWatts(ApiModel):
    """The device's accepted power-limit range and its boot default."""

    min_watts: float
    max_watts: float
    default_watts: float


class PodRef(ApiModel):
    """The pod (and container) a GPU is allocated to."""

    namespace: str
    name: str
    uid: str = ""
    container: str = ""


class GpuStatus(LenientApiModel):
    """One GPU as the agent last saw it."""

    index: int
    uuid: str
    model: str
    mig_enabled: bool = False
    power_limit_watts: float
    constraints: PowerConstraintsWatts
    power_watts: float
    energy_joules: float | None = None
    """Monotonic energy counter, joules."""
    sm_clock_mhz: int | None = Field(default=None, alias="smClockMHz")
    utilization: float | None = None
    """GPU utilisation, ratio 0-1."""
    temperature_celsius: float | None = None
    throttle_reasons: list[str] = Field(default_factory=list)
    target_watts: float | None = None
    """Limit the plan asks for (after clamping), watts; absent when no target applies."""
    budget_limit_watts: float | None = None
    """Limit the node budget holds this GPU to, below its target or prior limit, watts; absent when not held."""
    state: Literal["Default", "Applied", "DryRun", "Error"] = "Default"
    """Whether the GPU runs at its prior settings, the plan's target, or failed to apply."""
    reason: str = ""
    """CamelCase reason for the state: NodeBudget, Clamped, Restored, or the error (NoPermission, GpuLost, ...)."""
    message: str = ""
    stale: bool = False
    """The GPU could not be read this time; its measurements are from the last successful read."""
    pods: list[PodRef] = Field(default_factory=list)


class PodEnergy(ApiModel):
    """Energy attributed to one pod's (container's) GPUs since the agent first saw it."""

    namespace: str
    name: str
    uid: str = ""
    container: str = ""
    """The container holding the GPUs (empty when unknown)."""
    energy_joules: float


class GpuNodeStatus(LenientApiModel):
    """What the node's agent observes. Written by the agent only."""

    model_config = ConfigDict(**{"json_schema_extra": {"x-kubernetes-preserve-unknown-fields": True}})

    backend: str = ""
    """``nvml`` or ``sim``."""
    heartbeat: datetime | None = None
    observed_plan_generation: int | None = None
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    gpu_count: int = 0
    targeted_gpus: int = 0
    node_power_watts: float = 0.0
    gpus: list[GpuStatus] = Field(default_factory=list)
    pod_energy: list[PodEnergy] = Field(default_factory=list)


class GpuNode(LenientApiModel):
    """A cluster-scoped GpuNode object."""

    api_version: str = CRD.api_version
    kind: str = CRD.kind
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: GpuNodeSpec = Field(default_factory=GpuNodeSpec)
    status: GpuNodeStatus = Field(default_factory=GpuNodeStatus)

    @property
    def name(self) -> str:
        """``metadata.name`` (the node's name)."""
        return str(self.metadata.get("name", ""))
