"""The incremental planner against a fresh round, byte for byte, over random event sequences.

A :class:`Planner` carries its decisions from round to round and redoes only what the changes reach;
a missed dependency would leave a stale target, report or budget behind. So every step of a random
walk through pod, node, label, signal, profile, time and policy events plans twice: with the planner
that saw every earlier step, and with a fresh one. Their plans must serialise to the same bytes
(mappings with sorted keys: a plan's mappings are unordered), and the incremental planner's
``changed_nodes`` must name exactly the nodes whose targets moved.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from wattplane.api.v1alpha1.energypolicy import EnergyPolicySpec, JobProfile, ProfilePoint
from wattplane.planner.context import CarbonInput, PlanContext, ServingKnob
from wattplane.planner.plan import Plan, Planner, plan
from wattplane.planner.snapshot import FleetSnapshot, GpuView, PodKey, PodView, PolicyView, SnapshotDelta

START = datetime(2026, 3, 1, 8, tzinfo=UTC)
NAMESPACES = ("ml", "web", "batch")
TEAMS = ("a", "b", "c")
RACKS = ("r0", "r1")
GPUS_PER_NODE = 4


def canonical(result: Plan) -> str:
    """The plan as bytes: every mapping with sorted keys, models as their JSON, floats exact."""

    def walk(value: Any) -> Any:
        if isinstance(value, BaseModel):
            return walk(value.model_dump(mode="json"))
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: walk(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Mapping):
            return [[walk(k), walk(v)] for k, v in sorted(value.items(), key=lambda kv: repr(kv[0]))]
        if isinstance(value, frozenset | set):
            return sorted(walk(v) for v in value)
        if isinstance(value, tuple | list):
            return [walk(v) for v in value]
        if isinstance(value, float):
            return repr(value)
        if isinstance(value, datetime):
            return value.isoformat()
        return value

    body = walk(replace(result, changed_nodes=frozenset()))
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def _policy(rng: random.Random, name: str) -> PolicyView:
    kind = rng.choice(
        ["limits", "carbon", "budgeted", "efficiency", "stragglers", "budget", "quota", "serving", "observe"]
    )
    team = rng.choice(TEAMS)
    spec: dict[str, Any] = {"selector": {"podSelector": {"matchLabels": {"team": team}}}, "priority": rng.randint(0, 3)}
    if rng.random() < 0.3:
        spec["selector"]["namespaceSelector"] = {"matchLabels": {"tier": rng.choice(["gold", "silver"])}}
    if kind == "limits" or rng.random() < 0.3:
        spec["limits"] = {"maxFractionOfDefault": rng.choice([0.6, 0.7, 0.85]), "minWatts": rng.choice([None, 150.0])}
        if rng.random() < 0.2:
            spec["limits"]["lockedSmClockMHz"] = {"minMHz": 300, "maxMHz": 1400}
    if kind in ("carbon", "budgeted"):
        spec["carbon"] = {
            "mode": "Budgeted" if kind == "budgeted" else "Curve",
            "source": {"provider": "trace", "zone": f"z-{name}", "tracePath": "/dev/null"},
        }
    if kind == "efficiency":
        spec["efficiency"] = {"eta": 0.5}
    if kind == "stragglers":
        spec["stragglers"] = {"tolerance": 0.05}
        spec.setdefault("limits", {"maxWatts": 280.0})
    if kind == "budget":
        spec["budget"] = {
            "watts": rng.choice([900.0, 1500.0, 2500.0]),
            "nodeSelector": {"matchLabels": {"rack": rng.choice(RACKS)}},
        }
        spec.setdefault("limits", {"maxFractionOfDefault": 0.9})
        if rng.random() < 0.5:  # windows that open and close while the walk's clock runs
            opens = START + timedelta(seconds=rng.choice([0, 60, 600, 1800]))
            spec["budget"]["schedule"] = [
                {
                    "name": "w1",
                    "start": opens.isoformat(),
                    "end": (opens + timedelta(seconds=rng.choice([30, 900, 3600]))).isoformat(),
                    **({"watts": rng.choice([600.0, 1200.0])} if rng.random() < 0.5 else {"fraction": 0.6}),
                    **({"rampWattsPerSecond": 20.0} if rng.random() < 0.5 else {}),
                }
            ]
            if rng.random() < 0.3:
                del spec["budget"]["watts"]
    if kind == "serving" or (kind == "limits" and rng.random() < 0.3):
        spec["serving"] = {"tpotP90Ms": 80.0}
    if kind == "quota":
        spec["quota"] = {"watts": rng.choice([400.0, 1200.0, 3000.0]), "hysteresisFraction": rng.choice([0.0, 0.05])}
    if kind == "observe":
        spec = {"selector": spec["selector"], "dryRun": True}
    elif rng.random() < 0.15:
        spec["dryRun"] = True
    return PolicyView(name=name, spec=EnergyPolicySpec.model_validate(spec), generation=rng.randint(1, 9))


def _annotations(rng: random.Random, job: str) -> dict[str, str]:
    marks = {"wattplane.io/job": job}
    if rng.random() < 0.4:
        marks["wattplane.io/priority"] = rng.choice(["low", "normal", "high", "700", "urgent"])
    if rng.random() < 0.15:
        marks["wattplane.io/workload"] = "inference"
    if rng.random() < 0.15:
        marks["wattplane.io/min-power-watts"] = rng.choice(["160", "-3", "220"])
    if rng.random() < 0.15:
        marks["wattplane.io/max-slowdown"] = rng.choice(["0.05", "0.1"])
    if rng.random() < 0.1:
        marks["wattplane.io/opt-out"] = "true"
    if rng.random() < 0.1:
        marks["wattplane.io/policy"] = f"p{rng.randrange(6)}"
    return marks


@dataclass
class World:
    """A small fleet that random events change, and the context the operator would hand the planner."""

    rng: random.Random
    now: datetime = START
    policies: dict[str, PolicyView] = field(default_factory=dict)
    nodes: dict[str, tuple[GpuView, ...]] = field(default_factory=dict)
    node_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)
    pods: dict[PodKey, PodView] = field(default_factory=dict)
    carbon: dict[str, CarbonInput] = field(default_factory=dict)
    profiles: dict[tuple[str, str], JobProfile] = field(default_factory=dict)
    caps: dict[PodKey, float] = field(default_factory=dict)
    knobs: dict[PodKey, ServingKnob] = field(default_factory=dict)
    last: Plan | None = None
    serial: int = 0
    version: int = 0
    #: What changed since the last snapshot (pods, nodes), as a watch-fed state would know it.
    touched_pods: set[PodKey] = field(default_factory=set)
    touched_nodes: set[str] = field(default_factory=set)

    def _pod_set(self, key: PodKey, pod: PodView | None) -> None:
        self.touched_pods.add(key)
        if pod is None:
            del self.pods[key]
        else:
            self.pods[key] = pod

    def _node_set(self, node: str, gpus: tuple[GpuView, ...] | None) -> None:
        self.touched_nodes.add(node)
        if gpus is None:
            del self.nodes[node]
        else:
            self.nodes[node] = gpus

    def populate(self) -> None:
        for i in range(6):
            self.policies[f"p{i}"] = _policy(self.rng, f"p{i}")
        for ns in NAMESPACES:
            self.namespaces[ns] = {"tier": self.rng.choice(["gold", "silver"])}
        for _ in range(5):
            self.add_node()
        for _ in range(8):
            self.add_pod()
        for name in self.policies:
            self.set_signal(name)

    # -- events ---------------------------------------------------------------------------------

    def add_node(self) -> None:
        self.serial += 1
        node = f"n{self.serial:03d}"
        model = self.rng.choice(["A40", "A40", "V100"])
        low, high = (100.0, 300.0) if model == "A40" else (150.0, 250.0)
        gpus = tuple(
            GpuView(
                node=node,
                uuid=f"GPU-{node}-{i}",
                index=i,
                model=model,
                min_watts=low,
                max_watts=high,
                default_watts=high,
                power_watts=self.rng.uniform(30, high),
                limit_watts=high,
                mig_enabled=self.rng.random() < 0.05,
            )
            for i in range(GPUS_PER_NODE)
        )
        self._node_set(node, gpus)
        self.node_labels[node] = {"rack": self.rng.choice(RACKS)}

    def remove_node(self) -> None:
        if len(self.nodes) > 1:
            node = self.rng.choice(sorted(self.nodes))
            self._node_set(node, None)
            del self.node_labels[node]

    def add_pod(self) -> None:
        free = [(n, g) for n, gpus in self.nodes.items() for g in gpus if not g.pods]
        if not free:
            return
        self.serial += 1
        node = self.rng.choice(sorted({n for n, _ in free}))
        ns = self.rng.choice(NAMESPACES)
        key = (ns, f"pod-{self.serial}")
        job = f"job-{self.rng.randrange(6)}"
        pod = PodView(
            namespace=ns,
            name=key[1],
            uid=f"uid-{self.serial}",
            node=node,
            labels={"team": self.rng.choice(TEAMS)},
            annotations=_annotations(self.rng, job),
            phase=self.rng.choice(["Running"] * 8 + ["Pending", "Succeeded"]),
        )
        self._pod_set(key, pod)
        width = self.rng.choice([1, 1, 2, 4])
        taken = 0
        gpus = list(self.nodes[node])
        for i, gpu in enumerate(gpus):
            if taken < width and not gpu.pods:
                gpus[i] = replace(gpu, pods=(key,))
                taken += 1
        if self.rng.random() < 0.1:  # a second pod sharing a GPU (time-slicing)
            other = [k for k in self.pods if k != key and self.pods[k].node == node]
            if other:
                gpus[0] = replace(gpus[0], pods=tuple(sorted({*gpus[0].pods, other[0]})))
        self._node_set(node, tuple(gpus))

    def remove_pod(self) -> None:
        if not self.pods:
            return
        key = self.rng.choice(sorted(self.pods))
        self._pod_set(key, None)
        for node, gpus in list(self.nodes.items()):
            if any(key in g.pods for g in gpus):
                self._node_set(node, tuple(replace(g, pods=tuple(k for k in g.pods if k != key)) for g in gpus))

    def relabel_pod(self) -> None:
        if self.pods:
            key = self.rng.choice(sorted(self.pods))
            pod = self.pods[key]
            if self.rng.random() < 0.5:
                self._pod_set(key, replace(pod, labels={"team": self.rng.choice(TEAMS)}))
            else:
                self._pod_set(key, replace(pod, annotations=_annotations(self.rng, f"job-{self.rng.randrange(6)}")))

    def report_power(self) -> None:
        node = self.rng.choice(sorted(self.nodes))
        self._node_set(
            node,
            tuple(
                replace(
                    g,
                    power_watts=self.rng.uniform(30, g.max_watts),
                    budget_limited=self.rng.random() < 0.2,
                    limit_watts=self.rng.choice([g.max_watts, g.min_watts + 50.0]),
                )
                for g in self.nodes[node]
            ),
        )

    def relabel_node(self) -> None:
        node = self.rng.choice(sorted(self.nodes))
        self.node_labels[node] = {"rack": self.rng.choice(RACKS)}
        self.touched_nodes.add(node)  # a Node event, as the operator's state records it

    def relabel_namespace(self) -> None:
        self.namespaces[self.rng.choice(NAMESPACES)] = {"tier": self.rng.choice(["gold", "silver"])}

    def set_signal(self, name: str | None = None) -> None:
        name = name or self.rng.choice(sorted(self.policies))
        base = self.rng.uniform(80, 600)
        forecast = tuple((self.now + timedelta(hours=h), base + 40 * ((h * 7) % 5)) for h in range(1, 13))
        self.carbon[name] = CarbonInput(intensity=base, time=self.now, forecast=forecast, source=f"trace/{name}")

    def profile(self) -> None:
        job = f"{self.rng.choice(NAMESPACES)}/job-{self.rng.randrange(6)}"
        model = self.rng.choice(["A40", "V100"])
        if self.rng.random() < 0.5:
            self.profiles[(job, model)] = JobProfile(
                job=job,
                gpu_model=model,
                state="Profiling",
                current_watts=self.rng.choice([160.0, 200.0]),
                phase="Measure",
            )
        else:
            points = [ProfilePoint(watts=w, seconds_per_unit=300 / w, joules_per_unit=w * 0.9) for w in (250, 200, 160)]
            self.profiles[(job, model)] = JobProfile(
                job=job, gpu_model=model, state="Done", points=points, chosen_watts=self.rng.choice([180.0, 210.0])
            )

    def straggler(self) -> None:
        if self.pods:
            key = self.rng.choice(sorted(self.pods))
            if self.rng.random() < 0.3:
                self.caps.pop(key, None)
            else:
                self.caps[key] = self.rng.choice([170.0, 220.0])

    def serving_knob(self) -> None:
        if self.pods:
            key = self.rng.choice(sorted(self.pods))
            if self.rng.random() < 0.3:
                self.knobs.pop(key, None)
            elif self.rng.random() < 0.5:
                self.knobs[key] = ServingKnob("clock", self.rng.choice([1200.0, 1500.0]), "probe")
            else:
                self.knobs[key] = ServingKnob("cap", self.rng.choice([180.0, 240.0]), "probe")

    def tick(self) -> None:
        self.now += timedelta(seconds=self.rng.choice([1, 30, 600]))

    def edit_policy(self) -> None:
        name = self.rng.choice(sorted(self.policies))
        self.policies[name] = _policy(self.rng, name)
        self.set_signal(name)

    def step(self) -> None:
        events = [
            (self.add_pod, 4),
            (self.remove_pod, 3),
            (self.relabel_pod, 2),
            (self.report_power, 4),
            (self.add_node, 1),
            (self.remove_node, 1),
            (self.relabel_node, 1),
            (self.relabel_namespace, 1),
            (self.set_signal, 2),
            (self.profile, 2),
            (self.straggler, 2),
            (self.serving_knob, 2),
            (self.tick, 3),
            (self.edit_policy, 1),
        ]
        for _ in range(self.rng.choice([1, 1, 2, 3])):  # some rounds see several changes
            action = self.rng.choices([e for e, _ in events], weights=[w for _, w in events])[0]
            action()

    # -- a round ------------------------------------------------------------------------------------

    def inputs(self, *, delta: bool = False) -> tuple[FleetSnapshot, list[PolicyView], PlanContext]:
        """The round's inputs; with ``delta`` the snapshot also says what changed since the last one."""
        self.version += 1
        changed = SnapshotDelta(
            since=self.version - 1, pods=frozenset(self.touched_pods), nodes=frozenset(self.touched_nodes)
        )
        self.touched_pods, self.touched_nodes = set(), set()
        snapshot = FleetSnapshot(
            pods=dict(self.pods),
            namespace_labels={k: dict(v) for k, v in self.namespaces.items()},
            nodes=tuple(sorted(self.nodes)),
            node_labels={k: dict(v) for k, v in self.node_labels.items()},
            by_node=dict(self.nodes),
            version=self.version,
            delta=changed if delta else None,
        )
        last = self.last
        context = PlanContext(
            now=self.now,
            carbon=dict(self.carbon),
            profiles=dict(self.profiles),
            straggler_caps=dict(self.caps),
            serving_knobs=dict(self.knobs),
            previous_node_budgets=dict(last.node_budgets) if last is not None else {},
            budget_rebalances=dict(last.budget_rebalances) if last is not None else {},
            carbon_budgets=dict(last.carbon_budgets) if last is not None else {},
            previous_quota_caps={
                t.uuid: t.power_limit_watts for ts in last.nodes.values() for t in ts if t.section == "quota"
            }
            if last is not None
            else {},
        )
        return snapshot, list(self.policies.values()), context


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), deltas=st.sampled_from(["never", "always", "sometimes"]))
def test_incremental_rounds_equal_fresh_rounds(seed: int, deltas: str) -> None:
    """With or without the snapshot's own account of its changes, and with gaps in that account."""
    world = World(random.Random(seed))
    world.populate()
    planner = Planner()
    previous: Plan | None = None
    for _ in range(25):
        with_delta = deltas == "always" or (deltas == "sometimes" and world.rng.random() < 0.7)
        snapshot, policies, context = world.inputs(delta=with_delta)
        if deltas == "sometimes" and world.rng.random() < 0.1:
            world.version += 1  # a snapshot the planner never saw: the next delta is not relative to its last
        kept = planner.plan(snapshot, policies, context)
        fresh = plan(snapshot, policies, context)
        assert canonical(kept) == canonical(fresh)
        before = previous.nodes if previous is not None else {}
        moved = {n for n in {*before, *kept.nodes} if before.get(n, ()) != kept.nodes.get(n, ())}
        assert kept.changed_nodes == moved
        previous = world.last = kept
        world.step()


