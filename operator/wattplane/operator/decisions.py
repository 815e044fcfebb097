"""Pure decisions of a planning round: which GpuNode specs to write, what policy status to show.

Only nodes whose targets changed get a new plan generation; a node whose plan is unchanged is only
touched to renew ``issuedAt`` before the agents' fail-safe TTL could fire.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from wattplane.api.conditions import Condition, set_condition
from wattplane.api.v1alpha1.energypolicy import EnergyPolicyStatus
from wattplane.api.v1alpha1.gpunode import GpuNodeSpec, GpuTarget
from wattplane.operator.views import PolicyParse
from wattplane.planner.plan import PolicyReport

#: A plan is renewed once a third of its TTL has passed, leaving two renewals' slack.
RENEW_FRACTION = 1 / 3


def node_spec_update(
    current: GpuNodeSpec,
    targets: Sequence[GpuTarget],
    *,
    now: datetime,
    ttl_seconds: int,
) -> GpuNodeSpec | None:
    """The spec to write for a node, or ``None`` when the current one stands."""
    changed = list(targets) != list(current.gpus) or current.ttl_seconds != ttl_seconds
    if changed:
        return GpuNodeSpec(
            plan_generation=current.plan_generation + 1,
            issued_at=now,
            ttl_seconds=ttl_seconds,
            node_budget_watts=current.node_budget_watts,
            gpus=list(targets),
        )
    renew_after = timedelta(seconds=ttl_seconds * RENEW_FRACTION)
    if current.issued_at is None or now - current.issued_at >= renew_after:
        if not current.gpus and current.issued_at is None:
            return None  # nothing planned, nothing to keep alive
        return current.model_copy(update={"issued_at": now})
    return None


def policy_status(
    parsed: PolicyParse,
    report: PolicyReport | None,
    *,
    now: datetime,
) -> EnergyPolicyStatus:
    """The status an EnergyPolicy should show after this round."""
    previous = EnergyPolicyStatus.model_validate(parsed.status or {})
    conditions = list(previous.conditions)
    if parsed.error is not None or report is None:
        conditions = set_condition(
            conditions,
            Condition(
                type="Ready",
                status="False",
                reason="InvalidSpec",
                message=parsed.error or "policy could not be planned",
                observed_generation=parsed.generation,
            ),
            now=now,
        )
        return EnergyPolicyStatus(observed_generation=parsed.generation, conditions=conditions)
    conditions = set_condition(
        conditions,
        Condition(
            type="Ready",
            status="True" if report.ready else "False",
            reason=report.reason,
            message=report.message,
            observed_generation=parsed.generation,
        ),
        now=now,
    )
    return EnergyPolicyStatus(
        observed_generation=parsed.generation,
        conditions=conditions,
        matched_pods=len(report.pods),
        matched_gpus=report.gpus,
        allocated_watts=report.allocated_watts,
        measured_watts=round(report.measured_watts),
        pods=list(report.pods[:200]),
    )


def status_material(status: Mapping[str, Any]) -> Mapping[str, Any]:
    """The parts of a policy status whose change is written at once (measurements wait)."""
    return {k: v for k, v in status.items() if k not in ("measuredWatts",)}
