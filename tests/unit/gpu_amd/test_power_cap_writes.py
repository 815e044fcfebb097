"""Power-cap writes: int microwatts, whole watts, read back, idempotent, refused outside the range."""

from __future__ import annotations

import math
from typing import Any

import fake_amdsmi
import pytest
from wattplane.agent.gpu.amd import AmdSmiBackend
from wattplane.agent.gpu.errors import (
    GpuDriverError,
    GpuInvalidArgumentError,
    GpuNoPermissionError,
    GpuNotSupportedError,
)

SET = "amdsmi_set_power_cap"


def test_writes_int_microwatts_on_sensor_zero_and_reads_back(
    backend: AmdSmiBackend, fake: fake_amdsmi.FakeAmdSmi
) -> None:
    gpu = backend.devices()[0]
    fake.calls.clear()
    gpu.set_power_limit_watts(500)
    (call,) = fake.calls_named(SET)
    assert call.args[1:] == (0, 500_000_000)
    assert type(call.args[2]) is int
    names = [c.name for c in fake.calls]
    assert names.index(SET) < len(names) - 1 and names[-1] == "amdsmi_get_power_cap_info"
    assert fake.gpus[0].cap_uw == 500_000_000
    assert gpu.read().power_limit_watts == 500.0


def test_fractional_watts_are_rounded_to_what_the_driver_keeps(
    backend: AmdSmiBackend, fake: fake_amdsmi.FakeAmdSmi
) -> None:
    gpu = backend.devices()[0]
    gpu.set_power_limit_watts(412.6)  # the driver would truncate 412_600_000 µW to 412 W: no mismatch
    assert fake.calls_named(SET)[-1].args[2] == 413_000_000
    assert gpu.read().power_limit_watts == 413.0


def test_edge_of_range_rounds_inwards(fake: fake_amdsmi.FakeAmdSmi) -> None:
    fake.gpus[2] = fake_amdsmi.FakeAmdGpu(
        model=fake_amdsmi.AmdModel("odd", 150, 300, 300, 40, 500, 1700, "average_socket_power"),
        uuid="odd",
        bdf="0000:99:00.0",
    )
    with AmdSmiBackend(lib=fake, clock=fake.monotonic) as backend:
        backend.devices()[2].set_power_limit_watts(300.0)
        backend.devices()[2].set_power_limit_watts(150.2)
    assert fake.gpus[2].cap_uw == 150_000_000


def test_unchanged_cap_costs_no_write(backend: AmdSmiBackend, fake: fake_amdsmi.FakeAmdSmi) -> None:
    backend.devices()[1].set_power_limit_watts(500)  # the boot default
    assert fake.calls_named(SET) == []


@pytest.mark.parametrize("watts", [99.0, 560.6, 1e9, -1.0])
def test_outside_the_range_is_refused_before_the_library(
    backend: AmdSmiBackend, fake: fake_amdsmi.FakeAmdSmi, watts: float
) -> None:
    with pytest.raises(GpuInvalidArgumentError, match="outside"):
        backend.devices()[1].set_power_limit_watts(watts)
    assert fake.calls_named(SET) == []
    assert fake.gpus[1].cap_uw == 500_000_000


@pytest.mark.parametrize("watts", [math.nan, math.inf, None, "300", True])
def test_non_numbers_are_refused(backend: AmdSmiBackend, fake: fake_amdsmi.FakeAmdSmi, watts: Any) -> None:
    with pytest.raises(GpuInvalidArgumentError):
        backend.devices()[0].set_power_limit_watts(watts)
    assert fake.calls_named(SET) == []


def test_unprivileged_write_is_no_permission(backend: AmdSmiBackend, fake: fake_amdsmi.FakeAmdSmi) -> None:
    fake.privileged = False
    with pytest.raises(GpuNoPermissionError, match="AMDSMI_STATUS_NO_PERM") as caught:
        backend.devices()[0].set_power_limit_watts(400)
    assert caught.value.__cause__.err_code == fake_amdsmi.AMDSMI_STATUS_NO_PERM  # type: ignore[union-attr]
    assert fake.gpus[0].cap_uw == 750_000_000


def test_vm_guest_refuses_caps_even_for_root(backend: AmdSmiBackend, fake: fake_amdsmi.FakeAmdSmi) -> None:
    fake.gpus[0].vm_guest = True
    with pytest.raises(GpuNoPermissionError):
        backend.devices()[0].set_power_limit_watts(500)


@pytest.mark.parametrize("status", [fake_amdsmi.AMDSMI_STATUS_NOT_SUPPORTED, fake_amdsmi.AMDSMI_STATUS_INVAL])
def test_mi300x_in_a_vm_that_cannot_lower_its_cap_is_not_supported(
    backend: AmdSmiBackend, fake: fake_amdsmi.FakeAmdSmi, status: int
) -> None:
    fake.gpus[0].lowering_refused = status
    gpu = backend.devices()[0]
    with pytest.raises(GpuNotSupportedError):
        gpu.set_power_limit_watts(500)
    assert fake.gpus[0].cap_uw == 750_000_000
    gpu.set_power_limit_watts(750)  # back at the default: nothing to do, nothing refused


def test_board_without_a_usable_range_is_never_written(fake: fake_amdsmi.FakeAmdSmi) -> None:
    fake.gpus[1].unknown_range = True
    with AmdSmiBackend(lib=fake, clock=fake.monotonic) as backend:
        gpu = backend.devices()[1]
        with pytest.raises(GpuNotSupportedError, match="no usable power-cap range"):
            gpu.constraints()
        with pytest.raises(GpuNotSupportedError):
            gpu.set_power_limit_watts(300)
        assert gpu.read().power_limit_watts == 500.0  # reading still works
    assert fake.calls_named(SET) == []


def test_read_back_mismatch_is_a_driver_error(
    backend: AmdSmiBackend, fake: fake_amdsmi.FakeAmdSmi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fake, "amdsmi_set_power_cap", lambda processor_handle, sensor_ind, cap: None)
    with pytest.raises(GpuDriverError, match="reads back 750000000 µW after setting 400000000 µW"):
        backend.devices()[0].set_power_limit_watts(400)
