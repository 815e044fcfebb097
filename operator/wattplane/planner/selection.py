"""Which policy governs which pod.

A pod is a candidate for a policy when the policy's selector matches (namespace labels and pod
labels) or when the pod names the policy in ``wattplane.io/policy``. ``wattplane.io/opt-out: "true"``
removes it from every policy. When several policies are candidates, the highest ``priority`` wins and
ties go to the alphabetically first name: deterministic, so two replicas or two runs always agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from wattplane.api.annotations import PodIntent
from wattplane.api.v1alpha1.energypolicy import EnergyPolicySpec
from wattplane.planner.snapshot import PodView, PolicyView


@dataclass(frozen=True)
class Selection:
    """The policy that won a pod, and the ones it beat."""

    winner: PolicyView
    losers: tuple[PolicyView, ...]


def selects(policy: PolicyView, pod: PodView, namespace_labels: Mapping[str, str], intent: PodIntent) -> bool:
    """Whether ``policy`` is a candidate for ``pod``."""
    if intent.policy == policy.name:
        return True
    selector = policy.spec.selector
    if selector.namespace_selector is not None and not selector.namespace_selector.matches(namespace_labels):
        return False
    return selector.pod_selector is None or selector.pod_selector.matches(pod.labels)


def sets_pod_limits(spec: EnergyPolicySpec) -> bool:
    """Whether a policy proposes limits for the pods it governs.

    Only such policies contend for pods: a budget-only policy covers nodes, and an observe-only one
    (``dryRun`` and no section) must never take a pod away from a policy that caps it.
    """
    return any(section is not None for section in (spec.limits, spec.efficiency, spec.carbon, spec.stragglers))


def rank_key(policy: PolicyView) -> tuple[int, str]:
    """Sort key: higher priority first, then name."""
    return (-policy.spec.priority, policy.name)


def choose_policy(
    pod: PodView,
    intent: PodIntent,
    namespace_labels: Mapping[str, str],
    policies: Iterable[PolicyView],
) -> Selection | None:
    """The governing policy for ``pod``, or ``None`` when none applies or the pod opted out."""
    if intent.opt_out or not pod.active:
        return None
    candidates = sorted(
        (p for p in policies if not p.deleting and selects(p, pod, namespace_labels, intent)),
        key=rank_key,
    )
    if not candidates:
        return None
    return Selection(winner=candidates[0], losers=tuple(candidates[1:]))
