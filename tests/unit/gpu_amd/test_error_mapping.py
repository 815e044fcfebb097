"""One table from amdsmi_status_t to the typed errors; the library's exception always chained."""

from __future__ import annotations

import fake_amdsmi
import pytest
from wattplane.agent.gpu import errors
from wattplane.agent.gpu.amd import AMDSMI_ERROR_MAP, AmdSmiBackend, amdsmi_error_to_gpu_error

EXPECTED = {
    fake_amdsmi.AMDSMI_STATUS_INVAL: errors.GpuInvalidArgumentError,
    fake_amdsmi.AMDSMI_STATUS_INPUT_OUT_OF_BOUNDS: errors.GpuInvalidArgumentError,
    fake_amdsmi.AMDSMI_STATUS_NOT_SUPPORTED: errors.GpuNotSupportedError,
    fake_amdsmi.AMDSMI_STATUS_NOT_YET_IMPLEMENTED: errors.GpuNotSupportedError,
    fake_amdsmi.AMDSMI_STATUS_FAIL_LOAD_SYMBOL: errors.GpuNotSupportedError,
    fake_amdsmi.AMDSMI_STATUS_SETTING_UNAVAILABLE: errors.GpuNotSupportedError,
    fake_amdsmi.AMDSMI_STATUS_NO_PERM: errors.GpuNoPermissionError,
    fake_amdsmi.AMDSMI_STATUS_NOT_FOUND: errors.GpuNotFoundError,
    fake_amdsmi.AMDSMI_STATUS_NOT_INIT: errors.GpuUninitializedError,
    fake_amdsmi.AMDSMI_STATUS_AMDGPU_RESTART_ERR: errors.GpuLostError,
    fake_amdsmi.AMDSMI_STATUS_TIMEOUT: errors.GpuDriverError,
    fake_amdsmi.AMDSMI_STATUS_BUSY: errors.GpuDriverError,
    fake_amdsmi.AMDSMI_STATUS_UNKNOWN_ERROR: errors.GpuDriverError,
}


@pytest.mark.parametrize(("code", "expected"), sorted(EXPECTED.items()))
def test_status_codes_map_to_typed_errors(code: int, expected: type[errors.GpuError]) -> None:
    mapped = amdsmi_error_to_gpu_error(fake_amdsmi.AmdSmiLibraryException(code), "do something")
    assert type(mapped) is expected
    assert f"AMD SMI status {code}" in str(mapped)


def test_every_mapped_code_is_tested() -> None:
    assert set(AMDSMI_ERROR_MAP) <= set(EXPECTED)


def test_negative_codes_are_normalised_like_the_library() -> None:
    err = fake_amdsmi.AmdSmiLibraryException(-fake_amdsmi.AMDSMI_STATUS_NO_PERM)
    assert type(amdsmi_error_to_gpu_error(err, "x")) is errors.GpuNoPermissionError


def test_retry_and_timeout_subclasses_are_driver_errors() -> None:
    for err in (fake_amdsmi.AmdSmiRetryException(), fake_amdsmi.AmdSmiTimeoutException()):
        assert type(amdsmi_error_to_gpu_error(err, "x")) is errors.GpuDriverError


def test_a_wrong_python_argument_is_an_invalid_argument(backend: AmdSmiBackend, fake: fake_amdsmi.FakeAmdSmi) -> None:
    with pytest.raises(fake_amdsmi.AmdSmiParameterException) as raw:
        fake.amdsmi_set_power_cap(backend.devices()[0]._handle, 0, 400.0)
    assert raw.value.err_code is None
    assert type(amdsmi_error_to_gpu_error(raw.value, "x")) is errors.GpuInvalidArgumentError


def test_lost_board_on_read_is_raised_with_the_cause(backend: AmdSmiBackend, fake: fake_amdsmi.FakeAmdSmi) -> None:
    fake.gpus[0].unsupported.add("amdsmi_get_power_info")  # no power at all: required, so raised
    with pytest.raises(errors.GpuNotSupportedError) as caught:
        backend.devices()[0].read()
    assert isinstance(caught.value.__cause__, fake_amdsmi.AmdSmiLibraryException)


def test_calls_after_close_are_uninitialised(fake: fake_amdsmi.FakeAmdSmi) -> None:
    backend = AmdSmiBackend(lib=fake, clock=fake.monotonic)
    gpu = backend.devices()[0]
    backend.close()
    with pytest.raises(errors.GpuUninitializedError):
        gpu.read()


def test_no_permission_at_init_is_no_permission() -> None:
    fake = fake_amdsmi.FakeAmdSmi([fake_amdsmi.MI210], init_status=fake_amdsmi.AMDSMI_STATUS_NO_PERM)
    with pytest.raises(errors.GpuNoPermissionError):
        AmdSmiBackend(lib=fake)
