"""The node agent's core: apply a plan to the node's GPUs, restore what it changed, observe.

No Kubernetes here: the engine takes a :class:`GpuNodeSpec` and returns a :class:`GpuNodeStatus`, so
the same code serves the DaemonSet, ``wattplane run`` on a bare-metal node and the simulator.

Rules every write follows:

* **Clamped.** A target outside the device's constraints is clamped (and the clamp reported); a
  target that is not a finite number is refused. The device never sees an out-of-range value.
* **Idempotent.** Read, compare, write only on a difference; an agent restarted into a node whose
  GPUs already match the plan writes nothing.
* **Journaled.** The GPU's prior limit and clock lock are recorded before the first write and put
  back, exactly, when the target goes away, the plan expires, or the agent is told to let go.
* **Isolated.** One GPU failing (no permission, lost, ...) marks that GPU and never stops the others.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from wattplane.agent.gpu.base import GpuBackend, GpuDevice, GpuReading
from wattplane.agent.gpu.errors import GpuError
from wattplane.agent.journal import Journal, PriorState
from wattplane.api.v1alpha1.gpunode import GpuTarget, PodRef

logger = logging.getLogger(__name__)

#: Two limits closer than this are equal (NVML stores integer milliwatts).
_WATT_TOLERANCE = 0.5e-3


@dataclass
class GpuOutcome:
    """What the last reconcile did to one GPU."""

    state: Literal["Default", "Applied", "DryRun", "Error"] = "Default"
    target_watts: float | None = None
    message: str = ""
    error_reason: str | None = None


@dataclass
class ApplyStats:
    """Counters for metrics and tests."""

    writes: int = 0
    errors: int = 0
    restores: int = 0
    last_errors: dict[str, str] = field(default_factory=dict)


class NodeEngine:
    """Applies plans to one node's GPUs and remembers what it changed."""

    def __init__(self, backend: GpuBackend, journal: Journal, *, dry_run: bool = False) -> None:
        self.backend = backend
        self.journal = journal
        self.dry_run = dry_run
        self.outcomes: dict[str, GpuOutcome] = {}
        self.stats = ApplyStats()
        self._devices: list[GpuDevice] = list(backend.devices())

    @property
    def devices(self) -> Sequence[GpuDevice]:
        """The node's GPUs, by index."""
        return self._devices

    def reconcile(self, targets: Sequence[GpuTarget], *, expired: bool = False) -> dict[str, GpuOutcome]:
        """Bring every GPU to its target, or back to its prior state when it has none.

        ``expired`` means the plan outlived its TTL (the operator is gone): every GPU is restored.
        """
        by_uuid = {t.uuid: t for t in targets}
        for device in self._devices:
            uuid = device.identity.uuid
            target = None if expired else by_uuid.get(uuid)
            try:
                if device.identity.mig_enabled and target is not None:
                    self.outcomes[uuid] = GpuOutcome(
                        state="Error", message="MIG-enabled GPU: power limits are never set per instance"
                    )
                    self._restore(device)
                elif target is None:
                    self.outcomes[uuid] = self._restore(device)
                elif target.dry_run or self.dry_run:
                    self.outcomes[uuid] = self._dry_run(device, target)
                else:
                    self.outcomes[uuid] = self._apply(device, target)
                self.stats.last_errors.pop(uuid, None)
            except GpuError as exc:
                self.stats.errors += 1
                self.stats.last_errors[uuid] = exc.reason
                logger.warning("GPU %s (%s): %s", device.identity.index, uuid, exc)
                self.outcomes[uuid] = GpuOutcome(state="Error", message=str(exc), error_reason=exc.reason)
        return dict(self.outcomes)

    def restore_all(self) -> list[str]:
        """Put every GPU the agent changed back to its journaled state; return failures."""
        failures: list[str] = []
        for device in self._devices:
            try:
                self.outcomes[device.identity.uuid] = self._restore(device)
            except GpuError as exc:
                failures.append(f"{device.identity.uuid}: {exc}")
                logger.error("restore of GPU %s failed: %s", device.identity.uuid, exc)
        return failures

    def _apply(self, device: GpuDevice, target: GpuTarget) -> GpuOutcome:
        wanted = target.power_limit_watts
        if not math.isfinite(wanted):
            return GpuOutcome(state="Error", message=f"target {wanted!r} W is not a finite number; not applied")
        limits = device.constraints()
        watts = limits.clamp(wanted)
        note = "" if abs(watts - wanted) <= _WATT_TOLERANCE else f"target {wanted:g} W clamped to {watts:g} W"
        reading = device.read()
        journaled = self.journal.get(device.identity.uuid)
        if target.locked_clocks_mhz is not None:
            clocks: tuple[int, int] | None = (target.locked_clocks_mhz.min_mhz, target.locked_clocks_mhz.max_mhz)
        elif journaled is not None:
            clocks = journaled.locked_clocks_mhz  # a lock the plan no longer asks for goes back
        else:
            clocks = reading.locked_clocks_mhz  # never touch a lock wattplane did not set
        needs_limit = abs(reading.power_limit_watts - watts) > _WATT_TOLERANCE
        needs_clocks = clocks != reading.locked_clocks_mhz
        if needs_limit or needs_clocks:
            self.journal.remember(device.identity.uuid, _prior_of(reading))
        if needs_limit:
            device.set_power_limit_watts(watts)
            self.stats.writes += 1
        if needs_clocks:
            if clocks is None:
                device.reset_locked_clocks()
            else:
                device.set_locked_clocks_mhz(*clocks)
            self.stats.writes += 1
        return GpuOutcome(state="Applied", target_watts=watts, message=note)

    def _dry_run(self, device: GpuDevice, target: GpuTarget) -> GpuOutcome:
        restored = self._restore(device)
        watts = device.constraints().clamp(target.power_limit_watts)
        return GpuOutcome(
            state="DryRun", target_watts=watts, message=f"dry run: would set {watts:g} W. {restored.message}".strip()
        )

    def _restore(self, device: GpuDevice) -> GpuOutcome:
        uuid = device.identity.uuid
        prior = self.journal.get(uuid)
        if prior is None:
            return GpuOutcome(state="Default")
        reading = device.read()
        limits = device.constraints()
        watts = limits.clamp(prior.power_limit_watts)
        if abs(reading.power_limit_watts - watts) > _WATT_TOLERANCE:
            device.set_power_limit_watts(watts)
            self.stats.writes += 1
        if reading.locked_clocks_mhz != prior.locked_clocks_mhz:
            self._restore_clocks(device)
            self.stats.writes += 1
        self.journal.forget(uuid)
        self.stats.restores += 1
        return GpuOutcome(state="Default", message=f"restored prior limit {watts:g} W")

    def _restore_clocks(self, device: GpuDevice) -> None:
        prior = self.journal.get(device.identity.uuid)
        if prior is not None and prior.locked_clocks_mhz is not None:
            device.set_locked_clocks_mhz(*prior.locked_clocks_mhz)
        else:
            device.reset_locked_clocks()

    def read_all(self) -> dict[str, GpuReading | GpuError]:
        """Sample every GPU; a failing GPU yields its error instead of a reading."""
        out: dict[str, GpuReading | GpuError] = {}
        for device in self._devices:
            try:
                out[device.identity.uuid] = device.read()
            except GpuError as exc:
                out[device.identity.uuid] = exc
        return out


def _prior_of(reading: GpuReading) -> PriorState:
    return PriorState(power_limit_watts=reading.power_limit_watts, locked_clocks_mhz=reading.locked_clocks_mhz)


def plan_expired(issued_at: datetime | None, ttl_seconds: int, now: datetime) -> bool:
    """Whether a plan issued at ``issued_at`` has outlived its TTL (no issue time: never expires)."""
    return issued_at is not None and now > issued_at + timedelta(seconds=ttl_seconds)


PodAssignment = Mapping[str, Sequence[PodRef]]
"""GPU UUID → pods (several when a GPU is time-sliced)."""
