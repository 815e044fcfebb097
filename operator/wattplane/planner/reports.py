"""What each policy governs after a round: the tally the planner keeps, and the report made of it.

The tally is kept up to date pod by pod and GPU by GPU (a pod that changes moves its contribution
from one policy to another), so a round that changed one pod re-reports one or two policies, at a
cost that does not grow with the policy's size. Watts are summed as whole milliwatts (integers), so
a tally kept across rounds reports the same figures, to the bit, as one built afresh, whatever the
order its GPUs came and went in; pod names are kept sorted as they come and go.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

from wattplane.api.v1alpha1.energypolicy import BudgetStatus, CarbonStatus, QuotaStatus
from wattplane.planner.carbon import WeightDecision
from wattplane.planner.context import CarbonInput
from wattplane.planner.quota import QuotaAllocation
from wattplane.planner.selection import sets_pod_limits
from wattplane.planner.snapshot import PolicyView

#: Shadowed pods named in a report's message (the rest are counted; status lists more).
_NAMED_SHADOWED = 5


@dataclass(frozen=True)
class PolicyReport:
    """What one policy governs after this round."""

    name: str
    generation: int
    pods: tuple[str, ...] = ()
    gpus: int = 0
    jobs: int = 0
    allocated_watts: float = 0.0
    measured_watts: float = 0.0
    clamped_gpus: int = 0
    #: Pods this policy selects but a higher-ranked policy governs.
    shadowed_pods: tuple[str, ...] = ()
    #: ``(pod, governing policy)`` for each of ``shadowed_pods``: which pods it lost, and to whom.
    shadowed_by: tuple[tuple[str, str], ...] = ()
    ready: bool = True
    reason: str = "Planned"
    message: str = ""
    carbon: CarbonStatus | None = None
    budget: BudgetStatus | None = None
    #: ``None`` when the policy has no budget; else whether the budget can be met.
    budget_met: bool | None = None
    budget_message: str = ""
    #: Jobs the efficiency section cannot profile (no progress signal), ``namespace/job``.
    unprofiled_jobs: tuple[str, ...] = ()
    quota: QuotaStatus | None = None
    #: ``None`` when the policy has no quota; else whether the quota can be met.
    quota_met: bool | None = None
    quota_message: str = ""


@dataclass(frozen=True)
class GpuShare:
    """One GPU's part in its policy's report: its target and its draw (milliwatts), whether it was clamped."""

    allocated_mw: int
    measured_mw: int
    clamped: bool

    @classmethod
    def of(cls, allocated_watts: float, measured_watts: float, clamped: bool) -> GpuShare:
        """The share of a GPU with this target and draw, watts (to the milliwatt)."""
        return cls(_milliwatts(allocated_watts), _milliwatts(measured_watts), clamped)


def _milliwatts(watts: float) -> int:
    return round(watts * 1000) if watts == watts and abs(watts) != float("inf") else 0


@dataclass
class PolicyTally:
    """What one policy governs, kept as counts and running sums so contributions can be taken back."""

    #: pod name → how many ways the policy holds it (governs or observes: one each)
    pods: Counter[str] = field(default_factory=Counter)
    #: the names in ``pods``, sorted
    pod_names: list[str] = field(default_factory=list)
    jobs: Counter[str] = field(default_factory=Counter)
    #: pod → the higher-ranked policy that governs it
    shadowed: dict[str, str] = field(default_factory=dict)
    #: uuid → the GPU's share, for the GPUs whose target this policy set
    gpus: dict[str, GpuShare] = field(default_factory=dict)
    allocated_mw: int = 0
    measured_mw: int = 0
    clamped: int = 0
    #: job → GPUs of the job the efficiency section could not profile
    unprofiled: Counter[str] = field(default_factory=Counter)

    def set_share(self, uuid: str, share: GpuShare | None) -> bool:
        """Set (or, with ``None``, remove) a GPU's share; whether anything changed."""
        before = self.gpus.get(uuid)
        if before == share:
            return False
        if before is not None:
            self.allocated_mw -= before.allocated_mw
            self.measured_mw -= before.measured_mw
            self.clamped -= before.clamped
        if share is None:
            del self.gpus[uuid]
        else:
            self.gpus[uuid] = share
            self.allocated_mw += share.allocated_mw
            self.measured_mw += share.measured_mw
            self.clamped += share.clamped
        return True


def observes_only(policy: PolicyView) -> bool:
    """No section that sets a limit (only ``dryRun``, or nothing in a spec the models would refuse)."""
    return not sets_pod_limits(policy.spec) and policy.spec.budget is None


