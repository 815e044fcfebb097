"""A rack under a budget that cuts part of it: one owner per decision, bounded writes, budget held.

The operator's planning round (the real planner and :func:`node_spec_update`) and five agents (the
real :class:`NodeEngine` on simulated A40s with 2 % sensor noise) run in a closed loop in virtual
time: agents tick every second, the operator plans every 0.3 s (as if every agent status write
triggered a round, the worst case), and the GPUs' loads change every few seconds while no pod comes
or goes. The operator sets the node shares and the cut order, never a GPU's limit; the agents alone
hold GPUs below their targets. Measured power moving is all that happens, so each node's GpuNode spec
may be written at most once per planning interval, and the rack must stay within its budget.

Before shares had one owner, this loop had the operator's per-GPU caps and the agents' cuts chase
each other: a new plan on most rounds for every node of the rack.
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from wattplane.agent.engine import NodeEngine
from wattplane.agent.gpu.simulated import SimulatedBackend, SimulatedGpu
from wattplane.agent.journal import Journal
from wattplane.api.v1alpha1.energypolicy import EnergyPolicySpec
from wattplane.api.v1alpha1.gpunode import GpuNodeSpec
from wattplane.operator.decisions import node_spec_update
from wattplane.planner.context import PlanContext
from wattplane.planner.plan import Plan, plan
from wattplane.planner.snapshot import FleetSnapshot, PodKey, PodView, PolicyView
from wattplane.sim.planning import engine_gpu_view

T0 = datetime(2025, 6, 1, 12, tzinfo=UTC)
NODES = [f"rack-n{i}" for i in range(5)]
BUDGET = 3000.0  # 20 A40s (300 W) drawing ~4,500 W: about a third of the rack's power must go
INTERVAL_S = 30.0
TICK_S = 1.0
ROUND_S = 0.3
DURATION_S = 200.0
PRIORITIES = ["low", "normal", "high"]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Rack:
    """Five nodes, their agents' engines, their pods, and the operator's last plan and specs."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.clock = Clock()
        self.backends = {n: SimulatedBackend(node_name=n, clock=self.clock, noise_ratio=0.02, seed=seed) for n in NODES}
        self.engines = {n: NodeEngine(b, Journal(None)) for n, b in self.backends.items()}
        self.specs = {n: GpuNodeSpec() for n in NODES}
        self.pods: dict[PodKey, PodView] = {}
        self.holders: dict[str, PodKey] = {}
        for n in NODES:
            for device in self.devices(n)[:3]:  # three busy GPUs per node, one idle
                i = len(self.pods)
                app = "train" if i % 2 == 0 else "batch"
                annotations = {"wattplane.io/priority": PRIORITIES[i % 3]}
                if i % 5 == 4:
                    annotations["wattplane.io/workload"] = "inference"
                pod = PodView("ml", f"p{i}", uid=f"u{i}", node=n, labels={"app": app}, annotations=annotations)
                self.pods[pod.key] = pod
                self.holders[device.identity.uuid] = pod.key
                device.set_load(1.0)
        self.policies = [
            PolicyView("cap", EnergyPolicySpec.model_validate(
                {"selector": {"podSelector": {"matchLabels": {"app": "train"}}}, "limits": {"maxWatts": 280}})),
            PolicyView("rack", EnergyPolicySpec.model_validate({"budget": {"watts": BUDGET}})),
        ]  # fmt: skip
        self.last: Plan | None = None
        self.writes: dict[str, list[float]] = defaultdict(list)
        self.rack_power: list[float] = []

    def devices(self, node: str) -> list[SimulatedGpu]:
        return list(self.backends[node].devices())

    def churn_loads(self) -> None:
        """Busy GPUs move between 40 % and 100 % load: measured power changes, the pods do not."""
        for n in NODES:
            for device in self.devices(n):
                if device.identity.uuid in self.holders:
                    device.set_load(self.rng.uniform(0.4, 1.0))

    def tick(self) -> None:
        for n, engine in self.engines.items():
            spec = self.specs[n]
            engine.reconcile(
                spec.gpus,
                node_budget_watts=spec.node_budget_watts,
                budget_priorities={p.uuid: p.priority for p in spec.budget_priorities or ()},
            )
        self.rack_power.append(sum(d.power_watts() for n in NODES for d in self.devices(n)))

    def snapshot(self) -> FleetSnapshot:
        gpus = []
        for n, engine in self.engines.items():
            for device in self.devices(n):
                reading = engine.last_good[device.identity.uuid]
                holder = self.holders.get(device.identity.uuid)
                gpus.append(
                    engine_gpu_view(
                        n,
                        device.identity,
                        device.constraints(),
                        power_watts=reading.power_watts,
                        energy_joules=reading.energy_joules,
                        limit_watts=reading.power_limit_watts,
                        pods=(holder,) if holder else (),
                        outcome=engine.outcomes.get(device.identity.uuid),
                    )
                )
        return FleetSnapshot(
            gpus=tuple(gpus), pods=dict(self.pods), nodes=tuple(NODES), node_labels={n: {} for n in NODES}
        )

    def plan_round(self) -> Plan:
        now = T0 + timedelta(seconds=self.clock.now)
        context = PlanContext(
            now=now,
            previous_node_budgets={
                n: s.node_budget_watts for n, s in self.specs.items() if s.node_budget_watts is not None
            },
            budget_rebalances=self.last.budget_rebalances if self.last is not None else {},
            budget_interval_s=INTERVAL_S,
        )
        result = self.last = plan(self.snapshot(), self.policies, context)
        for n in NODES:
            update = node_spec_update(
                self.specs[n],
                result.nodes.get(n, ()),
                now=now,
                ttl_seconds=600,
                node_budget_watts=result.node_budgets.get(n),
                budget_priorities=result.budget_priorities.get(n, ()),
            )
            if update is not None:
                self.specs[n] = update
                self.writes[n].append(self.clock.now)
        return result

    def run(self, seconds: float) -> None:
        """Ticks every second, rounds every 0.3 s, new loads every 2.5 s (10 ms steps of virtual time)."""
        step = round(self.clock.now * 100)
        if step == 0:
            self.tick()  # the agents report before the operator plans
        while self.clock.now < seconds:
            step += 1
            self.clock.now = step / 100
            if step % round(TICK_S * 100) == 0:
                self.tick()
            if step % round(ROUND_S * 100) == 0:
                self.plan_round()
            if step % 250 == 0:
                self.churn_loads()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_shares_move_at_most_once_per_interval_and_the_budget_holds(seed: int) -> None:
    rack = Rack(seed)
    rack.run(DURATION_S)

    # The budget bites: agents hold some GPUs back, and the policy says how many.
    assert rack.last is not None
    status = rack.last.policies["rack"].budget
    assert status is not None and status.cut_gpus > 0, status
    # Writes: the first plan, then at most one per node per planning interval, whatever the agents do.
    for n in NODES:
        times = rack.writes[n]
        assert times and times[0] < 1.0, (n, times)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(gap >= INTERVAL_S - ROUND_S for gap in gaps), (n, times)
        assert len(times) <= 1 + DURATION_S / INTERVAL_S, (n, times)
    # Shares never add up to more than the budget; after every tick the rack is within it (sensor
    # noise aside: the agents see power through 2 % noise), and on average well within.
    assert sum(s.node_budget_watts or 0.0 for s in rack.specs.values()) <= BUDGET
    after_start = rack.rack_power[2:]
    assert max(after_start) <= BUDGET * 1.04, max(after_start)
    assert sum(after_start) / len(after_start) <= BUDGET, sum(after_start) / len(after_start)


