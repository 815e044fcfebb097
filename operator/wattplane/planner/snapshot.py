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
    #: The board's energy counter, joules (monotonic while the agent keeps it so); ``None`` if unknown.
    energy_joules: float | None = None
    #: The power limit in force now, watts (what the last plan, a budget cut or the default left).
    limit_watts: float | None = None
    pods: tuple[PodKey, ...] = ()
    mig_enabled: bool = False
    #: The agent's node-budget loop holds this GPU below its target: its draw says nothing of its demand.
    budget_limited: bool = False


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
    #: Controller owner as ``Kind/name`` (e.g. ``Job/train-42``): the default job of the pod.
    owner: str | None = None
    #: Pod IP, where its progress metric is scraped.
    ip: str | None = None

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
    #: Labels of the Node objects (budget sections select nodes, e.g. by rack).
    node_labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
