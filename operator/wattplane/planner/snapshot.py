"""The planner's inputs: an immutable picture of the fleet at one instant.

The operator builds these views from watch events (pods, namespaces, GpuNode status, policies); the
simulator builds them from its virtual fleet. The planner sees nothing else: no clients, no clocks
beyond the ``now`` it is handed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from wattplane.api.v1alpha1.energypolicy import EnergyPolicySpec

PodKey = tuple[str, str]
"""``(namespace, name)`` of a pod."""


@dataclass(frozen=True)
class GpuView:
    """One GPU as the node's agent last reported it."""

    node: str
    uuid: str
    index: int
    model: str
    min_watts: float
    max_watts: float
    default_watts: float
    power_watts: float = 0.0
    pods: tuple[PodKey, ...] = ()
    mig_enabled: bool = False


@dataclass(frozen=True)
class PodView:
    """The parts of a pod that planning depends on."""

    namespace: str
    name: str
    uid: str = ""
    node: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    phase: str = "Running"

    @property
    def key(self) -> PodKey:
        """``(namespace, name)``."""
        return (self.namespace, self.name)

    @property
    def active(self) -> bool:
        """Pods that finished no longer hold GPUs worth planning for."""
        return self.phase not in ("Succeeded", "Failed")


@dataclass(frozen=True)
class PolicyView:
    """An EnergyPolicy as the planner sees it."""

    name: str
    spec: EnergyPolicySpec
    generation: int = 0
    deleting: bool = False


@dataclass(frozen=True)
class FleetSnapshot:
    """Everything the planner knows about the cluster."""

    gpus: tuple[GpuView, ...] = ()
    pods: Mapping[PodKey, PodView] = field(default_factory=dict)
    namespace_labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    nodes: tuple[str, ...] = ()
