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
from wattplane.api.v1alpha1.energypolicy import ClockRangeMHz, PowerSmoothing, WorkloadProfile

CRD = CrdInfo(
    kind="GpuNode",
    plural="gpunodes",
    singular="gpunode",
    short_names=("gpun",),
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


#: The EnergyPolicy sections that propose GPU limits. ``budget`` is not one: the operator shares a
#: budget between nodes (``nodeBudgetWatts``) and the agent alone cuts GPUs below their targets.
PolicySection = Literal["limits", "efficiency", "carbon", "stragglers", "quota", "serving"]


class GpuTarget(ApiModel):
    """What one GPU should be set to, and why."""

    uuid: str = Field(min_length=1, max_length=96)
    """NVML UUID of the board."""
    power_limit_watts: float = Field(gt=0, le=10000)
    """Power limit to apply, watts (the agent clamps it into the device's constraints)."""
    locked_clocks_mhz: ClockRangeMHz | None = Field(default=None, alias="lockedClocksMHz")
    """Locked SM clock range, if any."""
    workload_profile: WorkloadProfile | None = None
    """Workload power profile to request, if any (the policy's ``limits.workloadProfile``)."""
    power_smoothing: PowerSmoothing | None = None
    """Power smoothing to apply, if any (the policy's ``limits.powerSmoothing``)."""
    policy: str = ""
    """EnergyPolicy that produced this target."""
    job: str = ""
    """Job the GPU's pod belongs to."""
    priority: int = 0
    """Pod priority (higher is cut later by the node budget loop)."""
    reason: str = ""
    """Human-readable explanation of the value."""
    section: PolicySection | None = None
    """The policy section whose proposal is the limit (the tightest one)."""
    dry_run: bool = False
    """Report only: the agent must not touch the device."""


class BudgetPriority(ApiModel):
    """Where one GPU stands in the node budget's cut order."""

    uuid: str = Field(min_length=1, max_length=96)
    """NVML UUID of the board."""
    priority: int = Field(ge=-1, le=1000)
    """Higher is cut later: -1 a GPU without pods, then the pods' ``wattplane.io/priority`` (low 0,
    normal 500, high 1000); inference pods count as high."""


class GpuNodeSpec(ApiModel):
    """The plan for one node. Written by the operator only."""

    plan_generation: int = Field(default=0, ge=0)
    """Increments whenever the targets change."""
    issued_at: datetime | None = None
    """When the operator last confirmed this plan (renewed well within ``ttlSeconds``)."""
    ttl_seconds: int = Field(default=600, ge=10, le=86400)
    """If the plan is not renewed within this time the agent restores device defaults (fail-safe)."""
    node_budget_watts: float | None = Field(default=None, gt=0)
    """Power budget for all GPUs of the node. The operator sets this share; the agent alone decides
    which GPUs to hold below their target to stay under it, on measured power, every tick."""
    node_budget_ramp_watts_per_second: float | None = Field(default=None, gt=0, le=1e9)
    """How fast the agent moves its budget in force towards ``nodeBudgetWatts`` (or, without one, back
    up until no GPU is held), watts per second; absent: at once. Set while a budget window ramps."""
    budget_priorities: list[BudgetPriority] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["uuid"]},
    )
    """The cut order of the node's GPUs under ``nodeBudgetWatts`` (absent without a budget). It follows
    the pods and their annotations, not power, so it changes only when they do."""
    gpus: list[GpuTarget] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["uuid"]},
    )
    """Per-GPU targets; a GPU absent here is restored to its prior state."""


class PowerConstraintsWatts(ApiModel):
    """The device's accepted power-limit range and its boot default."""

    min_watts: float
    """Lowest power limit the device accepts, watts."""
    max_watts: float
    """Highest power limit the device accepts, watts."""
    default_watts: float
    """The device's default (boot) power limit, watts; the reference for ``*FractionOfDefault``."""


class PodRef(ApiModel):
    """The pod (and container) a GPU is allocated to."""

    namespace: str
    """Namespace of the pod."""
    name: str
    """Name of the pod."""
    uid: str = ""
    """UID of the pod (tells a re-created pod of the same name apart)."""
    container: str = ""
    """The container the GPU is allocated to (empty when unknown)."""


class PowerSmoothingStatus(LenientApiModel):
    """A GPU's power smoothing as the agent read it back."""

    enabled: bool
    """Whether power smoothing is on."""
    preset_profile: int = 0
    """The active preset profile (NVML keeps several)."""
    ramp_up_watts_per_second: float | None = None
    """The preset's fastest power rise, watts per second."""
    ramp_down_watts_per_second: float | None = None
    """The preset's fastest power fall, watts per second."""
    floor_percent: float | None = None
    """The preset's power floor, percent of total module power."""


