"""Soak, CI-sized: 200 pods churning across 10 fake nodes for a minute under a policy mix.

The full-length run (1,000 pods, 50 nodes, 10 minutes) is ``bench/soak.py``; both use
``tests/support/soak.py``. One run serves every test here, with production intervals (agent tick
1 s, status every 10 s). Asserted:

* **memory flat**: the operator's and every agent's RSS at the end of the churn and after the quiet
  period, against the end of the warm-up;
* **no error growth**: no ERROR line or traceback in any log, no failed control tick, no failed
  planning round;
* **API writes bounded**: once the churn stops, each node's GpuNode gets at most one status write per
  status interval (plus one for the interval in progress), and at most one plan (a TTL renewal). Half
  the nodes form a rack under a power budget that cuts part of it; the same holds there (the operator
  owns the node shares, the agents alone cut GPUs: before that, the two chased each other through the
  API server with 2-3 plans a second per node).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator

import pytest
from controlplane import ControlPlane
from soak import STATUS_INTERVAL_S, SoakReport, run_soak

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


def _quiet_writes(soak: SoakReport, budgeted: bool) -> tuple[dict[str, int], dict[str, int]]:
    """Status and spec writes per node in the quiet phase, for the budgeted rack (even nodes) or the rest."""
    names = [f"n{i}" for i in range(NODES) if (i % 2 == 0) == budgeted]
    status, spec = soak.status_writes.get("quiet", {}), soak.spec_writes.get("quiet", {})
    return {n: status.get(n, 0) for n in names}, {n: spec.get(n, 0) for n in names}


def _assert_bounded(soak: SoakReport, budgeted: bool) -> None:
    status, spec = _quiet_writes(soak, budgeted)
    bound = math.ceil(soak.quiet_s / STATUS_INTERVAL_S) + 1
    assert all(1 <= w <= bound for w in status.values()), (status, bound, soak.quiet_status_changes)
    assert all(w <= 1 for w in spec.values()), spec  # at most a plan renewal (every ttl/3), never a stream


def test_writes_are_bounded_by_the_status_interval(soak: SoakReport) -> None:
    _assert_bounded(soak, budgeted=False)


def test_writes_are_bounded_on_budgeted_nodes(soak: SoakReport) -> None:
    _assert_bounded(soak, budgeted=True)
    assert soak.budget_cut_gpus > 0, "the budget never cut a GPU: the test would prove nothing"
