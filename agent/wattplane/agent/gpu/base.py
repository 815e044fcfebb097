"""The one protocol every GPU backend implements (NVML on real hardware, a simulator elsewhere).

Units are fixed at this boundary: watts, joules, MHz, degrees Celsius and ratios in [0, 1]. A backend
converts its vendor units (NVML speaks milliwatts and millijoules) before a value crosses it, so the
rest of the agent never sees a milliwatt. Calls are synchronous and fast (NVML answers in well under a
millisecond); the agent serialises writes per device.

Errors are the typed tree in :mod:`wattplane.agent.gpu.errors`; a backend never lets its vendor
exceptions escape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable


@dataclass(frozen=True)
class GpuIdentity:
    """What a GPU is, as opposed to what it is doing."""

    index: int
    uuid: str
    model: str
    pci_bus_id: str = ""
    #: MIG-enabled boards are measured and attributed at board level and never capped per instance.
    mig_enabled: bool = False
    #: Who made the GPU as the backend sees it: ``nvidia`` (NVML), ``amd`` (AMD SMI), ``simulated``;
    #: reported per GPU because one node may combine backends (``nvml+amdsmi``).
    vendor: Literal["nvidia", "amd", "simulated"] | None = None


@dataclass(frozen=True)
class PowerConstraints:
    """The power-limit range the device accepts, and the limit it boots with."""

    min_watts: float
    max_watts: float
    default_watts: float

    def clamp(self, watts: float) -> float:
        """Return ``watts`` forced into ``[min_watts, max_watts]``."""
        return min(self.max_watts, max(self.min_watts, watts))


@dataclass(frozen=True)
class GpuReading:
    """One sample of a GPU's state. Optional fields are ``None`` where the device cannot say."""

    power_watts: float
    #: Monotonic while the driver stays loaded; ``None`` when the device has no energy counter.
    energy_joules: float | None
    power_limit_watts: float
    enforced_power_limit_watts: float | None = None
    sm_clock_mhz: int | None = None
    utilization_ratio: float | None = None
    temperature_celsius: float | None = None
    #: Bitmask of NVML clock-event reasons (0x4 = software power cap, ...).
    throttle_reasons: int = 0
    #: Locked graphics clock range (min, max) in MHz, ``None`` when clocks are unlocked.
    locked_clocks_mhz: tuple[int, int] | None = None


@dataclass(frozen=True)
class WorkloadProfileState:
    """A board's workload power profiles, by wattplane's names (``MaxQ``, ``Compute``, ...).

    ``requested`` is what software asked for (the knob wattplane journals and writes); ``enforced`` is
    what the driver runs after arbitrating conflicting requests (NVML's ``enforcedProfilesMask``).
    """

    available: frozenset[str]
    requested: frozenset[str]
    enforced: frozenset[str] = frozenset()


@dataclass(frozen=True)
class PowerSmoothingState:
    """A board's power-smoothing settings: on/off, the active preset and that preset's parameters.

    Ramp rates are watts per second, the floor a percentage of the board's total module power (TMP).
    ``None`` means the device did not say (the parameter is then neither compared nor written).
    """

    enabled: bool
    preset_profile: int = 0
    ramp_up_watts_per_second: float | None = None
    ramp_down_watts_per_second: float | None = None
    floor_percent: float | None = None


@runtime_checkable
class PowerProfileDevice(Protocol):
    """Optional device knobs beyond the power limit: workload power profiles and power smoothing.

    A backend whose devices lack these methods (AMD SMI) is treated as not supporting them; a device
    that has them raises :class:`~wattplane.agent.gpu.errors.GpuNotSupportedError` when the board or
    driver does not offer the call, and the engine then leaves that knob of the GPU alone.
    """

    def workload_profiles(self) -> WorkloadProfileState:
        """Available, requested and enforced workload power profiles."""
        ...

    def set_requested_workload_profiles(self, profiles: frozenset[str]) -> None:
        """Make ``profiles`` exactly the requested set (clearing the others)."""
        ...

    def power_smoothing(self) -> PowerSmoothingState:
        """Power-smoothing state and the active preset's parameters."""
        ...

    def set_power_smoothing(self, state: PowerSmoothingState) -> None:
        """Write the preset's parameters that are not ``None``, activate the preset, set on/off."""
        ...


@runtime_checkable
class GpuDevice(Protocol):
    """One physical GPU board."""

    @property
    def identity(self) -> GpuIdentity:
        """Index, UUID, model and bus id."""
        ...

    def constraints(self) -> PowerConstraints:
        """The accepted power-limit range and the default limit."""
        ...

    def read(self) -> GpuReading:
        """Sample power, energy, limit, clocks, utilisation and temperature."""
        ...

    def locked_clock_range_mhz(self) -> tuple[int, int] | None:
        """The lowest and highest SM clock a lock may name, or ``None`` when the device cannot say.

        The engine clamps a planned clock lock into this range before writing it, as it clamps watts
        into :meth:`constraints`: the operator plans from the policy and never sees the device's
        clock table. ``None`` (no list, or a board that cannot lock clocks) leaves the decision to the
        device.
        """
        ...

    def set_power_limit_watts(self, watts: float) -> None:
        """Set the power limit; raises :class:`GpuInvalidArgumentError` outside the constraints."""
        ...

    def set_locked_clocks_mhz(self, min_mhz: int, max_mhz: int) -> None:
        """Lock the graphics (SM) clock into ``[min_mhz, max_mhz]``."""
        ...

    def reset_locked_clocks(self) -> None:
        """Unlock the graphics clock (back to the driver's default behaviour)."""
        ...


@dataclass
class GpuBackendInfo:
    """Describes a backend for status reports: ``nvml`` or ``sim``, plus versions."""

    name: str
    driver_version: str = ""
    details: dict[str, str] = field(default_factory=dict)


class GpuBackend(Protocol):
    """The node's GPUs, as one backend sees them."""

    @property
    def info(self) -> GpuBackendInfo:
        """Backend name (``nvml`` or ``sim``) and versions."""
        ...

    def devices(self) -> Sequence[GpuDevice]:
        """All GPU boards on this node, ordered by index."""
        ...

    def close(self) -> None:
        """Release the backend (NVML shutdown, flush simulator state)."""
        ...
