"""Soak, CI-sized: 200 pods churning across 10 fake nodes for a minute under a policy mix.

The full-length run (1,000 pods, 50 nodes, 10 minutes) is ``bench/soak.py``; both use
``tests/support/soak.py``. One run serves every test here, with production intervals (agent tick
1 s, status every 10 s). Asserted:

* **memory flat**: the operator's and every agent's RSS at the end of the churn and after the quiet
  period, against the end of the warm-up;
* **no error growth**: no ERROR line or traceback in any log, no failed control tick, no failed
  planning round;
* **API writes bounded**: once the churn stops, each node's GpuNode gets at most one status write per
  status interval (plus one for the interval in progress), and no new plan. Spec writes that are not
  new plans are told apart and bounded by the rules that allow them: a TTL renewal (``issuedAt`` only)
  every ``TTL × RENEW_FRACTION``, and, on the budgeted rack, a re-share of the node's budget on measured
  power alone once per budget interval. Half the nodes form that rack, under a power budget that cuts
  part of it (the operator owns the node shares, the agents alone cut GPUs: before that, the two chased
  each other through the API server with 2-3 plans a second per node).
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from controlplane import ControlPlane
from soak import PLAN_TTL_S, RESYNC_INTERVAL_S, STATUS_INTERVAL_S, SoakReport, run_soak, spec_change_kind
from wattplane.api.v1alpha1.gpunode import GpuNodeSpec, GpuTarget
from wattplane.operator.decisions import RENEW_FRACTION, node_spec_update

pytestmark = [pytest.mark.controlplane, pytest.mark.slow, pytest.mark.timeout(400)]

#: RSS growth allowed between the end of the warm-up and the end (the allocator settles, caches fill).
OPERATOR_GROWTH_MIB = 15.0
AGENT_GROWTH_MIB = 4.0
NODES = 10


@pytest.fixture(scope="module")
def soak(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoakReport]:
    report = run_soak(
        control_plane, tmp_path_factory.mktemp("soak"), prefix="soakci", nodes=NODES, pods=200, churn_s=60,
        quiet_s=30, churn_per_s=3, progress=lambda line: sys.stderr.write(f"\nsoak: {line}"),
    )  # fmt: skip
    sys.stderr.write("\nsoak report: " + json.dumps(report.to_json(), indent=1) + "\n")
    yield report


def test_the_churn_happened(soak: SoakReport) -> None:
    assert soak.pod_changes >= 2 * 60 * 3 * 0.8, soak.pod_changes


def test_memory_stays_flat(soak: SoakReport) -> None:
    warm, churned, end = (soak.rss_mib[p] for p in ("warm", "churned", "end"))
    assert set(end) == set(warm), "a process died during the soak"
    for name, start in warm.items():
        allowed = OPERATOR_GROWTH_MIB if name == "operator" else AGENT_GROWTH_MIB
        assert max(churned[name], end[name]) - start <= allowed, (name, start, churned[name], end[name])


def test_no_error_growth(soak: SoakReport) -> None:
    assert soak.problems_at_warm == soak.problems_at_end == 0, soak.problem_lines
    assert soak.tick_errors == 0 and soak.round_errors == 0, (soak.tick_errors, soak.round_errors)


def test_spec_writes_are_told_apart_as_the_operator_makes_them() -> None:
    """The soak's classes of spec writes, on specs from the operator's own ``node_spec_update``."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    target = GpuTarget(uuid="GPU-0", power_limit_watts=200.0, policy="cap", section="limits")

    def spec(current: GpuNodeSpec, watts: float, budget: float | None, after_s: float) -> GpuNodeSpec:
        new = node_spec_update(
            current,
            [target.model_copy(update={"power_limit_watts": watts})],
            now=now + timedelta(seconds=after_s),
            ttl_seconds=PLAN_TTL_S,
            node_budget_watts=budget,
        )
        assert new is not None
        return new

    plan = spec(GpuNodeSpec(), 200.0, 900.0, 0)
    assert node_spec_update(plan, [target], now=now, ttl_seconds=PLAN_TTL_S, node_budget_watts=900.0) is None
    renewal = PLAN_TTL_S * RENEW_FRACTION
    cases = {
        "renewal": spec(plan, 200.0, 900.0, renewal),
        "reshare": spec(plan, 200.0, 850.0, 1),
        "plan": spec(plan, 180.0, 900.0, 1),
    }
    for kind, after in cases.items():
        assert spec_change_kind(plan.to_wire(), after.to_wire()) == kind, (kind, after)
    assert spec_change_kind(plan.to_wire(), spec(plan, 200.0, None, 1).to_wire()) == "plan"  # the budget went
    bare = spec(GpuNodeSpec(), 200.0, None, 0)
    assert spec_change_kind(bare.to_wire(), spec(bare, 180.0, None, 1).to_wire()) == "plan"


def _at_most(window_s: float, every_s: float) -> int:
    """How many events at least ``every_s`` apart a window of ``window_s`` can see (both ends included)."""
    return math.floor(window_s / every_s) + 1


def _assert_bounded(soak: SoakReport, budgeted: bool) -> None:
    """Bound each node's quiet-phase writes, on the budgeted rack (even nodes) or the rest."""
    names = [f"n{i}" for i in range(NODES) if (i % 2 == 0) == budgeted]
    quiet: Counter[str] = soak.status_writes.get("quiet", Counter())
    status = {n: quiet[n] for n in names}
    bound = math.ceil(soak.quiet_s / STATUS_INTERVAL_S) + 1
    assert all(1 <= w <= bound for w in status.values()), (status, bound, soak.quiet_status_changes)
    kinds = {n: soak.quiet_spec_kinds(n) for n in names}
    renewals = _at_most(soak.quiet_s, PLAN_TTL_S * RENEW_FRACTION)
    reshares = _at_most(soak.quiet_s, RESYNC_INTERVAL_S) if budgeted else 0
    allowed = {"renewal": renewals, "reshare": reshares, "plan": 0}
    over = {n: k for n, k in kinds.items() if any(k[kind] > allowed[kind] for kind in allowed)}
    assert not over, (over, allowed, soak.quiet_spec_changes)


def test_writes_are_bounded_by_the_status_interval(soak: SoakReport) -> None:
    _assert_bounded(soak, budgeted=False)


def test_writes_are_bounded_on_budgeted_nodes(soak: SoakReport) -> None:
    _assert_bounded(soak, budgeted=True)
    assert soak.budget_cut_gpus > 0, "the budget never cut a GPU: the test would prove nothing"
