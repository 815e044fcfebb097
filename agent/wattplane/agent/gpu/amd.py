"""The AMD backend: AMD Instinct and Radeon GPUs through AMD SMI (the ``amdsmi`` Python package).

This is the only module in wattplane that imports :mod:`amdsmi`, and it does so lazily: the package
ships as pure Python (``pip install 'wattplane[amd]'``) but loads the native ``libamd_smi.so`` from
ROCm when imported, and without that library ``import amdsmi`` prints a line to stdout and raises
``KeyError`` (amdsmi 7.0.2). :func:`load_amdsmi` turns that into a :class:`GpuDriverError` with a hint,
so the agent runs (with another backend) on machines that have no ROCm at all.

AMD-specific points, each checked against amdsmi 7.0.2's ``amdsmi_interface.py`` and ``amdsmi.h``:

* **Units.** On Linux bare metal ``amdsmi_get_power_cap_info`` reports caps in **microwatts** and
  ``amdsmi_set_power_cap(handle, sensor_ind, cap)`` takes microwatts (``int`` only: the wrapper raises
  ``AmdSmiParameterException`` for anything else). ``amdsmi_get_power_info`` reports power in whole
  **watts** (``socket_power``; ``current_socket_power`` on MI300-class boards, ``average_socket_power``
  on older ones), with ``"N/A"`` in place of 0xFFFF. The energy counter is a raw accumulator to be
  multiplied by ``counter_resolution`` (**microjoules** per count, typically 15.259). Clocks are MHz.
* **Whole watts.** The amdgpu driver divides a written cap by 1,000,000 before applying it
  (``amdgpu_hwmon_set_power_cap``), so a cap is only ever a whole number of watts. Targets are rounded
  to whole watts before the write, otherwise the read-back would differ and look like interference.
* **Errors.** ``AmdSmiLibraryException.err_code`` (an ``amdsmi_status_t``) goes through one table,
  :data:`AMDSMI_ERROR_MAP`; ``AmdSmiParameterException`` (a wrong Python type, no code) is an invalid
  argument. Exceptions are caught through the classes of the module in use (``lib.AmdSmiException``),
  because the real classes cannot be imported without the native library.
* **Writes** are idempotent, refused before the library is called outside the device's range, and
  read back. A board that reports no usable range (0 or ``UINT64_MAX``, as a virtualised host does)
  refuses every write with :class:`GpuNotSupportedError` instead of guessing.
* **Virtual machines.** In an SR-IOV guest ``amdsmi_set_power_cap`` answers ``AMDSMI_STATUS_NO_PERM``
  even for root, and MI300X boards passed through to cloud VMs refuse to have their cap lowered
  although the same boards accept it on bare metal; the energy counter is not offered in a guest
  (``amdsmi_get_energy_count``: "not supported on virtual machine guest"), so energy is integrated
  from power samples there, as the NVML backend does for boards without a counter.
* **Energy counter.** Kept monotonic: a counter that goes backwards is treated as a 32-bit wrap when
  the implied energy is plausible for the elapsed time, otherwise as a reset (driver reload), and
  the agent's total keeps growing either way.

Test seam: :class:`AmdSmiBackend` takes ``lib=``, any object with amdsmi's function, enum and
exception names (``tests/fakes/fake_amdsmi.py`` is one).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, Literal, TypeVar

from wattplane.agent.gpu.base import GpuBackendInfo, GpuIdentity, GpuReading, PowerConstraints
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
    "AMDSMI_ERROR_MAP",
    "AmdSmiBackend",
    "AmdSmiGpu",
    "amdsmi_error_to_gpu_error",
    "load_amdsmi",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

EnergySource = Literal["counter", "integrated"]

#: ``amdsmi_status_t`` codes (amdsmi_wrapper.py, amdsmi 7.0.2), spelled out so the table reads alone.
_INVAL: Final = 1
_NOT_SUPPORTED: Final = 2
_NOT_YET_IMPLEMENTED: Final = 3
_FAIL_LOAD_MODULE: Final = 4
_FAIL_LOAD_SYMBOL: Final = 5
_NO_PERM: Final = 10
_INPUT_OUT_OF_BOUNDS: Final = 17
_INIT_ERROR: Final = 18
_NOT_FOUND: Final = 31
_NOT_INIT: Final = 32
_DRIVER_NOT_LOADED: Final = 34
_AMDGPU_RESTART_ERR: Final = 54
_SETTING_UNAVAILABLE: Final = 55

#: The one table from AMD SMI status codes to wattplane's typed errors. Codes not listed (timeouts,
#: retries, I/O, busy, unknown, ...) become :class:`GpuDriverError`.
AMDSMI_ERROR_MAP: Final[dict[int, type[GpuError]]] = {
    _INVAL: GpuInvalidArgumentError,
    _INPUT_OUT_OF_BOUNDS: GpuInvalidArgumentError,
    _NOT_SUPPORTED: GpuNotSupportedError,
    _NOT_YET_IMPLEMENTED: GpuNotSupportedError,
    # The installed library lacks the symbol (older ROCm): the call is unavailable here.
    _FAIL_LOAD_SYMBOL: GpuNotSupportedError,
    _SETTING_UNAVAILABLE: GpuNotSupportedError,
    _NO_PERM: GpuNoPermissionError,
    _NOT_FOUND: GpuNotFoundError,
    _NOT_INIT: GpuUninitializedError,
    # "AMDGPU restart failed": the board is unusable until someone looks at it.
    _AMDGPU_RESTART_ERR: GpuLostError,
}

#: Codes that mean "no usable AMD stack on this machine" when ``amdsmi_init`` returns them.
_NO_STACK_CODES: Final = frozenset({_DRIVER_NOT_LOADED, _INIT_ERROR, _FAIL_LOAD_MODULE})

_UW_PER_W: Final = 1_000_000
_UJ_PER_J: Final = 1_000_000
#: Fields amdsmi reports as 0xFFFF ("N/A") or UINT64_MAX when a value is unknown.
_NA_U16: Final = 0xFFFF
_UINT64_MAX: Final = 2**64 - 1
#: Width assumed for counters that wrap (the accumulator is 64-bit in the API; some firmware keeps 32).
_WRAP_32: Final = 2**32
#: Slack on the plausibility test for a wrap: the counter may run ahead of the power reading.
_WRAP_SLACK: Final = 2.0


def load_amdsmi() -> Any:
    """Import :mod:`amdsmi`, or explain why it cannot be used.

    The import loads ``libamd_smi.so``; amdsmi prints its own message to stdout when that fails and
    then raises ``KeyError``. The message is captured and logged instead.

    Raises:
        GpuDriverError: The package is missing or the native library cannot be loaded.
    """
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            import amdsmi
    except ImportError as err:
        raise GpuDriverError(
            "the amdsmi Python package is not installed: install wattplane with the 'amd' extra "
            "(pip install 'wattplane[amd]') and ROCm's amd-smi-lib"
        ) from err
    except (KeyError, OSError, AttributeError) as err:
        said = " ".join(captured.getvalue().split())
        raise GpuDriverError(
            "amdsmi cannot load libamd_smi.so"
            + (f" ({said})" if said else "")
            + ": install ROCm's amd-smi-lib, or point ROCM_PATH at it, and give the container /dev/kfd and /dev/dri"
        ) from err
    if captured.getvalue().strip():
        logger.debug("amdsmi said on import: %s", captured.getvalue().strip())
    return amdsmi


def amdsmi_error_to_gpu_error(err: BaseException, action: str) -> GpuError:
    """Translate an AMD SMI exception into the typed error the rest of the agent understands.

    The caller raises the result ``from err`` so the original stays reachable as ``__cause__``.

    Args:
        err: An ``AmdSmiLibraryException`` (``err_code`` set) or another ``AmdSmiException``
            (``AmdSmiParameterException`` and friends carry no code).
        action: What was being attempted; goes into the message.
    """
    code = getattr(err, "err_code", None)
    if isinstance(code, int) and not isinstance(code, bool):
        error_class = AMDSMI_ERROR_MAP.get(code, GpuDriverError)
        return error_class(f"{action}: {_describe(err)} (AMD SMI status {code})")
    if type(err).__name__ == "AmdSmiParameterException":
        return GpuInvalidArgumentError(f"{action}: {err}")
    return GpuDriverError(f"{action}: {type(err).__name__}: {err}")


def _describe(err: BaseException) -> str:
    """The short status name amdsmi attaches (``AMDSMI_STATUS_NO_PERM``), else the exception text."""
    info = getattr(err, "err_info", None)
    if isinstance(info, str) and info:
        return info.split(" - ")[0].strip()
    return str(err).strip()


@contextlib.contextmanager
def _amdsmi_errors(lib: Any, action: str) -> Iterator[None]:
    """Apply :data:`AMDSMI_ERROR_MAP` to everything the library raises inside the block."""
    try:
        yield
    except lib.AmdSmiException as err:
        raise amdsmi_error_to_gpu_error(err, action) from err


def _number(value: Any) -> int | None:
    """An integer reading, or ``None`` for amdsmi's ``"N/A"`` and the unknown sentinels."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    if value in (_NA_U16, _UINT64_MAX, 2**32 - 1):
        return None
    return value


