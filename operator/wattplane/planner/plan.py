"""One planning round: (fleet snapshot, policies) → per-GPU targets and per-policy reports.

Pure and deterministic: the same inputs give the same plan, byte for byte, so the operator can diff a
new plan against what it last wrote and patch only the nodes that changed. Every target carries a
human-readable ``reason`` so ``wattplane explain`` and ``kubectl get gn -o yaml`` say why.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from wattplane.api.annotations import PodIntent, parse_pod_annotations
from wattplane.api.v1alpha1.gpunode import GpuTarget
from wattplane.planner.limits import static_cap
from wattplane.planner.selection import choose_policy
from wattplane.planner.snapshot import FleetSnapshot, GpuView, PodKey, PolicyView


@dataclass(frozen=True)
class PolicyReport:
    """What one policy governs after this round."""

    name: str
    generation: int
    pods: tuple[str, ...] = ()
    gpus: int = 0
    allocated_watts: float = 0.0
    measured_watts: float = 0.0
    clamped_gpus: int = 0
    #: Pods this policy selects but a higher-ranked policy governs.
    shadowed_pods: tuple[str, ...] = ()
    ready: bool = True
    reason: str = "Planned"
    message: str = ""


@dataclass(frozen=True)
class Plan:
    """The planner's output."""

    nodes: Mapping[str, tuple[GpuTarget, ...]]
    policies: Mapping[str, PolicyReport]
    pod_problems: Mapping[PodKey, tuple[str, ...]] = field(default_factory=dict)
    pod_targets: Mapping[PodKey, tuple[GpuTarget, ...]] = field(default_factory=dict)


@dataclass
class _PolicyTally:
    pods: set[str] = field(default_factory=set)
    gpus: set[str] = field(default_factory=set)
    shadowed: set[str] = field(default_factory=set)
    allocated: float = 0.0
    measured: float = 0.0
    clamped: int = 0


def _pod_name(key: PodKey) -> str:
    return f"{key[0]}/{key[1]}"


def plan(snapshot: FleetSnapshot, policies: Iterable[PolicyView]) -> Plan:
    """Compute targets for every GPU of every node in ``snapshot``."""
    active = sorted((p for p in policies if not p.deleting), key=lambda p: p.name)
    intents: dict[PodKey, PodIntent] = {k: parse_pod_annotations(p.annotations) for k, p in snapshot.pods.items()}
    governing: dict[PodKey, PolicyView] = {}
    tallies: dict[str, _PolicyTally] = {p.name: _PolicyTally() for p in active}
    for key in sorted(snapshot.pods):
        pod = snapshot.pods[key]
        ns_labels = snapshot.namespace_labels.get(pod.namespace, {})
        selection = choose_policy(pod, intents[key], ns_labels, active)
        if selection is None:
            continue
        governing[key] = selection.winner
        tallies[selection.winner.name].pods.add(_pod_name(key))
        for loser in selection.losers:
            tallies[loser.name].shadowed.add(_pod_name(key))

    targets: dict[str, list[GpuTarget]] = defaultdict(list)
    pod_targets: dict[PodKey, list[GpuTarget]] = defaultdict(list)
    for gpu in sorted(snapshot.gpus, key=lambda g: (g.node, g.index)):
        target = _target_for(gpu, governing, intents, tallies)
        if target is None:
            continue
        targets[gpu.node].append(target)
        for key in gpu.pods:
            pod_targets[key].append(target)

    nodes = {node: tuple(targets.get(node, ())) for node in sorted({*snapshot.nodes, *targets})}
    reports = {p.name: _report(p, tallies[p.name]) for p in active}
    problems = {k: i.problems for k, i in intents.items() if i.problems}
    return Plan(
        nodes=nodes,
        policies=reports,
        pod_problems=problems,
        pod_targets={k: tuple(v) for k, v in pod_targets.items()},
    )


def _target_for(
    gpu: GpuView,
    governing: Mapping[PodKey, PolicyView],
    intents: Mapping[PodKey, PodIntent],
    tallies: dict[str, _PolicyTally],
) -> GpuTarget | None:
    """The tightest target any governing policy sets on ``gpu`` (shared GPUs may have several)."""
    best: GpuTarget | None = None
    best_clamped = False
    for key in sorted(gpu.pods):  # sorted: ties (same watts and policy) must not depend on report order
        policy = governing.get(key)
        if policy is None or policy.spec.limits is None:
            continue
        decision = static_cap(policy.spec.limits, gpu)
        if decision is None:
            continue
        intent = intents[key]
        candidate = GpuTarget(
            uuid=gpu.uuid,
            power_limit_watts=decision.watts,
            locked_clocks_mhz=policy.spec.limits.locked_sm_clock_mhz,
            policy=policy.name,
            job=intent.job or key[1],
            priority=intent.priority,
            reason=f"EnergyPolicy {policy.name}: {decision.reason}",
            dry_run=policy.spec.dry_run,
        )
        if best is None or (candidate.power_limit_watts, candidate.policy) < (
            best.power_limit_watts,
            best.policy,
        ):
            best, best_clamped = candidate, decision.clamped
    if best is not None:
        tally = tallies[best.policy]
        tally.gpus.add(gpu.uuid)
        tally.allocated += best.power_limit_watts
        tally.measured += gpu.power_watts
        tally.clamped += int(best_clamped)
    return best


def _report(policy: PolicyView, tally: _PolicyTally) -> PolicyReport:
    pods = tuple(sorted(tally.pods))
    if policy.spec.limits is None:
        reason, message = "NothingToEnforce", "the policy has no section that sets a limit"
    elif not pods:
        reason, message = "NoMatchingPods", "no running pod is selected by this policy"
    else:
        reason = "DryRun" if policy.spec.dry_run else "Planned"
        message = f"governs {len(pods)} pod(s) on {len(tally.gpus)} GPU(s)"
        if tally.clamped:
            message += f"; {tally.clamped} limit(s) clamped to device constraints"
    if tally.shadowed:
        message += f"; {len(tally.shadowed)} selected pod(s) governed by a higher-ranked policy"
    return PolicyReport(
        name=policy.name,
        generation=policy.generation,
        pods=pods,
        gpus=len(tally.gpus),
        allocated_watts=round(tally.allocated, 3),
        measured_watts=round(tally.measured, 3),
        clamped_gpus=tally.clamped,
        shadowed_pods=tuple(sorted(tally.shadowed)),
        ready=True,
        reason=reason,
        message=message,
    )
