"""A namespace watt quota in the planner: caps that add up to the quota, lent by idle GPUs, taken back."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime

from wattplane.api.v1alpha1.energypolicy import EnergyPolicySpec
from wattplane.planner.context import PlanContext
from wattplane.planner.plan import Plan, Planner, plan
from wattplane.planner.snapshot import FleetSnapshot, GpuView, PodView, PolicyView

NOW = datetime(2026, 7, 1, 12, tzinfo=UTC)
QUOTA = 700.0


def _gpu(node: str, index: int, pod: str, power: float, limit: float = 300.0) -> GpuView:
    return GpuView(
        node=node,
        uuid=f"GPU-{node}-{index}",
        index=index,
        model="A40",
        min_watts=100.0,
        max_watts=300.0,
        default_watts=300.0,
        power_watts=power,
        limit_watts=limit,
        pods=(("team-a", pod),),
    )


def _fleet(gpus: list[GpuView], priorities: dict[str, str] | None = None) -> FleetSnapshot:
    pods = {
        ("team-a", g.pods[0][1]): PodView(
            namespace="team-a",
            name=g.pods[0][1],
            node=g.node,
            annotations={"wattplane.io/priority": (priorities or {}).get(g.pods[0][1], "normal")},
        )
        for g in gpus
    }
    return FleetSnapshot(
        gpus=tuple(gpus),
        pods=pods,
        namespace_labels={"team-a": {"team": "a"}},
        nodes=tuple(sorted({g.node for g in gpus})),
    )


POLICY = PolicyView(
    name="team-a-quota",
    spec=EnergyPolicySpec.model_validate(
        {"selector": {"namespaceSelector": {"matchLabels": {"team": "a"}}}, "quota": {"watts": QUOTA}}
    ),
)


def _caps(result: Plan) -> dict[str, float]:
    return {t.uuid: t.power_limit_watts for ts in result.nodes.values() for t in ts if t.section == "quota"}


def _in_force(result: Plan) -> dict[str, float]:
    return {t.uuid: t.power_limit_watts for ts in result.nodes.values() for t in ts}


def test_idle_gpus_lend_their_headroom_and_the_caps_add_up_to_the_quota() -> None:
    gpus = [_gpu("n1", 0, "a", 290.0), _gpu("n1", 1, "b", 290.0), _gpu("n2", 0, "c", 25.0), _gpu("n2", 1, "d", 25.0)]
    result = plan(_fleet(gpus), [POLICY], PlanContext(now=NOW))
    limits = _in_force(result)
    assert math.fsum(limits.values()) <= QUOTA + 1e-6
    assert limits["GPU-n1-0"] > 200.0 and limits["GPU-n1-1"] > 200.0  # the busy ones got the idle ones' watts
    assert limits["GPU-n2-0"] == limits["GPU-n2-1"] == 100.0  # the idle ones keep their floor
    report = result.policies["team-a-quota"]
    assert report.quota is not None and report.quota_met is True
    assert report.quota.watts == QUOTA and report.quota.gpus == 4
    assert report.quota.lent_watts > 0


def test_a_gpu_that_runs_into_its_cap_gets_its_share_back_in_one_round() -> None:
    gpus = [_gpu("n1", 0, "a", 290.0), _gpu("n1", 1, "b", 290.0), _gpu("n2", 0, "c", 25.0), _gpu("n2", 1, "d", 25.0)]
    planner = Planner()
    first = planner.plan(_fleet(gpus), [POLICY], PlanContext(now=NOW))
    caps = _caps(first)
    # The idle pods start working: they run into their caps (power-bound), the busy ones hold.
    busy = [
        dataclasses.replace(g, power_watts=caps.get(g.uuid, 300.0) * 0.99, limit_watts=caps.get(g.uuid, 300.0))
        for g in gpus
    ]
    second = planner.plan(_fleet(busy), [POLICY], PlanContext(now=NOW, previous_quota_caps=caps))
    after = _in_force(second)
    assert math.fsum(after.values()) <= QUOTA + 1e-6
    assert min(after.values()) >= 0.2 * QUOTA  # every GPU has come near an equal share (175 W)
    assert second == plan(_fleet(busy), [POLICY], PlanContext(now=NOW, previous_quota_caps=caps)) or (
        _in_force(second) == _in_force(plan(_fleet(busy), [POLICY], PlanContext(now=NOW, previous_quota_caps=caps)))
    )


def test_low_priority_gives_first_under_a_binding_quota() -> None:
    gpus = [_gpu("n1", 0, "hi", 290.0), _gpu("n1", 1, "lo", 290.0), _gpu("n2", 0, "hi2", 290.0)]
    result = plan(_fleet(gpus, {"hi": "high", "hi2": "high", "lo": "low"}), [POLICY], PlanContext(now=NOW))
    limits = _in_force(result)
    assert math.fsum(limits.values()) <= QUOTA + 1e-6
    assert limits["GPU-n1-1"] == 100.0  # the low-priority GPU is cut to its floor first
    assert limits["GPU-n1-0"] == limits["GPU-n2-0"] == 300.0


def test_an_impossible_quota_holds_every_gpu_at_its_floor_and_says_so() -> None:
    gpus = [_gpu("n1", i, f"p{i}", 290.0) for i in range(8)]
    result = plan(_fleet(gpus), [POLICY], PlanContext(now=NOW))
    assert set(_in_force(result).values()) == {100.0}
    report = result.policies["team-a-quota"]
    assert report.quota_met is False
    assert "infeasible" in report.quota_message