def _mhz(value: int | float, what: str) -> int:
    """Return ``value`` as an int MHz; amdsmi's setters reject anything but ``int``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise GpuInvalidArgumentError(f"{what} must be an integer number of MHz, got {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise GpuInvalidArgumentError(f"{what} must be a whole number of MHz, got {value!r}")
        value = int(value)
    if value <= 0:
        raise GpuInvalidArgumentError(f"{what} must be positive, got {value} MHz")
    return value


class AmdSmiGpu:
    """One AMD GPU as AMD SMI sees it (implements :class:`~wattplane.agent.gpu.base.GpuDevice`).

    On partitioned MI300-class boards (CPX and other compute modes) AMD SMI lists each partition as
    its own processor; each is then a device here, measured and capped as the library allows.
    """

    def __init__(self, lib: Any, handle: Any, index: int, *, clock: Callable[[], float]) -> None:
        self._lib = lib
        self._handle = handle
        self._clock = clock
        self._lock = threading.Lock()
        self._unsupported: set[str] = set()
        self._constraints_uw: tuple[int, int, int] | None = None
        self._boot_clock_range: tuple[int, int] | None = None
        self._clock_range_probed = False
        self._locked_clocks: tuple[int, int] | None = None
        self._energy_source: EnergySource | None = None
        #: (time, watts, joules) of the last sample; for counters also the raw count and resolution.
        self._last_sample: tuple[float, float, float] | None = None
        self._last_raw: int | None = None
        self._label = f"GPU {index}"
        with _amdsmi_errors(lib, self._action("identify")):
            uuid = str(lib.amdsmi_get_gpu_device_uuid(handle))
            bus_id = str(lib.amdsmi_get_gpu_device_bdf(handle))
        asic = self._optional("asic_info", lambda: lib.amdsmi_get_gpu_asic_info(handle))
        model = str(asic.get("market_name", "")) if isinstance(asic, dict) else ""
        self._identity = GpuIdentity(
            index=index,
            uuid=uuid,
            model=model if model and model != "N/A" else "AMD GPU",
            pci_bus_id=bus_id,
            vendor="amd",
        )
        self._label = f"GPU {index} ({uuid})"

    def __repr__(self) -> str:
        return f"AmdSmiGpu(index={self._identity.index}, uuid={self._identity.uuid!r})"

    @property
    def identity(self) -> GpuIdentity:
        """Index, UUID, market name and PCI bus id (``0000:c1:00.0``, already the sysfs form)."""
        return self._identity

    @property
    def energy_source(self) -> EnergySource | None:
        """``"counter"`` or ``"integrated"`` once :meth:`read` has run; ``None`` before that."""
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
        """Run an optional read; ``None`` (remembered) when the device does not support it."""
        if feature in self._unsupported:
            return None
        try:
            with _amdsmi_errors(self._lib, self._action(f"read {feature}")):
                return call()
        except GpuNotSupportedError as err:
            self._unsupported.add(feature)
            logger.debug("AMD SMI feature %s not supported (%s); not asking again", feature, err)
            return None

    def _cap_info(self) -> dict[str, Any]:
        with _amdsmi_errors(self._lib, self._action("read power cap")):
            info = self._lib.amdsmi_get_power_cap_info(self._handle)
        if not isinstance(info, dict):
            raise GpuDriverError(f"{self._action('read power cap')}: unexpected answer {info!r}")
        return info

    def _read_constraints_uw(self) -> tuple[int, int, int]:
        """Return and cache (min, max, default) in µW; static while the driver stays loaded.

        Raises:
            GpuNotSupportedError: The device reports no usable range (zero or unknown bounds).
        """
        if self._constraints_uw is None:
            info = self._cap_info()
            low, high = _number(info.get("min_power_cap")), _number(info.get("max_power_cap"))
            if low is None or high is None or high <= 0 or low > high:
                raise GpuNotSupportedError(
                    f"{self._label} reports no usable power-cap range (min {info.get('min_power_cap')!r}, "
                    f"max {info.get('max_power_cap')!r} µW); power caps cannot be managed on it"
                )
            default = _number(info.get("default_power_cap"))
            if default is None or not low <= default <= high:
                # Some hosts report 0 as the default; the top of the range is what the board boots with.
                default = high
            self._constraints_uw = (low, high, default)
        return self._constraints_uw

    def _read_cap_uw(self) -> int:
        cap = _number(self._cap_info().get("power_cap"))
        if cap is None:
            raise GpuNotSupportedError(f"{self._label} reports no current power cap")
        return cap

    def _power_watts(self) -> tuple[float, float | None]:
        """Current board power and the enforced limit, both whole watts as the library gives them."""
        with _amdsmi_errors(self._lib, self._action("read power")):
            info = self._lib.amdsmi_get_power_info(self._handle)
        for key in ("current_socket_power", "average_socket_power", "socket_power"):
            watts = _number(info.get(key))
            if watts is not None:
                limit = _number(info.get("power_limit"))
                return float(watts), None if limit is None or limit == 0 else float(limit)
        raise GpuNotSupportedError(f"{self._label} reports no power reading")

    def _energy_joules(self, now: float, power_watts: float) -> float:
        """The monotonic energy value for a sample taken at ``now``; must hold ``self._lock``."""
        if self._energy_source != "integrated":
            counter = self._optional("energy_counter", lambda: self._lib.amdsmi_get_energy_count(self._handle))
            if counter is not None:
                self._energy_source = "counter"
                return self._from_counter(now, power_watts, counter)
            if self._energy_source is None:
                logger.info(
                    "GPU %d (%s) has no energy counter (a VM guest has none); integrating power samples instead",
                    self._identity.index,
                    self._identity.uuid,
                )
            self._energy_source = "integrated"
        if self._last_sample is None:
            joules = 0.0
        else:
            last_time, last_watts, last_joules = self._last_sample
            joules = last_joules + max(0.0, now - last_time) * (last_watts + power_watts) / 2.0
        self._last_sample = (now, power_watts, joules)
        return joules

    def _from_counter(self, now: float, power_watts: float, counter: dict[str, Any]) -> float:
        raw = int(counter["energy_accumulator"])
        resolution_uj = float(counter["counter_resolution"])
        if resolution_uj <= 0 or not math.isfinite(resolution_uj):
            raise GpuDriverError(f"{self._label}: energy counter resolution {resolution_uj!r} µJ is unusable")
        if self._last_sample is None or self._last_raw is None:
            joules = raw * resolution_uj / _UJ_PER_J
        else:
            last_time, _, last_joules = self._last_sample
            if raw >= self._last_raw:
                delta_counts = raw - self._last_raw
            else:
                delta_counts = self._backwards_delta(raw, now - last_time, resolution_uj)
            joules = last_joules + delta_counts * resolution_uj / _UJ_PER_J
        self._last_raw = raw
        self._last_sample = (now, power_watts, joules)
        return joules

    def _backwards_delta(self, raw: int, elapsed_s: float, resolution_uj: float) -> int:
        """Counts consumed since the last read when the counter went backwards: a wrap, or a reset."""
        assert self._last_raw is not None
        if self._last_raw < _WRAP_32:
            wrapped = raw + _WRAP_32 - self._last_raw
            ceiling_w = self._constraints_uw[1] / _UW_PER_W if self._constraints_uw else 1000.0
            plausible_j = ceiling_w * max(elapsed_s, 0.0) * _WRAP_SLACK + 1.0
            if wrapped * resolution_uj / _UJ_PER_J <= plausible_j:
                return wrapped
        logger.info(
            "energy counter of %s went back (%d → %d): counting from the reset", self._label, self._last_raw, raw
        )
        return raw

    def _probe_clock_range(self) -> tuple[int, int] | None:
        """The graphics clock range the board reports before this process locks it, cached."""
        if not self._clock_range_probed:
            info = self._optional(
                "gfx_clock", lambda: self._lib.amdsmi_get_clock_info(self._handle, self._lib.AmdSmiClkType.GFX)
            )
            self._clock_range_probed = True
            if isinstance(info, dict):
                low, high = _number(info.get("min_clk")), _number(info.get("max_clk"))
                if low is not None and high is not None and 0 < low <= high:
                    self._boot_clock_range = (low, high)
        return self._boot_clock_range

    # -- GpuDevice ----------------------------------------------------------------------------------

    def constraints(self) -> PowerConstraints:
        """Return the accepted power-cap range and the boot-time default, in watts."""
        low, high, default = self._read_constraints_uw()
        return PowerConstraints(
            min_watts=low / _UW_PER_W, max_watts=high / _UW_PER_W, default_watts=default / _UW_PER_W
        )

    def read(self) -> GpuReading:
        """Sample the board. Power and the power cap are required; other fields may be ``None``.

        Raises:
            GpuNotSupportedError: The board reports no power or no power cap at all.
        """
        lib, handle = self._lib, self._handle
        with self._lock:
            power_watts, enforced_watts = self._power_watts()
            now = self._clock()
            limit_watts = self._read_cap_uw() / _UW_PER_W
            energy_joules = self._energy_joules(now, power_watts)
            clock = self._optional("gfx_clock", lambda: lib.amdsmi_get_clock_info(handle, lib.AmdSmiClkType.GFX))
            activity = self._optional("activity", lambda: lib.amdsmi_get_gpu_activity(handle))
            # MI300-class boards have no edge sensor; the hotspot (junction) one exists everywhere.
            temperature = self._optional(
                "temperature",
                lambda: lib.amdsmi_get_temp_metric(
                    handle, lib.AmdSmiTemperatureType.HOTSPOT, lib.AmdSmiTemperatureMetric.CURRENT
                ),
            )
            locked = self._locked_clocks
        sm_clock = _number(clock.get("clk")) if isinstance(clock, dict) else None
        gfx = _number(activity.get("gfx_activity")) if isinstance(activity, dict) else None
        celsius = _number(temperature)
        return GpuReading(
            power_watts=power_watts,
            energy_joules=energy_joules,
            power_limit_watts=limit_watts,
            enforced_power_limit_watts=enforced_watts,
            sm_clock_mhz=sm_clock,
            utilization_ratio=None if gfx is None else min(gfx, 100) / 100.0,
            temperature_celsius=None if celsius is None else float(celsius),
            locked_clocks_mhz=locked,
        )

    def set_power_limit_watts(self, watts: float) -> None:
        """Set the board's power cap (whole watts, as the driver applies it) and verify it took effect.

        Raises:
            GpuInvalidArgumentError: ``watts`` is not finite or lies outside :meth:`constraints`;
                raised before AMD SMI is called.
            GpuNotSupportedError: The board reports no usable cap range, or refuses cap changes.
            GpuNoPermissionError: No privilege, or a VM guest (AMD SMI answers NO_PERM there).
            GpuDriverError: AMD SMI accepted the write but the cap read back differs.
        """
        if isinstance(watts, bool) or not isinstance(watts, int | float) or not math.isfinite(watts):
            raise GpuInvalidArgumentError(f"power limit must be a finite number of watts, got {watts!r}")
        low, high, _ = self._read_constraints_uw()
        if not low <= round(watts * _UW_PER_W) <= high:
            raise GpuInvalidArgumentError(
                f"power limit {watts} W is outside [{low / _UW_PER_W} W, {high / _UW_PER_W} W] "
                f"for GPU {self._identity.index} ({self._identity.model})"
            )
        # The driver keeps whole watts; stay inside the range when rounding at its edges.
        target_uw = round(watts) * _UW_PER_W
        if target_uw < low:
            target_uw = math.ceil(low / _UW_PER_W) * _UW_PER_W
        elif target_uw > high:
            target_uw = math.floor(high / _UW_PER_W) * _UW_PER_W
        if not low <= target_uw <= high:
            raise GpuInvalidArgumentError(f"no whole-watt cap near {watts} W inside the range of {self._label}")
        with self._lock:
            if self._read_cap_uw() == target_uw:
                return
            action = self._action(f"set power cap to {target_uw} µW")
            try:
                with _amdsmi_errors(self._lib, action):
                    self._lib.amdsmi_set_power_cap(self._handle, 0, target_uw)
            except GpuInvalidArgumentError as err:
                if getattr(err.__cause__, "err_code", None) != _INVAL:
                    raise
                # The value is inside the range the board itself reported, so the refusal is the board's.
                raise GpuNotSupportedError(
                    f"{err}; the value is inside the board's own range, so the board refuses cap changes "
                    "(an SR-IOV guest answers this way)"
                ) from err.__cause__
            actual_uw = self._read_cap_uw()
        if actual_uw != target_uw:
            raise GpuDriverError(
                f"power cap on GPU {self._identity.index} reads back {actual_uw} µW after setting "
                f"{target_uw} µW (another actor or an out-of-band limiter may have intervened)"
            )

    def locked_clock_range_mhz(self) -> tuple[int, int] | None:
        """The graphics clock range reported before any lock by this process; ``None`` if unknown."""
        with self._lock:
            return self._probe_clock_range()

    def set_locked_clocks_mhz(self, min_mhz: int, max_mhz: int) -> None:
        """Restrict the graphics clock to ``[min_mhz, max_mhz]`` (``amdsmi_set_gpu_clk_range``).

        Raises:
            GpuInvalidArgumentError: Non-integral, non-positive or reversed bounds, or bounds outside
                the range the board reported before any lock.
        """
        low = _mhz(min_mhz, "min_mhz")
        high = _mhz(max_mhz, "max_mhz")
        if low > high:
            raise GpuInvalidArgumentError(f"min_mhz {low} is above max_mhz {high}")
        with self._lock:
            boot = self._probe_clock_range()
            if boot is not None and (low < boot[0] or high > boot[1]):
                raise GpuInvalidArgumentError(
                    f"locked clocks [{low}, {high}] MHz outside the [{boot[0]}, {boot[1]}] MHz "
                    f"of GPU {self._identity.index}"
                )
            with _amdsmi_errors(self._lib, self._action(f"set graphics clock range to [{low}, {high}] MHz")):
                self._lib.amdsmi_set_gpu_clk_range(self._handle, low, high, self._lib.AmdSmiClkType.GFX)
            self._locked_clocks = (low, high)

    def reset_locked_clocks(self) -> None:
        """Give the graphics clock its reported range back and the driver its automatic performance level."""
        with self._lock:
            boot = self._probe_clock_range()
            with _amdsmi_errors(self._lib, self._action("reset graphics clock range")):
                if boot is not None and self._locked_clocks is not None:
                    self._lib.amdsmi_set_gpu_clk_range(self._handle, boot[0], boot[1], self._lib.AmdSmiClkType.GFX)
                self._lib.amdsmi_set_gpu_perf_level(self._handle, self._lib.AmdSmiDevPerfLevel.AUTO)
            self._locked_clocks = None


class AmdSmiBackend:
    """All AMD GPUs on the node (implements :class:`~wattplane.agent.gpu.base.GpuBackend`).

    Construction initialises AMD SMI for GPUs and enumerates them once; :meth:`close` shuts it down.
    Usable as a context manager.

    Args:
        lib: The amdsmi-compatible module; defaults to :func:`load_amdsmi` (the real package).
        clock: Monotonic clock in seconds, for energy integration without a counter.

    Raises:
        GpuDriverError: amdsmi or libamd_smi is missing, or the amdgpu driver is not loaded.
    """

    def __init__(self, *, lib: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._lib: Any = load_amdsmi() if lib is None else lib
        self._closed = False
        try:
            self._lib.amdsmi_init(self._lib.AmdSmiInitFlags.INIT_AMD_GPUS)
        except self._lib.AmdSmiException as err:
            if getattr(err, "err_code", None) in _NO_STACK_CODES:
                raise GpuDriverError(
                    f"AMD SMI cannot initialise: {_describe(err)}. Is the amdgpu driver loaded, and does the "
                    "container see /dev/kfd and /dev/dri?"
                ) from err
            raise amdsmi_error_to_gpu_error(err, "initialise AMD SMI") from err
        try:
            self._devices = self._enumerate(clock)
            self._driver_version, self._lib_version = self._versions()
        except BaseException:
            self.close()
            raise

    def _enumerate(self, clock: Callable[[], float]) -> tuple[AmdSmiGpu, ...]:
        with _amdsmi_errors(self._lib, "list AMD GPUs"):
            handles = list(self._lib.amdsmi_get_processor_handles())
        return tuple(AmdSmiGpu(self._lib, handle, index, clock=clock) for index, handle in enumerate(handles))

    def _versions(self) -> tuple[str, str]:
        lib_version = ""
        with contextlib.suppress(GpuError), _amdsmi_errors(self._lib, "read AMD SMI version"):
            version = self._lib.amdsmi_get_lib_version()
            lib_version = ".".join(str(version[k]) for k in ("major", "minor", "release"))
        driver = ""
        if self._devices:
            with contextlib.suppress(GpuError), _amdsmi_errors(self._lib, "read driver version"):
                driver = str(self._lib.amdsmi_get_gpu_driver_info(self._devices[0]._handle)["driver_version"])
        return driver, lib_version

    def __enter__(self) -> AmdSmiBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def info(self) -> GpuBackendInfo:
        """``amdsmi`` plus driver/library versions; ``details`` says where each board's energy comes from."""
        details = {"amdsmi_version": self._lib_version}
        for gpu in self._devices:
            details[f"energy_source/{gpu.identity.uuid}"] = gpu.energy_source or "unprobed"
        return GpuBackendInfo(name="amdsmi", driver_version=self._driver_version, details=details)

    def devices(self) -> Sequence[AmdSmiGpu]:
        """All AMD GPUs (partitions of a partitioned board included), in AMD SMI's order."""
        return self._devices

    def device_by_uuid(self, uuid: str) -> AmdSmiGpu:
        """Return the GPU with this UUID.

        Raises:
            GpuNotFoundError: No GPU has that UUID.
        """
        for gpu in self._devices:
            if gpu.identity.uuid == uuid:
                return gpu
        raise GpuNotFoundError(f"no AMD GPU with UUID {uuid!r} on this node")

    def device_id_aliases(self) -> dict[str, str]:
        """PCI address (``0000:c1:00.0``) → UUID, for the pod mapper.

        AMD's Kubernetes device plugin names each board by its PCI address, where AMD SMI names it by
        UUID. An address that several devices report (the partitions of one board may share it) names
        none of them for sure and is left out, so their pods stay unattributed rather than misattributed.
        """
        by_address: dict[str, list[str]] = {}
        for gpu in self._devices:
            if gpu.identity.pci_bus_id:
                by_address.setdefault(gpu.identity.pci_bus_id.lower(), []).append(gpu.identity.uuid)
        shared = {address: uuids for address, uuids in by_address.items() if len(uuids) > 1}
        if shared:
            logger.debug("PCI addresses shared by several AMD devices, not used for attribution: %s", shared)
        return {address: uuids[0] for address, uuids in by_address.items() if len(uuids) == 1}

    def close(self) -> None:
        """Shut AMD SMI down once; later calls do nothing. Caps already set stay in force."""
        if self._closed:
            return
        self._closed = True
        with _amdsmi_errors(self._lib, "shut down AMD SMI"):
            self._lib.amdsmi_shut_down()
