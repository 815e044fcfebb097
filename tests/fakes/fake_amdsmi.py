"""A faithful, stateful fake of the ``amdsmi`` Python package (amdsmi 7.0.2) for tests without an AMD GPU.

The real package cannot be imported here: ``import amdsmi`` loads ``libamd_smi.so`` from ROCm and,
without it, prints a line and raises ``KeyError``. So its exception classes cannot be re-exported as
the NVML fake does with pynvml's. They are **replicated** instead, with the same names, hierarchy,
constructor signatures and attributes (``err_code`` after ``abs()``, ``err_info``, ``get_error_code``),
and the status codes and enum values are the package's own numbers. ``tests/unit/gpu_amd/
test_fake_is_faithful.py`` checks every replicated name and number against the sources of the amdsmi
wheel installed in the test environment, so a drift in a new amdsmi release fails there.

What else makes it faithful (each point from amdsmi 7.0.2's ``amdsmi_interface.py`` / ``amdsmi.h``):

* Units are AMD SMI's on Linux bare metal: power caps in **microwatts** (``amdsmi_get_power_cap_info``
  and ``amdsmi_set_power_cap``), power in whole **watts** (``amdsmi_get_power_info``), the energy
  counter in counts of ``counter_resolution`` **microjoules** (15.259 µJ as a C ``float``), clocks in MHz.
* ``"N/A"`` replaces 0xFFFF in power and activity readings, as the wrapper does.
* Every function checks its handle is one of the library's handles and its enum arguments are the
  library's enums (``AmdSmiParameterException`` otherwise); setters take ``int`` only.
* Calls before ``amdsmi_init`` (or after ``amdsmi_shut_down``) answer ``AMDSMI_STATUS_NOT_INIT``.
* A written cap is truncated to whole watts, as the amdgpu driver does (``value / 1000000``), and a
  cap outside ``[min, max]`` is refused with ``AMDSMI_STATUS_INVAL``.

Documented quirks, as knobs:

* ``FakeAmdGpu.vm_guest``: an SR-IOV guest; ``amdsmi_set_power_cap`` answers ``NO_PERM`` even for
  root (amd/MxGPU-Virtualization#26) and ``amdsmi_get_energy_count`` ``NOT_SUPPORTED`` ("not supported
  on virtual machine guest", AMD SMI reference).
* ``FakeAmdGpu.lowering_refused``: an MI300X passed through to a cloud VM; lowering the cap below the
  default is refused with the given status (``NOT_SUPPORTED`` by default) although the board reports
  a range that allows it (ROCm/legacy-rocm-build#5231: works on bare metal, not in the VM).
* ``FakeAmdGpu.unknown_range``: a virtualisation host's PF reports min and max as ``UINT64_MAX`` and
  the default as 0 (amd/MxGPU-Virtualization#26).
* ``FakeAmdGpu.counter_bits``: the energy accumulator's width (64 by default; 32 makes it wrap).
* ``privileged=False``: every write answers ``NO_PERM``, as sysfs does for a non-root process.

The model figures (:data:`MI300X`, :data:`MI250X`, :data:`MI210`) are illustrative, not datasheet values.
"""

from __future__ import annotations

import ctypes
import itertools
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, NamedTuple

# -- status codes (amdsmi_wrapper.py, amdsmi 7.0.2) ------------------------------------------------

AMDSMI_STATUS_SUCCESS = 0
AMDSMI_STATUS_INVAL = 1
AMDSMI_STATUS_NOT_SUPPORTED = 2
AMDSMI_STATUS_NOT_YET_IMPLEMENTED = 3
AMDSMI_STATUS_FAIL_LOAD_MODULE = 4
AMDSMI_STATUS_FAIL_LOAD_SYMBOL = 5
AMDSMI_STATUS_DRM_ERROR = 6
AMDSMI_STATUS_API_FAILED = 7
AMDSMI_STATUS_TIMEOUT = 8
AMDSMI_STATUS_RETRY = 9
AMDSMI_STATUS_NO_PERM = 10
AMDSMI_STATUS_INTERRUPT = 11
AMDSMI_STATUS_IO = 12
AMDSMI_STATUS_INPUT_OUT_OF_BOUNDS = 17
AMDSMI_STATUS_INIT_ERROR = 18
AMDSMI_STATUS_BUSY = 30
AMDSMI_STATUS_NOT_FOUND = 31
AMDSMI_STATUS_NOT_INIT = 32
AMDSMI_STATUS_DRIVER_NOT_LOADED = 34
AMDSMI_STATUS_AMDGPU_RESTART_ERR = 54
AMDSMI_STATUS_SETTING_UNAVAILABLE = 55
AMDSMI_STATUS_UNKNOWN_ERROR = 4294967295