def test_a_steady_rack_gets_no_new_plan_while_the_agents_hold_it() -> None:
    """Loads constant: the agents cut and restore on noisy power, the shares stay inside the dead band."""
    rack = Rack(seed=5)
    rack.churn_loads = lambda: None  # type: ignore[method-assign]
    rack.run(150.0)  # five rebalance intervals, well before the plan's TTL renewal (200 s)
    assert rack.last is not None
    status = rack.last.policies["rack"].budget
    assert status is not None and status.cut_gpus > 0, status
    assert {n: rack.writes[n] for n in NODES} == {n: [ROUND_S] for n in NODES}  # the first plan only


def test_the_operator_never_cuts_a_target_and_the_agents_cut_by_priority() -> None:
    rack = Rack(seed=7)
    rack.run(40.0)
    assert rack.last is not None
    targets = [t for n in NODES for t in rack.last.nodes.get(n, ())]
    # Only the cap policy sets targets (280 W on the "train" pods); the budget adds none and lowers none.
    assert targets and all(t.policy == "cap" and t.power_limit_watts == 280.0 for t in targets), targets
    for n in NODES:
        spec = rack.specs[n]
        assert spec.node_budget_watts is not None
        ranks = {p.uuid: p.priority for p in spec.budget_priorities or ()}
        assert set(ranks) == {d.identity.uuid for d in rack.devices(n)}
        assert sorted(ranks.values())[0] == -1  # the idle GPU is cut first
        # Within a node, a GPU ranked higher is never held below one ranked lower that is held.
        engine = rack.engines[n]
        held = {u: o.budget_limit_watts for u, o in engine.outcomes.items() if o.budget_limit_watts is not None}
        limits = {d.identity.uuid: d.state.power_limit_watts for d in rack.devices(n)}
        for low, low_limit in held.items():
            for high in ranks:
                if ranks[high] > ranks[low] and high in rack.holders and high in held:
                    assert limits[high] >= low_limit - 1e-6 or held[high] >= low_limit - 1e-6, (n, ranks, limits)
