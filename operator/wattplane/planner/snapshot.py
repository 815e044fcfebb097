"""The planner's inputs: an immutable picture of the fleet at one instant.

The operator builds these views from watch events (pods, namespaces, GpuNode status, policies); the
simulator builds them from its virtual fleet. The planner sees nothing else: no clients, no clocks
beyond the ``now`` it is handed.
"""

from __future__ import annotations

import functools
import itertools
from collections import defaultdict
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
class SnapshotDelta:
    """What changed since an earlier snapshot from the same source: a planner then need not look.

    Attributes:
        since: The ``version`` of that earlier snapshot; a planner uses the delta only when it
            planned exactly that snapshot last (else it compares the snapshots itself).
        pods: Pods added, removed or changed.
        nodes: Nodes whose GPUs were added, removed or changed (status reports included).
    """

    since: int
    pods: frozenset[PodKey] = frozenset()
    nodes: frozenset[str] = frozenset()


@dataclass(frozen=True)
class FleetSnapshot:
    """Everything the planner knows about the cluster."""

    gpus: tuple[GpuView, ...] = ()
    pods: Mapping[PodKey, PodView] = field(default_factory=dict)
    namespace_labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    nodes: tuple[str, ...] = ()
    #: Labels of the Node objects (budget sections select nodes, e.g. by rack).
    node_labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: The GPUs grouped by node, when the builder holds them so (``gpus`` is then filled from it).
    #: A node's tuple that is the same object as in the previous round tells the planner that
    #: nothing on that node changed, without looking at its GPUs.
    by_node: Mapping[str, tuple[GpuView, ...]] | None = None
    #: Which snapshot of its source this is (a counter), if the source keeps count.
    version: int | None = None
    #: What changed since an earlier snapshot of the same source, if the source knows.
    delta: SnapshotDelta | None = None

    def __post_init__(self) -> None:
        if self.by_node is not None and not self.gpus:
            object.__setattr__(self, "gpus", tuple(itertools.chain.from_iterable(self.by_node.values())))

    @functools.cached_property
    def gpus_by_node(self) -> Mapping[str, tuple[GpuView, ...]]:
        """The GPUs of each node, in the order they were reported."""
        if self.by_node is not None:
            return self.by_node
        grouped: dict[str, list[GpuView]] = defaultdict(list)
        for gpu in self.gpus:
            grouped[gpu.node].append(gpu)
        return {node: tuple(gpus) for node, gpus in grouped.items()}