_STATUS_NAMES = {value: name for name, value in globals().items() if name.startswith("AMDSMI_STATUS_")}

# -- exceptions (amdsmi_exception.py, replicated: the real module needs libamd_smi.so) ---------------


class AmdSmiException(Exception):
    """Base smi exception class."""


class AmdSmiLibraryException(AmdSmiException):
    """A non-success ``amdsmi_status_t``; the code is stored as its absolute value, as in amdsmi."""

    def __init__(self, err_code: int) -> None:
        err_code = abs(err_code)
        super().__init__(err_code)
        self.err_code = err_code
        self.set_err_info()

    def __str__(self) -> str:
        return f"Error code:\n\t{self.err_code} | {self.err_info}"

    def get_error_info(self, detailed: bool = True) -> str:
        return self.err_info if detailed else str(self.err_info).split(" - ")[0]

    def get_error_code(self) -> int:
        return self.err_code

    def set_err_info(self) -> None:
        name = _STATUS_NAMES.get(self.err_code, "AMDSMI_STATUS_UNKNOWN_ERROR")
        self.err_info = f"{name} - {name.removeprefix('AMDSMI_STATUS_').replace('_', ' ').lower()}"


class AmdSmiRetryException(AmdSmiLibraryException):
    def __init__(self) -> None:
        super().__init__(AMDSMI_STATUS_RETRY)


class AmdSmiTimeoutException(AmdSmiLibraryException):
    def __init__(self) -> None:
        super().__init__(AMDSMI_STATUS_TIMEOUT)


class AmdSmiParameterException(AmdSmiException):
    """A Python argument of the wrong type; carries ``err_code = None``."""

    def __init__(self, receivedValue: Any, expectedType: Any, msg: str | None = None) -> None:
        super().__init__(msg)
        self.err_code = None
        self.actualType = type(receivedValue)
        self.expectedType = expectedType
        self.err_msg = (
            "Invalid parameter:\n" + f"Actual type: {self.actualType}\n" + f"Expected type: {self.expectedType}"
        )
        if msg is not None:
            self.err_msg = msg

    def __str__(self) -> str:
        return self.err_msg


class AmdSmiKeyException(AmdSmiException):
    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key
        self.err_msg = "Key " + key + " is missing from dictionary"

    def __str__(self) -> str:
        return self.err_msg


class AmdSmiBdfFormatException(AmdSmiException):
    def __init__(self, bdf: str) -> None:
        super().__init__()
        self.bdf = bdf

    def __str__(self) -> str:
        return f"Wrong BDF format: {self.bdf}."


# -- enums (amdsmi_interface.py; values from amdsmi_wrapper.py) --------------------------------------


class AmdSmiInitFlags(IntEnum):
    INIT_ALL_PROCESSORS = 4294967295
    INIT_AMD_CPUS = 1
    INIT_AMD_GPUS = 2
    INIT_AMD_APUS = 3
    INIT_NON_AMD_CPUS = 4
    INIT_NON_AMD_GPUS = 8


class AmdSmiClkType(IntEnum):
    SYS = 0
    GFX = 0
    DF = 1
    DCEF = 2
    SOC = 3
    MEM = 4
    PCIE = 5
    VCLK0 = 6
    VCLK1 = 7
    DCLK0 = 8
    DCLK1 = 9


class AmdSmiTemperatureType(IntEnum):
    EDGE = 0
    HOTSPOT = 1
    JUNCTION = 1
    VRAM = 2
    HBM_0 = 3


class AmdSmiTemperatureMetric(IntEnum):
    CURRENT = 0
    MAX = 1
    MIN = 2


class AmdSmiDevPerfLevel(IntEnum):
    AUTO = 0
    LOW = 1
    HIGH = 2
    MANUAL = 3
    STABLE_STD = 4
    STABLE_PEAK = 5
    STABLE_MIN_MCLK = 6
    STABLE_MIN_SCLK = 7
    DETERMINISM = 8
    UNKNOWN = 256


#: ``counter_resolution`` as the C ``float`` amdsmi hands back (15.259 µJ per count).
ENERGY_RESOLUTION_UJ: float = ctypes.c_float(15.259).value
UINT64_MAX = 2**64 - 1
_NA = 0xFFFF


