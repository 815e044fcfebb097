"""The node agent's core: apply a plan to the node's GPUs, keep the node in budget, restore, observe.

No Kubernetes here: the engine takes the plan's targets (and the node budget) and leaves outcomes and
readings behind, so the same code serves the DaemonSet, ``wattplane run`` on a bare-metal node and the
simulator.

Rules every write follows:

* **Clamped.** A target outside the device's constraints is clamped (and the clamp reported), its
  clock lock too, into the device's supported SM clocks: the agent is the only part that knows them
  (the operator plans from the policy alone). A target that is not a finite number is refused. The
  device never sees an out-of-range value.
* **Idempotent.** Read, compare, write only on a difference; an agent restarted into a node whose
  GPUs already match the plan writes nothing.
* **Journaled.** The GPU's prior limit and clock lock are recorded before the first write and put
  back, exactly, when the target goes away, the plan expires, or the agent is told to let go. The
  optional knobs (workload power profile, power smoothing) follow the same rule, each journaled
  before its own first write.
* **Optional knobs stay optional.** A GPU that answers NotSupported to a knob is reported (a warning
  once, ``unsupportedFeatures`` in its status) and that knob of that GPU is never tried again while
  the agent runs; its limit and clocks are applied as usual.
* **Isolated.** One GPU failing (no permission, lost, ...) marks that GPU and never stops the others.
* **Dry run** computes and reports everything, budget cuts included, and writes nothing at all.

Each :meth:`NodeEngine.reconcile` is one tick: read every GPU once, decide the node budget's limits
(:mod:`wattplane.agent.budget`), write what differs, and read back what was written.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from wattplane.agent.budget import BudgetDecision, BudgetGpu, BudgetParams, BudgetState, enforce
from wattplane.agent.gpu.base import (
    GpuBackend,
    GpuDevice,
    GpuReading,
    PowerConstraints,
    PowerProfileDevice,
    PowerSmoothingState,
)
from wattplane.agent.gpu.errors import GpuDriverError, GpuError, GpuNotSupportedError
from wattplane.agent.journal import Journal, PriorState
from wattplane.agent.ramp import RampState, budget_in_force, ramping
from wattplane.agent.stats import ApplyStats
from wattplane.api.v1alpha1.gpunode import GpuTarget, PodRef

__all__ = ["ApplyStats", "GpuOutcome", "NodeEngine", "PodAssignment", "plan_expired"]

logger = logging.getLogger(__name__)

#: Two limits closer than this are equal (NVML stores integer milliwatts).
_WATT_TOLERANCE = 0.5e-3
#: Ticks a GPU whose write failed is left out of budget cuts before the loop tries it again.
_UNWRITABLE_RETRY_TICKS = 30
#: Two smoothing parameters closer than this are equal (NVML stores them as doubles).
_SMOOTHING_TOLERANCE = 1e-3
#: The optional knobs, by the names status reports them under.
Knob = Literal["workloadProfile", "powerSmoothing"]


@dataclass
class GpuOutcome:
    """What the last reconcile did to one GPU."""

    state: Literal["Default", "Applied", "DryRun", "Error"] = "Default"
    target_watts: float | None = None
    """The plan's target after clamping."""
    message: str = ""
    error_reason: str | None = None
    """Machine-readable reason when ``state`` is ``Error``."""
    reason: str = ""
    """Machine-readable reason of the state (``Clamped``, ``NodeBudget``, ``GpuLost``, ...)."""
    budget_limit_watts: float | None = None
    """The limit the node budget imposes below the target (or below the prior limit), watts."""
    read_failed: bool = False
    """The GPU could not be read in this tick (its measurements are stale)."""
    workload_profiles: tuple[str, ...] | None = None
    """Requested workload power profiles as read back (``None``: no plan or journal asks for the knob)."""
    power_smoothing: PowerSmoothingState | None = None
    """Power smoothing as read back (``None``: no plan or journal asks for the knob)."""
    unsupported: tuple[str, ...] = ()
    """Knobs the target asks for that this GPU does not offer (left alone)."""


