"""Simulated GPUs behind the same protocol as NVML, for tests, demos and clusters without GPUs.

A simulated board behaves like the real thing where the agent can tell the difference:

* **Device state outlives the process.** A power limit set through NVML stays in force after the
  setting process exits; so the simulator keeps its device state (limits, locked clocks, energy and
  progress counters, write counts, workload) in a state file, and an agent restarted on the same node
  finds the GPUs as it left them.
* **Constraints and errors are NVML's, per model.** Limits outside ``[min, max]`` are refused with
  :class:`GpuInvalidArgumentError`; boards older than Volta refuse locked clocks with
  :class:`GpuNotSupportedError`; faults (no permission, GPU lost, ...) can be injected per device,
  in-process or, for an agent running as its own process, through a faults file
  (:mod:`wattplane.agent.gpu.simfaults`).
* **Power and speed follow measured curves.** Each board runs a workload from
  :mod:`wattplane.agent.gpu.simmodels` (Zeus power-limit sweeps, ML.ENERGY inference, and the documented
  extrapolations for boards never swept). Its draw is the curve's power at the effective limit and its
  progress counter advances at the curve's rate; ``load`` scales both (a duty cycle for training, a point
  on the load sweep for inference).
* **Locked clocks act as a second limit (R5).** A lock whose top is a fraction ``phi`` of the way from
  the model's lowest to its highest SM clock caps the board like a power limit at
  ``idle + phi * (top - idle)``, where ``top`` is the running curve's highest knot (its uncapped
  region); the tighter of the two limits applies. The reported SM clock maps back the same way. No public
  clock sweep was found to calibrate this; it only keeps clocks and power consistent and monotonic.
* **Workload power profiles and power smoothing are modelled, not measured.** No public trace shows
  what a profile does to power, so the figures are the simulator's own: ``MaxQ`` caps the board like a
  power limit at :data:`MAXQ_LIMIT_FRACTION` of its current limit (NVML describes Max-Q as the
  efficiency end of the trade-off), every other profile leaves power as it is. Power smoothing (NVML:
  Blackwell and newer; the simulated B200) moves the reported and integrated draw towards the curve's
  draw by at most the preset's ramp rates (W/s) per second of clock, and never below the floor (a
  percentage of the board's maximum limit, standing in for total module power). Models without the
  feature answer :class:`GpuNotSupportedError`, as NVML does.
* **Counters are monotonic and deterministic.** Energy and progress integrate over the injected clock,
  downtime included. Optional measurement noise on the reported power (``noise_ratio``, off by default)
  is a function of the seed, the board and the whole second, so a run is reproducible; the energy counter
  integrates the noiseless draw, as the board's own counter would.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from wattplane.agent.gpu.base import (
    GpuBackendInfo,
    GpuIdentity,
    GpuReading,
    PowerConstraints,
    PowerSmoothingState,
    WorkloadProfileState,
)
from wattplane.agent.gpu.errors import GpuError, GpuInvalidArgumentError, GpuNotSupportedError
from wattplane.agent.gpu.simfaults import FaultsFile, InjectedFault
from wattplane.agent.gpu.simmodels import Catalog, ModelWorkloads, SimGpuModel, catalog_with
from wattplane.agent.gpu.workloads import LimitCurve, Workload

logger = logging.getLogger(__name__)

_UUID_NAMESPACE = uuidlib.UUID("6b1b3c64-6f2a-4f3e-9b1e-77617474706c")


def simulated_gpu_uuid(node_name: str, index: int) -> str:
    """The UUID of simulated GPU ``index`` of ``node_name``: stable across restarts, unique per node.

    A device plugin advertising simulated GPUs to a real kubelet uses these as its device IDs, so
    the kubelet's PodResources API names the same GPUs the sim backend manages.
    """
    return "GPU-" + str(uuidlib.uuid5(_UUID_NAMESPACE, f"{node_name}/{index}"))


#: How often (in clock seconds) a read persists the advancing counters.
_PERSIST_EVERY_S = 5.0
#: NVML clock-event reasons the simulator reports.
_IDLE, _SW_POWER_CAP = 0x1, 0x4
#: Modelled: the share of the current power limit a board runs at under the ``MaxQ`` profile.
MAXQ_LIMIT_FRACTION = 0.8
#: Modelled preset values of a simulated board's power smoothing before anyone changes them.
_DEFAULT_RAMP_WATTS_PER_SECOND = 5000.0


@dataclass
class _DeviceState:
    """The mutable state a real GPU keeps in its driver, serialisable to the state file."""

    power_limit_watts: float
    locked_clocks_mhz: tuple[int, int] | None = None
    energy_joules: float = 0.0
    last_time: float = 0.0
    load: float = 0.0
    power_limit_writes: int = 0
    clock_writes: int = 0
    #: Workload name; ``None`` runs the model's default workload.
    workload: str | None = None
    #: Units of work done by the current workload (epochs, or thousands of output tokens).
    progress_units: float = 0.0
    #: Relative speed of this board on its workload (below 1: a straggler).
    speed_ratio: float = 1.0
    #: Requested workload power profiles (wattplane's names).
    workload_profiles: tuple[str, ...] = ()
    smoothing_enabled: bool = False
    smoothing_ramp_up: float = _DEFAULT_RAMP_WATTS_PER_SECOND
    smoothing_ramp_down: float = _DEFAULT_RAMP_WATTS_PER_SECOND
    smoothing_floor_percent: float = 0.0
    #: The smoothed draw at ``last_time`` (``None``: smoothing off, the draw is the curve's).
    smoothed_watts: float | None = None
    profile_writes: int = 0
    smoothing_writes: int = 0


@dataclass(frozen=True)
class _Operating:
    """What the board is doing now: its curve, duty cycle and effective limit (derived, never stored)."""

    curve: LimitCurve
    duty: float
    effective_limit: float
    clock_limit: float


@dataclass
class SimulatedGpu:
    """One simulated board. Thread-safe: the agent may read and write from different tasks."""

    identity_: GpuIdentity
    model: SimGpuModel
    state: _DeviceState
    clock: Callable[[], float]
    on_change: Callable[[], None]
    workloads: ModelWorkloads
    faults: dict[str, GpuError] = field(default_factory=dict)
    #: Faults injected from outside the process (the backend's faults file), looked up per call.
    external_faults: Callable[[], Mapping[str, InjectedFault]] | None = None
    noise_ratio: float = 0.0
    seed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _cache: dict[tuple[str | None, float], tuple[LimitCurve, float]] = field(default_factory=dict, repr=False)

    @property
    def identity(self) -> GpuIdentity:
        """Index, UUID and model name."""
        return self.identity_

    @property
    def power_limit_writes(self) -> int:
        """How many times the power limit was actually written (idempotence checks)."""
        return self.state.power_limit_writes

    @property
    def workload(self) -> Workload:
        """The workload this board runs (its model's default unless one was set)."""
        name = self.model.default_workload if self.state.workload is None else self.state.workload
        return self.workloads.resolve(name)

    def constraints(self) -> PowerConstraints:
        """The model's limit range and default."""
        self._fail_if_faulty("constraints")
        return PowerConstraints(self.model.min_watts, self.model.max_watts, self.model.default_watts)

    def inject_fault(self, operation: str, error: GpuError | None) -> None:
        """Make ``operation`` fail (``read``, ``set_power_limit``, ``constraints``, ``clocks``, ...).

        ``profiles`` and ``smoothing`` fail the workload-profile and power-smoothing calls.
        """
        if error is None:
            self.faults.pop(operation, None)
        else:
            self.faults[operation] = error

    def set_load(self, load: float) -> None:
        """Set how hard the board works on its workload, in ``[0, 1]`` (0 = idle; clipped)."""
        with self._lock:
            self._advance()
            before = self.state.load
            self.state.load = min(1.0, max(0.0, load))
        if self.state.load != before:
            self.on_change()  # persisted, or a restart would integrate energy at the old draw

    def set_workload(self, name: str | None) -> None:
        """Run workload ``name`` (``None``: the model's default). A different workload restarts progress.

        Raises:
            KeyError: The model has no workload of that name (the message lists some known ones).
        """
        if name is not None:
            self.workloads.resolve(name)
        with self._lock:
            self._advance()
            if name == self.state.workload:
                return
            self.state.workload = name
            self.state.progress_units = 0.0
        self.on_change()

    def set_speed_ratio(self, ratio: float) -> None:
        """Make this board ``ratio`` times as fast on its workload as the curve says (a straggler < 1)."""
        if not 0 < ratio <= 10:
            raise ValueError(f"speed ratio must be in (0, 10], got {ratio}")
        with self._lock:
            self._advance()
            self.state.speed_ratio = float(ratio)
        self.on_change()

    def progress_units(self) -> float:
        """Work done on the current workload so far (epochs, or thousands of output tokens); monotonic."""
        with self._lock:
            self._advance()
            return self.state.progress_units

    def power_watts(self) -> float:
        """Instantaneous (noiseless) draw under the current workload, load, limit and clock lock."""
        operating = self._operating()
        idle = self.model.idle_watts
        if operating is None:
            return idle
        return idle + operating.duty * (operating.curve.power(operating.effective_limit) - idle)

    def read(self) -> GpuReading:
        """Sample the device, advancing the energy and progress counters to now."""
        self._fail_if_faulty("read")
        with self._lock:
            persist = self._advance()
            operating = self._operating()
            power = self.power_watts() if self.state.smoothed_watts is None else self.state.smoothed_watts
            limit = self.state.power_limit_watts
            reading = GpuReading(
                power_watts=self._measured(power),
                energy_joules=self.state.energy_joules,
                power_limit_watts=limit,
                enforced_power_limit_watts=limit,
                sm_clock_mhz=self._sm_clock_mhz(operating),
                utilization_ratio=self.state.load,
                temperature_celsius=self.model.temperature_celsius(power),
                throttle_reasons=_IDLE if operating is None else self._throttle_reasons(operating),
                locked_clocks_mhz=self.state.locked_clocks_mhz,
            )
        if persist:
            self.on_change()
        return reading

    def set_power_limit_watts(self, watts: float) -> None:
        """Set the limit; refused outside the constraints, exactly like NVML."""
        self._fail_if_faulty("set_power_limit")
        if not (self.model.min_watts <= watts <= self.model.max_watts):
            raise GpuInvalidArgumentError(
                f"power limit {watts:g} W outside [{self.model.min_watts:g}, {self.model.max_watts:g}] W"
            )
        with self._lock:
            self._advance()
            self.state.power_limit_watts = float(round(watts * 1000.0) / 1000.0)
            self.state.power_limit_writes += 1
        self.on_change()

    def locked_clock_range_mhz(self) -> tuple[int, int] | None:
        """The model's SM clock range; ``None`` on boards that cannot lock clocks (they refuse any lock)."""
        if not self.model.supports_locked_clocks:
            return None
        return (self.model.min_sm_clock_mhz, self.model.max_sm_clock_mhz)

    def set_locked_clocks_mhz(self, min_mhz: int, max_mhz: int) -> None:
        """Lock the SM clock into a range the model supports (Volta and newer)."""
        self._fail_if_faulty("clocks")
        if not self.model.supports_locked_clocks:
            raise GpuNotSupportedError(f"{self.model.name} does not support locked clocks (Volta or newer needed)")
        lo, hi = self.model.min_sm_clock_mhz, self.model.max_sm_clock_mhz
        if not (lo <= min_mhz <= max_mhz <= hi):
            raise GpuInvalidArgumentError(f"clock range {min_mhz}-{max_mhz} MHz outside {lo}-{hi} MHz")
        with self._lock:
            self._advance()
            self.state.locked_clocks_mhz = (int(min_mhz), int(max_mhz))
            self.state.clock_writes += 1
        self.on_change()

    def reset_locked_clocks(self) -> None:
        """Unlock the SM clock."""
        self._fail_if_faulty("clocks")
        if not self.model.supports_locked_clocks:
            raise GpuNotSupportedError(f"{self.model.name} does not support locked clocks (Volta or newer needed)")
        with self._lock:
            self._advance()
            if self.state.locked_clocks_mhz is not None:
                self.state.locked_clocks_mhz = None
                self.state.clock_writes += 1
        self.on_change()

    # -- optional knobs (PowerProfileDevice) ---------------------------------------------------------

    def workload_profiles(self) -> WorkloadProfileState:
        """The model's profiles and the requested ones (all enforced: no arbitration is modelled)."""
        self._fail_if_faulty("profiles")
        if not self.model.workload_profiles:
            raise GpuNotSupportedError(f"{self.model.name} has no workload power profiles")
        requested = frozenset(self.state.workload_profiles)
        return WorkloadProfileState(frozenset(self.model.workload_profiles), requested, requested)

    def set_requested_workload_profiles(self, profiles: frozenset[str]) -> None:
        """Request exactly ``profiles``; one the model does not offer is refused like a bad argument."""
        self._fail_if_faulty("profiles")
        if not self.model.workload_profiles:
            raise GpuNotSupportedError(f"{self.model.name} has no workload power profiles")
        unknown = sorted(profiles - set(self.model.workload_profiles))
        if unknown:
            raise GpuInvalidArgumentError(f"{self.model.name} does not offer profile(s) {', '.join(unknown)}")
        with self._lock:
            self._advance()
            self.state.workload_profiles = tuple(sorted(profiles))
            self.state.profile_writes += 1
        self.on_change()

    def power_smoothing(self) -> PowerSmoothingState:
        """The one modelled preset (0) and its parameters."""
        self._fail_if_faulty("smoothing")
        if not self.model.supports_power_smoothing:
            raise GpuNotSupportedError(f"{self.model.name} has no power smoothing (Blackwell or newer)")
        st = self.state
        return PowerSmoothingState(
            enabled=st.smoothing_enabled,
            preset_profile=0,
            ramp_up_watts_per_second=st.smoothing_ramp_up,
            ramp_down_watts_per_second=st.smoothing_ramp_down,
            floor_percent=st.smoothing_floor_percent,
        )

    def set_power_smoothing(self, state: PowerSmoothingState) -> None:
        """Set the preset's given parameters and switch smoothing on or off (preset 0 only)."""
        self._fail_if_faulty("smoothing")
        if not self.model.supports_power_smoothing:
            raise GpuNotSupportedError(f"{self.model.name} has no power smoothing (Blackwell or newer)")
        if state.preset_profile != 0:
            raise GpuInvalidArgumentError(f"preset {state.preset_profile} does not exist (the simulator has preset 0)")
        if state.floor_percent is not None and not 0.0 <= state.floor_percent <= 100.0:
            raise GpuInvalidArgumentError(f"power floor {state.floor_percent}% outside 0-100%")
        with self._lock:
            self._advance()
            st = self.state
            if state.ramp_up_watts_per_second is not None:
                st.smoothing_ramp_up = float(state.ramp_up_watts_per_second)
            if state.ramp_down_watts_per_second is not None:
                st.smoothing_ramp_down = float(state.ramp_down_watts_per_second)
            if state.floor_percent is not None:
                st.smoothing_floor_percent = float(state.floor_percent)
            st.smoothing_enabled = state.enabled
            st.smoothed_watts = self.power_watts() if state.enabled else None
            st.smoothing_writes += 1
        self.on_change()

    # -- model ---------------------------------------------------------------------------------------

    def _operating(self) -> _Operating | None:
        """The curve, duty and effective limit now; ``None`` for an idle board."""
        load = self.state.load
        if load <= 0:
            return None
        key = (self.state.workload, load)
        point = self._cache.get(key)
        if point is None:
            point = self.workload.operating_point(load)
            self._cache.clear()  # one entry: the load rarely changes, and never needs the old one back
            self._cache[key] = point
        curve, duty = point
        clock_limit = self._clock_limit(curve)
        limit = self.state.power_limit_watts
        if "MaxQ" in self.state.workload_profiles:
            limit = max(self.model.min_watts, MAXQ_LIMIT_FRACTION * limit)  # modelled, see the module docstring
        return _Operating(curve, duty, min(limit, clock_limit), clock_limit)

    def _clock_limit(self, curve: LimitCurve) -> float:
        """R5: the power limit equivalent to the clock lock (infinite when unlocked)."""
        locked = self.state.locked_clocks_mhz
        if locked is None:
            return float("inf")
        idle = self.model.idle_watts
        return idle + self._clock_fraction(locked[1]) * max(0.0, curve.top_limit - idle)

    def _clock_fraction(self, mhz: float) -> float:
        lo, hi = self.model.min_sm_clock_mhz, self.model.max_sm_clock_mhz
        return min(1.0, max(0.0, (mhz - lo) / (hi - lo)))

    def _sm_clock_mhz(self, operating: _Operating | None) -> int:
        """The clock the board settles at: R5 read backwards (lowest clock when idle)."""
        lo, hi = self.model.min_sm_clock_mhz, self.model.max_sm_clock_mhz
        if operating is None:
            return lo
        idle, top = self.model.idle_watts, operating.curve.top_limit
        fraction = 1.0 if top <= idle else min(1.0, max(0.0, (operating.effective_limit - idle) / (top - idle)))
        return round(lo + fraction * (hi - lo))

    def _throttle_reasons(self, operating: _Operating) -> int:
        """``SwPowerCap`` while the power limit is below the curve's uncapped region and is the tighter one."""
        limit = self.state.power_limit_watts
        return _SW_POWER_CAP if limit < operating.curve.top_limit and limit <= operating.clock_limit else 0

    def _measured(self, power: float) -> float:
        """The reported power: the true draw, plus seeded noise when ``noise_ratio`` is set."""
        if self.noise_ratio <= 0:
            return power
        rng = random.Random(f"{self.seed}/{self.identity_.uuid}/{int(self.clock())}")
        return max(0.0, power * (1.0 + self.noise_ratio * max(-3.0, min(3.0, rng.gauss(0.0, 1.0)))))

    def _advance(self) -> bool:
        """Integrate energy and progress up to now; return whether enough time passed to persist."""
        now = self.clock()
        dt = now - self.state.last_time
        if dt <= 0:
            return False
        self.state.energy_joules += self._smoothed(self.power_watts(), dt) * dt
        operating = self._operating()
        if operating is not None:
            rate = operating.curve.rate(operating.effective_limit)
            self.state.progress_units += operating.duty * rate * self.state.speed_ratio * dt
        before = self.state.last_time
        self.state.last_time = now
        return int(now // _PERSIST_EVERY_S) != int(before // _PERSIST_EVERY_S)

    def _smoothed(self, drawn: float, dt: float) -> float:
        """The draw after ``dt`` seconds of smoothing towards ``drawn`` (``drawn`` itself when off)."""
        st = self.state
        if not st.smoothing_enabled:
            st.smoothed_watts = None
            return drawn
        last = drawn if st.smoothed_watts is None else st.smoothed_watts
        moved = min(last + st.smoothing_ramp_up * dt, max(last - st.smoothing_ramp_down * dt, drawn))
        st.smoothed_watts = max(moved, st.smoothing_floor_percent / 100.0 * self.model.max_watts)
        return st.smoothed_watts

    def _fail_if_faulty(self, operation: str) -> None:
        if self.external_faults is not None:
            injected = self.external_faults().get(operation)
            if injected is not None:
                if injected.delay_s > 0:
                    time.sleep(injected.delay_s)  # a hung driver call blocks its caller, so this does too
                injected.raise_error(operation)
        error = self.faults.get(operation)
        if error is not None:
            raise error


class SimulatedBackend:
    """A node's worth of simulated GPUs of one model, optionally persisted in ``state_file``.

    Args:
        node_name: Seeds the boards' UUIDs, so a node's GPUs keep their identity across restarts.
        gpu_count: Number of boards.
        model: GPU model name (built in: A40, V100, P100, H100, B200; more from ``profiles``).
        state_file: Where device state persists; ``None`` keeps it in memory.
        clock: Seconds, injected so tests and virtual-time simulations drive it.
        workload: What fresh boards run (``None``: the model's default); persisted boards keep theirs.
        profiles: Zeus-format power traces adding models or workloads (``path`` or ``MODEL=path``; see
            :meth:`wattplane.agent.gpu.simmodels.Catalog.with_profiles`).
        noise_ratio: Relative standard deviation of noise on reported power (0: none).
        seed: Seeds that noise.
        catalog: Models and workloads to use instead of the built-in ones plus ``profiles``.
        faults_file: JSON file of injected faults, re-read when it changes
            (:mod:`wattplane.agent.gpu.simfaults`); ``None``: only in-process :meth:`SimulatedGpu.inject_fault`.

    Raises:
        KeyError: Unknown model or workload.
        ProfileError: A profile file that cannot be read or parsed.
    """

    def __init__(
        self,
        *,
        node_name: str,
        gpu_count: int = 4,
        model: str = "A40",
        state_file: Path | None = None,
        clock: Callable[[], float] = time.time,
        workload: str | None = None,
        profiles: Sequence[str | Path] = (),
        noise_ratio: float = 0.0,
        seed: int = 0,
        catalog: Catalog | None = None,
        faults_file: Path | None = None,
    ) -> None:
        self._node = node_name
        self._state_file = state_file
        self._clock = clock
        self._write_lock = threading.Lock()
        self.catalog = catalog if catalog is not None else catalog_with(profiles)
        spec = self.catalog.model(model)
        workloads = self.catalog.workloads[spec.name]
        if workload is not None:
            workloads.resolve(workload)
        saved = self._load()
        faults = None if faults_file is None else FaultsFile(faults_file)
        self._devices: list[SimulatedGpu] = []
        for index in range(gpu_count):
            gpu_uuid = simulated_gpu_uuid(node_name, index)
            state = saved.get(gpu_uuid) or _DeviceState(
                power_limit_watts=spec.default_watts, last_time=clock(), workload=workload
            )
            if state.workload is not None and state.workload not in {*workloads.aliases, *workloads.workloads}:
                logger.warning(
                    "simulated GPU %s ran workload %r, which is no longer defined; it now runs %s",
                    gpu_uuid,
                    state.workload,
                    spec.default_workload,
                )
                state.workload, state.progress_units = None, 0.0
            identity = GpuIdentity(
                index=index,
                uuid=gpu_uuid,
                model=spec.name,
                pci_bus_id=f"00000000:{0x17 + index:02X}:00.0",
                vendor="simulated",
            )
            self._devices.append(
                SimulatedGpu(
                    identity_=identity,
                    model=spec,
                    state=state,
                    clock=clock,
                    on_change=self._save,
                    external_faults=None if faults is None else _lookup(faults, index, gpu_uuid),
                    workloads=workloads,
                    noise_ratio=noise_ratio,
                    seed=seed,
                )
            )
        self._save()

    @property
    def info(self) -> GpuBackendInfo:
        """Backend description for status."""
        return GpuBackendInfo(name="sim", driver_version="simulated", details={"node": self._node})

    def devices(self) -> Sequence[SimulatedGpu]:
        """The simulated boards, by index."""
        return list(self._devices)

    def close(self) -> None:
        """Persist the final device state."""
        for device in self._devices:
            with device._lock:
                device._advance()
        self._save()

    def _load(self) -> dict[str, _DeviceState]:
        if self._state_file is None or not self._state_file.exists():
            return {}
        raw = json.loads(self._state_file.read_text())
        known = {f.name for f in fields(_DeviceState)}
        states: dict[str, _DeviceState] = {}
        for gpu_uuid, values in raw.get("devices", {}).items():
            clocks = values.get("locked_clocks_mhz")
            values["locked_clocks_mhz"] = tuple(clocks) if clocks else None
            values["workload_profiles"] = tuple(values.get("workload_profiles", ()))
            states[gpu_uuid] = _DeviceState(**{k: v for k, v in values.items() if k in known})
        return states

    def _save(self) -> None:
        if self._state_file is None:
            return
        with self._write_lock:
            payload = {
                "node": self._node,
                "devices": {d.identity.uuid: asdict(d.state) for d in self._devices},
            }
            tmp = self._state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(payload, indent=1))
            os.replace(tmp, self._state_file)


def _lookup(faults: FaultsFile, index: int, gpu_uuid: str) -> Callable[[], Mapping[str, InjectedFault]]:
    """The faults file's entries for one GPU, as that GPU's ``external_faults``."""
    return lambda: faults.faults_of(index, gpu_uuid)


def read_state_file(path: Path) -> dict[str, dict[str, object]]:
    """Device states from a simulator state file (for tests and the demo's report)."""
    devices: dict[str, dict[str, object]] = json.loads(path.read_text())["devices"]
    return devices
