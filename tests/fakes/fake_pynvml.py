"""A faithful, stateful fake of the ``pynvml`` module (nvidia-ml-py 13.615.71) for tests without a GPU.

What makes it faithful (each point checked against the real ``pynvml.py``):

* It raises the **real** exception classes: ``NVMLError(code)`` from the installed pynvml maps the code
  to its generated subclass, so ``except pynvml.NVMLError_NoPermission`` behaves exactly as with the
  library. ``NVMLLibraryMismatchError`` is the real (non-``NVMLError``) class too.
* Every integer argument goes through ``ctypes.c_uint`` as the real wrappers do, so a float or ``None``
  raises ``TypeError`` and a negative number wraps around.
* Units are NVML's: milliwatts, millijoules, MHz, all ``int``.
* Any call before ``nvmlInit`` (or after the matching ``nvmlShutdown``) raises Uninitialized (1);
  init/shutdown are reference-counted.
* ``nvmlDeviceSetPowerManagementLimit_v2`` reproduces the binding bug: it applies a valid value but
  returns ``NVML_SUCCESS`` whatever happens (no permission, out of range, ...).
* Handles are opaque and a fresh object per lookup, like ctypes pointers, so code that compares or
  hashes handles breaks here as it would on hardware.
* ``nvmlDeviceGetPciInfo`` returns the real ``nvmlPciInfo_t`` structure. In 13.615.71 its
  ``__getattribute__`` decodes ``bytes`` fields, so ``.busId`` reads as ``str``; older bindings handed
  out ``bytes``. ``FakeNvml(bus_id_as_bytes=True)`` returns a structure whose ``busId`` is raw bytes.

Configuration knobs: models (:data:`A40`, :data:`V100`, :data:`H100_SXM`, :data:`P100`), ``privileged``
(False ⇒ every setter raises NoPermission, 4), per-device ``unsupported`` function names (NotSupported,
3), ``missing_functions`` (FunctionNotFound, 13, as on an older driver), ``FakeGpu.lost`` (GpuIsLost,
15), ``init_error`` for ``nvmlInit`` and :meth:`FakeNvml.inject` for any exception on any call.

Workload power profiles and power smoothing follow the NVML reference (see ``NvmlGpu`` for what is
documented and what assumed): a model lists the profile ids it offers (``GpuModel.workload_profiles``,
empty ⇒ NotSupported) and whether it smooths power (``GpuModel.power_smoothing``, Blackwell's
:data:`B200` only). Structures are the real ctypes ones, passed by reference as the binding expects;
smoothing field values come back as real ``c_nvmlFieldValue_t`` with ramp rates in mW/s (the field
comments in pynvml.py) while ``UpdatePresetProfileParam`` takes W/s (the reference).

Every public ``nvml*`` call is recorded in :attr:`FakeNvml.calls` so tests can assert, for instance,
that no write happened. Install with ``NvmlBackend(lib=fake)`` or
``monkeypatch.setattr(nvml_module, "pynvml", fake)``.
"""

from __future__ import annotations

import ctypes
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pynvml as _real

# -- the real constants and exception classes, re-exported -------------------------------------------

NVMLError = _real.NVMLError
NVMLLibraryMismatchError = _real.NVMLLibraryMismatchError
nvmlExceptionClass = _real.nvmlExceptionClass

NVML_SUCCESS: int = _real.NVML_SUCCESS
NVML_ERROR_UNINITIALIZED: int = _real.NVML_ERROR_UNINITIALIZED
NVML_ERROR_INVALID_ARGUMENT: int = _real.NVML_ERROR_INVALID_ARGUMENT
NVML_ERROR_NOT_SUPPORTED: int = _real.NVML_ERROR_NOT_SUPPORTED
NVML_ERROR_NO_PERMISSION: int = _real.NVML_ERROR_NO_PERMISSION
NVML_ERROR_NOT_FOUND: int = _real.NVML_ERROR_NOT_FOUND
NVML_ERROR_FUNCTION_NOT_FOUND: int = _real.NVML_ERROR_FUNCTION_NOT_FOUND
NVML_ERROR_GPU_IS_LOST: int = _real.NVML_ERROR_GPU_IS_LOST
NVML_ERROR_LIBRARY_NOT_FOUND: int = _real.NVML_ERROR_LIBRARY_NOT_FOUND
NVML_ERROR_DRIVER_NOT_LOADED: int = _real.NVML_ERROR_DRIVER_NOT_LOADED
NVML_TEMPERATURE_GPU: int = _real.NVML_TEMPERATURE_GPU
NVML_CLOCK_GRAPHICS: int = _real.NVML_CLOCK_GRAPHICS
NVML_CLOCK_SM: int = _real.NVML_CLOCK_SM
NVML_CLOCK_MEM: int = _real.NVML_CLOCK_MEM
NVML_DEVICE_MIG_DISABLE: int = _real.NVML_DEVICE_MIG_DISABLE
NVML_DEVICE_MIG_ENABLE: int = _real.NVML_DEVICE_MIG_ENABLE
NVML_CLOCK_LIMIT_ID_RANGE_START: int = _real.NVML_CLOCK_LIMIT_ID_RANGE_START
NVML_CLOCK_LIMIT_ID_TDP: int = _real.NVML_CLOCK_LIMIT_ID_TDP
NVML_CLOCK_LIMIT_ID_UNLIMITED: int = _real.NVML_CLOCK_LIMIT_ID_UNLIMITED
NVML_DEVICE_ARCH_PASCAL: int = _real.NVML_DEVICE_ARCH_PASCAL
NVML_DEVICE_ARCH_VOLTA: int = _real.NVML_DEVICE_ARCH_VOLTA
NVML_DEVICE_ARCH_AMPERE: int = _real.NVML_DEVICE_ARCH_AMPERE
NVML_DEVICE_ARCH_HOPPER: int = _real.NVML_DEVICE_ARCH_HOPPER
NVML_POWER_SCOPE_GPU: int = _real.NVML_POWER_SCOPE_GPU
nvmlPowerValue_v2: int = _real.nvmlPowerValue_v2
nvmlTemperature_v1: int = _real.nvmlTemperature_v1