@dataclass(frozen=True)
class _Knobs:
    """What the optional knobs of one GPU are after this tick's writes."""

    profiles: tuple[str, ...] | None = None
    smoothing: PowerSmoothingState | None = None
    unsupported: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Intent:
    """What the plan asks of one readable GPU in this tick, before the budget has its say."""

    kind: Literal["apply", "restore", "dry_run", "refused"]
    ceiling_watts: float
    target: GpuTarget | None = None
    note: str = ""
    reason: str = ""
    locked_clocks_mhz: tuple[int, int] | None = None
    """The target's clock lock clamped into the device's supported clocks (``None``: the plan asks none)."""


class NodeEngine:
    """Applies plans to one node's GPUs and remembers what it changed."""

    def __init__(
        self,
        backend: GpuBackend,
        journal: Journal,
        *,
        dry_run: bool = False,
        budget_params: BudgetParams | None = None,
    ) -> None:
        self.backend = backend
        self.journal = journal
        self.dry_run = dry_run
        self.budget_params = budget_params or BudgetParams()
        self.outcomes: dict[str, GpuOutcome] = {}
        self.stats = ApplyStats()
        #: This tick's readings (after write-backs): a reading, or the error that prevented it.
        self.readings: dict[str, GpuReading | GpuError] = {}
        #: The last successful reading of every GPU, kept to report a GPU that stopped answering.
        self.last_good: dict[str, GpuReading] = {}
        #: The node budget's last decision (``None`` until a tick ran with the plan in force).
        self.budget: BudgetDecision | None = None
        self._budget_state: BudgetState | None = None
        #: Where the node's budget in force stands on its ramp (``None`` before any tick).
        self._ramp: RampState | None = None
        #: GPUs whose last write failed → the tick from which the budget may try them again.
        self._unwritable: dict[str, int] = {}
        self._tick = 0
        self._constraints: dict[str, PowerConstraints] = {}
        self._clock_ranges: dict[str, tuple[int, int] | None] = {}
        #: Knobs each GPU answered NotSupported to: reported, never tried again while the agent runs.
        self._unsupported: dict[str, set[str]] = {}
        self._devices: list[GpuDevice] = list(backend.devices())

    @property
    def budget_ramping(self) -> bool:
        """Whether the node's budget in force is still moving along a ramp (tick again to follow it)."""
        return ramping(self._ramp)

    @property
    def budget_in_force_watts(self) -> float | None:
        """The budget the last tick enforced: the node's share, or a point on the ramp towards it."""
        return self._ramp.watts if self._ramp is not None else None

    @property
    def devices(self) -> Sequence[GpuDevice]:
        """The node's GPUs, by index."""
        return self._devices

    @property
    def constraints(self) -> Mapping[str, PowerConstraints]:
        """Constraints of every GPU that has answered once (they never change while the driver runs)."""
        return self._constraints

    def reconcile(
        self,
        targets: Sequence[GpuTarget],
        *,
        expired: bool = False,
        node_budget_watts: float | None = None,
        budget_priorities: Mapping[str, int] | None = None,
        budget_ramp_watts_per_second: float | None = None,
        now: float | None = None,
    ) -> dict[str, GpuOutcome]:
        """One tick: bring every GPU to its target within the node budget, or back to its prior state.

        ``expired`` means the plan outlived its TTL (the operator is gone): every GPU is restored and
        the budget, part of that plan, lapses with it. ``budget_priorities`` is the plan's cut order
        by UUID (a GPU absent from it ranks by its target's priority, or 0 without a target).
        ``budget_ramp_watts_per_second`` moves the budget in force towards ``node_budget_watts`` at
        that rate, by ``now`` (seconds, any monotonic clock; :mod:`wattplane.agent.ramp`).
        """
        self._tick += 1
        self.read_all()
        by_uuid = {t.uuid: t for t in targets}
        intents: dict[str, _Intent] = {}
        for device in self._devices:
            uuid = device.identity.uuid
            reading = self.readings[uuid]
            if isinstance(reading, GpuError):
                self._fail(device, reading, read_failed=True)
                continue
            try:
                intents[uuid] = self._intent(device, reading, None if expired else by_uuid.get(uuid))
            except Exception as exc:
                self._fail(device, _as_gpu_error(exc, device))
        decision = self._decide_budget(
            intents,
            None if expired else node_budget_watts,
            budget_priorities or {},
            None if expired else budget_ramp_watts_per_second,
            now,
        )
        for device in self._devices:
            uuid = device.identity.uuid
            intent = intents.get(uuid)
            reading = self.readings[uuid]
            if intent is None or isinstance(reading, GpuError):
                continue
            try:
                self.outcomes[uuid] = self._act(device, reading, intent, decision.limits.get(uuid))
                self.stats.last_errors.pop(uuid, None)
            except Exception as exc:  # one GPU failing (a backend bug included) never stops the others
                self._fail(device, _as_gpu_error(exc, device))
                self._unwritable[uuid] = self._tick + _UNWRITABLE_RETRY_TICKS
        return dict(self.outcomes)

    def restore_all(self) -> list[str]:
        """Put every GPU the agent changed back to its journaled state; return failures.

        One failed restore never stops the others; a GPU that failed keeps its journal entry, so a
        later run still owes it the restore.
        """
        failures: list[str] = []
        if self.dry_run:
            return failures  # a dry run touches nothing, on the way out either
        for device in self._devices:
            uuid = device.identity.uuid
            try:
                self._read(device)
                reading = self.readings[uuid]
                if isinstance(reading, GpuError):
                    raise reading
                self.outcomes[uuid] = self._restore(device, reading)
            except Exception as exc:
                failures.append(f"{uuid}: {exc}")
                logger.error("restore of GPU %s failed: %s", uuid, exc)
        self._budget_state = None
        self._ramp = None
        return failures

    def read_all(self) -> dict[str, GpuReading | GpuError]:
        """Sample every GPU; a failing GPU yields its error instead of a reading."""
        for device in self._devices:
            self._read(device)
        return dict(self.readings)

    def _read(self, device: GpuDevice) -> None:
        uuid = device.identity.uuid
        try:
            reading = device.read()
        except Exception as exc:
            self.readings[uuid] = _as_gpu_error(exc, device)
            return
        self.readings[uuid] = self.last_good[uuid] = reading

    def constraints_of(self, device: GpuDevice) -> PowerConstraints:
        """The device's constraints, asked once."""
        uuid = device.identity.uuid
        known = self._constraints.get(uuid)
        if known is None:
            known = self._constraints[uuid] = device.constraints()
        return known

    def clock_range_of(self, device: GpuDevice) -> tuple[int, int] | None:
        """The device's lockable SM clock range, asked once (``None``: the device decides)."""
        uuid = device.identity.uuid
        if uuid not in self._clock_ranges:
            self._clock_ranges[uuid] = device.locked_clock_range_mhz()
        return self._clock_ranges[uuid]

    def _intent(self, device: GpuDevice, reading: GpuReading, target: GpuTarget | None) -> _Intent:
        limits = self.constraints_of(device)
        prior = self.journal.get(device.identity.uuid)
        prior_watts = limits.clamp(prior.power_limit_watts if prior else reading.power_limit_watts)
        if device.identity.mig_enabled and target is not None:
            return _Intent(
                "refused",
                prior_watts,
                note="MIG-enabled GPU: power limits are never set per instance",
                reason="MigEnabled",
            )
        if target is None:
            return _Intent("restore", prior_watts)
        wanted = target.power_limit_watts
        if not math.isfinite(wanted):
            return _Intent(
                "refused",
                prior_watts,
                target,
                note=f"target {wanted!r} W is not a finite number; not applied",
                reason="InvalidTarget",
            )
        watts = limits.clamp(wanted)
        notes = [f"target {wanted:g} W clamped to {watts:g} W"] if abs(watts - wanted) > _WATT_TOLERANCE else []
        clocks: tuple[int, int] | None = None
        if target.locked_clocks_mhz is not None:
            asked = (target.locked_clocks_mhz.min_mhz, target.locked_clocks_mhz.max_mhz)
            clocks = _clamp_clocks(asked, self.clock_range_of(device))
            if clocks != asked:
                notes.append(f"clock lock {asked[0]}-{asked[1]} MHz clamped to {clocks[0]}-{clocks[1]} MHz")
        kind: Literal["apply", "dry_run"] = "dry_run" if target.dry_run or self.dry_run else "apply"
        return _Intent(
            kind, watts, target, note="; ".join(notes), reason="Clamped" if notes else "", locked_clocks_mhz=clocks
        )

    def _decide_budget(
        self,
        intents: Mapping[str, _Intent],
        budget_watts: float | None,
        priorities: Mapping[str, int],
        ramp_watts_per_second: float | None = None,
        now: float | None = None,
    ) -> BudgetDecision:
        gpus: list[BudgetGpu] = []
        for device in self._devices:
            uuid = device.identity.uuid
            reading = self.readings[uuid]
            intent = intents.get(uuid)
            if intent is None or isinstance(reading, GpuError):
                continue  # unreadable: its power is unknown and it cannot be steered
            # Engine-wide dry run plays the budget out as if the writes happened; a dry-run target,
            # a refused one and a GPU whose writes fail are givens the others must make room for.
            steerable = intent.kind in ("apply", "restore") or (intent.kind == "dry_run" and self.dry_run)
            gpus.append(
                BudgetGpu(
                    uuid=uuid,
                    power_watts=reading.power_watts,
                    min_watts=self._constraints[uuid].min_watts,
                    ceiling_watts=intent.ceiling_watts,
                    priority=priorities.get(uuid, intent.target.priority if intent.target else 0),
                    controllable=steerable and self._unwritable.get(uuid, 0) <= self._tick,
                )
            )
        self._ramp = budget_in_force(
            self._ramp,
            budget_watts,
            ramp_watts_per_second,
            now,
            math.fsum(g.power_watts for g in gpus),
            math.fsum(g.ceiling_watts if g.controllable else g.power_watts for g in gpus),
        )
        budget_watts = self._ramp.watts
        state = self._budget_state
        if state is None:
            state = self._state_from_devices(gpus)
        decision = enforce(gpus, budget_watts, state, self.budget_params)
        if decision.action == "cut":
            self.stats.budget_cuts += 1
            logger.info("node budget: %s", decision.describe())
        self._budget_state = decision.state
        self.budget = decision
        return decision

    def _state_from_devices(self, gpus: Sequence[BudgetGpu]) -> BudgetState:
        """After a restart, limits wattplane left below a GPU's ceiling are the budget's: keep them.

        Otherwise the first tick would raise every cut GPU at once and the next would cut it again.
        """
        held: dict[str, float] = {}
        for g in gpus:
            reading = self.readings[g.uuid]
            if (
                isinstance(reading, GpuReading)
                and self.journal.get(g.uuid) is not None
                and reading.power_limit_watts < g.ceiling_watts - _WATT_TOLERANCE
            ):
                held[g.uuid] = reading.power_limit_watts
        return BudgetState(limits=held)

    def _act(self, device: GpuDevice, reading: GpuReading, intent: _Intent, budget_limit: float | None) -> GpuOutcome:
        if intent.kind == "refused":
            if not self.dry_run:
                self._restore(device, reading)
            return GpuOutcome(
                state="Error",
                message=intent.note,
                error_reason=intent.reason,
                reason=intent.reason,
            )
        watts = intent.ceiling_watts if budget_limit is None else min(budget_limit, intent.ceiling_watts)
        budget_note = "" if budget_limit is None else f"limited to {watts:g} W by the node budget"
        target_watts = intent.ceiling_watts if intent.target is not None else None
        if intent.kind == "dry_run":
            # A dry-run target gives the GPU back (unless the whole engine is dry: then nothing moves).
            restored = self._would_restore(device, reading) if self.dry_run else self._restore(device, reading)
            text = "; ".join(m for m in (f"dry run: would set {watts:g} W", budget_note, intent.note) if m)
            if restored.message:
                text = f"{text}. {restored.message}"
            return GpuOutcome(
                state="DryRun",
                target_watts=target_watts,
                budget_limit_watts=budget_limit,
                message=text,
                reason="NodeBudget" if budget_limit is not None else intent.reason,
            )
        if intent.kind == "restore" and budget_limit is None:
            return self._restore(device, reading) if not self.dry_run else self._would_restore(device, reading)
        if self.dry_run:  # an untargeted GPU the budget would limit
            return GpuOutcome(
                state="DryRun",
                budget_limit_watts=budget_limit,
                message=f"dry run: would set {watts:g} W; {budget_note}",
                reason="NodeBudget",
            )
        clocks = self._clocks_for(device, reading, intent)
        self._write(device, reading, watts, clocks)
        knobs = self._apply_knobs(device, intent.target)
        return GpuOutcome(
            state="Applied",
            target_watts=target_watts,
            budget_limit_watts=budget_limit,
            message="; ".join(m for m in (budget_note, intent.note, *knobs.notes) if m),
            reason="NodeBudget" if budget_limit is not None else intent.reason,
            workload_profiles=knobs.profiles,
            power_smoothing=knobs.smoothing,
            unsupported=knobs.unsupported,
        )

    # -- optional knobs: workload power profile and power smoothing ---------------------------------

    def _offers(self, device: GpuDevice, knob: Knob) -> bool:
        """Whether to try ``knob`` on this GPU (a backend without the methods never offers it)."""
        if knob in self._unsupported.get(device.identity.uuid, ()):
            return False
        if not isinstance(device, PowerProfileDevice):
            self._mark_unsupported(device, knob, "the GPU's backend has no such control")
            return False
        return True

    def _mark_unsupported(self, device: GpuDevice, knob: Knob, why: object) -> None:
        """Remember a NotSupported answer and say so once; the knob of this GPU is left alone from now."""
        known = self._unsupported.setdefault(device.identity.uuid, set())
        if knob not in known:
            known.add(knob)
            logger.warning(
                "GPU %s (%s) does not support %s (%s); leaving it as it is",
                device.identity.index,
                device.identity.uuid,
                knob,
                why,
            )

    def _prior_now(self, device: GpuDevice, fallback: GpuReading) -> PriorState:
        """The GPU's limit and clocks now, for a journal entry a knob's first write creates."""
        current = self.readings.get(device.identity.uuid)
        return _prior_of(current if isinstance(current, GpuReading) else fallback)

    def _apply_knobs(self, device: GpuDevice, target: GpuTarget | None) -> _Knobs:
        """Bring the knobs to what ``target`` asks, or back to their journaled state when it asks none.

        Read, compare, journal, write only on a difference, read back: the same rules as the limit.
        A knob neither asked for nor journaled is never read or written.
        """
        uuid = device.identity.uuid
        prior = self.journal.get(uuid)
        fallback = self.last_good[uuid]
        wanted_profile = target.workload_profile if target is not None else None
        wanted_smoothing = target.power_smoothing if target is not None else None
        profiles: tuple[str, ...] | None = None
        smoothing: PowerSmoothingState | None = None
        notes: list[str] = []
        asked: list[Knob] = []
        if wanted_profile is not None:
            asked.append("workloadProfile")
        if wanted_smoothing is not None:
            asked.append("powerSmoothing")
        journaled_profiles = prior.workload_profiles if prior is not None else None
        if (wanted_profile is not None or journaled_profiles is not None) and self._offers(device, "workloadProfile"):
            assert isinstance(device, PowerProfileDevice)
            try:
                state = device.workload_profiles()
                goal: frozenset[str] | None = frozenset(journaled_profiles or ())
                if wanted_profile is not None:
                    goal = frozenset({wanted_profile}) if wanted_profile in state.available else None
                    if goal is None:
                        offered = ", ".join(sorted(state.available)) or "none"
                        notes.append(f"workload profile {wanted_profile} not offered by this GPU (offers: {offered})")
                if goal is not None and state.requested != goal:
                    before = tuple(sorted(state.requested))
                    self.journal.remember(uuid, replace(self._prior_now(device, fallback), workload_profiles=before))
                    device.set_requested_workload_profiles(goal)
                    self.stats.writes += 1
                    state = device.workload_profiles()
                profiles = tuple(sorted(state.requested))
            except GpuNotSupportedError as exc:
                self._mark_unsupported(device, "workloadProfile", exc)
        journaled_smoothing = prior.power_smoothing if prior is not None else None
        if (wanted_smoothing is not None or journaled_smoothing is not None) and self._offers(device, "powerSmoothing"):
            assert isinstance(device, PowerProfileDevice)
            try:
                current = device.power_smoothing()
                if wanted_smoothing is not None:
                    aim = PowerSmoothingState(
                        enabled=True,
                        preset_profile=current.preset_profile,
                        ramp_up_watts_per_second=_given(
                            wanted_smoothing.ramp_up_watts_per_second, current.ramp_up_watts_per_second
                        ),
                        ramp_down_watts_per_second=_given(
                            wanted_smoothing.ramp_down_watts_per_second, current.ramp_down_watts_per_second
                        ),
                        floor_percent=_given(wanted_smoothing.floor_percent, current.floor_percent),
                    )
                else:
                    assert journaled_smoothing is not None
                    aim = journaled_smoothing
                if not _same_smoothing(current, aim):
                    self.journal.remember(uuid, replace(self._prior_now(device, fallback), power_smoothing=current))
                    device.set_power_smoothing(aim)
                    self.stats.writes += 1
                    current = device.power_smoothing()
                smoothing = current
            except GpuNotSupportedError as exc:
                self._mark_unsupported(device, "powerSmoothing", exc)
        unsupported = tuple(k for k in asked if k in self._unsupported.get(uuid, ()))
        notes.extend(f"{k} not supported by this GPU; left as it is" for k in unsupported)
        return _Knobs(profiles, smoothing, unsupported, tuple(notes))

    def _restore_knobs(self, device: GpuDevice, prior: PriorState) -> bool:
        """Put journaled knobs back; return whether anything was written."""
        wrote = False
        if prior.workload_profiles is not None and self._offers(device, "workloadProfile"):
            assert isinstance(device, PowerProfileDevice)
            goal = frozenset(prior.workload_profiles)
            try:
                if device.workload_profiles().requested != goal:
                    device.set_requested_workload_profiles(goal)
                    self.stats.writes += 1
                    wrote = True
            except GpuNotSupportedError as exc:
                self._mark_unsupported(device, "workloadProfile", exc)
        if prior.power_smoothing is not None and self._offers(device, "powerSmoothing"):
            assert isinstance(device, PowerProfileDevice)
            try:
                if not _same_smoothing(device.power_smoothing(), prior.power_smoothing):
                    device.set_power_smoothing(prior.power_smoothing)
                    self.stats.writes += 1
                    wrote = True
            except GpuNotSupportedError as exc:
                self._mark_unsupported(device, "powerSmoothing", exc)
        return wrote

    def _clocks_for(self, device: GpuDevice, reading: GpuReading, intent: _Intent) -> tuple[int, int] | None:
        journaled = self.journal.get(device.identity.uuid)
        if intent.locked_clocks_mhz is not None:
            return intent.locked_clocks_mhz
        if journaled is not None:
            return journaled.locked_clocks_mhz  # a lock the plan no longer asks for goes back
        return reading.locked_clocks_mhz  # never touch a lock wattplane did not set

    def _write(self, device: GpuDevice, reading: GpuReading, watts: float, clocks: tuple[int, int] | None) -> None:
        """Journal, then write what differs, then read back; every write goes through here."""
        needs_limit = abs(reading.power_limit_watts - watts) > _WATT_TOLERANCE
        needs_clocks = clocks != reading.locked_clocks_mhz
        if not (needs_limit or needs_clocks):
            return
        started = time.perf_counter()
        self.journal.remember(device.identity.uuid, _prior_of(reading))
        if needs_limit:
            device.set_power_limit_watts(self.constraints_of(device).clamp(watts))
            self.stats.writes += 1
        if needs_clocks:
            if clocks is None:
                device.reset_locked_clocks()
            else:
                device.set_locked_clocks_mhz(*clocks)
            self.stats.writes += 1
        self._unwritable.pop(device.identity.uuid, None)
        self._read(device)
        self.stats.apply_latency.observe(time.perf_counter() - started)

    def _restore(self, device: GpuDevice, reading: GpuReading) -> GpuOutcome:
        uuid = device.identity.uuid
        prior = self.journal.get(uuid)
        if prior is None:
            return GpuOutcome(state="Default")
        watts = self.constraints_of(device).clamp(prior.power_limit_watts)
        started = time.perf_counter()
        wrote = False
        if abs(reading.power_limit_watts - watts) > _WATT_TOLERANCE:
            device.set_power_limit_watts(watts)
            self.stats.writes += 1
            wrote = True
        if reading.locked_clocks_mhz != prior.locked_clocks_mhz:
            if prior.locked_clocks_mhz is not None:
                device.set_locked_clocks_mhz(*prior.locked_clocks_mhz)
            else:
                device.reset_locked_clocks()
            self.stats.writes += 1
            wrote = True
        wrote = self._restore_knobs(device, prior) or wrote
        self.journal.forget(uuid)
        self.stats.restores += 1
        if wrote:
            self._unwritable.pop(uuid, None)
            self._read(device)
            self.stats.apply_latency.observe(time.perf_counter() - started)
        return GpuOutcome(state="Default", message=f"restored prior limit {watts:g} W", reason="Restored")

    def _would_restore(self, device: GpuDevice, reading: GpuReading) -> GpuOutcome:
        prior = self.journal.get(device.identity.uuid)
        if prior is None:
            return GpuOutcome(state="Default")
        watts = self.constraints_of(device).clamp(prior.power_limit_watts)
        if abs(reading.power_limit_watts - watts) <= _WATT_TOLERANCE and reading.locked_clocks_mhz == (
            prior.locked_clocks_mhz
        ):
            return GpuOutcome(state="Default")
        return GpuOutcome(
            state="DryRun", message=f"dry run: would restore prior limit {watts:g} W", reason="RestorePending"
        )

    def _fail(self, device: GpuDevice, exc: GpuError, *, read_failed: bool = False) -> None:
        uuid = device.identity.uuid
        self.stats.errors += 1
        self.stats.errors_by_gpu[(uuid, exc.reason)] += 1
        self.stats.last_errors[uuid] = exc.reason
        logger.warning("GPU %s (%s): %s", device.identity.index, uuid, exc)
        self.outcomes[uuid] = GpuOutcome(
            state="Error",
            message=str(exc) or exc.__class__.__name__,
            error_reason=exc.reason,
            reason=exc.reason,
            read_failed=read_failed,
        )