def test_a_round_without_changes_changes_no_node() -> None:
    world = World(random.Random(7))
    world.populate()
    planner = Planner()
    snapshot, policies, context = world.inputs()
    first = planner.plan(snapshot, policies, context)
    assert first.changed_nodes  # a first round plans every node that has a target
    again = planner.plan(snapshot, policies, context)
    assert again.changed_nodes == frozenset()
    assert canonical(again) == canonical(first)


def test_a_stale_cache_would_be_caught() -> None:
    """The comparison is sharp: a planner that skips a pod's change shows a different plan."""
    world = World(random.Random(11))
    world.populate()
    planner = Planner()
    snapshot, policies, context = world.inputs()
    planner.plan(snapshot, policies, context)
    key = next(k for k, s in sorted(planner._states.items()) if s.governing is not None and planner._pod_gpus.get(k))
    world.pods[key] = replace(
        world.pods[key], annotations={**world.pods[key].annotations, "wattplane.io/opt-out": "true"}
    )
    snapshot, policies, context = world.inputs()
    planner._pods = snapshot.pods  # as if the planner had already seen this pod: it misses the change
    assert canonical(planner.plan(snapshot, policies, context)) != canonical(plan(snapshot, policies, context))


def test_trusted_targets_equal_validated_ones() -> None:
    """The planner's unvalidated targets are the objects pydantic would build, field for field."""
    from wattplane.api.v1alpha1.gpunode import GpuTarget
    from wattplane.planner.decide import trusted_target

    values = {
        "uuid": "GPU-1",
        "power_limit_watts": 212.5,
        "policy": "p",
        "job": "ns/j",
        "reason": "r",
        "section": "carbon",
    }
    built = trusted_target(**values)
    validated = GpuTarget.model_validate(values)
    assert built == validated
    assert built.model_fields_set == validated.model_fields_set
    assert built.to_wire() == validated.to_wire()
    assert not GpuTarget.__private_attributes__  # what trusted_target relies on


def test_a_round_that_raises_leaves_no_half_updated_state(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(random.Random(5))
    world.populate()
    planner = Planner()
    snapshot, policies, context = world.inputs(delta=True)
    planner.plan(snapshot, policies, context)
    for _ in range(3):
        world.add_pod()
    world.report_power()
    snapshot, policies, context = world.inputs(delta=True)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("injected")

    with monkeypatch.context() as patch:
        patch.setattr("wattplane.planner.plan.Decider.decide", broken)
        with pytest.raises(RuntimeError, match="injected"):
            planner.plan(snapshot, policies, context)
    world.add_pod()
    snapshot, policies, context = world.inputs(delta=True)  # relative to a snapshot it never finished
    assert canonical(planner.plan(snapshot, policies, context)) == canonical(plan(snapshot, policies, context))