# Clock-event reason bits (numeric, see tech-notes 1.4 for the naming gaps in the bindings).
REASON_GPU_IDLE = 0x1
REASON_SW_POWER_CAP = 0x4

#: Functions that change device state and need CAP_SYS_ADMIN on real hardware.
WRITE_FUNCTIONS = frozenset(
    {
        "nvmlDeviceSetPowerManagementLimit",
        "nvmlDeviceSetPowerManagementLimit_v2",
        "nvmlDeviceSetGpuLockedClocks",
        "nvmlDeviceResetGpuLockedClocks",
        "nvmlDeviceSetMemoryLockedClocks",
        "nvmlDeviceResetMemoryLockedClocks",
        "nvmlDeviceWorkloadPowerProfileSetRequestedProfiles",
        "nvmlDeviceWorkloadPowerProfileClearRequestedProfiles",
        "nvmlDevicePowerSmoothingActivatePresetProfile",
        "nvmlDevicePowerSmoothingUpdatePresetProfileParam",
        "nvmlDevicePowerSmoothingSetState",
    }
)


def _mw(watts_per_second: float | None) -> float | None:
    """A W/s setting as the mW/s the field values report."""
    return None if watts_per_second is None else watts_per_second * 1000.0


def _c_uint(value: Any) -> int:
    """Convert like the real wrappers: ``c_uint(1.5)`` and ``c_uint(None)`` raise TypeError."""
    return ctypes.c_uint(value).value


def _nvml_error(code: int) -> Exception:
    """The real binding's exception for ``code`` (``NVMLError.__new__`` picks the generated subclass)."""
    error: Exception = _real.NVMLError(code)
    return error


# -- GPU models -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuModel:
    """What a board type can do. Limits in mW, clocks in MHz."""

    name: str
    arch: int
    min_limit_mw: int
    max_limit_mw: int
    default_limit_mw: int
    #: memory clock -> graphics clocks supported at it (highest first, as NVML lists them).
    clocks_mhz: dict[int, tuple[int, ...]]
    idle_power_mw: int
    energy_counter: bool = True
    mig_capable: bool = False
    max_mig_devices: int = 0
    #: NVML functions this model answers with NotSupported.
    unsupported: frozenset[str] = frozenset()
    #: NVML workload power profile ids the board offers (empty: the profile calls are NotSupported).
    workload_profiles: tuple[int, ...] = ()
    #: Whether the board has power smoothing (Blackwell and newer per the NVML reference).
    power_smoothing: bool = False


def _clock_range(high: int, low: int, step: int) -> tuple[int, ...]:
    return tuple(range(high, low - 1, -step))


#: NVIDIA A40 (Ampere, no MIG): 100–300 W, boots at 300 W (the Zeus sweep range).
A40 = GpuModel(
    name="NVIDIA A40",
    arch=NVML_DEVICE_ARCH_AMPERE,
    min_limit_mw=100_000,
    max_limit_mw=300_000,
    default_limit_mw=300_000,
    clocks_mhz={7251: _clock_range(1740, 210, 15), 405: _clock_range(420, 210, 15)},
    idle_power_mw=30_000,
    unsupported=frozenset({"nvmlDeviceGetMigMode"}),
)

#: Tesla V100 PCIe (Volta): 100–250 W, boots at 250 W (Zeus swept 100–250 W). No memory locking
#: (Ampere+) and no MIG.
V100 = GpuModel(
    name="Tesla V100-PCIE-32GB",
    arch=NVML_DEVICE_ARCH_VOLTA,
    min_limit_mw=100_000,
    max_limit_mw=250_000,
    default_limit_mw=250_000,
    clocks_mhz={877: _clock_range(1380, 135, 7)},
    idle_power_mw=25_000,
    unsupported=frozenset(
        {"nvmlDeviceGetMigMode", "nvmlDeviceSetMemoryLockedClocks", "nvmlDeviceResetMemoryLockedClocks"}
    ),
)

#: H100 80GB HBM3 (SXM, Hopper, MIG-capable): 200–700 W, boots at 700 W.
H100_SXM = GpuModel(
    name="NVIDIA H100 80GB HBM3",
    arch=NVML_DEVICE_ARCH_HOPPER,
    min_limit_mw=200_000,
    max_limit_mw=700_000,
    default_limit_mw=700_000,
    clocks_mhz={2619: _clock_range(1980, 345, 15)},
    idle_power_mw=70_000,
    mig_capable=True,
    max_mig_devices=7,
)