def _as_gpu_error(exc: Exception, device: GpuDevice) -> GpuError:
    """A backend's exception as the GPU error it reports (anything untyped is a driver error)."""
    if isinstance(exc, GpuError):
        return exc
    logger.error("GPU %s: unexpected %r from the backend", device.identity.uuid, exc, exc_info=exc)
    return GpuDriverError(f"unexpected {exc.__class__.__name__} from the backend: {exc}")


def _clamp_clocks(asked: tuple[int, int], supported: tuple[int, int] | None) -> tuple[int, int]:
    """``asked`` forced into ``supported`` bound by bound (a range beyond the top locks at the top)."""
    if supported is None:
        return asked
    low, high = supported
    return (min(high, max(low, asked[0])), min(high, max(low, asked[1])))


def _given(asked: float | None, current: float | None) -> float | None:
    """The value a policy asks for, or the device's own when the policy leaves it open."""
    return current if asked is None else float(asked)


def _same_smoothing(current: PowerSmoothingState, aim: PowerSmoothingState) -> bool:
    """Whether ``current`` already is ``aim`` (a parameter ``aim`` leaves open matches anything)."""
    if current.enabled != aim.enabled or current.preset_profile != aim.preset_profile:
        return False
    pairs = (
        (current.ramp_up_watts_per_second, aim.ramp_up_watts_per_second),
        (current.ramp_down_watts_per_second, aim.ramp_down_watts_per_second),
        (current.floor_percent, aim.floor_percent),
    )
    return all(want is None or (have is not None and abs(have - want) <= _SMOOTHING_TOLERANCE) for have, want in pairs)


def _prior_of(reading: GpuReading) -> PriorState:
    return PriorState(power_limit_watts=reading.power_limit_watts, locked_clocks_mhz=reading.locked_clocks_mhz)


def plan_expired(issued_at: datetime | None, ttl_seconds: int, now: datetime) -> bool:
    """Whether a plan issued at ``issued_at`` has outlived its TTL (no issue time: never expires)."""
    return issued_at is not None and now > issued_at + timedelta(seconds=ttl_seconds)


PodAssignment = Mapping[str, Sequence[PodRef]]
"""GPU UUID → pods (several when a GPU is time-sliced)."""
