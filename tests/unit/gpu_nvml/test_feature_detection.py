"""Optional reads a board refuses yield None, are remembered per board, and are not retried."""

from __future__ import annotations

import fake_pynvml
import pytest
from wattplane.agent.gpu.nvml import NvmlBackend


def test_not_supported_yields_none_and_is_not_retried(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    fake.gpu(0).unsupported |= {"nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetClockInfo"}
    gpu = backend.devices()[0]
    for _ in range(3):
        reading = gpu.read()
        assert reading.enforced_power_limit_watts is None
        assert reading.sm_clock_mhz is None
        assert reading.power_watts == 30.0
    assert len(fake.calls_named("nvmlDeviceGetEnforcedPowerLimit")) == 1
    assert len(fake.calls_named("nvmlDeviceGetClockInfo")) == 1
    assert gpu.unsupported_features == {"mig_mode", "enforced_limit", "sm_clock"}


def test_cache_is_per_board(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    fake.gpu(0).unsupported.add("nvmlDeviceGetUtilizationRates")
    fake.gpu(1).utilization_pct = 40
    assert backend.devices()[0].read().utilization_ratio is None
    assert backend.devices()[1].read().utilization_ratio == pytest.approx(0.4)


def test_temperature_falls_back_when_the_driver_lacks_the_v_call(
    backend: NvmlBackend, fake: fake_pynvml.FakeNvml
) -> None:
    fake.missing_functions.add("nvmlDeviceGetTemperatureV")
    fake.gpu(0).temperature_c = 71
    assert backend.devices()[0].read().temperature_celsius == 71.0
    (legacy,) = fake.calls_named("nvmlDeviceGetTemperature")
    assert legacy.args[1] == fake_pynvml.NVML_TEMPERATURE_GPU


def test_temperature_v_is_preferred(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    backend.devices()[0].read()
    assert len(fake.calls_named("nvmlDeviceGetTemperatureV")) == 1
    assert fake.calls_named("nvmlDeviceGetTemperature") == []


def test_temperature_none_when_neither_call_exists(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    fake.missing_functions |= {"nvmlDeviceGetTemperatureV", "nvmlDeviceGetTemperature"}
    gpu = backend.devices()[0]
    assert gpu.read().temperature_celsius is None
    assert gpu.read().temperature_celsius is None
    assert len(fake.calls_named("nvmlDeviceGetTemperatureV")) == 1
    assert "temperature" in gpu.unsupported_features


def test_clock_event_reasons_fall_back_to_the_throttle_name(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    fake.missing_functions.add("nvmlDeviceGetCurrentClocksEventReasons")
    board = fake.gpu(0)
    board.utilization_pct = 100
    board.demand_mw = 300_000
    board.limit_mw = 150_000
    assert backend.devices()[0].read().throttle_reasons == fake_pynvml.REASON_SW_POWER_CAP
    assert len(fake.calls_named("nvmlDeviceGetCurrentClocksThrottleReasons")) == 1


def test_unsupported_clock_event_reasons_read_as_zero(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    fake.gpu(0).unsupported.add("nvmlDeviceGetCurrentClocksEventReasons")
    assert backend.devices()[0].read().throttle_reasons == 0


def test_required_reads_are_not_silenced(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    from wattplane.agent.gpu.errors import GpuNotSupportedError

    fake.gpu(0).unsupported.add("nvmlDeviceGetPowerManagementLimit")
    with pytest.raises(GpuNotSupportedError):
        backend.devices()[0].read()
