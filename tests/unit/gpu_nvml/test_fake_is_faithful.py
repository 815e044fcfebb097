"""The fake behaves like nvidia-ml-py where the backend depends on it; otherwise the tests above prove little."""

from __future__ import annotations

import ctypes
import inspect
import re
from pathlib import Path

import fake_pynvml
import pynvml
import pytest
from wattplane.agent.gpu import nvml

FAKE_FUNCTIONS = sorted(n for n in dir(fake_pynvml.FakeNvml) if n.startswith("nvml") and n != "nvmlExceptionClass")
BACKEND_FUNCTIONS = sorted(set(re.findall(r"\.(nvml[A-Za-z0-9_]+)\b", Path(nvml.__file__).read_text())))


@pytest.fixture
def live() -> fake_pynvml.FakeNvml:
    fake = fake_pynvml.FakeNvml([fake_pynvml.A40, fake_pynvml.H100_SXM])
    fake.nvmlInit()
    return fake


def test_backend_uses_only_functions_that_exist_in_both() -> None:
    assert BACKEND_FUNCTIONS  # the regex found the calls
    for name in BACKEND_FUNCTIONS:
        assert hasattr(pynvml, name), name
        assert name in FAKE_FUNCTIONS, name


@pytest.mark.parametrize("name", FAKE_FUNCTIONS)
def test_signatures_match_the_real_module(name: str) -> None:
    real = inspect.signature(getattr(pynvml, name))
    fake = inspect.signature(getattr(fake_pynvml.FakeNvml, name))
    fake_params = [p for p in fake.parameters.values() if p.name != "self"]
    assert [p.name for p in fake_params] == list(real.parameters), name
    assert [p.default for p in fake_params] == [p.default for p in real.parameters.values()], name


def test_raises_the_real_exception_classes(live: fake_pynvml.FakeNvml) -> None:
    live.privileged = False
    handle = live.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NoPermission) as caught:
        live.nvmlDeviceSetPowerManagementLimit(handle, 200_000)
    assert caught.value.value == pynvml.NVML_ERROR_NO_PERMISSION
    assert str(caught.value) == "Insufficient Permissions"


def test_uninitialized_before_init() -> None:
    fake = fake_pynvml.FakeNvml()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetCount()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlShutdown()


def test_init_is_reference_counted(live: fake_pynvml.FakeNvml) -> None:
    live.nvmlInit()
    live.nvmlShutdown()
    assert live.nvmlDeviceGetCount() == 2
    live.nvmlShutdown()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        live.nvmlDeviceGetCount()


