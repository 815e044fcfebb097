"""Graphics clock range: set through amdsmi_set_gpu_clk_range, checked against the boot range, reset."""

from __future__ import annotations

import fake_amdsmi
import pytest
from wattplane.agent.gpu.amd import AmdSmiBackend
from wattplane.agent.gpu.errors import GpuInvalidArgumentError, GpuNoPermissionError


def test_range_is_the_one_reported_before_any_lock(backend: AmdSmiBackend) -> None:
    assert backend.devices()[0].locked_clock_range_mhz() == (500, 2100)


def test_lock_sets_the_gfx_range_and_reports_it(backend: AmdSmiBackend, fake: fake_amdsmi.FakeAmdSmi) -> None:
    gpu = backend.devices()[0]
    gpu.set_locked_clocks_mhz(800, 1500)
    (call,) = fake.calls_named("amdsmi_set_gpu_clk_range")
    assert call.args[1:] == (800, 1500, fake_amdsmi.AmdSmiClkType.GFX)
    assert fake.gpus[0].clk_range == (800, 1500)
    assert gpu.read().locked_clocks_mhz == (800, 1500)
    assert gpu.locked_clock_range_mhz() == (500, 2100)  # still the board's range, not the lock


@pytest.mark.parametrize(("low", "high"), [(400, 1500), (800, 2200), (1500, 800), (0, 100), (800.5, 1500)])
def test_bad_bounds_are_refused_before_the_library(
    backend: AmdSmiBackend, fake: fake_amdsmi.FakeAmdSmi, low: float, high: int
) -> None:
    with pytest.raises(GpuInvalidArgumentError):
        backend.devices()[0].set_locked_clocks_mhz(low, high)  # type: ignore[arg-type]
    assert fake.calls_named("amdsmi_set_gpu_clk_range") == []


def test_reset_restores_the_range_and_the_auto_level(backend: AmdSmiBackend, fake: fake_amdsmi.FakeAmdSmi) -> None:
    gpu = backend.devices()[1]
    gpu.set_locked_clocks_mhz(600, 1200)
    assert fake.gpus[1].perf_level == fake_amdsmi.AmdSmiDevPerfLevel.MANUAL
    gpu.reset_locked_clocks()
    assert fake.gpus[1].clk_range == (500, 1700)
    assert fake.gpus[1].perf_level == fake_amdsmi.AmdSmiDevPerfLevel.AUTO
    assert gpu.read().locked_clocks_mhz is None


def test_unprivileged_lock_is_no_permission(backend: AmdSmiBackend, fake: fake_amdsmi.FakeAmdSmi) -> None:
    fake.privileged = False
    with pytest.raises(GpuNoPermissionError):
        backend.devices()[0].set_locked_clocks_mhz(800, 1500)
    assert backend.devices()[0].read().locked_clocks_mhz is None
