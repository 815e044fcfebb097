"""The operator's in-memory picture of the cluster, fed by watch events.

Handlers only put objects in and take them out; :meth:`FleetState.snapshot` freezes the picture for
one planning round. Keeping this separate from kopf makes the whole decision path testable without
an API server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from wattplane.api.v1alpha1.gpunode import GpuNodeSpec
from wattplane.operator.views import PolicyParse, gpunode_parts, pod_view, policy_parse
from wattplane.planner.snapshot import FleetSnapshot, GpuView, PodKey, PodView


@dataclass
class NodeRecord:
    """A GpuNode as last seen: its current plan and reported GPUs."""

    spec: GpuNodeSpec
    gpus: tuple[GpuView, ...]


@dataclass
class FleetState:
    """Latest known pods, namespaces, GpuNodes and policies."""

    pods: dict[PodKey, PodView] = field(default_factory=dict)
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    policies: dict[str, PolicyParse] = field(default_factory=dict)
    node_labels: dict[str, dict[str, str]] = field(default_factory=dict)

    def put_pod(self, body: Mapping[str, Any], *, deleted: bool = False) -> None:
        """Record or forget a pod."""
        view = pod_view(body)
        if deleted:
            self.pods.pop(view.key, None)
        else:
            self.pods[view.key] = view

    def put_namespace(self, body: Mapping[str, Any], *, deleted: bool = False) -> None:
        """Record or forget a namespace's labels."""
        meta = body.get("metadata", {})
        if deleted:
            self.namespaces.pop(meta.get("name", ""), None)
        else:
            self.namespaces[meta.get("name", "")] = dict(meta.get("labels") or {})

    def put_node(self, body: Mapping[str, Any], *, deleted: bool = False) -> bool:
        """Record or forget a Node's labels; returns whether they changed (status-only updates don't)."""
        meta = body.get("metadata", {})
        name = meta.get("name", "")
        if deleted:
            return self.node_labels.pop(name, None) is not None
        labels = dict(meta.get("labels") or {})
        changed = self.node_labels.get(name) != labels
        self.node_labels[name] = labels
        return changed

    def put_gpunode(self, body: Mapping[str, Any], *, deleted: bool = False) -> None:
        """Record or forget a GpuNode."""
        name = body.get("metadata", {}).get("name", "")
        if deleted:
            self.nodes.pop(name, None)
            return
        spec, gpus = gpunode_parts(body)
        self.nodes[name] = NodeRecord(spec=spec, gpus=gpus)

    def put_policy(self, body: Mapping[str, Any], *, deleted: bool = False) -> None:
        """Record or forget an EnergyPolicy."""
        parsed = policy_parse(body)
        if deleted:
            self.policies.pop(parsed.name, None)
        else:
            self.policies[parsed.name] = parsed

    def snapshot(self) -> FleetSnapshot:
        """A frozen copy for one planning round."""
        return FleetSnapshot(
            gpus=tuple(g for record in self.nodes.values() for g in record.gpus),
            pods=dict(self.pods),
            namespace_labels={k: dict(v) for k, v in self.namespaces.items()},
            nodes=tuple(sorted(self.nodes)),
            node_labels={k: dict(v) for k, v in self.node_labels.items()},
        )