#: B200 (Blackwell): 200–1000 W, boots at 1000 W; offers workload power profiles and power smoothing.
B200 = GpuModel(
    name="NVIDIA B200",
    arch=getattr(_real, "NVML_DEVICE_ARCH_BLACKWELL", 10),
    min_limit_mw=200_000,
    max_limit_mw=1_000_000,
    default_limit_mw=1_000_000,
    clocks_mhz={3996: _clock_range(1965, 345, 15)},
    idle_power_mw=140_000,
    mig_capable=True,
    max_mig_devices=7,
    workload_profiles=(0, 1, 2, 3, 5, 6, 7),
    power_smoothing=True,
)

#: Tesla P100 PCIe (Pascal): 125–250 W. No energy counter (Volta+), no locked clocks, no MIG.
P100 = GpuModel(
    name="Tesla P100-PCIE-16GB",
    arch=NVML_DEVICE_ARCH_PASCAL,
    min_limit_mw=125_000,
    max_limit_mw=250_000,
    default_limit_mw=250_000,
    clocks_mhz={715: _clock_range(1328, 544, 13)},
    idle_power_mw=28_000,
    energy_counter=False,
    unsupported=frozenset(
        {
            "nvmlDeviceGetTotalEnergyConsumption",
            "nvmlDeviceGetMigMode",
            "nvmlDeviceSetGpuLockedClocks",
            "nvmlDeviceResetGpuLockedClocks",
            "nvmlDeviceSetMemoryLockedClocks",
            "nvmlDeviceResetMemoryLockedClocks",
        }
    ),
)


# -- devices and handles ----------------------------------------------------------------------------


@dataclass(eq=False)
class FakeMigDevice:
    """One MIG instance on a board."""

    uuid: str
    parent: FakeGpu
    gpu_instance_id: int


@dataclass(eq=False)
class FakeGpu:
    """Mutable state of one fake board; tests poke these fields directly."""

    model: GpuModel
    index: int
    uuid: str
    bus_id: bytes
    limit_mw: int = 0
    #: Power the workload would draw without a cap; actual power is min(demand, enforced limit).
    demand_mw: int | None = None
    energy_mj: int = 0
    temperature_c: int = 35
    utilization_pct: int = 0
    memory_utilization_pct: int = 0
    #: Out-of-band cap (BMC/SMBPBI); the enforced limit is min(limit, oob).
    oob_limit_mw: int | None = None
    locked_clocks: tuple[int, int] | None = None
    locked_memory_clocks: tuple[int, int] | None = None
    mig_mode: tuple[int, int] = (0, 0)
    mig_devices: dict[int, FakeMigDevice] = field(default_factory=dict)
    lost: bool = False
    #: Extra NotSupported functions on top of the model's.
    unsupported: set[str] = field(default_factory=set)
    #: Requested workload power profile ids.
    requested_profiles: set[int] = field(default_factory=set)
    smoothing_enabled: bool = False
    smoothing_preset: int = 0
    #: (preset, parameter id) → value in the setter's units (percent, W/s, ms); presets start at these.
    smoothing_params: dict[tuple[int, int], float] = field(
        default_factory=lambda: {(p, k): v for p in range(5) for k, v in ((0, 0.0), (1, 5000.0), (2, 5000.0))}
    )

    def __post_init__(self) -> None:
        if self.limit_mw == 0:
            self.limit_mw = self.model.default_limit_mw

    @property
    def enforced_mw(self) -> int:
        return self.limit_mw if self.oob_limit_mw is None else min(self.limit_mw, self.oob_limit_mw)

    @property
    def power_mw(self) -> int:
        demand = self.model.idle_power_mw if self.demand_mw is None else self.demand_mw
        return min(demand, self.enforced_mw)

    def supports(self, function: str) -> bool:
        return function not in self.model.unsupported and function not in self.unsupported


@dataclass(eq=False)
class FakeHandle:
    """An opaque device handle. A new object per lookup; equality is identity, like ctypes pointers."""

    gpu: FakeGpu
    mig: FakeMigDevice | None = None


class Call(NamedTuple):
    """One recorded call: the pynvml function name and its positional arguments."""

    name: str
    args: tuple[Any, ...]


# -- the fake module --------------------------------------------------------------------------------