@dataclass(frozen=True)
class AmdModel:
    """Static figures of a board kind (illustrative values)."""

    market_name: str
    min_cap_w: int
    max_cap_w: int
    default_cap_w: int
    idle_w: int
    gfx_min_mhz: int
    gfx_max_mhz: int
    #: Which power field the board fills: MI300 ``current_socket_power``, older ``average_socket_power``.
    power_field: str


MI300X = AmdModel("AMD Instinct MI300X", 200, 750, 750, 140, 500, 2100, "current_socket_power")
MI250X = AmdModel("AMD Instinct MI250X", 100, 560, 500, 90, 500, 1700, "average_socket_power")
MI210 = AmdModel("AMD Instinct MI210", 100, 300, 300, 40, 500, 1700, "average_socket_power")


@dataclass
class FakeAmdGpu:
    """The mutable state of one fake AMD GPU."""

    model: AmdModel
    uuid: str
    bdf: str
    cap_uw: int = 0
    load: float = 0.0
    raw_energy: int = 0
    counter_bits: int = 64
    clk_range: tuple[int, int] = (0, 0)
    perf_level: AmdSmiDevPerfLevel = AmdSmiDevPerfLevel.AUTO
    vm_guest: bool = False
    lowering_refused: int | None = None
    unknown_range: bool = False
    unsupported: set[str] = field(default_factory=set)
    _energy_remainder_uj: float = 0.0

    def __post_init__(self) -> None:
        if not self.cap_uw:
            self.cap_uw = self.model.default_cap_w * 1_000_000
        if self.clk_range == (0, 0):
            self.clk_range = (self.model.gfx_min_mhz, self.model.gfx_max_mhz)

    @property
    def power_w(self) -> int:
        """Whole watts, below the cap: idle plus load of the remaining headroom."""
        cap_w = self.cap_uw // 1_000_000
        return min(cap_w, round(self.model.idle_w + self.load * (self.model.max_cap_w - self.model.idle_w)))

    def advance(self, seconds: float) -> None:
        """Accumulate ``seconds`` of energy at the current power into the raw counter."""
        total_uj = self.power_w * seconds * 1_000_000 + self._energy_remainder_uj
        counts = int(total_uj // ENERGY_RESOLUTION_UJ)
        self._energy_remainder_uj = total_uj - counts * ENERGY_RESOLUTION_UJ
        self.raw_energy = (self.raw_energy + counts) % (2**self.counter_bits)


class FakeProcessorHandle:
    """An opaque handle; a fresh object per enumeration, like the ctypes pointers amdsmi returns."""

    def __init__(self, index: int) -> None:
        self._index = index

    def __repr__(self) -> str:
        return f"<amdsmi_processor_handle {self._index}>"


class Call(NamedTuple):
    name: str
    args: tuple[Any, ...]


class FakeAmdSmi:
    """The ``amdsmi`` module's GPU surface over a list of :class:`FakeAmdGpu`."""

    AmdSmiException = AmdSmiException
    AmdSmiLibraryException = AmdSmiLibraryException
    AmdSmiRetryException = AmdSmiRetryException
    AmdSmiTimeoutException = AmdSmiTimeoutException
    AmdSmiParameterException = AmdSmiParameterException
    AmdSmiKeyException = AmdSmiKeyException
    AmdSmiBdfFormatException = AmdSmiBdfFormatException
    AmdSmiInitFlags = AmdSmiInitFlags
    AmdSmiClkType = AmdSmiClkType
    AmdSmiTemperatureType = AmdSmiTemperatureType
    AmdSmiTemperatureMetric = AmdSmiTemperatureMetric
    AmdSmiDevPerfLevel = AmdSmiDevPerfLevel

    def __init__(self, models: list[AmdModel], *, privileged: bool = True, init_status: int = 0) -> None:
        self.gpus = [
            FakeAmdGpu(
                model=m,
                uuid=f"{0x74A1 + i:04x}ff00-0000-1000-80{i:02x}-5e3c1d9a{i:04x}",
                bdf=f"0000:{0x11 + 0x20 * i:02x}:00.0",
            )
            for i, m in enumerate(models)
        ]
        self.privileged = privileged
        self.init_status = init_status
        self.initialised = 0
        self.calls: list[Call] = []
        self.now = 1000.0
        self.timestamp_ns = itertools.count(1_700_000_000_000_000_000, 1_000_000)

    # -- test controls ------------------------------------------------------------------------------

    def monotonic(self) -> float:
        """The fake's clock; pass it as ``AmdSmiBackend(clock=fake.monotonic)``."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass on every GPU (energy counters run)."""
        self.now += seconds
        for gpu in self.gpus:
            gpu.advance(seconds)

    def calls_named(self, name: str) -> list[Call]:
        return [c for c in self.calls if c.name == name]

    # -- plumbing -----------------------------------------------------------------------------------

    def _enter(self, name: str, *args: Any) -> None:
        self.calls.append(Call(name, args))
        if not self.initialised:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_INIT)

    def _gpu(self, name: str, handle: Any, *args: Any) -> FakeAmdGpu:
        self._enter(name, handle, *args)
        if not isinstance(handle, FakeProcessorHandle):
            raise AmdSmiParameterException(handle, FakeProcessorHandle)
        gpu = self.gpus[handle._index]
        if name in gpu.unsupported:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_SUPPORTED)
        return gpu

    def _write(self, gpu: FakeAmdGpu) -> None:
        if not self.privileged:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NO_PERM)

    # -- library ------------------------------------------------------------------------------------

    def amdsmi_init(self, flag: Any = AmdSmiInitFlags.INIT_AMD_GPUS) -> None:
        self.calls.append(Call("amdsmi_init", (flag,)))
        if not isinstance(flag, AmdSmiInitFlags):
            raise AmdSmiParameterException(flag, AmdSmiInitFlags)
        if self.init_status:
            raise AmdSmiLibraryException(self.init_status)
        self.initialised += 1

    def amdsmi_shut_down(self) -> None:
        self._enter("amdsmi_shut_down")
        self.initialised -= 1

    def amdsmi_get_lib_version(self) -> dict[str, Any]:
        self._enter("amdsmi_get_lib_version")
        return {"major": 25, "minor": 5, "release": 1, "build": "0"}

    def amdsmi_get_processor_handles(self) -> list[FakeProcessorHandle]:
        self._enter("amdsmi_get_processor_handles")
        return [FakeProcessorHandle(i) for i in range(len(self.gpus))]

    def amdsmi_get_gpu_device_uuid(self, processor_handle: Any) -> str:
        return self._gpu("amdsmi_get_gpu_device_uuid", processor_handle).uuid

    def amdsmi_get_gpu_device_bdf(self, processor_handle: Any) -> str:
        return self._gpu("amdsmi_get_gpu_device_bdf", processor_handle).bdf

    def amdsmi_get_gpu_asic_info(self, processor_handle: Any) -> dict[str, Any]:
        gpu = self._gpu("amdsmi_get_gpu_asic_info", processor_handle)
        return {
            "market_name": gpu.model.market_name,
            "vendor_id": "0x1002",
            "vendor_name": "Advanced Micro Devices Inc. [AMD/ATI]",
            "subvendor_id": "0x1002",
            "device_id": "0x74a1",
            "rev_id": "0x00",
            "asic_serial": "0x5E3C1D9A00000000",
            "oam_id": 0,
            "num_compute_units": 304,
            "target_graphics_version": "gfx942",
            "subsystem_id": "0x74a1",
        }

    def amdsmi_get_gpu_driver_info(self, processor_handle: Any) -> dict[str, str]:
        self._gpu("amdsmi_get_gpu_driver_info", processor_handle)
        return {"driver_name": "amdgpu", "driver_version": "6.12.12", "driver_date": "2015/01/01 00:00"}

    def amdsmi_get_power_cap_info(self, processor_handle: Any) -> dict[str, int]:
        gpu = self._gpu("amdsmi_get_power_cap_info", processor_handle)
        if gpu.unknown_range:
            return {
                "power_cap": gpu.cap_uw,
                "default_power_cap": 0,
                "dpm_cap": 0,
                "min_power_cap": UINT64_MAX,
                "max_power_cap": UINT64_MAX,
            }
        return {
            "power_cap": gpu.cap_uw,
            "default_power_cap": gpu.model.default_cap_w * 1_000_000,
            "dpm_cap": gpu.model.gfx_max_mhz,
            "min_power_cap": gpu.model.min_cap_w * 1_000_000,
            "max_power_cap": gpu.model.max_cap_w * 1_000_000,
        }

    def amdsmi_set_power_cap(self, processor_handle: Any, sensor_ind: Any, cap: Any) -> None:
        gpu = self._gpu("amdsmi_set_power_cap", processor_handle, sensor_ind, cap)
        if not isinstance(sensor_ind, int):
            raise AmdSmiParameterException(sensor_ind, int)
        if not isinstance(cap, int):
            raise AmdSmiParameterException(cap, int)
        self._write(gpu)
        if gpu.vm_guest:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NO_PERM)
        if gpu.unknown_range or not gpu.model.min_cap_w * 1_000_000 <= cap <= gpu.model.max_cap_w * 1_000_000:
            raise AmdSmiLibraryException(AMDSMI_STATUS_INVAL)
        if gpu.lowering_refused is not None and cap < gpu.model.default_cap_w * 1_000_000:
            raise AmdSmiLibraryException(gpu.lowering_refused)
        gpu.cap_uw = (cap // 1_000_000) * 1_000_000  # the driver keeps whole watts

    def amdsmi_get_power_info(self, processor_handle: Any) -> dict[str, Any]:
        gpu = self._gpu("amdsmi_get_power_info", processor_handle)
        info: dict[str, Any] = {
            "socket_power": _NA,
            "current_socket_power": _NA,
            "average_socket_power": _NA,
            "gfx_voltage": 750,
            "soc_voltage": 800,
            "mem_voltage": 1100,
            "power_limit": gpu.cap_uw // 1_000_000,
        }
        info[gpu.model.power_field] = gpu.power_w
        if gpu.model.power_field == "current_socket_power":
            info["socket_power"] = gpu.power_w
        return {k: "N/A" if v == _NA else v for k, v in info.items()}

    def amdsmi_get_energy_count(self, processor_handle: Any) -> dict[str, Any]:
        gpu = self._gpu("amdsmi_get_energy_count", processor_handle)
        if gpu.vm_guest:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_SUPPORTED)
        return {
            "energy_accumulator": gpu.raw_energy,
            "counter_resolution": ENERGY_RESOLUTION_UJ,
            "timestamp": next(self.timestamp_ns),
        }

    def amdsmi_get_clock_info(self, processor_handle: Any, clock_type: Any) -> dict[str, Any]:
        gpu = self._gpu("amdsmi_get_clock_info", processor_handle, clock_type)
        if not isinstance(clock_type, AmdSmiClkType):
            raise AmdSmiParameterException(clock_type, AmdSmiClkType)
        low, high = gpu.clk_range
        return {
            "clk": low + round(gpu.load * (high - low)),
            "min_clk": low,
            "max_clk": high,
            "clk_locked": gpu.perf_level != AmdSmiDevPerfLevel.AUTO,
            "clk_deep_sleep": 0,
        }

    def amdsmi_set_gpu_clk_range(
        self, processor_handle: Any, min_clk_value: Any, max_clk_value: Any, clk_type: Any
    ) -> None:
        gpu = self._gpu("amdsmi_set_gpu_clk_range", processor_handle, min_clk_value, max_clk_value, clk_type)
        if not isinstance(min_clk_value, int) or not isinstance(max_clk_value, int):
            raise AmdSmiParameterException(min_clk_value, int)
        if not isinstance(clk_type, AmdSmiClkType):
            raise AmdSmiParameterException(clk_type, AmdSmiClkType)
        self._write(gpu)
        if min_clk_value > max_clk_value:
            raise AmdSmiLibraryException(AMDSMI_STATUS_INVAL)
        gpu.clk_range = (min_clk_value, max_clk_value)
        gpu.perf_level = AmdSmiDevPerfLevel.MANUAL

    def amdsmi_set_gpu_perf_level(self, processor_handle: Any, perf_level: Any) -> None:
        gpu = self._gpu("amdsmi_set_gpu_perf_level", processor_handle, perf_level)
        if not isinstance(perf_level, AmdSmiDevPerfLevel):
            raise AmdSmiParameterException(perf_level, AmdSmiDevPerfLevel)
        self._write(gpu)
        gpu.perf_level = perf_level

    def amdsmi_get_gpu_activity(self, processor_handle: Any) -> dict[str, Any]:
        gpu = self._gpu("amdsmi_get_gpu_activity", processor_handle)
        return {"gfx_activity": round(gpu.load * 100), "umc_activity": 0, "mm_activity": "N/A"}

    def amdsmi_get_temp_metric(self, processor_handle: Any, sensor_type: Any, metric: Any) -> int:
        gpu = self._gpu("amdsmi_get_temp_metric", processor_handle, sensor_type, metric)
        if not isinstance(sensor_type, AmdSmiTemperatureType):
            raise AmdSmiParameterException(sensor_type, AmdSmiTemperatureType)
        if not isinstance(metric, AmdSmiTemperatureMetric):
            raise AmdSmiParameterException(metric, AmdSmiTemperatureMetric)
        if sensor_type == AmdSmiTemperatureType.EDGE and gpu.model is MI300X:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_SUPPORTED)  # MI300 has no edge sensor
        return 40 + round(gpu.load * 45)
