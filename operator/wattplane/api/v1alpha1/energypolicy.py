"""EnergyPolicy: what to optimise for which pods.

Spec sections are optional and compose. The effective limit of a GPU is the tightest of what applies,
always inside the device's own constraints. Fields carry their unit in the name (``maxWatts``,
``maxFractionOfDefault``) so a policy reads unambiguously.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, model_validator
from wattplane.api.base import ApiModel, LenientApiModel
from wattplane.api.conditions import Condition
from wattplane.api.crd import CrdInfo, PrinterColumn
from wattplane.api.selectors import LabelSelector

CRD = CrdInfo(
    kind="EnergyPolicy",
    plural="energypolicies",
    singular="energypolicy",
    short_names=("ep",),
    printer_columns=(
        PrinterColumn("Priority", "integer", ".spec.priority"),
        PrinterColumn("DryRun", "boolean", ".spec.dryRun"),
        PrinterColumn("Pods", "integer", ".status.matchedPods", "Pods this policy governs"),
        PrinterColumn("GPUs", "integer", ".status.matchedGpus", "GPUs this policy sets"),
        PrinterColumn("Allocated W", "number", ".status.allocatedWatts", "Sum of GPU limits set"),
        PrinterColumn("Ready", "string", '.status.conditions[?(@.type=="Ready")].status'),
        PrinterColumn("Reason", "string", '.status.conditions[?(@.type=="Ready")].reason', priority=1),
        PrinterColumn("Age", "date", ".metadata.creationTimestamp"),
    ),
)


class PolicySelector(ApiModel):
    """Which pods a policy governs. Both parts must match; an absent part matches everything.

    Pods can also opt in by name with the ``wattplane.io/policy`` annotation and opt out with
    ``wattplane.io/opt-out: "true"``.
    """

    namespace_selector: LabelSelector | None = None
    """Labels of the pod's namespace."""
    pod_selector: LabelSelector | None = None
    """Labels of the pod."""


class ClockRangeMHz(ApiModel):
    """A locked SM (graphics) clock range."""

    model_config = ConfigDict(
        **{
            "json_schema_extra": {
                "x-kubernetes-validations": [
                    {"rule": "self.minMHz <= self.maxMHz", "message": "minMHz must not exceed maxMHz"},
                ]
            }
        }
    )

    min_mhz: int = Field(ge=0, le=10000, alias="minMHz")
    """Lowest SM clock, MHz."""
    max_mhz: int = Field(ge=0, le=10000, alias="maxMHz")
    """Highest SM clock, MHz."""

    @model_validator(mode="after")
    def _ordered(self) -> ClockRangeMHz:
        if self.min_mhz > self.max_mhz:
            raise ValueError("minMHz must not exceed maxMHz")
        return self


class PowerLimits(ApiModel):
    """Static power caps (MIT Lincoln Lab found 60-80% of the default limit a good trade-off).

    Watts and fractions may both be given; the tightest wins. The result is always clamped into
    the device's own constraints.
    """

    model_config = ConfigDict(
        **{
            "json_schema_extra": {
                "x-kubernetes-validations": [
                    {
                        "rule": "!has(self.minWatts) || !has(self.maxWatts) || self.minWatts <= self.maxWatts",
                        "message": "minWatts must not exceed maxWatts",
                    },
                    {
                        "rule": "!has(self.minFractionOfDefault) || !has(self.maxFractionOfDefault)"
                        " || self.minFractionOfDefault <= self.maxFractionOfDefault",
                        "message": "minFractionOfDefault must not exceed maxFractionOfDefault",
                    },
                ]
            }
        }
    )

    max_watts: float | None = Field(default=None, gt=0, le=10000)
    """Upper bound on each GPU's power limit, watts."""
    max_fraction_of_default: float | None = Field(default=None, gt=0, le=1)
    """Upper bound as a fraction of the device's default limit, e.g. 0.7."""
    min_watts: float | None = Field(default=None, gt=0, le=10000)
    """Lower bound on each GPU's power limit, watts (other sections never go below it)."""
    min_fraction_of_default: float | None = Field(default=None, gt=0, le=1)
    """Lower bound as a fraction of the device's default limit."""
    locked_sm_clock_mhz: ClockRangeMHz | None = Field(default=None, alias="lockedSmClockMHz")
    """Optional locked SM clock range applied with the cap."""

    @model_validator(mode="after")
    def _ordered(self) -> PowerLimits:
        if self.min_watts is not None and self.max_watts is not None and self.min_watts > self.max_watts:
            raise ValueError("minWatts must not exceed maxWatts")
        lo, hi = self.min_fraction_of_default, self.max_fraction_of_default
        if lo is not None and hi is not None and lo > hi:
            raise ValueError("minFractionOfDefault must not exceed maxFractionOfDefault")
        return self


class EnergyPolicySpec(ApiModel):
    """Desired behaviour. Sections are optional and compose (tightest limit wins)."""

    selector: PolicySelector = Field(default_factory=PolicySelector)
    """Pods governed by this policy."""
    priority: int = Field(default=0, ge=-1000, le=1000)
    """When several policies select a pod, the highest priority wins (ties: name order)."""
    limits: PowerLimits | None = None
    """Static caps."""
    dry_run: bool = False
    """Plan and report only; never touch devices."""


class EnergyPolicyStatus(LenientApiModel):
    """What the operator observed and decided. Written by the operator only."""

    model_config = ConfigDict(**{"json_schema_extra": {"x-kubernetes-preserve-unknown-fields": True}})

    observed_generation: int | None = None
    """The ``metadata.generation`` this status describes."""
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """``Ready``, ``Degraded``, ... with reasons."""
    matched_pods: int = 0
    """Pods this policy governs now."""
    matched_gpus: int = 0
    """GPUs this policy sets now."""
    allocated_watts: float = 0.0
    """Sum of the power limits this policy assigned, watts."""
    measured_watts: float = 0.0
    """Sum of the measured power of the governed GPUs, watts."""
    pods: list[str] = Field(default_factory=list, max_length=200)
    """``namespace/name`` of governed pods (first 200)."""


class EnergyPolicy(LenientApiModel):
    """A cluster-scoped EnergyPolicy object."""

    api_version: str = CRD.api_version
    kind: str = CRD.kind
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: EnergyPolicySpec = Field(default_factory=EnergyPolicySpec)
    status: EnergyPolicyStatus = Field(default_factory=EnergyPolicyStatus)

    @property
    def name(self) -> str:
        """``metadata.name``."""
        return str(self.metadata.get("name", ""))

    @property
    def generation(self) -> int:
        """``metadata.generation`` (0 when absent)."""
        return int(self.metadata.get("generation", 0) or 0)