class FakeNvml:
    """An in-memory NVML with pynvml's function names, signatures, units and errors.

    Args:
        models: One entry per board, index order.
        privileged: ``False`` makes every setter raise NoPermission (4), like a container without
            CAP_SYS_ADMIN.
        driver_version: What ``nvmlSystemGetDriverVersion`` returns.
        bus_id_as_bytes: Return ``busId`` as raw ``bytes`` (older bindings) instead of the real struct.
    """

    # Re-exported so the instance can stand in for the module.
    NVMLError = _real.NVMLError
    NVMLLibraryMismatchError = _real.NVMLLibraryMismatchError
    c_nvmlWorkloadPowerProfileCurrentProfiles_v1_t = _real.c_nvmlWorkloadPowerProfileCurrentProfiles_v1_t
    c_nvmlWorkloadPowerProfileRequestedProfiles_v1_t = _real.c_nvmlWorkloadPowerProfileRequestedProfiles_v1_t
    c_nvmlPowerSmoothingProfile_v1_t = _real.c_nvmlPowerSmoothingProfile_v1_t
    c_nvmlPowerSmoothingState_v1_t = _real.c_nvmlPowerSmoothingState_v1_t

    def __init__(
        self,
        models: Iterable[GpuModel] = (A40,),
        *,
        privileged: bool = True,
        driver_version: str = "580.95.05",
        bus_id_as_bytes: bool = False,
    ) -> None:
        self.privileged = privileged
        self.driver_version = driver_version
        self.nvml_version = "13.580.95.05"
        self.bus_id_as_bytes = bus_id_as_bytes
        self.gpus: list[FakeGpu] = [
            FakeGpu(
                model=model,
                index=index,
                uuid=f"GPU-{index:08x}-fa6e-4c0d-8b5e-{0xA40000 + index:012x}",
                bus_id=f"{0:08X}:{0x17 + index * 0x20:02X}:00.0".encode(),
            )
            for index, model in enumerate(models)
        ]
        #: ``nvmlInit`` raises ``NVMLError(init_error)`` when set (12 = LibraryNotFound, 9 = ...).
        self.init_error: int | None = None
        #: Functions the "driver" does not export: calling them raises FunctionNotFound (13).
        self.missing_functions: set[str] = set()
        self.calls: list[Call] = []
        #: Seconds on the fake's monotonic clock (see :meth:`monotonic` and :meth:`advance`).
        self.now = 1000.0
        self._refcount = 0
        self._injected: list[tuple[str, BaseException, str | None, list[int | None]]] = []
        self._mig_ids = itertools.count(1)

    def __getattr__(self, name: str) -> Any:
        # Constants and exception classes the fake does not spell out come from the real module.
        if name.startswith(("NVML_", "NVMLError_", "nvmlClocks")):
            return getattr(_real, name)
        raise AttributeError(f"fake pynvml has no attribute {name!r}")

    # -- test controls ------------------------------------------------------------------------------

    @property
    def initialized(self) -> bool:
        return self._refcount > 0

    def gpu(self, index: int) -> FakeGpu:
        return self.gpus[index]

    def inject(
        self, function: str, error: int | BaseException, *, uuid: str | None = None, times: int | None = 1
    ) -> None:
        """Make ``function`` raise ``error`` (an NVML code or any exception) on its next calls.

        Args:
            function: pynvml function name, e.g. ``"nvmlDeviceGetPowerUsage"``.
            error: An NVML return code (raised as the real ``NVMLError`` subclass) or an exception.
            uuid: Only for calls on this board (``None``: any call).
            times: How many calls fail; ``None`` for every call from now on.
        """
        exc = _nvml_error(error) if isinstance(error, int) else error
        self._injected.append((function, exc, uuid, [times]))

    def monotonic(self) -> float:
        """The fake's clock in seconds; pass it as ``NvmlBackend(clock=fake.monotonic)``."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Let time pass: the clock moves and energy counters grow by power × time (in mJ)."""
        self.now += seconds
        for gpu in self.gpus:
            gpu.energy_mj += round(gpu.power_mw * seconds)

    def enable_mig(self, index: int, instances: int) -> list[str]:
        """Turn MIG on for a MIG-capable board and create ``instances`` MIG devices; returns their UUIDs."""
        gpu = self.gpus[index]
        if not gpu.model.mig_capable:
            raise ValueError(f"{gpu.model.name} is not MIG-capable")
        gpu.mig_mode = (NVML_DEVICE_MIG_ENABLE, NVML_DEVICE_MIG_ENABLE)
        gpu.mig_devices.clear()
        for slot in range(instances):
            gid = next(self._mig_ids)
            gpu.mig_devices[slot] = FakeMigDevice(
                uuid=f"MIG-{gid:08x}-{index:04x}-4e1a-9c1d-{slot:012x}", parent=gpu, gpu_instance_id=slot + 1
            )
        return [m.uuid for m in gpu.mig_devices.values()]

    def calls_named(self, name: str) -> list[Call]:
        return [c for c in self.calls if c.name == name]

    def write_calls(self) -> list[Call]:
        """Recorded calls that would change device state on real hardware."""
        return [c for c in self.calls if c.name in WRITE_FUNCTIONS]

    # -- plumbing -----------------------------------------------------------------------------------

    def _enter(self, name: str, handle: FakeHandle | None, *args: Any, uints: tuple[Any, ...] = ()) -> tuple[int, ...]:
        """Record a call and fail it the way the binding would, in the binding's order.

        Order: function-pointer lookup (FunctionNotFound, Uninitialized), then the wrapper's
        ``c_uint`` conversions of ``uints`` (TypeError), then what the C function itself returns.
        Returns the converted ``uints``.
        """
        self.calls.append(Call(name, (handle, *args) if handle is not None else args))
        self._lookup(name)
        converted = tuple(_c_uint(v) for v in uints)
        self._device_checks(name, handle)
        return converted

    def _lookup(self, name: str) -> None:
        if name in self.missing_functions:
            raise _nvml_error(NVML_ERROR_FUNCTION_NOT_FOUND)
        if not self.initialized:
            raise _nvml_error(NVML_ERROR_UNINITIALIZED)

    def _device_checks(self, name: str, handle: FakeHandle | None) -> None:
        for function, exc, uuid, remaining in self._injected:
            if function != name or remaining[0] == 0:
                continue
            if uuid is not None and (handle is None or handle.gpu.uuid != uuid):
                continue
            if remaining[0] is not None:
                remaining[0] -= 1
            raise exc
        if handle is not None:
            if not isinstance(handle, FakeHandle):
                raise _nvml_error(NVML_ERROR_INVALID_ARGUMENT)
            if handle.gpu.lost:
                raise _nvml_error(NVML_ERROR_GPU_IS_LOST)
            if not handle.gpu.supports(name):
                raise _nvml_error(NVML_ERROR_NOT_SUPPORTED)

    def _write(self, handle: FakeHandle) -> None:
        if not self.privileged:
            raise _nvml_error(NVML_ERROR_NO_PERMISSION)
        if handle.mig is not None:
            # Limits and clocks belong to the physical board, never to a MIG instance.
            raise _nvml_error(NVML_ERROR_NOT_SUPPORTED)

    # -- workload power profiles and power smoothing -------------------------------------------------

    def _profiles_of(self, name: str, handle: FakeHandle) -> tuple[int, ...]:
        self._device_checks(name, handle)
        if not handle.gpu.model.workload_profiles:
            raise _nvml_error(NVML_ERROR_NOT_SUPPORTED)
        return handle.gpu.model.workload_profiles

    @staticmethod
    def _mask_ids(mask: Any) -> set[int]:
        return {w * 32 + b for w, word in enumerate(mask.mask) for b in range(32) if word >> b & 1}

    @staticmethod
    def _set_mask(mask: Any, ids: Iterable[int]) -> None:
        for i in ids:
            mask.mask[i // 32] |= 1 << (i % 32)

    def nvmlDeviceWorkloadPowerProfileGetCurrentProfiles(self, device: FakeHandle, currentProfiles: Any) -> int:
        self.calls.append(Call("nvmlDeviceWorkloadPowerProfileGetCurrentProfiles", (device,)))
        self._lookup("nvmlDeviceWorkloadPowerProfileGetCurrentProfiles")
        offered = self._profiles_of("nvmlDeviceWorkloadPowerProfileGetCurrentProfiles", device)
        out = currentProfiles._obj
        if out.version != _real.nvmlWorkloadPowerProfileCurrentProfiles_v1:
            raise _nvml_error(_real.NVML_ERROR_ARGUMENT_VERSION_MISMATCH)
        self._set_mask(out.perfProfilesMask, offered)
        self._set_mask(out.requestedProfilesMask, device.gpu.requested_profiles)
        # Arbitration modelled simply: every requested profile is enforced.
        self._set_mask(out.enforcedProfilesMask, device.gpu.requested_profiles)
        return NVML_SUCCESS

    def _update_profiles(self, name: str, device: FakeHandle, requested: Any, *, add: bool) -> int:
        self.calls.append(Call(name, (device,)))
        self._lookup(name)
        offered = self._profiles_of(name, device)
        self._write(device)
        struct = requested._obj
        if struct.version != _real.nvmlWorkloadPowerProfileRequestedProfiles_v1:
            raise _nvml_error(_real.NVML_ERROR_ARGUMENT_VERSION_MISMATCH)
        ids = self._mask_ids(struct.requestedProfilesMask)
        if not ids <= set(offered):
            raise _nvml_error(NVML_ERROR_INVALID_ARGUMENT)
        if add:
            device.gpu.requested_profiles |= ids
        else:
            device.gpu.requested_profiles -= ids
        return NVML_SUCCESS

    def nvmlDeviceWorkloadPowerProfileSetRequestedProfiles(self, device: FakeHandle, requestedProfiles: Any) -> int:
        return self._update_profiles(
            "nvmlDeviceWorkloadPowerProfileSetRequestedProfiles", device, requestedProfiles, add=True
        )

    def nvmlDeviceWorkloadPowerProfileClearRequestedProfiles(self, device: FakeHandle, requestedProfiles: Any) -> int:
        return self._update_profiles(
            "nvmlDeviceWorkloadPowerProfileClearRequestedProfiles", device, requestedProfiles, add=False
        )

    def _smoothing(self, name: str, device: FakeHandle, *, write: bool) -> FakeGpu:
        self.calls.append(Call(name, (device,)))
        self._lookup(name)
        self._device_checks(name, device)
        if not device.gpu.model.power_smoothing:
            raise _nvml_error(NVML_ERROR_NOT_SUPPORTED)
        if write:
            self._write(device)
        return device.gpu

    def nvmlDeviceGetFieldValues(self, handle: FakeHandle, fieldIds: list[Any]) -> Any:
        """Power-smoothing fields only; each field carries its own return code, like NVML."""
        gpu = self._smoothing_fields_gpu(handle)
        values = (_real.c_nvmlFieldValue_t * len(fieldIds))()
        for slot, field_id in zip(values, fieldIds, strict=True):
            fid, scope = field_id if isinstance(field_id, tuple) else (field_id, 0)
            slot.fieldId, slot.scopeId = fid, scope
            if not gpu.model.power_smoothing:
                slot.nvmlReturn = NVML_ERROR_NOT_SUPPORTED
                continue
            number: float | None = {
                _real.NVML_FI_PWR_SMOOTHING_ENABLED: float(gpu.smoothing_enabled),
                _real.NVML_FI_PWR_SMOOTHING_ACTIVE_PRESET_PROFILE: float(gpu.smoothing_preset),
                _real.NVML_FI_PWR_SMOOTHING_PROFILE_PERCENT_TMP_FLOOR: gpu.smoothing_params.get((scope, 0)),
                _real.NVML_FI_PWR_SMOOTHING_PROFILE_RAMP_UP_RATE: _mw(gpu.smoothing_params.get((scope, 1))),
                _real.NVML_FI_PWR_SMOOTHING_PROFILE_RAMP_DOWN_RATE: _mw(gpu.smoothing_params.get((scope, 2))),
            }.get(fid)
            if number is None:
                slot.nvmlReturn = NVML_ERROR_NOT_SUPPORTED
                continue
            if fid == _real.NVML_FI_PWR_SMOOTHING_PROFILE_PERCENT_TMP_FLOOR:
                slot.valueType, slot.value.dVal = 0, number  # double
            else:
                slot.valueType, slot.value.uiVal = 1, int(number)  # unsigned int
            slot.nvmlReturn = NVML_SUCCESS
        return values

    def _smoothing_fields_gpu(self, handle: FakeHandle) -> FakeGpu:
        self.calls.append(Call("nvmlDeviceGetFieldValues", (handle,)))
        self._lookup("nvmlDeviceGetFieldValues")
        self._device_checks("nvmlDeviceGetFieldValues", handle)
        return handle.gpu

    def nvmlDevicePowerSmoothingUpdatePresetProfileParam(self, device: FakeHandle, profile: Any) -> None:
        gpu = self._smoothing("nvmlDevicePowerSmoothingUpdatePresetProfileParam", device, write=True)
        struct = profile._obj
        if struct.version != _real.nvmlPowerSmoothingProfile_v1 or not 0 <= struct.profileId < 5:
            raise _nvml_error(NVML_ERROR_INVALID_ARGUMENT)
        if struct.paramId == 0 and not 0.0 <= struct.value <= 100.0:
            raise _nvml_error(NVML_ERROR_INVALID_ARGUMENT)
        gpu.smoothing_params[(struct.profileId, struct.paramId)] = float(struct.value)

    def nvmlDevicePowerSmoothingActivatePresetProfile(self, device: FakeHandle, profile: Any) -> None:
        gpu = self._smoothing("nvmlDevicePowerSmoothingActivatePresetProfile", device, write=True)
        struct = profile._obj
        if not 0 <= struct.profileId < 5:
            raise _nvml_error(NVML_ERROR_INVALID_ARGUMENT)
        gpu.smoothing_preset = int(struct.profileId)

    def nvmlDevicePowerSmoothingSetState(self, device: FakeHandle, state: Any) -> None:
        gpu = self._smoothing("nvmlDevicePowerSmoothingSetState", device, write=True)
        struct = state._obj
        if struct.version != _real.nvmlPowerSmoothingState_v1 or struct.state not in (0, 1):
            raise _nvml_error(NVML_ERROR_INVALID_ARGUMENT)
        gpu.smoothing_enabled = bool(struct.state)

    # -- init / system ------------------------------------------------------------------------------

    def nvmlInit(self) -> None:
        self.calls.append(Call("nvmlInit", ()))
        for function, exc, _, remaining in self._injected:
            if function == "nvmlInit" and remaining[0] != 0:
                if remaining[0] is not None:
                    remaining[0] -= 1
                raise exc
        if self.init_error is not None:
            raise _nvml_error(self.init_error)
        self._refcount += 1

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown", None)
        self._refcount -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._enter("nvmlSystemGetDriverVersion", None)
        return self.driver_version

    def nvmlSystemGetNVMLVersion(self) -> str:
        self._enter("nvmlSystemGetNVMLVersion", None)
        return self.nvml_version

    # -- enumeration & identity ---------------------------------------------------------------------

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount", None)
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeHandle:
        (i,) = self._enter("nvmlDeviceGetHandleByIndex", None, index, uints=(index,))
        if i >= len(self.gpus):
            raise _nvml_error(NVML_ERROR_INVALID_ARGUMENT)
        if self.gpus[i].lost:
            raise _nvml_error(NVML_ERROR_GPU_IS_LOST)
        return FakeHandle(self.gpus[i])

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> FakeHandle:
        self._enter("nvmlDeviceGetHandleByUUID", None, uuid)
        if uuid is None:
            raise _nvml_error(NVML_ERROR_INVALID_ARGUMENT)
        text = uuid.decode() if isinstance(uuid, bytes) else uuid
        for gpu in self.gpus:
            if gpu.uuid == text:
                return FakeHandle(gpu)
            for mig in gpu.mig_devices.values():
                if mig.uuid == text:
                    return FakeHandle(gpu, mig)
        raise _nvml_error(NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetIndex(self, handle: FakeHandle) -> int:
        self._enter("nvmlDeviceGetIndex", handle)
        return handle.gpu.index

    def nvmlDeviceGetUUID(self, handle: FakeHandle) -> str:
        self._enter("nvmlDeviceGetUUID", handle)
        return handle.mig.uuid if handle.mig is not None else handle.gpu.uuid

    def nvmlDeviceGetName(self, handle: FakeHandle) -> str:
        self._enter("nvmlDeviceGetName", handle)
        return handle.gpu.model.name

    def nvmlDeviceGetPciInfo(self, handle: FakeHandle) -> Any:
        self._enter("nvmlDeviceGetPciInfo", handle)
        if self.bus_id_as_bytes:
            return _RawPciInfo(busId=handle.gpu.bus_id)
        info = _real.nvmlPciInfo_t()
        info.busId = handle.gpu.bus_id
        info.busIdLegacy = handle.gpu.bus_id[4:]
        return info

    def nvmlDeviceGetArchitecture(self, device: FakeHandle) -> int:
        self._enter("nvmlDeviceGetArchitecture", device)
        return device.gpu.model.arch

    # -- power & energy -----------------------------------------------------------------------------

    def nvmlDeviceGetPowerUsage(self, handle: FakeHandle) -> int:
        self._enter("nvmlDeviceGetPowerUsage", handle)
        return handle.gpu.power_mw

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: FakeHandle) -> int:
        self._enter("nvmlDeviceGetTotalEnergyConsumption", handle)
        if not handle.gpu.model.energy_counter:
            raise _nvml_error(NVML_ERROR_NOT_SUPPORTED)
        return handle.gpu.energy_mj

    def nvmlDeviceGetPowerManagementLimit(self, handle: FakeHandle) -> int:
        self._enter("nvmlDeviceGetPowerManagementLimit", handle)
        return handle.gpu.limit_mw

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: FakeHandle) -> list[int]:
        self._enter("nvmlDeviceGetPowerManagementLimitConstraints", handle)
        return [handle.gpu.model.min_limit_mw, handle.gpu.model.max_limit_mw]

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: FakeHandle) -> int:
        self._enter("nvmlDeviceGetPowerManagementDefaultLimit", handle)
        return handle.gpu.model.default_limit_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: FakeHandle) -> int:
        self._enter("nvmlDeviceGetEnforcedPowerLimit", handle)
        return handle.gpu.enforced_mw

    def _apply_limit(self, handle: FakeHandle, value: int) -> None:
        self._write(handle)
        model = handle.gpu.model
        if not model.min_limit_mw <= value <= model.max_limit_mw:
            raise _nvml_error(NVML_ERROR_INVALID_ARGUMENT)
        handle.gpu.limit_mw = value

    def nvmlDeviceSetPowerManagementLimit(self, handle: FakeHandle, limit: int) -> None:
        (value,) = self._enter("nvmlDeviceSetPowerManagementLimit", handle, limit, uints=(limit,))
        self._apply_limit(handle, value)

    def nvmlDeviceSetPowerManagementLimit_v2(
        self, device: FakeHandle, powerScope: int, powerLimit: int, version: int = nvmlPowerValue_v2
    ) -> int:
        """Like the binding: converts the struct fields, calls NVML, and ignores its return code.

        Lookup failures (Uninitialized, FunctionNotFound) and ``TypeError`` still surface, because
        they happen in Python before the C call; everything NVML itself would return is swallowed.
        """
        name = "nvmlDeviceSetPowerManagementLimit_v2"
        self.calls.append(Call(name, (device, powerScope, powerLimit)))
        scope, _, limit = _c_uint(powerScope), _c_uint(version), _c_uint(powerLimit)
        self._lookup(name)
        try:
            self._device_checks(name, device)
            if scope != NVML_POWER_SCOPE_GPU:
                raise _nvml_error(NVML_ERROR_NOT_SUPPORTED)
            self._apply_limit(device, limit)
        except _real.NVMLError:
            pass  # the bug being reproduced: the error never reaches the caller
        return NVML_SUCCESS

    # -- clocks -------------------------------------------------------------------------------------

    def _graphics_clock_bounds(self, gpu: FakeGpu) -> tuple[int, int]:
        all_clocks = [c for clocks in gpu.model.clocks_mhz.values() for c in clocks]
        return min(all_clocks), max(all_clocks)

    def nvmlDeviceGetClockInfo(self, handle: FakeHandle, type: int) -> int:
        (kind,) = self._enter("nvmlDeviceGetClockInfo", handle, type, uints=(type,))
        gpu = handle.gpu
        if kind in (NVML_CLOCK_GRAPHICS, NVML_CLOCK_SM):
            top = self._graphics_clock_bounds(gpu)[1]
            return min(top, gpu.locked_clocks[1]) if gpu.locked_clocks else top
        if kind == NVML_CLOCK_MEM:
            top = max(gpu.model.clocks_mhz)
            return min(top, gpu.locked_memory_clocks[1]) if gpu.locked_memory_clocks else top
        raise _nvml_error(NVML_ERROR_INVALID_ARGUMENT)

    def nvmlDeviceGetSupportedMemoryClocks(self, handle: FakeHandle) -> list[int]:
        self._enter("nvmlDeviceGetSupportedMemoryClocks", handle)
        return sorted(handle.gpu.model.clocks_mhz, reverse=True)

    def nvmlDeviceGetSupportedGraphicsClocks(self, handle: FakeHandle, memoryClockMHz: int) -> list[int]:
        (memory,) = self._enter("nvmlDeviceGetSupportedGraphicsClocks", handle, memoryClockMHz, uints=(memoryClockMHz,))
        if memory not in handle.gpu.model.clocks_mhz:
            raise _nvml_error(NVML_ERROR_NOT_FOUND)
        return list(handle.gpu.model.clocks_mhz[memory])

    def nvmlDeviceSetGpuLockedClocks(self, handle: FakeHandle, minGpuClockMHz: int, maxGpuClockMHz: int) -> None:
        """Numeric pairs must lie in the supported range (an assumption; NVML may clamp instead)."""
        low, high = self._enter(
            "nvmlDeviceSetGpuLockedClocks",
            handle,
            minGpuClockMHz,
            maxGpuClockMHz,
            uints=(minGpuClockMHz, maxGpuClockMHz),
        )
        self._write(handle)
        symbolic = [v >= NVML_CLOCK_LIMIT_ID_RANGE_START for v in (low, high)]
        if all(symbolic):
            handle.gpu.locked_clocks = None if high == NVML_CLOCK_LIMIT_ID_UNLIMITED else (low, high)
            return
        lowest, highest = self._graphics_clock_bounds(handle.gpu)
        if any(symbolic) or low > high or low < lowest or high > highest:
            raise _nvml_error(NVML_ERROR_INVALID_ARGUMENT)
        handle.gpu.locked_clocks = (low, high)

    def nvmlDeviceResetGpuLockedClocks(self, handle: FakeHandle) -> None:
        self._enter("nvmlDeviceResetGpuLockedClocks", handle)
        self._write(handle)
        handle.gpu.locked_clocks = None

    def nvmlDeviceSetMemoryLockedClocks(self, handle: FakeHandle, minMemClockMHz: int, maxMemClockMHz: int) -> None:
        low, high = self._enter(
            "nvmlDeviceSetMemoryLockedClocks",
            handle,
            minMemClockMHz,
            maxMemClockMHz,
            uints=(minMemClockMHz, maxMemClockMHz),
        )
        self._write(handle)
        clocks = handle.gpu.model.clocks_mhz
        if low > high or low < min(clocks) or high > max(clocks):
            raise _nvml_error(NVML_ERROR_INVALID_ARGUMENT)
        handle.gpu.locked_memory_clocks = (low, high)

    def nvmlDeviceResetMemoryLockedClocks(self, handle: FakeHandle) -> None:
        self._enter("nvmlDeviceResetMemoryLockedClocks", handle)
        self._write(handle)
        handle.gpu.locked_memory_clocks = None

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: FakeHandle) -> int:
        self._enter("nvmlDeviceGetCurrentClocksEventReasons", handle)
        return self._reasons(handle.gpu)

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: FakeHandle) -> int:
        self._enter("nvmlDeviceGetCurrentClocksThrottleReasons", handle)
        return self._reasons(handle.gpu)

    @staticmethod
    def _reasons(gpu: FakeGpu) -> int:
        reasons = 0
        if gpu.utilization_pct == 0:
            reasons |= REASON_GPU_IDLE
        if gpu.demand_mw is not None and gpu.demand_mw > gpu.enforced_mw:
            reasons |= REASON_SW_POWER_CAP
        return reasons

    # -- utilisation & temperature ------------------------------------------------------------------

    def nvmlDeviceGetUtilizationRates(self, handle: FakeHandle) -> Any:
        self._enter("nvmlDeviceGetUtilizationRates", handle)
        if handle.gpu.mig_mode[0] == NVML_DEVICE_MIG_ENABLE:
            raise _nvml_error(NVML_ERROR_NOT_SUPPORTED)  # nvml.h: not supported in MIG mode
        return _real.c_nvmlUtilization_t(gpu=handle.gpu.utilization_pct, memory=handle.gpu.memory_utilization_pct)

    def nvmlDeviceGetTemperatureV(self, handle: FakeHandle, sensor: int, version: int = nvmlTemperature_v1) -> int:
        if version != nvmlTemperature_v1:
            raise _nvml_error(_real.NVML_ERROR_ARGUMENT_VERSION_MISMATCH)
        (kind,) = self._enter("nvmlDeviceGetTemperatureV", handle, sensor, uints=(sensor,))
        if kind != NVML_TEMPERATURE_GPU:
            raise _nvml_error(NVML_ERROR_INVALID_ARGUMENT)
        return handle.gpu.temperature_c

    def nvmlDeviceGetTemperature(self, handle: FakeHandle, sensor: int) -> int:
        (kind,) = self._enter("nvmlDeviceGetTemperature", handle, sensor, uints=(sensor,))
        if kind != NVML_TEMPERATURE_GPU:
            raise _nvml_error(NVML_ERROR_INVALID_ARGUMENT)
        return handle.gpu.temperature_c

    # -- MIG ----------------------------------------------------------------------------------------

    def nvmlDeviceGetMigMode(self, device: FakeHandle) -> list[int]:
        self._enter("nvmlDeviceGetMigMode", device)
        if not device.gpu.model.mig_capable:
            raise _nvml_error(NVML_ERROR_NOT_SUPPORTED)
        return list(device.gpu.mig_mode)

    def nvmlDeviceGetMaxMigDeviceCount(self, device: FakeHandle) -> int:
        self._enter("nvmlDeviceGetMaxMigDeviceCount", device)
        if not device.gpu.model.mig_capable:
            raise _nvml_error(NVML_ERROR_NOT_SUPPORTED)
        return device.gpu.model.max_mig_devices if device.gpu.mig_mode[0] == NVML_DEVICE_MIG_ENABLE else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, device: FakeHandle, index: int) -> FakeHandle:
        (slot,) = self._enter("nvmlDeviceGetMigDeviceHandleByIndex", device, index, uints=(index,))
        if device.mig is not None or slot >= device.gpu.model.max_mig_devices:
            raise _nvml_error(NVML_ERROR_INVALID_ARGUMENT)
        mig = device.gpu.mig_devices.get(slot)
        if mig is None:
            raise _nvml_error(NVML_ERROR_NOT_FOUND)
        return FakeHandle(device.gpu, mig)

    def nvmlDeviceIsMigDeviceHandle(self, device: FakeHandle) -> ctypes.c_uint:
        """Returns a ``c_uint``, not a bool, exactly like the binding (``bool()`` works on it)."""
        self._enter("nvmlDeviceIsMigDeviceHandle", device)
        return ctypes.c_uint(1 if device.mig is not None else 0)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, migDevice: FakeHandle) -> FakeHandle:
        self._enter("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", migDevice)
        if migDevice.mig is None:
            raise _nvml_error(NVML_ERROR_INVALID_ARGUMENT)
        return FakeHandle(migDevice.gpu)


class _RawPciInfo(ctypes.Structure):
    """A PCI-info struct without pynvml's bytes→str decoding, as older bindings returned it."""

    _fields_ = [("busId", ctypes.c_char * 32)]
