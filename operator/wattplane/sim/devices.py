"""Virtual GPUs behind the agent's :class:`~wattplane.agent.gpu.base.GpuDevice` protocol.

The real :class:`~wattplane.agent.engine.NodeEngine` drives these exactly as it drives NVML boards:
it reads them, journals their prior limit, writes clamped limits and reads back. What a board draws is
decided by the simulator (:mod:`wattplane.sim.physics`) from the workload curve at the limit in force;
the board itself only keeps the limit, an exact energy counter and NVML's refusal of out-of-range limits.

Power is piecewise constant in virtual time, so the energy counter is exact: ``energy(t) = E0 + P·(t − t0)``
with ``(E0, t0)`` moved forward whenever the power changes. Locked clocks are stored and reported; a
change of lock tells the simulator like a limit change does. They change the draw of LLM services only
(:mod:`wattplane.sim.llm` models clock locks); the Zeus curves are power-limit sweeps and ignore them.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Callable, Sequence

from wattplane.agent.gpu.base import GpuBackendInfo, GpuIdentity, GpuReading, PowerConstraints
from wattplane.agent.gpu.errors import GpuInvalidArgumentError
from wattplane.sim.catalog import GpuModel

_UUID_NAMESPACE = uuidlib.UUID("0f4d7f52-3a43-4cd3-b8a5-76697274756c")
#: NVML clock-event bits: idle, software power cap.
_IDLE, _SW_POWER_CAP = 0x1, 0x4


class SimGpu:
    """One virtual board. ``clock`` returns the simulation's virtual time in seconds."""

    __slots__ = (
        "_energy",
        "_identity",
        "_since",
        "busy",
        "capped",
        "clock",
        "constraints_",
        "job",
        "limit",
        "locked_clocks",
        "model",
        "node_index",
        "on_limit_change",
        "power",
        "writes",
    )

    def __init__(
        self,
        identity: GpuIdentity,
        model: GpuModel,
        node_index: int,
        clock: Callable[[], float],
        on_limit_change: Callable[[SimGpu], None],
    ) -> None:
        self._identity = identity
        self.model = model
        self.node_index = node_index
        self.clock = clock
        self.on_limit_change = on_limit_change
        self.constraints_ = PowerConstraints(model.min_watts, model.max_watts, model.default_watts)
        self.limit = model.default_watts
        self.locked_clocks: tuple[int, int] | None = None
        self.power = model.idle_watts
        self.busy = 0.0
        #: Whether the limit holds the board below what it would draw uncapped (NVML's SwPowerCap).
        self.capped = False
        self.job: object | None = None
        self.writes = 0
        self._energy = 0.0
        self._since = 0.0

    @property
    def identity(self) -> GpuIdentity:
        """Index, UUID and model."""
        return self._identity

    def constraints(self) -> PowerConstraints:
        """The model's limit range and default."""
        return self.constraints_

    def energy_at(self, t: float) -> float:
        """Energy counter at virtual time ``t`` (not before the last power change), joules."""
        return self._energy + self.power * (t - self._since)

    def set_power(self, watts: float, busy: float, capped: bool, t: float) -> None:
        """Change the draw from virtual time ``t`` on (the simulator's physics calls this)."""
        self._energy += self.power * (t - self._since)
        self._since = t
        self.power = watts
        self.busy = busy
        self.capped = capped

    def read(self) -> GpuReading:
        """Sample the board now."""
        return GpuReading(
            power_watts=self.power,
            energy_joules=self.energy_at(self.clock()),
            power_limit_watts=self.limit,
            enforced_power_limit_watts=self.limit,
            utilization_ratio=self.busy,
            throttle_reasons=(_SW_POWER_CAP if self.capped else 0) if self.busy > 0 else _IDLE,
            locked_clocks_mhz=self.locked_clocks,
        )

    def set_power_limit_watts(self, watts: float) -> None:
        """Set the limit; refused outside the constraints, exactly like NVML."""
        c = self.constraints_
        if not (c.min_watts <= watts <= c.max_watts):
            raise GpuInvalidArgumentError(f"power limit {watts:g} W outside [{c.min_watts:g}, {c.max_watts:g}] W")
        self.limit = round(watts * 1000.0) / 1000.0  # NVML keeps integer milliwatts
        self.writes += 1
        self.on_limit_change(self)

    def locked_clock_range_mhz(self) -> tuple[int, int] | None:
        """The model's SM clock range (the engine clamps locks into it)."""
        return (self.model.min_sm_clock_mhz, self.model.max_sm_clock_mhz)

    def set_locked_clocks_mhz(self, min_mhz: int, max_mhz: int) -> None:
        """Lock the SM clocks; refused outside the model's range, like a device."""
        if not (0 < min_mhz <= max_mhz):
            raise GpuInvalidArgumentError(f"clock range {min_mhz}-{max_mhz} MHz is not a range")
        low, high = self.model.min_sm_clock_mhz, self.model.max_sm_clock_mhz
        if min_mhz < low or max_mhz > high:
            raise GpuInvalidArgumentError(f"clock range {min_mhz}-{max_mhz} MHz outside {low}-{high} MHz")
        locked = (int(min_mhz), int(max_mhz))
        if locked != self.locked_clocks:
            self.locked_clocks = locked
            self.on_limit_change(self)

    def reset_locked_clocks(self) -> None:
        """Unlock the clocks."""
        if self.locked_clocks is not None:
            self.locked_clocks = None
            self.on_limit_change(self)


class SimNodeBackend:
    """One node's virtual boards as a :class:`~wattplane.agent.gpu.base.GpuBackend`."""

    def __init__(self, node: str, devices: Sequence[SimGpu]) -> None:
        self._node = node
        self._devices = list(devices)

    @property
    def info(self) -> GpuBackendInfo:
        """``sim`` (virtual time)."""
        return GpuBackendInfo(name="sim", driver_version="virtual-time", details={"node": self._node})

    def devices(self) -> Sequence[SimGpu]:
        """The boards, by index."""
        return list(self._devices)

    def close(self) -> None:
        """Nothing to release."""


def gpu_uuid(node: str, index: int) -> str:
    """A stable UUID per (node, index), NVML-shaped."""
    return "GPU-" + str(uuidlib.uuid5(_UUID_NAMESPACE, f"{node}/{index}"))
