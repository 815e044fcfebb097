"""Every NVML error code reaches the agent as the typed error from the one table, cause chained."""

from __future__ import annotations

import fake_pynvml
import pytest
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
from wattplane.agent.gpu.nvml import NVML_ERROR_MAP, NvmlBackend, nvml_error_to_gpu_error

EXPECTED: dict[int, type[GpuError]] = {
    1: GpuUninitializedError,
    2: GpuInvalidArgumentError,
    3: GpuNotSupportedError,
    4: GpuNoPermissionError,
    6: GpuNotFoundError,
    13: GpuNotSupportedError,
    15: GpuLostError,
    16: GpuLostError,
    24: GpuInvalidArgumentError,
    28: GpuNotFoundError,
}
UNMAPPED = [5, 7, 8, 9, 10, 11, 12, 14, 17, 18, 19, 20, 21, 999]


def test_table_is_what_the_agent_expects() -> None:
    assert NVML_ERROR_MAP == EXPECTED


@pytest.mark.parametrize("code", sorted(EXPECTED))
def test_mapped_code_on_a_required_read(backend: NvmlBackend, fake: fake_pynvml.FakeNvml, code: int) -> None:
    # Power usage is a required field, so even NotSupported is raised rather than swallowed.
    fake.inject("nvmlDeviceGetPowerUsage", code)
    with pytest.raises(EXPECTED[code]) as caught:
        backend.devices()[0].read()
    cause = caught.value.__cause__
    assert isinstance(cause, fake_pynvml.nvmlExceptionClass(code))
    assert cause.value == code
    assert f"NVML error {code}" in str(caught.value)


@pytest.mark.parametrize("code", UNMAPPED)
def test_other_codes_are_driver_errors(backend: NvmlBackend, fake: fake_pynvml.FakeNvml, code: int) -> None:
    fake.inject("nvmlDeviceSetPowerManagementLimit", code)
    with pytest.raises(GpuDriverError) as caught:
        backend.devices()[0].set_power_limit_watts(150)
    assert type(caught.value) is GpuDriverError
    assert caught.value.__cause__ is not None


def test_unknown_code_without_a_generated_class_is_a_driver_error() -> None:
    error = fake_pynvml.NVMLError(12345)  # no subclass exists for this code
    mapped = nvml_error_to_gpu_error(error, "probe")
    assert type(mapped) is GpuDriverError
    assert "12345" in str(mapped)


def test_library_mismatch_is_a_driver_error(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    mismatch = fake_pynvml.NVMLLibraryMismatchError("Unversioned function called ...")
    assert not isinstance(mismatch, fake_pynvml.NVMLError)  # why it needs its own except clause
    fake.inject("nvmlDeviceGetPowerManagementLimit", mismatch)
    with pytest.raises(GpuDriverError, match="do not match") as caught:
        backend.devices()[0].read()
    assert caught.value.__cause__ is mismatch


def test_library_mismatch_on_an_optional_read_is_raised_not_hidden(
    backend: NvmlBackend, fake: fake_pynvml.FakeNvml
) -> None:
    fake.inject("nvmlDeviceGetUtilizationRates", fake_pynvml.NVMLLibraryMismatchError("x"))
    with pytest.raises(GpuDriverError):
        backend.devices()[0].read()


def test_lost_gpu_fails_only_that_board(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    fake.gpu(1).lost = True
    with pytest.raises(GpuLostError):
        backend.devices()[1].read()
    with pytest.raises(GpuLostError):
        backend.devices()[1].set_power_limit_watts(150)
    assert backend.devices()[0].read().power_watts > 0


def test_lost_gpu_is_not_cached_as_unsupported(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    fake.inject("nvmlDeviceGetTemperatureV", fake_pynvml.NVML_ERROR_GPU_IS_LOST)
    gpu = backend.devices()[0]
    with pytest.raises(GpuLostError):
        gpu.read()
    assert gpu.read().temperature_celsius == 35.0
    assert "temperature" not in gpu.unsupported_features


def test_calls_after_close_are_uninitialized(fake: fake_pynvml.FakeNvml) -> None:
    backend = NvmlBackend(lib=fake)
    gpu = backend.devices()[0]
    backend.close()
    with pytest.raises(GpuUninitializedError):
        gpu.read()


def test_mapped_errors_carry_what_was_attempted(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    fake.privileged = False
    with pytest.raises(GpuNoPermissionError, match=r"set power limit to 150000 mW on GPU 0 \(GPU-"):
        backend.devices()[0].set_power_limit_watts(150)
