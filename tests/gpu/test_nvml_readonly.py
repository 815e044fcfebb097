"""The NVML backend on a real NVIDIA GPU: read-only by default, writes only with WATTPLANE_GPU_WRITE=1.

Skipped (with the reason) where NVML cannot initialise, e.g. on machines without the NVIDIA driver.
Write tests restore the original power limit and clock state in a finalizer, because a limit set
through NVML outlives this process.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator

import pynvml
import pytest
from wattplane.agent.gpu.errors import GpuDriverError, GpuNotSupportedError
from wattplane.agent.gpu.nvml import NvmlBackend, NvmlGpu

pytestmark = pytest.mark.gpu

WRITES_ENABLED = os.environ.get("WATTPLANE_GPU_WRITE") == "1"
needs_write_opt_in = pytest.mark.skipif(
    not WRITES_ENABLED, reason="GPU write tests change device state; set WATTPLANE_GPU_WRITE=1 to run them"
)


@pytest.fixture(scope="module")
def backend() -> Iterator[NvmlBackend]:
    try:
        nvml_backend = NvmlBackend()
    except GpuDriverError as err:
        pytest.skip(f"NVML unavailable (no NVIDIA driver?): {err}")
    try:
        if not nvml_backend.devices():
            pytest.skip("NVML initialised but reports no GPUs")
        yield nvml_backend
    finally:
        nvml_backend.close()


@pytest.fixture(scope="module")
def gpus(backend: NvmlBackend) -> list[NvmlGpu]:
    return list(backend.devices())


def test_enumerates_boards_with_unique_uuids(backend: NvmlBackend, gpus: list[NvmlGpu]) -> None:
    uuids = [gpu.identity.uuid for gpu in gpus]
    assert len(set(uuids)) == len(uuids)
    assert all(uuid.startswith("GPU-") for uuid in uuids)
    assert [gpu.identity.index for gpu in gpus] == list(range(len(gpus)))
    assert all(gpu.identity.model for gpu in gpus)
    assert all(re.fullmatch(r"[0-9A-F]{8}:[0-9A-F]{2}:[0-9A-F]{2}\.[0-7]", g.identity.pci_bus_id) for g in gpus)
    assert backend.info.name == "nvml"
    assert backend.info.driver_version


def test_constraints_are_sane(gpus: list[NvmlGpu]) -> None:
    for gpu in gpus:
        try:
            constraints = gpu.constraints()
        except GpuNotSupportedError:
            continue  # some boards (GeForce, MIG slices) cannot report limits
        assert 0 < constraints.min_watts <= constraints.default_watts <= constraints.max_watts, gpu


def test_power_is_plausible(gpus: list[NvmlGpu]) -> None:
    for gpu in gpus:
        reading = gpu.read()
        try:
            max_watts = gpu.constraints().max_watts
        except GpuNotSupportedError:
            max_watts = reading.power_limit_watts
        assert 0.0 <= reading.power_watts <= max_watts * 1.2, (gpu, reading)
        if reading.utilization_ratio is not None:
            assert 0.0 <= reading.utilization_ratio <= 1.0
        if reading.temperature_celsius is not None:
            assert 0.0 < reading.temperature_celsius < 120.0


def test_energy_is_monotonic(gpus: list[NvmlGpu]) -> None:
    first = [gpu.read().energy_joules for gpu in gpus]
    time.sleep(1.0)
    second = [gpu.read().energy_joules for gpu in gpus]
    for gpu, before, after in zip(gpus, first, second, strict=True):
        assert before is not None and after is not None, gpu
        assert after >= before, (gpu, gpu.energy_source, before, after)


def test_limit_matches_what_nvml_reports(gpus: list[NvmlGpu]) -> None:
    for gpu in gpus:
        handle = pynvml.nvmlDeviceGetHandleByUUID(gpu.identity.uuid)
        assert gpu.read().power_limit_watts == pynvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000.0


def test_mig_parent_map_points_at_boards(backend: NvmlBackend, gpus: list[NvmlGpu]) -> None:
    board_uuids = {gpu.identity.uuid for gpu in gpus}
    assert set(backend.mig_parent_uuids().values()) <= board_uuids


@pytest.fixture
def restored_gpu(gpus: list[NvmlGpu]) -> Iterator[NvmlGpu]:
    """The first board, with its power limit and locked clocks restored after the test."""
    gpu = gpus[0]
    original_watts = gpu.read().power_limit_watts
    try:
        yield gpu
    finally:
        gpu.set_power_limit_watts(original_watts)
        gpu.reset_locked_clocks()


@needs_write_opt_in
def test_set_power_limit_round_trip(restored_gpu: NvmlGpu) -> None:
    constraints = restored_gpu.constraints()
    target = float(round((constraints.min_watts + constraints.max_watts) / 2))
    restored_gpu.set_power_limit_watts(target)
    assert restored_gpu.read().power_limit_watts == target
    restored_gpu.set_power_limit_watts(target)  # idempotent: no error, no change
    assert restored_gpu.read().power_limit_watts == target


@needs_write_opt_in
def test_lock_and_reset_clocks(restored_gpu: NvmlGpu) -> None:
    supported = restored_gpu.supported_graphics_clocks_mhz()
    if not supported:
        pytest.skip("the board does not list supported graphics clocks")
    middle = supported[len(supported) // 2]
    restored_gpu.set_locked_clocks_mhz(min(supported), middle)
    assert restored_gpu.read().locked_clocks_mhz == (min(supported), middle)
    restored_gpu.reset_locked_clocks()
    assert restored_gpu.read().locked_clocks_mhz is None
