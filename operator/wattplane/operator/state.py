"""The operator's in-memory picture of the cluster, fed by watch events.

Handlers only put objects in and take them out; :meth:`FleetState.snapshot` freezes the picture for
one planning round. Keeping this separate from kopf makes the whole decision path testable without
an API server.

A shard (an operator given a node and a policy selector) keeps its cut of the fleet here: ``nodes``
holds only the GpuNodes of Nodes whose labels match, ``policies`` only the EnergyPolicies whose labels
match, and the snapshot holds only pods on the shard's nodes. Everything downstream (the planner, the
writes) then sees a smaller cluster and needs no notion of shards. Membership follows label changes
in both directions, and a GpuNode may arrive before its Node: until the Node's labels are known it
belongs to no shard (an unsharded operator plans it at once, as before).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from wattplane.api.selectors import LabelSelector
from wattplane.api.v1alpha1.gpunode import GpuNodeSpec
from wattplane.operator.views import PolicyParse, gpunode_parts, pod_energy_of, pod_view, policy_parse
from wattplane.planner.snapshot import FleetSnapshot, GpuView, PodKey, PodView, SnapshotDelta


@dataclass
class NodeRecord:
    """A GpuNode as last seen: its current plan and reported GPUs."""

    spec: GpuNodeSpec
    gpus: tuple[GpuView, ...]
    #: GPU joules the agent attributes to each pod, by pod uid (``status.podEnergy``).
    pod_energy: Mapping[PodKey, Mapping[str, float]] = field(default_factory=dict)


@dataclass
class FleetState:
    """Latest known pods, namespaces, GpuNodes and policies (of this operator's shard)."""

    pods: dict[PodKey, PodView] = field(default_factory=dict)
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)
    #: GpuNodes this operator plans (with a node selector: those whose Node matches it).
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    #: EnergyPolicies this operator governs (with a policy selector: those whose labels match it).
    policies: dict[str, PolicyParse] = field(default_factory=dict)
    #: Labels of every Node seen, in the shard or not (membership is decided from them).
    node_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    #: Nodes of this shard; ``None``: every node, even one whose Node object was never seen.
    node_selector: LabelSelector | None = None
    #: Policies of this shard; ``None``: every policy.
    policy_selector: LabelSelector | None = None
    #: GpuNodes outside the shard: the raw object as the watch delivered it (parsed only if its Node
    #: joins the shard, so other shards' agents' status updates cost a dict store, not a validation),
    #: or the record of a node that left the shard.
    outside: dict[str, Mapping[str, Any] | NodeRecord] = field(default_factory=dict)
    #: Snapshots taken so far, and what changed since the last one: the planner then need not look.
    version: int = 0
    _changed_pods: set[PodKey] = field(default_factory=set, repr=False)
    _changed_nodes: set[str] = field(default_factory=set, repr=False)
    #: Names of the Nodes that match the node selector, kept by :meth:`put_node` (a snapshot then
    #: filters pods with a set lookup instead of matching labels for every node each round).
    owned_nodes: set[str] = field(default_factory=set)

    def owns_node(self, name: str) -> bool:
        """Whether this operator plans the node: it matches the node selector (unknown labels do not)."""
        return self.node_selector is None or name in self.owned_nodes

    def owns_policy(self, labels: Mapping[str, str] | None) -> bool:
        """Whether a policy with these labels belongs to this operator (the kopf finalizer filter too)."""
        return self.policy_selector is None or self.policy_selector.matches(labels or {})

    def put_pod(self, body: Mapping[str, Any], *, deleted: bool = False) -> bool:
        """Record or forget a pod; returns whether it is on (or just left) one of this shard's nodes.

        Every pod is kept, wherever it runs, so a node that joins the shard brings its pods along.
        """
        view = pod_view(body)
        self._changed_pods.add(view.key)
        if deleted:
            before = self.pods.pop(view.key, None)
            return before is not None and self._owns_pod(before)
        before = self.pods.get(view.key)
        self.pods[view.key] = view
        return self._owns_pod(view) or (before is not None and self._owns_pod(before))

    def _owns_pod(self, pod: PodView) -> bool:
        if self.node_selector is None:
            return True
        return pod.node is not None and self.owns_node(pod.node)

    def put_namespace(self, body: Mapping[str, Any], *, deleted: bool = False) -> None:
        """Record or forget a namespace's labels."""
        meta = body.get("metadata", {})
        if deleted:
            self.namespaces.pop(meta.get("name", ""), None)
        else:
            self.namespaces[meta.get("name", "")] = dict(meta.get("labels") or {})

    def put_node(self, body: Mapping[str, Any], *, deleted: bool = False) -> bool:
        """Record or forget a Node's labels; returns whether planning is affected.

        Status-only updates (heartbeats) change nothing; nor do label changes of a node that stays
        outside the shard. A node whose labels take it into the shard or out of it moves its GpuNode
        in or out of :attr:`nodes`: one leaving is no longer planned or written by this operator
        (whichever shard it joins takes its plan over; with none, the agent restores the GPUs when
        the last plan's TTL runs out).
        """
        meta = body.get("metadata", {})
        name = meta.get("name", "")
        self._changed_nodes.add(name)
        was_ours = self.owns_node(name) and name in self.node_labels
        if deleted:
            self.node_labels.pop(name, None)
            self.owned_nodes.discard(name)
            changed = was_ours
        else:
            labels = dict(meta.get("labels") or {})
            changed = self.node_labels.get(name) != labels
            self.node_labels[name] = labels
            if self.node_selector is not None and self.node_selector.matches(labels):
                self.owned_nodes.add(name)
            else:
                self.owned_nodes.discard(name)
            changed = changed and (was_ours or self.owns_node(name))
        self._place(name)
        return changed

    def _place(self, name: str) -> None:
        """Move a GpuNode between :attr:`nodes` and :attr:`outside` after its Node's labels changed."""
        if self.owns_node(name):
            kept = self.outside.pop(name, None)
            if isinstance(kept, NodeRecord):
                self.nodes[name] = kept
            elif kept is not None:
                spec, gpus = gpunode_parts(kept)
                self.nodes[name] = NodeRecord(spec=spec, gpus=gpus, pod_energy=pod_energy_of(kept))
        elif name in self.nodes:
            self.outside[name] = self.nodes.pop(name)

    def put_gpunode(self, body: Mapping[str, Any], *, deleted: bool = False) -> bool:
        """Record or forget a GpuNode; returns whether it is (or was) one of this shard's."""
        name = body.get("metadata", {}).get("name", "")
        self._changed_nodes.add(name)
        if deleted:
            self.outside.pop(name, None)
            return self.nodes.pop(name, None) is not None
        if not self.owns_node(name):
            self.outside[name] = body
            return self.nodes.pop(name, None) is not None
        spec, gpus = gpunode_parts(body)
        self.nodes[name] = NodeRecord(spec=spec, gpus=gpus, pod_energy=pod_energy_of(body))
        return True

    def put_policy(self, body: Mapping[str, Any], *, deleted: bool = False) -> bool:
        """Record or forget an EnergyPolicy; returns whether it is (or was) one of this shard's.

        A policy whose labels leave the shard is forgotten like a deleted one: this operator stops
        writing its status, and kopf drops this operator's finalizer from it (the handler's filter no
        longer matches); the shard it joins takes both over.
        """
        meta = body.get("metadata", {})
        if deleted or not self.owns_policy(meta.get("labels")):
            return self.policies.pop(meta.get("name", ""), None) is not None  # another shard's: not parsed
        parsed = policy_parse(body)
        self.policies[parsed.name] = parsed
        return True

    def pod_energy(self) -> dict[PodKey, dict[str, float]]:
        """GPU joules per pod (by pod uid) across this shard's nodes, as the agents last reported them."""
        out: dict[PodKey, dict[str, float]] = {}
        for record in self.nodes.values():
            for key, by_uid in record.pod_energy.items():
                merged = out.setdefault(key, {})
                for uid, joules in by_uid.items():
                    merged[uid] = merged.get(uid, 0.0) + joules
        return out

    def snapshot(self) -> FleetSnapshot:
        """A frozen copy for one planning round (with a node selector: only the shard's pods and nodes)."""
        if self.node_selector is None:
            pods = dict(self.pods)
            node_labels = {k: dict(v) for k, v in self.node_labels.items()}
        else:
            owned = self.owned_nodes
            pods = {k: p for k, p in self.pods.items() if p.node in owned}
            node_labels = {k: dict(self.node_labels[k]) for k in owned}
        # Only an unsharded state can say which pods changed: in a shard, a node joining or leaving
        # brings its pods into the snapshot or takes them out without any pod event.
        delta = None
        if self.node_selector is None:
            delta = SnapshotDelta(
                since=self.version, pods=frozenset(self._changed_pods), nodes=frozenset(self._changed_nodes)
            )
        self._changed_pods, self._changed_nodes = set(), set()
        self.version += 1
        return FleetSnapshot(
            pods=pods,
            namespace_labels={k: dict(v) for k, v in self.namespaces.items()},
            nodes=tuple(sorted(self.nodes)),
            node_labels=node_labels,
            # A node's GPU tuple is replaced only when its GpuNode changes: the planner skips the rest.
            by_node={name: record.gpus for name, record in self.nodes.items() if record.gpus},
            version=self.version,
            delta=delta,
        )
