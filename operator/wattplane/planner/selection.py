"""Which policy governs which pod.

A pod is a candidate for a policy when the policy's selector matches (namespace labels and pod
labels) or when the pod names the policy in ``wattplane.io/policy``. ``wattplane.io/opt-out: "true"``
removes it from every policy. When several policies are candidates, the highest ``priority`` wins and
ties go to the alphabetically first name: deterministic, so two replicas or two runs always agree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from wattplane.api.annotations import PodIntent
from wattplane.api.selectors import LabelSelector
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
    return any(
        section is not None
        for section in (spec.limits, spec.efficiency, spec.carbon, spec.stragglers, spec.quota, spec.serving)
    )


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


class Selector:
    """:func:`choose_policy` for many pods: selector matches memoised per namespace and label set.

    Pods of one job, or of one team, share their labels and namespace, so a round matches each
    policy's namespace selector once per namespace and its pod selector once per distinct label set,
    and keeps the outcomes as bit masks over the policies in rank order. Make one per round: the
    memo holds whatever namespaces and label sets the round met, and namespace labels may change.
    """

    def __init__(self, policies: Iterable[PolicyView], namespace_labels: Mapping[str, Mapping[str, str]]) -> None:
        self.ranked = sorted((p for p in policies if not p.deleting), key=rank_key)
        self._namespace_labels = namespace_labels
        self._named = {p.name: 1 << i for i, p in enumerate(self.ranked)}
        self._by_namespace: dict[str, int] = {}
        self._by_labels: dict[tuple[tuple[str, str], ...], int] = {}
        self._chosen: dict[int, Selection] = {}

    def choose(self, pod: PodView, intent: PodIntent, labels: tuple[tuple[str, str], ...]) -> Selection | None:
        """Like :func:`choose_policy`; ``labels`` is ``pod.labels`` as sorted items."""
        if intent.opt_out or not pod.active or not self.ranked:
            return None
        mask = self._namespace_mask(pod.namespace) & self._label_mask(labels, pod.labels)
        if intent.policy is not None:
            mask |= self._named.get(intent.policy, 0)
        if not mask:
            return None
        selection = self._chosen.get(mask)
        if selection is None:
            chosen = [p for i, p in enumerate(self.ranked) if mask >> i & 1]
            selection = self._chosen[mask] = Selection(winner=chosen[0], losers=tuple(chosen[1:]))
        return selection

    def _namespace_mask(self, namespace: str) -> int:
        mask = self._by_namespace.get(namespace)
        if mask is None:
            labels = self._namespace_labels.get(namespace, {})
            mask = self._by_namespace[namespace] = self._mask(lambda p: p.spec.selector.namespace_selector, labels)
        return mask

    def _label_mask(self, key: tuple[tuple[str, str], ...], labels: Mapping[str, str]) -> int:
        mask = self._by_labels.get(key)
        if mask is None:
            mask = self._by_labels[key] = self._mask(lambda p: p.spec.selector.pod_selector, labels)
        return mask

    def _mask(self, selector_of: Callable[[PolicyView], LabelSelector | None], labels: Mapping[str, str]) -> int:
        """Bit i set: the selector ``selector_of`` picks from the i-th ranked policy matches ``labels``."""
        mask = 0
        for i, policy in enumerate(self.ranked):
            selector = selector_of(policy)
            if selector is None or selector.matches(labels):
                mask |= 1 << i
        return mask
