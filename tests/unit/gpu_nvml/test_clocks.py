"""Locked graphics and memory clocks: validated against supported clocks, int MHz, typed errors."""

from __future__ import annotations

import fake_pynvml
import pytest
from wattplane.agent.gpu.errors import GpuInvalidArgumentError, GpuNoPermissionError, GpuNotSupportedError
from wattplane.agent.gpu.nvml import NvmlBackend


def test_lock_and_reset_graphics_clocks(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    gpu = backend.devices()[0]
    gpu.set_locked_clocks_mhz(900, 1410)
    assert fake.gpu(0).locked_clocks == (900, 1410)
    assert gpu.read().locked_clocks_mhz == (900, 1410)
    assert gpu.read().sm_clock_mhz == 1410
    gpu.reset_locked_clocks()
    assert fake.gpu(0).locked_clocks is None
    assert gpu.read().locked_clocks_mhz is None
    assert [c.name for c in fake.write_calls()] == ["nvmlDeviceSetGpuLockedClocks", "nvmlDeviceResetGpuLockedClocks"]


def test_integral_floats_are_passed_as_ints(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    backend.devices()[0].set_locked_clocks_mhz(900.0, 1410.0)  # type: ignore[arg-type]
    (call,) = fake.calls_named("nvmlDeviceSetGpuLockedClocks")
    assert call.args[1:] == (900, 1410)
    assert all(type(v) is int for v in call.args[1:])


@pytest.mark.parametrize(
    ("low", "high", "match"),
    [
        (900.5, 1410, "whole number"),
        (0, 1410, "positive"),
        (1410, 900, "above"),
        (100, 1410, "outside the supported"),
        (900, 2000, "outside the supported"),
        (None, 1410, "integer"),
        (True, 1410, "integer"),
    ],
)
def test_bad_bounds_are_refused_before_nvml(
    backend: NvmlBackend, fake: fake_pynvml.FakeNvml, low: object, high: object, match: str
) -> None:
    with pytest.raises(GpuInvalidArgumentError, match=match):
        backend.devices()[0].set_locked_clocks_mhz(low, high)  # type: ignore[arg-type]
    assert fake.write_calls() == []


def test_supported_clocks(backend: NvmlBackend) -> None:
    gpu = backend.devices()[0]
    memory = gpu.supported_memory_clocks_mhz()
    graphics = gpu.supported_graphics_clocks_mhz()
    assert memory == (7251, 405)
    assert graphics is not None
    assert graphics[0] == 1740 and graphics[-1] == 210
    assert list(graphics) == sorted(graphics, reverse=True)


def test_supported_clocks_are_cached(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    gpu = backend.devices()[0]
    gpu.set_locked_clocks_mhz(900, 1410)
    gpu.set_locked_clocks_mhz(800, 1200)
    assert len(fake.calls_named("nvmlDeviceGetSupportedMemoryClocks")) == 1
    assert len(fake.calls_named("nvmlDeviceGetSupportedGraphicsClocks")) == 2  # one per memory clock


def test_without_a_clock_list_the_driver_decides(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    fake.gpu(0).unsupported.add("nvmlDeviceGetSupportedMemoryClocks")
    gpu = backend.devices()[0]
    assert gpu.supported_graphics_clocks_mhz() is None
    with pytest.raises(GpuInvalidArgumentError):  # the fake (like NVML) still refuses out-of-range
        gpu.set_locked_clocks_mhz(100, 1410)
    assert len(fake.calls_named("nvmlDeviceSetGpuLockedClocks")) == 1


def test_locked_clocks_need_privilege(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    fake.privileged = False
    gpu = backend.devices()[0]
    with pytest.raises(GpuNoPermissionError):
        gpu.set_locked_clocks_mhz(900, 1410)
    with pytest.raises(GpuNoPermissionError):
        gpu.reset_locked_clocks()
    assert gpu.read().locked_clocks_mhz is None


def test_pre_volta_cannot_lock_clocks(backend: NvmlBackend) -> None:
    with pytest.raises(GpuNotSupportedError):
        backend.devices()[3].set_locked_clocks_mhz(800, 1000)


def test_memory_clocks_on_ampere(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    gpu = backend.devices()[0]
    gpu.set_memory_locked_clocks_mhz(405, 7251)
    assert fake.gpu(0).locked_memory_clocks == (405, 7251)
    assert gpu.locked_memory_clocks_mhz == (405, 7251)
    gpu.reset_memory_locked_clocks()
    assert fake.gpu(0).locked_memory_clocks is None
    assert gpu.locked_memory_clocks_mhz is None


def test_memory_clocks_out_of_range_refused(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    with pytest.raises(GpuInvalidArgumentError):
        backend.devices()[0].set_memory_locked_clocks_mhz(405, 9000)
    assert fake.write_calls() == []


def test_memory_clocks_not_supported_on_volta(backend: NvmlBackend) -> None:
    gpu = backend.devices()[1]
    with pytest.raises(GpuNotSupportedError):
        gpu.set_memory_locked_clocks_mhz(877, 877)
    with pytest.raises(GpuNotSupportedError):
        gpu.reset_memory_locked_clocks()


def test_the_engine_clamps_a_lock_into_the_listed_clocks(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    """A policy's range beyond the board is clamped before NVML sees it, never refused on every tick."""
    from wattplane.agent.engine import NodeEngine
    from wattplane.agent.journal import Journal
    from wattplane.api.v1alpha1.energypolicy import ClockRangeMHz
    from wattplane.api.v1alpha1.gpunode import GpuTarget

    gpu = backend.devices()[0]
    assert gpu.locked_clock_range_mhz() == (210, 1740)
    engine = NodeEngine(backend, Journal(None))
    wanted = GpuTarget(uuid=gpu.identity.uuid, power_limit_watts=250, policy="cap",
                       locked_clocks_mhz=ClockRangeMHz(min_mhz=100, max_mhz=2500))  # fmt: skip
    outcome = engine.reconcile([wanted])[gpu.identity.uuid]
    assert (outcome.state, outcome.reason) == ("Applied", "Clamped"), outcome
    assert "clock lock 100-2500 MHz clamped to 210-1740 MHz" in outcome.message
    assert fake.gpu(0).locked_clocks == (210, 1740)
    (call,) = fake.calls_named("nvmlDeviceSetGpuLockedClocks")
    assert call.args[1:] == (210, 1740)
    engine.reconcile([wanted])  # the clamped lock is in force: nothing more to write
    assert len(fake.calls_named("nvmlDeviceSetGpuLockedClocks")) == 1
