"""Simulated GPUs behind the same protocol as NVML, for tests, demos and clusters without GPUs.

A simulated board behaves like the real thing where the agent can tell the difference:

* **Device state outlives the process.** A power limit set through NVML stays in force after the
  setting process exits; so the simulator keeps its device state (limits, locked clocks, energy
  counter, write counts) in a state file, and an agent restarted on the same node finds the GPUs as
  it left them.
* **Constraints and errors are NVML's.** Limits outside ``[min, max]`` are refused with
  :class:`GpuInvalidArgumentError`; faults (no permission, GPU lost, ...) can be injected per device.
* **Energy is monotonic**: the counter integrates power over the (injected) clock, downtime included.

Power draw follows a deliberately simple model: a GPU running work at load ``u`` would draw
``idle + u * (default - idle)`` uncapped; the power limit caps it. The model is kept in
:mod:`wattplane.agent.gpu.simmodels` so calibrated curves can replace it in one place.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from wattplane.agent.gpu.base import (
    GpuBackendInfo,
    GpuIdentity,
    GpuReading,
    PowerConstraints,
)
from wattplane.agent.gpu.errors import GpuError, GpuInvalidArgumentError
from wattplane.agent.gpu.simmodels import SimGpuModel, model_by_name

_UUID_NAMESPACE = uuidlib.UUID("6b1b3c64-6f2a-4f3e-9b1e-77617474706c")
#: How often (in clock seconds) a read persists the advancing energy counter.
_PERSIST_EVERY_S = 5.0


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


@dataclass
class SimulatedGpu:
    """One simulated board. Thread-safe: the agent may read and write from different tasks."""

    identity_: GpuIdentity
    model: SimGpuModel
    state: _DeviceState
    clock: Callable[[], float]
    on_change: Callable[[], None]
    faults: dict[str, GpuError] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def identity(self) -> GpuIdentity:
        """Index, UUID and model name."""
        return self.identity_

    @property
    def power_limit_writes(self) -> int:
        """How many times the power limit was actually written (idempotence checks)."""
        return self.state.power_limit_writes

    def constraints(self) -> PowerConstraints:
        """The model's limit range and default."""
        self._fail_if_faulty("constraints")
        return PowerConstraints(self.model.min_watts, self.model.max_watts, self.model.default_watts)

    def inject_fault(self, operation: str, error: GpuError | None) -> None:
        """Make ``operation`` (``read``, ``set_power_limit``, ``constraints``, ``clocks``) fail."""
        if error is None:
            self.faults.pop(operation, None)
        else:
            self.faults[operation] = error

    def set_load(self, load: float) -> None:
        """Set the work the GPU is running, as a fraction of its uncapped demand (0 = idle)."""
        with self._lock:
            self._advance()
            before = self.state.load
            self.state.load = min(1.0, max(0.0, load))
        if self.state.load != before:
            self.on_change()  # persisted, or a restart would integrate energy at the old draw

    def power_watts(self) -> float:
        """Instantaneous draw under the current load, limit and clock lock."""
        return self.model.power_watts(
            load=self.state.load,
            limit_watts=self.state.power_limit_watts,
            locked_clocks_mhz=self.state.locked_clocks_mhz,
        )

    def read(self) -> GpuReading:
        """Sample the device, advancing the energy counter to now."""
        self._fail_if_faulty("read")
        with self._lock:
            persist = self._advance()
            power = self.power_watts()
            reading = GpuReading(
                power_watts=power,
                energy_joules=self.state.energy_joules,
                power_limit_watts=self.state.power_limit_watts,
                enforced_power_limit_watts=self.state.power_limit_watts,
                sm_clock_mhz=self.model.sm_clock_mhz(
                    load=self.state.load,
                    limit_watts=self.state.power_limit_watts,
                    locked_clocks_mhz=self.state.locked_clocks_mhz,
                ),
                utilization_ratio=self.state.load,
                temperature_celsius=self.model.temperature_celsius(power),
                throttle_reasons=self.model.throttle_reasons(
                    load=self.state.load, limit_watts=self.state.power_limit_watts
                ),
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

    def set_locked_clocks_mhz(self, min_mhz: int, max_mhz: int) -> None:
        """Lock the SM clock into a range the model supports."""
        self._fail_if_faulty("clocks")
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
        with self._lock:
            self._advance()
            if self.state.locked_clocks_mhz is not None:
                self.state.locked_clocks_mhz = None
                self.state.clock_writes += 1
        self.on_change()

    def _advance(self) -> bool:
        """Integrate energy up to now; return whether enough time passed to persist."""
        now = self.clock()
        dt = now - self.state.last_time
        if dt <= 0:
            return False
        self.state.energy_joules += self.power_watts() * dt
        before = self.state.last_time
        self.state.last_time = now
        return int(now // _PERSIST_EVERY_S) != int(before // _PERSIST_EVERY_S)

    def _fail_if_faulty(self, operation: str) -> None:
        error = self.faults.get(operation)
        if error is not None:
            raise error


class SimulatedBackend:
    """A node's worth of simulated GPUs, optionally persisted in ``state_file``."""

    def __init__(
        self,
        *,
        node_name: str,
        gpu_count: int = 4,
        model: str = "A40",
        state_file: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._node = node_name
        self._state_file = state_file
        self._clock = clock
        self._write_lock = threading.Lock()
        spec = model_by_name(model)
        saved = self._load()
        self._devices: list[SimulatedGpu] = []
        for index in range(gpu_count):
            gpu_uuid = "GPU-" + str(uuidlib.uuid5(_UUID_NAMESPACE, f"{node_name}/{index}"))
            state = saved.get(gpu_uuid) or _DeviceState(power_limit_watts=spec.default_watts, last_time=clock())
            identity = GpuIdentity(
                index=index,
                uuid=gpu_uuid,
                model=spec.name,
                pci_bus_id=f"00000000:{0x17 + index:02X}:00.0",
            )
            self._devices.append(
                SimulatedGpu(identity_=identity, model=spec, state=state, clock=clock, on_change=self._save)
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
        states: dict[str, _DeviceState] = {}
        for gpu_uuid, values in raw.get("devices", {}).items():
            clocks = values.get("locked_clocks_mhz")
            values["locked_clocks_mhz"] = tuple(clocks) if clocks else None
            states[gpu_uuid] = _DeviceState(**values)
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


def read_state_file(path: Path) -> dict[str, dict[str, object]]:
    """Device states from a simulator state file (for tests and the demo's report)."""
    devices: dict[str, dict[str, object]] = json.loads(path.read_text())["devices"]
    return devices
