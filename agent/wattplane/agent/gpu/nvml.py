"""The NVML backend: real NVIDIA GPUs through nvidia-ml-py (``import pynvml``).

This is the only module in wattplane that imports :mod:`pynvml`. Everything NVML-specific stays here:

* **Units.** NVML speaks milliwatts and millijoules; values are converted to watts and joules before
  they leave this module. Setters receive plain ``int`` milliwatts/MHz because nvidia-ml-py wraps
  every argument in ``c_uint``, which raises ``TypeError`` for a float or ``None``.
* **Errors.** One table, :data:`NVML_ERROR_MAP`, turns NVML error codes (``NVMLError.value``) into the
  typed tree in :mod:`wattplane.agent.gpu.errors`; :func:`_nvml_errors` is the one place it is applied,
  always chaining the original exception. Codes are compared through ``.value`` and never with ``==``
  on the exception (``NVMLError.__eq__`` reads ``other.value`` and instances are unhashable).
  ``NVMLLibraryMismatchError`` is not an ``NVMLError`` subclass and is caught separately.
* **Writes.** The power limit is set with the v1 setter ``nvmlDeviceSetPowerManagementLimit`` and then
  read back: the v2 setter in nvidia-ml-py 13.615.71 discards the C return code, so a refused write
  would look like success. Power-limit writes are idempotent (no call when the device already has the target),
  and values outside the device's constraints are refused before NVML is called.
* **Feature detection.** Optional reads that raise NotSupported (or FunctionNotFound on an old driver)
  yield ``None`` and are remembered per device, so an unsupported call is not retried every tick.
  Devices without an energy counter (pre-Volta, many GeForce boards) get an energy value integrated
  from power samples instead; :attr:`NvmlGpu.energy_source` and :attr:`NvmlBackend.info` say which.

Test seam: :class:`NvmlBackend` takes ``lib=``, any object with pynvml's function and constant names
(``tests/fakes/fake_pynvml.py`` is one). When ``lib`` is omitted the module-level name ``pynvml`` is
looked up at construction time, so ``monkeypatch.setattr(nvml_module, "pynvml", fake)`` works as well.
Exceptions are always caught with the real pynvml classes, which is why a fake must raise those.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, Literal, TypeVar

import pynvml
from wattplane.agent.gpu.base import (
    GpuBackendInfo,
    GpuIdentity,
    GpuReading,
    PowerConstraints,
    PowerSmoothingState,
    WorkloadProfileState,
)
from wattplane.agent.gpu.errors import (
    GpuDriverError,
    GpuError,
    GpuInvalidArgumentError,
    GpuLostError,
    GpuNoPermissionError,
    GpuNotFoundError,
    GpuNotSupportedError,
    GpuUninitializedError,
)

__all__ = [
    "NVML_ERROR_MAP",
    "EnergySource",
    "NvmlBackend",
    "NvmlGpu",
    "has_sys_admin",
    "nvml_error_to_gpu_error",
    "sysfs_pci_bus_id",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Where a device's energy value comes from: NVML's hardware counter, or power integrated over time.
EnergySource = Literal["counter", "integrated"]

#: NVML return codes (``nvml.h``), spelled out so the table below reads without pynvml at hand.
_UNINITIALIZED: Final = 1
_INVALID_ARGUMENT: Final = 2
_NOT_SUPPORTED: Final = 3
_NO_PERMISSION: Final = 4
_NOT_FOUND: Final = 6
_DRIVER_NOT_LOADED: Final = 9
_LIBRARY_NOT_FOUND: Final = 12
_FUNCTION_NOT_FOUND: Final = 13
_GPU_IS_LOST: Final = 15
_RESET_REQUIRED: Final = 16
_FREQ_NOT_SUPPORTED: Final = 24
_GPU_NOT_FOUND: Final = 28

#: The one table from NVML error codes to wattplane's typed errors. Codes not listed (timeouts,
#: IRQ issues, library/RM mismatches, UNKNOWN, ...) become :class:`GpuDriverError`.
NVML_ERROR_MAP: Final[dict[int, type[GpuError]]] = {
    _UNINITIALIZED: GpuUninitializedError,
    _INVALID_ARGUMENT: GpuInvalidArgumentError,
    # A requested clock the device cannot run at is a bad argument, not a broken driver.
    _FREQ_NOT_SUPPORTED: GpuInvalidArgumentError,
    _NOT_SUPPORTED: GpuNotSupportedError,
    # The installed driver lacks the symbol (newer API, older driver): the call is unavailable here.
    _FUNCTION_NOT_FOUND: GpuNotSupportedError,
    _NO_PERMISSION: GpuNoPermissionError,
    _NOT_FOUND: GpuNotFoundError,
    _GPU_NOT_FOUND: GpuNotFoundError,
    _GPU_IS_LOST: GpuLostError,
    # "GPU requires restart": unusable until reset, which the agent handles like a lost GPU.
    _RESET_REQUIRED: GpuLostError,
}

_NVML_TEMPERATURE_GPU: Final = 0
_NVML_CLOCK_SM: Final = 1
_NVML_DEVICE_MIG_ENABLE: Final = 1
_CAP_SYS_ADMIN_BIT: Final = 21

#: wattplane's workload-profile names → NVML ``NVML_POWER_PROFILE_*`` ids (nvidia-ml-py 13.615.71,
#: ``nvmlPowerProfileType_t`` in nvml.h). The API's ``WorkloadProfile`` names exactly these.
WORKLOAD_PROFILE_IDS: Final[dict[str, int]] = {
    "MaxP": 0,
    "MaxQ": 1,
    "Compute": 2,
    "MemoryBound": 3,
    "Network": 4,
    "Balanced": 5,
    "LlmInference": 6,
    "LlmTraining": 7,
    "Hpc": 13,
    "HighThroughputInference": 17,
    "MediumThroughputInference": 18,
    "LowLatencyInference": 19,
    "Training": 20,
    "Inference": 21,
    "LowPriorityBackground": 24,
}
_PROFILE_NAMES: Final[dict[int, str]] = {v: k for k, v in WORKLOAD_PROFILE_IDS.items()}
# Power-smoothing field ids (nvmlDeviceGetFieldValues) and preset parameter ids, from nvidia-ml-py.
_FI_SMOOTHING_ENABLED: Final = 251
_FI_SMOOTHING_PROFILE_FLOOR_PERCENT: Final = 260
_FI_SMOOTHING_PROFILE_RAMP_UP: Final = 261
_FI_SMOOTHING_PROFILE_RAMP_DOWN: Final = 262
_FI_SMOOTHING_ACTIVE_PRESET: Final = 264
_PARAM_FLOOR_PERCENT: Final = 0
_PARAM_RAMP_UP: Final = 1
_PARAM_RAMP_DOWN: Final = 2
#: ``nvmlFieldValue_t`` member holding each field's own return code (named, not spelled as an attribute,
#: so the fake-faithfulness test's scan for NVML calls does not take it for a function).
_FIELD_RETURN: Final = "nvmlReturn"


def nvml_error_to_gpu_error(err: BaseException, action: str) -> GpuError:
    """Translate an NVML exception into the typed error the rest of the agent understands.

    The caller raises the result ``from err`` so the original stays reachable as ``__cause__``.

    Args:
        err: An ``NVMLError`` (any subclass) or ``NVMLLibraryMismatchError``.
        action: What was being attempted, e.g. ``"set power limit on GPU 0"``; goes into the message.

    Returns:
        The mapped :class:`GpuError` instance (not raised).
    """
    if isinstance(err, pynvml.NVMLLibraryMismatchError):
        return GpuDriverError(f"{action}: nvidia-ml-py and the driver's NVML library do not match ({err})")
    code = getattr(err, "value", None)
    error_class = NVML_ERROR_MAP.get(code, GpuDriverError) if isinstance(code, int) else GpuDriverError
    return error_class(f"{action}: {err} (NVML error {code})")


@contextlib.contextmanager
def _nvml_errors(action: str) -> Iterator[None]:
    """Apply :data:`NVML_ERROR_MAP` to everything raised inside the block: the single mapping point."""
    try:
        yield
    except (pynvml.NVMLError, pynvml.NVMLLibraryMismatchError) as err:
        raise nvml_error_to_gpu_error(err, action) from err


def _text(value: Any) -> str:
    """Decode a string NVML returned: ``bytes`` from older bindings, ``str`` from newer ones."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _mhz(value: int | float, what: str) -> int:
    """Return ``value`` as an int MHz, refusing fractions (ctypes would raise TypeError on a float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise GpuInvalidArgumentError(f"{what} must be an integer number of MHz, got {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise GpuInvalidArgumentError(f"{what} must be a whole number of MHz, got {value!r}")
        value = int(value)
    if value <= 0:
        raise GpuInvalidArgumentError(f"{what} must be positive, got {value} MHz")
    return value


def has_sys_admin(proc_status_path: str = "/proc/self/status") -> bool:
    """Tell whether this process holds CAP_SYS_ADMIN, which every NVML setter requires.

    A root container without the capability gets NVML's NoPermission on writes; checking once at
    start-up lets the agent warn a single time instead of failing on every reconcile.

    Args:
        proc_status_path: The ``status`` file to parse (the ``CapEff:`` line, a hex bitmask).

    Returns:
        ``True`` when bit 21 of the effective capability set is set; ``False`` when it is clear or the
        file cannot be read or parsed (non-Linux systems included).
    """
    try:
        with open(proc_status_path, encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split(":", 1)[1].strip(), 16) >> _CAP_SYS_ADMIN_BIT & 1)
    except (OSError, ValueError):
        return False
    return False


class NvmlGpu:
    """One physical NVIDIA board (implements :class:`~wattplane.agent.gpu.base.GpuDevice`).

    Instances are created by :class:`NvmlBackend` and keep per-device state: which optional calls the
    device refused, the cached constraints, the last power sample for energy integration and the
    locked clocks this process set. A lock guards that state, since reads and writes may come from
    different threads (NVML itself is thread-safe).
    """

    def __init__(self, lib: Any, handle: Any, index: int, *, clock: Callable[[], float]) -> None:
        self._lib = lib
        self._handle = handle
        self._clock = clock
        self._lock = threading.Lock()
        self._unsupported: set[str] = set()
        self._constraints_mw: tuple[int, int, int] | None = None
        self._supported_memory_clocks: tuple[int, ...] | None = None
        self._supported_graphics_clocks: tuple[int, ...] | None = None
        self._energy_source: EnergySource | None = None
        #: (time, watts, joules) of the last sample, for trapezoidal integration without a counter.
        self._last_sample: tuple[float, float, float] | None = None
        self._locked_clocks: tuple[int, int] | None = None
        self._locked_memory_clocks: tuple[int, int] | None = None
        self._label = f"GPU {index}"
        with _nvml_errors(self._action("identify")):
            uuid = _text(lib.nvmlDeviceGetUUID(handle))
            model = _text(lib.nvmlDeviceGetName(handle))
            bus_id = _text(lib.nvmlDeviceGetPciInfo(handle).busId)
        self._label = f"GPU {index} ({uuid})"
        mig_mode = self._optional("mig_mode", lambda: lib.nvmlDeviceGetMigMode(handle))
        mig_enabled = mig_mode is not None and int(mig_mode[0]) == _NVML_DEVICE_MIG_ENABLE
        self._identity = GpuIdentity(
            index=index, uuid=uuid, model=model, pci_bus_id=bus_id, mig_enabled=mig_enabled, vendor="nvidia"
        )

    def __repr__(self) -> str:
        return f"NvmlGpu(index={self._identity.index}, uuid={self._identity.uuid!r})"

    @property
    def identity(self) -> GpuIdentity:
        """Index, UUID, model name, PCI bus id (NVML's 8-hex-digit domain form) and MIG mode."""
        return self._identity

    @property
    def energy_source(self) -> EnergySource | None:
        """``"counter"`` or ``"integrated"`` once :meth:`read` has run; ``None`` before that.

        Integrated energy is not interchangeable with the hardware counter (power is a ~1 s average
        on recent boards and sampling misses short peaks), so status reports say which one it is.
        """
        return self._energy_source

    @property
    def unsupported_features(self) -> frozenset[str]:
        """Optional reads this device refused once and that are no longer attempted."""
        with self._lock:
            return frozenset(self._unsupported)

    # -- helpers ------------------------------------------------------------------------------------

    def _action(self, what: str) -> str:
        return f"{what} on {self._label}"

    def _optional(self, feature: str, call: Callable[[], _T]) -> _T | None:
        """Run an optional NVML read; ``None`` (remembered) when the device does not support it.

        Any other failure (lost GPU, permission, ...) is mapped and raised as usual.
        """
        if feature in self._unsupported:
            return None
        try:
            with _nvml_errors(self._action(f"read {feature}")):
                return call()
        except GpuNotSupportedError as err:
            self._unsupported.add(feature)
            logger.debug("NVML feature %s not supported (%s); not asking again", feature, err)
            return None

    def _read_temperature(self) -> int:
        """Read the GPU core temperature, falling back to the deprecated call on older drivers."""
        try:
            return int(self._lib.nvmlDeviceGetTemperatureV(self._handle, _NVML_TEMPERATURE_GPU))
        except pynvml.NVMLError_FunctionNotFound:
            # Drivers predating nvmlDeviceGetTemperatureV only export the unversioned call.
            return int(self._lib.nvmlDeviceGetTemperature(self._handle, _NVML_TEMPERATURE_GPU))

    def _read_clock_event_reasons(self) -> int:
        """Read the clock-event bitmask, falling back to the pre-rename "throttle reasons" call."""
        try:
            return int(self._lib.nvmlDeviceGetCurrentClocksEventReasons(self._handle))
        except pynvml.NVMLError_FunctionNotFound:
            return int(self._lib.nvmlDeviceGetCurrentClocksThrottleReasons(self._handle))

    def _read_constraints_mw(self) -> tuple[int, int, int]:
        """Return and cache (min, max, default) in mW; static for a board while the driver is loaded."""
        if self._constraints_mw is None:
            with _nvml_errors(self._action("read power-limit constraints")):
                min_mw, max_mw = self._lib.nvmlDeviceGetPowerManagementLimitConstraints(self._handle)
                default_mw = self._lib.nvmlDeviceGetPowerManagementDefaultLimit(self._handle)
            self._constraints_mw = (int(min_mw), int(max_mw), int(default_mw))
        return self._constraints_mw

    def _read_limit_mw(self) -> int:
        with _nvml_errors(self._action("read power limit")):
            return int(self._lib.nvmlDeviceGetPowerManagementLimit(self._handle))

    def _energy_joules(self, now: float, power_watts: float) -> float:
        """Return the energy value for a sample taken at ``now``; must hold ``self._lock``."""
        if self._energy_source != "integrated":
            millijoules = self._optional(
                "energy_counter", lambda: self._lib.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            )
            if millijoules is not None:
                self._energy_source = "counter"
                joules = int(millijoules) / 1000.0
                self._last_sample = (now, power_watts, joules)
                return joules
            if self._energy_source is None:
                logger.info(
                    "GPU %d (%s) has no energy counter; integrating power samples instead",
                    self._identity.index,
                    self._identity.uuid,
                )
            self._energy_source = "integrated"
        if self._last_sample is None:
            joules = 0.0
        else:
            last_time, last_watts, last_joules = self._last_sample
            # Trapezoid between the two samples; a clock that went backwards contributes nothing.
            joules = last_joules + max(0.0, now - last_time) * (last_watts + power_watts) / 2.0
        self._last_sample = (now, power_watts, joules)
        return joules

    # -- GpuDevice ----------------------------------------------------------------------------------

    def constraints(self) -> PowerConstraints:
        """Return the accepted power-limit range and the boot-time default, in watts."""
        min_mw, max_mw, default_mw = self._read_constraints_mw()
        return PowerConstraints(min_watts=min_mw / 1000.0, max_watts=max_mw / 1000.0, default_watts=default_mw / 1000.0)

    def read(self) -> GpuReading:
        """Sample the board. Power and the power limit are required; other fields may be ``None``.

        Raises:
            GpuNotSupportedError: The board reports no power usage or power limit at all.
            GpuLostError: The board fell off the bus.
        """
        handle = self._handle
        lib = self._lib
        with self._lock:
            with _nvml_errors(self._action("read power usage")):
                power_watts = int(lib.nvmlDeviceGetPowerUsage(handle)) / 1000.0
            now = self._clock()
            limit_watts = self._read_limit_mw() / 1000.0
            energy_joules = self._energy_joules(now, power_watts)
            enforced_mw = self._optional("enforced_limit", lambda: lib.nvmlDeviceGetEnforcedPowerLimit(handle))
            sm_clock = self._optional("sm_clock", lambda: lib.nvmlDeviceGetClockInfo(handle, _NVML_CLOCK_SM))
            # Not supported on MIG-enabled boards (nvml.h); the cache makes that a one-time cost.
            utilization = self._optional("utilization", lambda: lib.nvmlDeviceGetUtilizationRates(handle))
            temperature = self._optional("temperature", self._read_temperature)
            reasons = self._optional("clock_event_reasons", self._read_clock_event_reasons)
            locked = self._locked_clocks
        return GpuReading(
            power_watts=power_watts,
            energy_joules=energy_joules,
            power_limit_watts=limit_watts,
            enforced_power_limit_watts=None if enforced_mw is None else int(enforced_mw) / 1000.0,
            sm_clock_mhz=None if sm_clock is None else int(sm_clock),
            utilization_ratio=None if utilization is None else int(utilization.gpu) / 100.0,
            temperature_celsius=None if temperature is None else float(temperature),
            throttle_reasons=0 if reasons is None else int(reasons),
            locked_clocks_mhz=locked,
        )

    def set_power_limit_watts(self, watts: float) -> None:
        """Set the board's power limit (rounded to whole milliwatts) and verify it took effect.

        Skips the NVML call when the current limit already equals the target, so repeated
        reconciles cost no privileged writes.

        Raises:
            GpuInvalidArgumentError: ``watts`` is not finite or lies outside :meth:`constraints`;
                raised before NVML is called.
            GpuNoPermissionError: The process lacks CAP_SYS_ADMIN.
            GpuDriverError: NVML accepted the write but the limit read back differs.
        """
        if isinstance(watts, bool) or not isinstance(watts, int | float) or not math.isfinite(watts):
            raise GpuInvalidArgumentError(f"power limit must be a finite number of watts, got {watts!r}")
        target_mw = round(watts * 1000)
        min_mw, max_mw, _ = self._read_constraints_mw()
        if not min_mw <= target_mw <= max_mw:
            raise GpuInvalidArgumentError(
                f"power limit {watts} W is outside [{min_mw / 1000} W, {max_mw / 1000} W] "
                f"for GPU {self._identity.index} ({self._identity.model})"
            )
        with self._lock:
            if self._read_limit_mw() == target_mw:
                return
            # v1 on purpose: nvidia-ml-py's _v2 wrapper returns success even when NVML refuses.
            with _nvml_errors(self._action(f"set power limit to {target_mw} mW")):
                self._lib.nvmlDeviceSetPowerManagementLimit(self._handle, target_mw)
            actual_mw = self._read_limit_mw()
        if actual_mw != target_mw:
            raise GpuDriverError(
                f"power limit on GPU {self._identity.index} reads back {actual_mw} mW after setting "
                f"{target_mw} mW (another actor or an out-of-band limiter may have intervened)"
            )

    def locked_clock_range_mhz(self) -> tuple[int, int] | None:
        """The lowest and highest supported graphics clock (over all memory clocks), ``None`` if unlisted."""
        supported = self.supported_graphics_clocks_mhz()
        return (min(supported), max(supported)) if supported else None

    def set_locked_clocks_mhz(self, min_mhz: int, max_mhz: int) -> None:
        """Lock the graphics clock into ``[min_mhz, max_mhz]`` (Volta+, needs CAP_SYS_ADMIN).

        NVML offers no getter for locked clocks, so the call is always made (it is idempotent in the
        driver) and :attr:`GpuReading.locked_clocks_mhz` reports what this process last set.

        Raises:
            GpuInvalidArgumentError: Non-integral, non-positive or reversed bounds, or bounds outside
                the device's supported graphics clocks (when the device lists them).
        """
        low = _mhz(min_mhz, "min_mhz")
        high = _mhz(max_mhz, "max_mhz")
        if low > high:
            raise GpuInvalidArgumentError(f"min_mhz {low} is above max_mhz {high}")
        supported = self.supported_graphics_clocks_mhz()
        if supported and (low < min(supported) or high > max(supported)):
            raise GpuInvalidArgumentError(
                f"locked clocks [{low}, {high}] MHz outside the supported "
                f"[{min(supported)}, {max(supported)}] MHz of GPU {self._identity.index}"
            )
        with self._lock:
            with _nvml_errors(self._action(f"lock graphics clocks to [{low}, {high}] MHz")):
                self._lib.nvmlDeviceSetGpuLockedClocks(self._handle, low, high)
            self._locked_clocks = (low, high)

    def reset_locked_clocks(self) -> None:
        """Return the graphics clock to the driver's default behaviour."""
        with self._lock:
            with _nvml_errors(self._action("reset locked graphics clocks")):
                self._lib.nvmlDeviceResetGpuLockedClocks(self._handle)
            self._locked_clocks = None

    # -- optional knobs (PowerProfileDevice) --------------------------------------------------------
    #
    # Sources: nvidia-ml-py 13.615.71 (pynvml.py: the functions, structs, version constants and field
    # ids used here) and the NVML API reference, groups "Power Profile Information" and "Power
    # Smoothing Information" (docs.nvidia.com/deploy/nvml-api). Documented there: profiles are bits of
    # 255-bit masks indexed by profile id; GetCurrentProfiles reports the valid, requested and enforced
    # masks; UpdatePresetProfileParam takes the floor as a percentage (0-100) of total module power and
    # the ramp rates in W/s; ActivatePresetProfile uses only ``profileId``; power smoothing is for
    # Blackwell and newer; every setter needs root. The field-value comments in pynvml.py give the
    # per-profile ramp rates in mW/s, so reads are divided by 1000. Assumed (not stated): that
    # SetRequestedProfiles adds to the requested mask and ClearRequestedProfiles removes from it, as the
    # SET/CLEAR operations of UpdateProfiles are documented to; and the mW/s read unit, which differs
    # from the W/s write unit. Both want checking on a Blackwell board.

    def workload_profiles(self) -> WorkloadProfileState:
        """Valid, requested and enforced workload power profiles (unknown ids are left out).

        Raises:
            GpuNotSupportedError: The board or driver has no workload power profiles.
        """
        lib = self._lib
        current = lib.c_nvmlWorkloadPowerProfileCurrentProfiles_v1_t()
        with self._lock, _nvml_errors(self._action("read workload power profiles")):
            lib.nvmlDeviceWorkloadPowerProfileGetCurrentProfiles(self._handle, ctypes_byref(current))
        return WorkloadProfileState(
            available=_mask_names(current.perfProfilesMask),
            requested=_mask_names(current.requestedProfilesMask),
            enforced=_mask_names(current.enforcedProfilesMask),
        )

    def set_requested_workload_profiles(self, profiles: frozenset[str]) -> None:
        """Make ``profiles`` the requested set: clear the requested ones not in it, then request the rest.

        Raises:
            GpuInvalidArgumentError: A name NVML has no id for.
        """
        unknown = sorted(p for p in profiles if p not in WORKLOAD_PROFILE_IDS)
        if unknown:
            raise GpuInvalidArgumentError(f"unknown workload power profile(s) {', '.join(unknown)}")
        requested = self.workload_profiles().requested
        lib = self._lib
        with self._lock:
            drop = requested - profiles
            if drop:
                clear = lib.c_nvmlWorkloadPowerProfileRequestedProfiles_v1_t()
                _fill_mask(clear.requestedProfilesMask, drop)
                with _nvml_errors(self._action(f"clear workload power profiles {sorted(drop)}")):
                    lib.nvmlDeviceWorkloadPowerProfileClearRequestedProfiles(self._handle, ctypes_byref(clear))
            add = profiles - requested
            if add:
                request = lib.c_nvmlWorkloadPowerProfileRequestedProfiles_v1_t()
                _fill_mask(request.requestedProfilesMask, add)
                with _nvml_errors(self._action(f"request workload power profiles {sorted(add)}")):
                    lib.nvmlDeviceWorkloadPowerProfileSetRequestedProfiles(self._handle, ctypes_byref(request))

    def power_smoothing(self) -> PowerSmoothingState:
        """On/off, the active preset and its floor and ramp rates, through ``nvmlDeviceGetFieldValues``.

        Raises:
            GpuNotSupportedError: The board has no power smoothing (a per-field NotSupported counts).
        """
        enabled, preset = self._fields([_FI_SMOOTHING_ENABLED, _FI_SMOOTHING_ACTIVE_PRESET])
        profile = int(preset)
        floor, up, down = self._fields(
            [
                (_FI_SMOOTHING_PROFILE_FLOOR_PERCENT, profile),
                (_FI_SMOOTHING_PROFILE_RAMP_UP, profile),
                (_FI_SMOOTHING_PROFILE_RAMP_DOWN, profile),
            ]
        )
        return PowerSmoothingState(
            enabled=bool(int(enabled)),
            preset_profile=profile,
            ramp_up_watts_per_second=up / 1000.0,
            ramp_down_watts_per_second=down / 1000.0,
            floor_percent=float(floor),
        )

    def set_power_smoothing(self, state: PowerSmoothingState) -> None:
        """Write the preset's given parameters, activate the preset, then switch smoothing on or off."""
        lib = self._lib
        params = (
            (_PARAM_FLOOR_PERCENT, state.floor_percent),
            (_PARAM_RAMP_UP, state.ramp_up_watts_per_second),
            (_PARAM_RAMP_DOWN, state.ramp_down_watts_per_second),
        )
        with self._lock:
            for param, value in params:
                if value is None:
                    continue
                update = lib.c_nvmlPowerSmoothingProfile_v1_t()
                update.profileId = state.preset_profile
                update.paramId = param
                update.value = float(value)
                with _nvml_errors(self._action(f"set power smoothing parameter {param} to {value}")):
                    lib.nvmlDevicePowerSmoothingUpdatePresetProfileParam(self._handle, ctypes_byref(update))
            activate = lib.c_nvmlPowerSmoothingProfile_v1_t()
            activate.profileId = state.preset_profile
            with _nvml_errors(self._action(f"activate power smoothing preset {state.preset_profile}")):
                lib.nvmlDevicePowerSmoothingActivatePresetProfile(self._handle, ctypes_byref(activate))
            switch = lib.c_nvmlPowerSmoothingState_v1_t()
            switch.state = 1 if state.enabled else 0
            with _nvml_errors(self._action(f"switch power smoothing {'on' if state.enabled else 'off'}")):
                lib.nvmlDevicePowerSmoothingSetState(self._handle, ctypes_byref(switch))

    def _fields(self, ids: list[Any]) -> list[float]:
        """Read NVML field values as numbers; a field's own error code is mapped like a call's."""
        with self._lock, _nvml_errors(self._action("read power smoothing fields")):
            values = self._lib.nvmlDeviceGetFieldValues(self._handle, ids)
            numbers: list[float] = []
            for value in values:
                code = int(getattr(value, _FIELD_RETURN))
                if code != 0:
                    raise pynvml.NVMLError(code)
                numbers.append(_field_number(value))
        return numbers

    # -- beyond the protocol ------------------------------------------------------------------------

    @property
    def locked_memory_clocks_mhz(self) -> tuple[int, int] | None:
        """The memory clock range this process locked, or ``None`` (NVML has no getter)."""
        return self._locked_memory_clocks

    def supported_memory_clocks_mhz(self) -> tuple[int, ...] | None:
        """Memory clocks the device accepts, highest first; ``None`` when it cannot list them."""
        if self._supported_memory_clocks is None:
            clocks = self._optional(
                "supported_memory_clocks", lambda: self._lib.nvmlDeviceGetSupportedMemoryClocks(self._handle)
            )
            if clocks is None:
                return None
            self._supported_memory_clocks = tuple(sorted({int(c) for c in clocks}, reverse=True))
        return self._supported_memory_clocks

    def supported_graphics_clocks_mhz(self) -> tuple[int, ...] | None:
        """Graphics clocks the device accepts at any memory clock, highest first; ``None`` if unknown."""
        if self._supported_graphics_clocks is None:
            memory_clocks = self.supported_memory_clocks_mhz()
            if not memory_clocks:
                return None
            graphics: set[int] = set()
            for memory_mhz in memory_clocks:
                clocks = self._optional(
                    "supported_graphics_clocks",
                    functools.partial(self._lib.nvmlDeviceGetSupportedGraphicsClocks, self._handle, memory_mhz),
                )
                if clocks is None:
                    return None
                graphics.update(int(c) for c in clocks)
            self._supported_graphics_clocks = tuple(sorted(graphics, reverse=True))
        return self._supported_graphics_clocks

    def set_memory_locked_clocks_mhz(self, min_mhz: int, max_mhz: int) -> None:
        """Lock the memory clock into ``[min_mhz, max_mhz]`` (Ampere+, needs CAP_SYS_ADMIN).

        Raises:
            GpuInvalidArgumentError: Bad bounds, or bounds outside the supported memory clocks.
            GpuNotSupportedError: The device cannot lock memory clocks (e.g. pre-Ampere).
        """
        low = _mhz(min_mhz, "min_mhz")
        high = _mhz(max_mhz, "max_mhz")
        if low > high:
            raise GpuInvalidArgumentError(f"min_mhz {low} is above max_mhz {high}")
        supported = self.supported_memory_clocks_mhz()
        if supported and (low < min(supported) or high > max(supported)):
            raise GpuInvalidArgumentError(
                f"memory clocks [{low}, {high}] MHz outside the supported "
                f"[{min(supported)}, {max(supported)}] MHz of GPU {self._identity.index}"
            )
        with self._lock:
            with _nvml_errors(self._action(f"lock memory clocks to [{low}, {high}] MHz")):
                self._lib.nvmlDeviceSetMemoryLockedClocks(self._handle, low, high)
            self._locked_memory_clocks = (low, high)

    def reset_memory_locked_clocks(self) -> None:
        """Return the memory clock to the driver's default behaviour."""
        with self._lock:
            with _nvml_errors(self._action("reset locked memory clocks")):
                self._lib.nvmlDeviceResetMemoryLockedClocks(self._handle)
            self._locked_memory_clocks = None

    def mig_device_uuids(self) -> tuple[str, ...]:
        """UUIDs (``MIG-…``) of the MIG devices currently carved out of this board; empty if none.

        Slots without an instance answer NotFound and are skipped, as nvml.h prescribes. MIG handles
        are not kept: they become invalid when an instance is destroyed and may be reused.
        """
        if not self._identity.mig_enabled:
            return ()
        uuids: list[str] = []
        with _nvml_errors(self._action("list MIG devices")):
            for slot in range(int(self._lib.nvmlDeviceGetMaxMigDeviceCount(self._handle))):
                try:
                    mig_handle = self._lib.nvmlDeviceGetMigDeviceHandleByIndex(self._handle, slot)
                except pynvml.NVMLError_NotFound:
                    continue
                uuids.append(_text(self._lib.nvmlDeviceGetUUID(mig_handle)))
        return tuple(uuids)


class NvmlBackend:
    """All NVIDIA boards on the node (implements :class:`~wattplane.agent.gpu.base.GpuBackend`).

    Construction initialises NVML and enumerates the boards once; :meth:`close` shuts NVML down.
    Index order is not stable across reboots, so everything downstream keys on
    :attr:`GpuIdentity.uuid`. Usable as a context manager.

    Args:
        lib: The pynvml-compatible module to use; defaults to :mod:`pynvml` (see the module docstring
            for the test seam).
        clock: Monotonic clock in seconds, used to integrate energy on boards without a counter.

    Raises:
        GpuDriverError: NVML cannot be loaded (no driver, library missing, version mismatch).
        GpuNoPermissionError: NVML refused initialisation for lack of privilege.
    """

    def __init__(self, *, lib: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._lib: Any = pynvml if lib is None else lib
        self._closed = False
        try:
            self._lib.nvmlInit()
        except pynvml.NVMLError as err:
            if getattr(err, "value", None) in (_LIBRARY_NOT_FOUND, _DRIVER_NOT_LOADED):
                raise GpuDriverError(
                    f"NVML cannot initialise: {err}. Is the NVIDIA driver installed, and does the "
                    "container run with the NVIDIA runtime and NVIDIA_DRIVER_CAPABILITIES including "
                    "'utility' (libnvidia-ml.so.1 must be loadable)?"
                ) from err
            raise nvml_error_to_gpu_error(err, "initialise NVML") from err
        except pynvml.NVMLLibraryMismatchError as err:
            raise nvml_error_to_gpu_error(err, "initialise NVML") from err
        try:
            self._driver_version, self._nvml_version = self._versions()
            self._devices = self._enumerate(clock)
        except BaseException:
            self.close()
            raise

    def _versions(self) -> tuple[str, str]:
        with _nvml_errors("read driver version"):
            driver = _text(self._lib.nvmlSystemGetDriverVersion())
            nvml_version = _text(self._lib.nvmlSystemGetNVMLVersion())
        return driver, nvml_version

    def _enumerate(self, clock: Callable[[], float]) -> tuple[NvmlGpu, ...]:
        with _nvml_errors("count GPUs"):
            count = int(self._lib.nvmlDeviceGetCount())
        devices: list[NvmlGpu] = []
        for index in range(count):
            with _nvml_errors(f"get handle of GPU {index}"):
                handle = self._lib.nvmlDeviceGetHandleByIndex(index)
            devices.append(NvmlGpu(self._lib, handle, index, clock=clock))
        return tuple(devices)

    def __enter__(self) -> NvmlBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def info(self) -> GpuBackendInfo:
        """``nvml`` plus driver/NVML versions; ``details`` says where each board's energy comes from.

        ``details`` keys: ``nvml_version`` and ``energy_source/<uuid>`` with ``counter``,
        ``integrated`` or ``unprobed`` (before the first read).
        """
        details = {"nvml_version": self._nvml_version}
        for gpu in self._devices:
            details[f"energy_source/{gpu.identity.uuid}"] = gpu.energy_source or "unprobed"
        return GpuBackendInfo(name="nvml", driver_version=self._driver_version, details=details)

    def devices(self) -> Sequence[NvmlGpu]:
        """All boards, ordered by NVML index (MIG instances are not separate devices)."""
        return self._devices

    def device_by_uuid(self, uuid: str) -> NvmlGpu:
        """Return the board with this UUID.

        Raises:
            GpuNotFoundError: No board has that UUID.
        """
        for gpu in self._devices:
            if gpu.identity.uuid == uuid:
                return gpu
        raise GpuNotFoundError(f"no GPU with UUID {uuid!r} on this node")

    def mig_parent_uuids(self) -> dict[str, str]:
        """Map every current MIG device UUID to its parent board's UUID.

        Pods get MIG UUIDs from the device plugin, but power and energy exist only per board, so
        attribution happens at board level. Queried live because MIG instances come and go.
        """
        parents: dict[str, str] = {}
        for gpu in self._devices:
            for mig_uuid in gpu.mig_device_uuids():
                parents[mig_uuid] = gpu.identity.uuid
        return parents

    def board_uuid(self, device_id: str) -> str:
        """Resolve a board or MIG UUID (as the kubelet reports it) to the board's UUID.

        Raises:
            GpuNotFoundError: Neither a board nor a current MIG device has that UUID.
        """
        if any(gpu.identity.uuid == device_id for gpu in self._devices):
            return device_id
        parent = self.mig_parent_uuids().get(device_id)
        if parent is None:
            raise GpuNotFoundError(f"no GPU or MIG device with UUID {device_id!r} on this node")
        return parent

    def close(self) -> None:
        """Shut NVML down once; later calls do nothing. Limits already set stay in force."""
        if self._closed:
            return
        self._closed = True
        with _nvml_errors("shut down NVML"):
            self._lib.nvmlShutdown()


def ctypes_byref(struct: Any) -> Any:
    """``ctypes.byref`` for a real structure; the object itself for a fake's stand-in.

    pynvml's profile and smoothing wrappers pass their argument straight to C, so the caller hands
    over a pointer (the binding's own callers do the same).
    """
    return ctypes.byref(struct) if isinstance(struct, ctypes.Structure) else struct


def _mask_names(mask: Any) -> frozenset[str]:
    """Profile names of the bits set in an ``nvmlMask255_t`` (8 x 32-bit words, bit i = profile id i)."""
    names: set[str] = set()
    for word_index, word in enumerate(mask.mask):
        for bit in range(32):
            if int(word) >> bit & 1:
                name = _PROFILE_NAMES.get(word_index * 32 + bit)
                if name is not None:
                    names.add(name)
    return frozenset(names)


def _fill_mask(mask: Any, names: frozenset[str]) -> None:
    for name in names:
        profile_id = WORKLOAD_PROFILE_IDS[name]
        mask.mask[profile_id // 32] |= 1 << (profile_id % 32)


#: ``nvmlValueType_t`` → the union member holding the value.
_VALUE_MEMBERS: Final = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}


def _field_number(value: Any) -> float:
    """The number in an ``nvmlFieldValue_t``, read through its ``valueType``."""
    member = _VALUE_MEMBERS.get(int(value.valueType))
    if member is None:
        raise GpuDriverError(f"NVML field {value.fieldId} has an unknown value type {value.valueType}")
    return float(getattr(value.value, member))


_BUS_ID = re.compile(r"^(?P<domain>[0-9A-Fa-f]{4,8}):(?P<rest>[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7])$")


def sysfs_pci_bus_id(nvml_bus_id: str) -> str:
    """Convert NVML's ``00000000:17:00.0`` to the sysfs/Kubernetes form ``0000:17:00.0`` (lowercase).

    Raises:
        ValueError: The string is not a PCI bus id.
    """
    match = _BUS_ID.match(nvml_bus_id.strip())
    if match is None:
        raise ValueError(f"not a PCI bus id: {nvml_bus_id!r}")
    return f"{int(match['domain'], 16):04x}:{match['rest'].lower()}"