class GpuStatus(LenientApiModel):
    """One GPU as the agent last saw it."""

    index: int
    """NVML device index on the node (``nvidia-smi -i``); not stable across reboots, ``uuid`` is."""
    uuid: str
    """NVML UUID of the board; what ``spec.gpus[].uuid`` refers to."""
    model: str
    """Product name as NVML reports it, e.g. ``NVIDIA A100-SXM4-80GB``."""
    vendor: Literal["nvidia", "amd", "simulated"] | None = None
    """Who made the GPU, and so which backend drives it: ``nvidia`` (NVML), ``amd`` (AMD SMI), ``simulated``."""
    mig_enabled: bool = False
    """MIG mode is on: the board is split into instances and its power limit is left alone."""
    power_limit_watts: float
    """Power limit the device enforces now, watts."""
    constraints: PowerConstraintsWatts
    """The power-limit range the device accepts and its default limit."""
    power_watts: float
    """Measured board power draw, watts."""
    energy_joules: float | None = None
    """Monotonic energy counter, joules."""
    sm_clock_mhz: int | None = Field(default=None, alias="smClockMHz")
    """Current SM (graphics) clock, MHz."""
    utilization: float | None = None
    """GPU utilisation, ratio 0-1."""
    temperature_celsius: float | None = None
    """GPU core temperature, degrees Celsius."""
    throttle_reasons: list[str] = Field(default_factory=list)
    """Active NVML clock-event reasons by name (``SwPowerCap``, ``HwSlowdown``, ``GpuIdle``, ...)."""
    target_watts: float | None = None
    """Limit the plan asks for (after clamping), watts; absent when no target applies."""
    budget_limit_watts: float | None = None
    """Limit the node budget holds this GPU to, below its target or prior limit, watts; absent when not held."""
    state: Literal["Default", "Applied", "DryRun", "Error"] = "Default"
    """Whether the GPU runs at its prior settings, the plan's target, or failed to apply."""
    reason: str = ""
    """CamelCase reason for the state: NodeBudget, Clamped, Restored, or the error (NoPermission, GpuLost, ...)."""
    message: str = ""
    """Human-readable detail for ``state`` and ``reason`` (what was clamped, which call failed)."""
    stale: bool = False
    """The GPU could not be read this time; its measurements are from the last successful read."""
    pods: list[PodRef] = Field(default_factory=list)
    """Pods (and containers) the GPU is allocated to, as the kubelet's PodResources API reports them."""
    workload_profiles: list[str] | None = None
    """Workload power profiles requested on the board, as read back (absent when no plan asks for one)."""
    power_smoothing: PowerSmoothingStatus | None = None
    """Power smoothing as read back (absent when no plan asks for it)."""
    unsupported_features: list[str] | None = None
    """Knobs the plan asked for that this GPU does not offer (``workloadProfile``, ``powerSmoothing``);
    they are left alone on this GPU. Absent when there are none."""


class PodEnergy(ApiModel):
    """Energy attributed to one pod's (container's) GPUs since the agent first saw it."""

    namespace: str
    """Namespace of the pod."""
    name: str
    """Name of the pod."""
    uid: str = ""
    """UID of the pod."""
    container: str = ""
    """The container holding the GPUs (empty when unknown)."""
    energy_joules: float
    """GPU energy attributed to the pod since the agent first saw it, joules (monotonic)."""


class GpuNodeStatus(LenientApiModel):
    """What the node's agent observes. Written by the agent only."""

    model_config = ConfigDict(**{"json_schema_extra": {"x-kubernetes-preserve-unknown-fields": True}})

    backend: str = ""
    """``nvml``, ``amdsmi``, ``nvml+amdsmi`` (both on one node) or ``sim``."""
    heartbeat: datetime | None = None
    """When the agent last wrote this status; an old heartbeat means the agent is gone."""
    observed_plan_generation: int | None = None
    """The ``spec.planGeneration`` the agent last applied."""
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """``Ready`` (every GPU answers and applies), ``BudgetMet`` (node within its budget), with reasons."""
    gpu_count: int = 0
    """GPUs the agent's backend sees on the node."""
    targeted_gpus: int = 0
    """GPUs running at (or, in dry run, reporting) a policy target."""
    node_power_watts: float = 0.0
    """Measured power of the node's GPUs that answered this time, watts."""
    gpus: list[GpuStatus] = Field(default_factory=list)
    """Per-GPU state, as last read."""
    pod_energy: list[PodEnergy] = Field(default_factory=list)
    """GPU energy attributed per pod (and container) since the agent first saw it."""


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
