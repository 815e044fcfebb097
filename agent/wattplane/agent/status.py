"""Turn device readings, apply outcomes, the budget decision and pod attribution into a GpuNode status.

Per-pod energy is attributed from each GPU's energy counter: the increase since the previous sample
goes to the containers holding the GPU at that moment (split evenly when a GPU is time-sliced). A
counter that goes backwards (driver reload) contributes nothing for that interval, so totals never
drop. A pod that is gone keeps its final total in status for a while (so the operator and Prometheus
see it) and is then forgotten, so status does not grow without bound.

A GPU that stops answering stays in status with its last measurements, ``stale: true`` and state
``Error``: the operator keeps planning for it and people see what failed, instead of a GPU vanishing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from wattplane.agent.budget import BudgetDecision
from wattplane.agent.engine import GpuOutcome, PodAssignment
from wattplane.agent.gpu.base import GpuDevice, GpuReading, PowerConstraints, PowerSmoothingState
from wattplane.agent.gpu.errors import GpuError
from wattplane.api.conditions import Condition, set_condition
from wattplane.api.v1alpha1.gpunode import (
    GpuNodeStatus,
    GpuStatus,
    PodEnergy,
    PodRef,
    PowerConstraintsWatts,
    PowerSmoothingStatus,
)

#: NVML clock-event reason bits, by name (tech-notes §1.4; numeric because pynvml's names are patchy).
THROTTLE_BITS: Mapping[int, str] = {
    0x1: "GpuIdle",
    0x2: "ApplicationsClocksSetting",
    0x4: "SwPowerCap",
    0x8: "HwSlowdown",
    0x10: "SyncBoost",
    0x20: "SwThermalSlowdown",
    0x40: "HwThermalSlowdown",
    0x80: "HwPowerBrakeSlowdown",
    0x100: "DisplayClockSetting",
    0x200: "BoardLimit",
    0x400: "Reliability",
}


def throttle_names(mask: int) -> list[str]:
    """Names of the bits set in an NVML clock-event mask."""
    return [name for bit, name in THROTTLE_BITS.items() if mask & bit]


_PodKey = tuple[str, str, str, str]
"""(namespace, pod, uid, container)."""


class PodEnergyLedger:
    """Monotonic per-container energy totals, fed by GPU energy counters."""

    def __init__(self, seed: Iterable[PodEnergy] = (), *, now: float = 0.0) -> None:
        self._totals: dict[_PodKey, float] = {(p.namespace, p.name, p.uid, p.container): p.energy_joules for p in seed}
        self._seen: dict[_PodKey, float] = dict.fromkeys(self._totals, now)
        self._last_counter: dict[str, float] = {}

    def update(self, energy_by_gpu: Mapping[str, float], assignment: PodAssignment, *, now: float = 0.0) -> None:
        """Attribute each GPU's energy increase since the last call to its current pods.

        ``now`` (any monotonic seconds) marks the pods as seen, for :meth:`forget_unseen`.
        """
        for pods in assignment.values():
            for pod in pods:
                self._seen[_key(pod)] = now
        for uuid, energy in energy_by_gpu.items():
            previous = self._last_counter.get(uuid)
            self._last_counter[uuid] = energy
            pods = assignment.get(uuid, ())
            if previous is None or not pods or energy <= previous:
                continue
            share = (energy - previous) / len(pods)
            for pod in pods:
                key = _key(pod)
                self._totals[key] = self._totals.get(key, 0.0) + share

    def retain(self, live: Iterable[PodRef]) -> None:
        """Forget pods that no longer exist (their totals were already reported)."""
        keep = {(p.namespace, p.name, p.uid) for p in live}
        self._totals = {k: v for k, v in self._totals.items() if k[:3] in keep}
        self._seen = {k: v for k, v in self._seen.items() if k in self._totals}

    def forget_unseen(self, now: float, after_s: float) -> None:
        """Forget pods not holding a GPU for longer than ``after_s`` (their final totals were reported)."""
        stale = {k for k, seen in self._seen.items() if now - seen > after_s}
        self._totals = {k: v for k, v in self._totals.items() if k not in stale}
        self._seen = {k: v for k, v in self._seen.items() if k not in stale}

    def entries(self) -> list[PodEnergy]:
        """Current totals, sorted by pod."""
        return [
            PodEnergy(namespace=ns, name=name, uid=uid, container=container, energy_joules=round(total, 3))
            for (ns, name, uid, container), total in sorted(self._totals.items())
        ]


def _key(pod: PodRef) -> _PodKey:
    return (pod.namespace, pod.name, pod.uid, pod.container)


def build_status(
    *,
    backend: str,
    devices: Sequence[GpuDevice],
    readings: Mapping[str, GpuReading | GpuError],
    constraints: Mapping[str, PowerConstraints],
    outcomes: Mapping[str, GpuOutcome],
    assignment: PodAssignment,
    ledger: PodEnergyLedger,
    plan_generation: int,
    previous_conditions: list[Condition],
    problems: Sequence[str],
    now: datetime,
    last_good: Mapping[str, GpuReading] | None = None,
    budget: BudgetDecision | None = None,
    dry_run: bool = False,
    ledger_time: float = 0.0,
    attribution_problem: str | None = None,
    attributes_pods: bool = False,
) -> GpuNodeStatus:
    """Assemble the status the agent writes to its GpuNode.

    ``attribution_problem`` (why pods cannot be matched to GPUs, ``None`` when they can) makes Ready
    false: policies select GPUs by their pods, so a node whose pods are unknown is not doing its job
    even while every GPU answers. ``attributes_pods`` adds the ``PodsAttributed`` condition (the
    agent's; a bare-metal ``wattplane run`` has no pods to attribute).
    """
    gpus: list[GpuStatus] = []
    failing: list[str] = []
    for device in devices:
        ident = device.identity
        raw = readings.get(ident.uuid)
        outcome = outcomes.get(ident.uuid, GpuOutcome())
        limits = constraints.get(ident.uuid)
        reading: GpuReading | None = raw if isinstance(raw, GpuReading) else None
        stale = reading is None
        if reading is None:
            failing.append(f"GPU {ident.index}: {raw if raw is not None else 'no reading'}")
            reading = (last_good or {}).get(ident.uuid)
            if isinstance(raw, GpuError) and outcome.state != "Error":
                outcome = GpuOutcome(state="Error", message=str(raw), error_reason=raw.reason, reason=raw.reason)
        elif outcome.error_reason:
            failing.append(f"GPU {ident.index}: {outcome.message}")
        if reading is None or limits is None:
            continue  # never answered: only the Ready condition can tell
        gpus.append(_gpu_status(device, reading, limits, outcome, assignment, stale=stale))
    ledger.update(
        {g.uuid: g.energy_joules for g in gpus if g.energy_joules is not None and not g.stale},
        assignment,
        now=ledger_time,
    )
    all_problems = [*problems, *([attribution_problem] if attribution_problem else [])]
    if failing:
        ready_reason = "GpuErrors"
    elif problems:
        ready_reason = "AgentProblem"
    elif attribution_problem:
        ready_reason = "PodAttributionFailed"
    else:
        ready_reason = "AllGpusHealthy"
    conditions = set_condition(
        previous_conditions,
        Condition(
            type="Ready",
            status="False" if failing or all_problems else "True",
            reason=ready_reason,
            message="; ".join([*failing, *all_problems])[:1000] or f"{len(gpus)} GPU(s) reporting",
        ),
        now=now,
    )
    if attributes_pods or attribution_problem:
        conditions = set_condition(conditions, _attribution_condition(attribution_problem, assignment), now=now)
    node_power = round(sum(g.power_watts for g in gpus if not g.stale), 3)
    conditions = set_condition(conditions, budget_condition(budget, node_power, dry_run=dry_run), now=now)
    return GpuNodeStatus(
        backend=backend,
        heartbeat=now,
        observed_plan_generation=plan_generation,
        conditions=conditions,
        gpu_count=len(devices),
        targeted_gpus=sum(1 for g in gpus if g.state in ("Applied", "DryRun") and g.target_watts is not None),
        node_power_watts=node_power,
        gpus=gpus,
        pod_energy=ledger.entries(),
    )


def _gpu_status(
    device: GpuDevice,
    reading: GpuReading,
    limits: PowerConstraints,
    outcome: GpuOutcome,
    assignment: PodAssignment,
    *,
    stale: bool,
) -> GpuStatus:
    ident = device.identity
    return GpuStatus(
        index=ident.index,
        uuid=ident.uuid,
        model=ident.model,
        vendor=ident.vendor,
        mig_enabled=ident.mig_enabled,
        power_limit_watts=round(reading.power_limit_watts, 3),
        constraints=PowerConstraintsWatts(
            min_watts=limits.min_watts, max_watts=limits.max_watts, default_watts=limits.default_watts
        ),
        power_watts=round(reading.power_watts, 3),
        energy_joules=None if reading.energy_joules is None else round(reading.energy_joules, 3),
        sm_clock_mhz=reading.sm_clock_mhz,
        utilization=reading.utilization_ratio,
        temperature_celsius=reading.temperature_celsius,
        throttle_reasons=throttle_names(reading.throttle_reasons),
        target_watts=outcome.target_watts,
        budget_limit_watts=None if outcome.budget_limit_watts is None else round(outcome.budget_limit_watts, 3),
        state=outcome.state,
        reason=outcome.reason,
        message=outcome.message,
        stale=stale,
        pods=list(assignment.get(ident.uuid, ())),
        workload_profiles=None if outcome.workload_profiles is None else list(outcome.workload_profiles),
        power_smoothing=None if outcome.power_smoothing is None else _smoothing_status(outcome.power_smoothing),
        unsupported_features=list(outcome.unsupported) or None,
    )


def _smoothing_status(state: PowerSmoothingState) -> PowerSmoothingStatus:
    """The smoothing read back, as GpuNode status reports it."""
    return PowerSmoothingStatus(
        enabled=state.enabled,
        preset_profile=state.preset_profile,
        ramp_up_watts_per_second=state.ramp_up_watts_per_second,
        ramp_down_watts_per_second=state.ramp_down_watts_per_second,
        floor_percent=state.floor_percent,
    )


def _attribution_condition(problem: str | None, assignment: PodAssignment) -> Condition:
    """``PodsAttributed``: whether the agent knows which pod holds which GPU."""
    if problem:
        return Condition(type="PodsAttributed", status="False", reason="PodAttributionFailed", message=problem)
    held = sum(1 for pods in assignment.values() if pods)
    return Condition(type="PodsAttributed", status="True", reason="Attributed", message=f"{held} GPU(s) held by pods")


def budget_condition(budget: BudgetDecision | None, node_power_watts: float, *, dry_run: bool = False) -> Condition:
    """The ``BudgetMet`` condition: is the node within its GPU power budget, and at what cost.

    ``node_power_watts`` is measured after this tick's writes, so a breach the tick already answered
    reads as the limits holding, not as a breach.
    """
    if budget is None or budget.budget_watts is None:
        return Condition(type="BudgetMet", status="True", reason="NoBudget", message="no node power budget set")
    limited = len(budget.limits)
    head = f"node {node_power_watts:.0f} W of {budget.budget_watts:.0f} W budget"
    if not budget.feasible:
        return Condition(type="BudgetMet", status="False", reason="Infeasible", message=budget.describe())
    if dry_run and limited:
        return Condition(
            type="BudgetMet",
            status="False" if node_power_watts > budget.budget_watts else "True",
            reason="DryRun",
            message=f"{head}; dry run: would limit {limited} GPU(s)",
        )
    if node_power_watts > budget.budget_watts:
        return Condition(
            type="BudgetMet",
            status="False",
            reason="OverBudget",
            message=f"{head}; limits lowered on {limited} GPU(s), waiting for power to follow",
        )
    if limited:
        return Condition(
            type="BudgetMet",
            status="True",
            reason="Limiting",
            message=f"{head}; {limited} GPU(s) held below their target, lowest priority first",
        )
    return Condition(type="BudgetMet", status="True", reason="WithinBudget", message=head)