@pytest.mark.parametrize("bad", [200_000.0, None, "200000"])
def test_setters_are_as_strict_as_c_uint(live: fake_pynvml.FakeNvml, bad: object) -> None:
    handle = live.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(TypeError):
        live.nvmlDeviceSetPowerManagementLimit(handle, bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        live.nvmlDeviceSetGpuLockedClocks(handle, bad, 1410)  # type: ignore[arg-type]
    assert live.gpu(0).limit_mw == 300_000


def test_out_of_range_limit_is_invalid_argument(live: fake_pynvml.FakeNvml) -> None:
    handle = live.nvmlDeviceGetHandleByIndex(1)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        live.nvmlDeviceSetPowerManagementLimit(handle, 150_000)


def test_v2_setter_swallows_errors_like_the_binding(live: fake_pynvml.FakeNvml) -> None:
    handle = live.nvmlDeviceGetHandleByIndex(0)
    assert live.nvmlDeviceSetPowerManagementLimit_v2(handle, 0, 5_000_000) == pynvml.NVML_SUCCESS
    live.privileged = False
    assert live.nvmlDeviceSetPowerManagementLimit_v2(handle, 0, 200_000) == pynvml.NVML_SUCCESS
    assert live.gpu(0).limit_mw == 300_000  # nothing changed, and nobody was told
    live.privileged = True
    live.nvmlDeviceSetPowerManagementLimit_v2(handle, 0, 200_000)
    assert live.gpu(0).limit_mw == 200_000


def test_v2_binding_really_ignores_the_return_code() -> None:
    """Pin the upstream bug this project works around; if it is fixed, revisit design.md §8."""
    source = inspect.getsource(pynvml.nvmlDeviceSetPowerManagementLimit_v2)
    assert "_nvmlCheckReturn" not in source
    assert "return NVML_SUCCESS" in source


def test_not_supported_and_lost_per_device(live: fake_pynvml.FakeNvml) -> None:
    a40, h100 = live.nvmlDeviceGetHandleByIndex(0), live.nvmlDeviceGetHandleByIndex(1)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        live.nvmlDeviceGetMigMode(a40)
    assert live.nvmlDeviceGetMigMode(h100) == [0, 0]
    live.gpu(1).lost = True
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        live.nvmlDeviceGetPowerUsage(h100)
    assert live.nvmlDeviceGetPowerUsage(a40) == 30_000


def test_missing_function_is_function_not_found(live: fake_pynvml.FakeNvml) -> None:
    live.missing_functions.add("nvmlDeviceGetTemperatureV")
    with pytest.raises(pynvml.NVMLError_FunctionNotFound):
        live.nvmlDeviceGetTemperatureV(live.nvmlDeviceGetHandleByIndex(0), 0)


def test_handles_are_fresh_opaque_objects(live: fake_pynvml.FakeNvml) -> None:
    first, second = live.nvmlDeviceGetHandleByIndex(0), live.nvmlDeviceGetHandleByIndex(0)
    assert first is not second
    assert first != second  # like two ctypes pointers to the same device


def test_mig_helpers(live: fake_pynvml.FakeNvml) -> None:
    (mig_uuid, *_) = live.enable_mig(1, instances=2)
    mig = live.nvmlDeviceGetHandleByUUID(mig_uuid)
    flag = live.nvmlDeviceIsMigDeviceHandle(mig)
    assert isinstance(flag, ctypes.c_uint)
    assert flag.value == 1
    parent = live.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig)
    assert live.nvmlDeviceGetUUID(parent) == live.gpu(1).uuid
    with pytest.raises(pynvml.NVMLError_NotFound):
        live.nvmlDeviceGetMigDeviceHandleByIndex(live.nvmlDeviceGetHandleByIndex(1), 5)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        live.nvmlDeviceSetPowerManagementLimit(mig, 300_000)  # no per-instance limits


def test_bus_id_has_an_eight_digit_domain(live: fake_pynvml.FakeNvml) -> None:
    info = live.nvmlDeviceGetPciInfo(live.nvmlDeviceGetHandleByIndex(1))
    assert isinstance(info, pynvml.nvmlPciInfo_t)
    # pynvml 13.615.71 decodes char arrays on attribute access; the stored value is bytes.
    assert info.busId == "00000000:37:00.0"
    assert info.busIdLegacy == "0000:37:00.0"


def test_calls_are_recorded(live: fake_pynvml.FakeNvml) -> None:
    live.calls.clear()
    handle = live.nvmlDeviceGetHandleByIndex(0)
    live.nvmlDeviceSetPowerManagementLimit(handle, 250_000)
    assert [c.name for c in live.calls] == ["nvmlDeviceGetHandleByIndex", "nvmlDeviceSetPowerManagementLimit"]
    assert live.write_calls() == [fake_pynvml.Call("nvmlDeviceSetPowerManagementLimit", (handle, 250_000))]


def test_unknown_attributes_fail_loudly(live: fake_pynvml.FakeNvml) -> None:
    assert live.NVML_ERROR_TIMEOUT == pynvml.NVML_ERROR_TIMEOUT
    assert live.NVMLError_Timeout is pynvml.NVMLError_Timeout
    with pytest.raises(AttributeError):
        live.nvmlDeviceGetSomethingNew  # noqa: B018