def _take(counter: Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


def hold(tally: PolicyTally, pod: str, job: str, *, add: bool) -> None:
    """Count (or stop counting) one holding of ``pod`` of ``job`` by the policy."""
    if add:
        if pod not in tally.pods:
            bisect.insort(tally.pod_names, pod)
        tally.pods[pod] += 1
        tally.jobs[job] += 1
    else:
        _take(tally.pods, pod)
        _take(tally.jobs, job)
        if pod not in tally.pods:
            del tally.pod_names[bisect.bisect_left(tally.pod_names, pod)]


def flag_unprofiled(tally: PolicyTally, job: str, *, add: bool) -> None:
    """Count (or stop counting) one GPU of ``job`` that the efficiency section cannot profile."""
    if add:
        tally.unprofiled[job] += 1
    else:
        _take(tally.unprofiled, job)


@dataclass(frozen=True)
class TallySummary:
    """A tally's figures: recomputed only when the tally changed (a policy may govern many GPUs)."""

    pods: tuple[str, ...]
    jobs: int
    gpus: int
    allocated_watts: float
    measured_watts: float
    clamped_gpus: int
    shadowed_by: tuple[tuple[str, str], ...]
    unprofiled_jobs: tuple[str, ...]


def summarize(tally: PolicyTally) -> TallySummary:
    """The figures of ``tally`` (sums in whole milliwatts: exact, so independent of order)."""
    return TallySummary(
        pods=tuple(tally.pod_names),
        jobs=len(tally.jobs),
        gpus=len(tally.gpus),
        allocated_watts=tally.allocated_mw / 1000,
        measured_watts=tally.measured_mw / 1000,
        clamped_gpus=tally.clamped,
        shadowed_by=tuple(sorted(tally.shadowed.items())),
        unprofiled_jobs=tuple(sorted(tally.unprofiled)),
    )


def report(
    policy: PolicyView,
    tally: TallySummary,
    carbon: WeightDecision | None,
    signal: CarbonInput | None,
    budget: tuple[BudgetStatus, bool, str] | None,
    quota: QuotaAllocation | None = None,
) -> PolicyReport:
    """The policy's report from its tally and the round's carbon and budget outcomes."""
    spec = policy.spec
    pods = tally.pods
    if observes_only(policy) and spec.dry_run:
        reason = "ObserveOnly"
        message = (
            f"observes {len(pods)} pod(s) in {tally.jobs} job(s); dryRun with no section: "
            "sets no limit and takes no pod from another policy"
        )
    elif observes_only(policy):
        reason, message = "NothingToEnforce", "the policy has no section that sets a limit"
    elif not pods and spec.budget is None:
        reason, message = "NoMatchingPods", "no running pod is selected by this policy"
    else:
        reason = "DryRun" if spec.dry_run else "Planned"
        message = f"governs {len(pods)} pod(s) in {tally.jobs} job(s) on {tally.gpus} GPU(s)"
        if tally.clamped_gpus:
            message += f"; {tally.clamped_gpus} limit(s) clamped to device constraints"
    if tally.shadowed_by:
        lost = tally.shadowed_by
        named = ", ".join(f"{pod} by {winner}" for pod, winner in lost[:_NAMED_SHADOWED])
        more = f" and {len(lost) - _NAMED_SHADOWED} more" if len(lost) > _NAMED_SHADOWED else ""
        message += f"; {len(lost)} selected pod(s) governed by a higher-ranked policy: {named}{more}"
    carbon_status = None
    if carbon is not None:
        priced = signal is not None and signal.price_weight is not None
        carbon_status = CarbonStatus(
            intensity=signal.carbon_intensity if signal is not None and priced else carbon.intensity,
            time=signal.time.isoformat() if signal is not None and signal.time is not None else None,
            source=signal.source if signal is not None else "",
            stale=carbon.stale,
            weight=carbon.weight,
            price=signal.price if signal is not None and priced else None,
            price_unit=(signal.price_unit or None) if signal is not None and priced else None,
            cost=carbon.intensity if priced else None,
            message=carbon.reason,
        )
    return PolicyReport(
        name=policy.name,
        generation=policy.generation,
        pods=pods,
        gpus=tally.gpus,
        jobs=tally.jobs,
        allocated_watts=tally.allocated_watts,
        measured_watts=tally.measured_watts,
        clamped_gpus=tally.clamped_gpus,
        shadowed_pods=tuple(pod for pod, _ in tally.shadowed_by),
        shadowed_by=tally.shadowed_by,
        ready=True,
        reason=reason,
        message=message,
        carbon=carbon_status,
        budget=budget[0] if budget is not None else None,
        budget_met=budget[1] if budget is not None else None,
        budget_message=budget[2] if budget is not None else "",
        unprofiled_jobs=tally.unprofiled_jobs,
        quota=_quota_status(quota) if quota is not None else None,
        quota_met=quota.feasible if quota is not None else None,
        quota_message=quota.message if quota is not None else "",
    )


def _quota_status(quota: QuotaAllocation) -> QuotaStatus:
    return QuotaStatus(
        watts=quota.quota_watts,
        allocated_watts=round(quota.allocated_watts, 3),
        measured_watts=round(quota.measured_watts, 3),
        demand_watts=round(quota.demand_watts, 3),
        minimum_watts=round(quota.minimum_watts, 3),
        lent_watts=round(quota.lent_watts, 3),
        gpus=len(quota.caps),
        cut_gpus=quota.cut_gpus,
        held_gpus=quota.held_gpus,
    )
