"""Turn device readings, apply outcomes and pod attribution into a GpuNode status.

Per-pod energy is attributed from each GPU's energy counter: the increase since the previous sample
goes to the pods holding the GPU at that moment (split evenly when a GPU is time-sliced). A counter
that goes backwards (driver reload) contributes nothing for that interval, so pod totals never drop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from wattplane.agent.engine import GpuOutcome, PodAssignment
from wattplane.agent.gpu.base import GpuDevice, GpuReading, PowerConstraints
from wattplane.agent.gpu.errors import GpuError
from wattplane.api.conditions import Condition, set_condition
from wattplane.api.v1alpha1.gpunode import (
    GpuNodeStatus,
    GpuStatus,
    PodEnergy,
    PodRef,
    PowerConstraintsWatts,
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


class PodEnergyLedger:
    """Monotonic per-pod energy totals, fed by GPU energy counters."""

    def __init__(self, seed: Iterable[PodEnergy] = ()) -> None:
        self._totals: dict[tuple[str, str, str], float] = {(p.namespace, p.name, p.uid): p.energy_joules for p in seed}
        self._last_counter: dict[str, float] = {}

    def update(self, energy_by_gpu: Mapping[str, float], assignment: PodAssignment) -> None:
        """Attribute each GPU's energy increase since the last call to its current pods."""
        for uuid, energy in energy_by_gpu.items():
            previous = self._last_counter.get(uuid)
            self._last_counter[uuid] = energy
            pods = assignment.get(uuid, ())
            if previous is None or not pods or energy <= previous:
                continue
            share = (energy - previous) / len(pods)
            for pod in pods:
                key = (pod.namespace, pod.name, pod.uid)
                self._totals[key] = self._totals.get(key, 0.0) + share

    def retain(self, live: Iterable[PodRef]) -> None:
        """Forget pods that no longer exist (their totals were already reported)."""
        keep = {(p.namespace, p.name, p.uid) for p in live}
        self._totals = {k: v for k, v in self._totals.items() if k in keep}

    def entries(self) -> list[PodEnergy]:
        """Current totals, sorted by pod."""
        return [
            PodEnergy(namespace=ns, name=name, uid=uid, energy_joules=round(total, 3))
            for (ns, name, uid), total in sorted(self._totals.items())
        ]


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
) -> GpuNodeStatus:
    """Assemble the status the agent writes to its GpuNode."""
    gpus: list[GpuStatus] = []
    failing: list[str] = []
    for device in devices:
        ident = device.identity
        reading = readings.get(ident.uuid)
        outcome = outcomes.get(ident.uuid, GpuOutcome())
        limits = constraints.get(ident.uuid)
        if isinstance(reading, GpuError) or reading is None or limits is None:
            failing.append(f"GPU {ident.index}: {reading if reading is not None else 'no reading'}")
            continue
        state = outcome.state
        if outcome.error_reason:
            failing.append(f"GPU {ident.index}: {outcome.message}")
        gpus.append(
            GpuStatus(
                index=ident.index,
                uuid=ident.uuid,
                model=ident.model,
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
                state=state,
                message=outcome.message,
                pods=list(assignment.get(ident.uuid, ())),
            )
        )
    ledger.update(
        {g.uuid: g.energy_joules for g in gpus if g.energy_joules is not None},
        assignment,
    )
    conditions = set_condition(
        previous_conditions,
        Condition(
            type="Ready",
            status="False" if failing or problems else "True",
            reason="GpuErrors" if failing else ("AgentProblem" if problems else "AllGpusHealthy"),
            message="; ".join([*failing, *problems])[:1000] or f"{len(gpus)} GPU(s) reporting",
        ),
        now=now,
    )
    return GpuNodeStatus(
        backend=backend,
        heartbeat=now,
        observed_plan_generation=plan_generation,
        conditions=conditions,
        gpu_count=len(devices),
        targeted_gpus=sum(1 for g in gpus if g.state in ("Applied", "DryRun")),
        node_power_watts=round(sum(g.power_watts for g in gpus), 3),
        gpus=gpus,
        pod_energy=ledger.entries(),
    )
