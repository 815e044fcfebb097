"""Power-limit writes: v1 setter, int milliwatts, read back, idempotent, refused before NVML when invalid."""

from __future__ import annotations

import math
from typing import Any

import fake_pynvml
import pytest
from wattplane.agent.gpu.errors import GpuDriverError, GpuInvalidArgumentError, GpuNoPermissionError
from wattplane.agent.gpu.nvml import NvmlBackend

SET_V1 = "nvmlDeviceSetPowerManagementLimit"
SET_V2 = "nvmlDeviceSetPowerManagementLimit_v2"


def test_sets_with_the_v1_setter_and_reads_back(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    gpu = backend.devices()[0]
    fake.calls.clear()

    gpu.set_power_limit_watts(225)

    assert fake.gpu(0).limit_mw == 225_000
    assert [c.args[1:] for c in fake.calls_named(SET_V1)] == [(225_000,)]
    assert fake.calls_named(SET_V2) == []
    names = [c.name for c in fake.calls]
    # The limit is read before the write (idempotence) and after it (verification).
    assert names.index(SET_V1) < len(names) - 1
    assert names[-1] == "nvmlDeviceGetPowerManagementLimit"
    assert gpu.read().power_limit_watts == 225.0


def test_v2_setter_is_never_used(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    fake.privileged = False
    gpu = backend.devices()[2]
    with pytest.raises(GpuNoPermissionError):
        gpu.set_power_limit_watts(400)
    gpu.set_power_limit_watts(700)
    assert fake.calls_named(SET_V2) == []


def test_setting_the_current_limit_makes_no_call(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    gpu = backend.devices()[0]
    gpu.set_power_limit_watts(300)  # already the default
    gpu.set_power_limit_watts(300.0)
    gpu.set_power_limit_watts(299.9999)  # rounds to the same milliwatt
    assert fake.write_calls() == []


def test_repeated_set_writes_once(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    gpu = backend.devices()[1]
    for _ in range(5):
        gpu.set_power_limit_watts(175)
    assert len(fake.write_calls()) == 1


def test_idempotence_does_not_need_privilege(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    fake.privileged = False
    backend.devices()[0].set_power_limit_watts(300)
    assert fake.write_calls() == []


@pytest.mark.parametrize(("index", "watts"), [(0, 99.9), (0, 300.001), (0, 0), (1, 251), (2, 199), (2, 701), (0, -5)])
def test_out_of_range_is_refused_before_nvml(
    backend: NvmlBackend, fake: fake_pynvml.FakeNvml, index: int, watts: float
) -> None:
    with pytest.raises(GpuInvalidArgumentError, match="outside"):
        backend.devices()[index].set_power_limit_watts(watts)
    assert fake.write_calls() == []


@pytest.mark.parametrize("watts", [math.nan, math.inf, -math.inf])
def test_non_finite_is_refused_before_nvml(backend: NvmlBackend, fake: fake_pynvml.FakeNvml, watts: float) -> None:
    with pytest.raises(GpuInvalidArgumentError, match="finite"):
        backend.devices()[0].set_power_limit_watts(watts)
    assert fake.write_calls() == []


@pytest.mark.parametrize("bad", [None, "250", True])
def test_non_numbers_are_refused(backend: NvmlBackend, fake: fake_pynvml.FakeNvml, bad: Any) -> None:
    with pytest.raises(GpuInvalidArgumentError):
        backend.devices()[0].set_power_limit_watts(bad)
    assert fake.write_calls() == []


@pytest.mark.parametrize(("watts", "expected_mw"), [(150.5, 150_500), (199.9996, 200_000), (100.0004, 100_000)])
def test_fractional_watts_become_int_milliwatts(
    backend: NvmlBackend, fake: fake_pynvml.FakeNvml, watts: float, expected_mw: int
) -> None:
    backend.devices()[0].set_power_limit_watts(watts)
    (call,) = fake.calls_named(SET_V1)
    assert call.args[1] == expected_mw
    assert type(call.args[1]) is int


def test_constraint_boundaries_are_accepted(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    gpu = backend.devices()[2]
    gpu.set_power_limit_watts(200)
    assert fake.gpu(2).limit_mw == 200_000
    gpu.set_power_limit_watts(700)
    assert fake.gpu(2).limit_mw == 700_000


def test_no_permission_is_typed_and_chained(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    fake.privileged = False
    with pytest.raises(GpuNoPermissionError) as caught:
        backend.devices()[0].set_power_limit_watts(200)
    assert isinstance(caught.value.__cause__, fake_pynvml.NVMLError)
    assert caught.value.__cause__.value == fake_pynvml.NVML_ERROR_NO_PERMISSION
    assert fake.gpu(0).limit_mw == 300_000


def test_a_write_that_does_not_stick_is_an_error(
    backend: NvmlBackend, fake: fake_pynvml.FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If another limiter or a swallowed error leaves the old value, the read-back notices."""
    monkeypatch.setattr(fake, SET_V1, lambda handle, limit: None)
    with pytest.raises(GpuDriverError, match="reads back 300000 mW"):
        backend.devices()[0].set_power_limit_watts(200)


def test_constraints_are_read_once(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    gpu = backend.devices()[0]
    for watts in (200, 210, 220):
        gpu.set_power_limit_watts(watts)
    gpu.constraints()
    assert len(fake.calls_named("nvmlDeviceGetPowerManagementLimitConstraints")) == 1
