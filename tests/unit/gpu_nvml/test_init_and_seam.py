"""Initialisation failures are clear typed errors; shutdown is balanced; the test seam works."""

from __future__ import annotations

import fake_pynvml
import pytest
from wattplane.agent.gpu import nvml
from wattplane.agent.gpu.errors import GpuDriverError, GpuLostError, GpuNoPermissionError
from wattplane.agent.gpu.nvml import NvmlBackend


@pytest.mark.parametrize("code", [fake_pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, fake_pynvml.NVML_ERROR_DRIVER_NOT_LOADED])
def test_no_driver_is_a_driver_error_with_advice(code: int) -> None:
    fake = fake_pynvml.FakeNvml()
    fake.init_error = code
    with pytest.raises(GpuDriverError, match="NVIDIA driver installed") as caught:
        NvmlBackend(lib=fake)
    assert isinstance(caught.value.__cause__, fake_pynvml.nvmlExceptionClass(code))


def test_library_mismatch_at_init() -> None:
    fake = fake_pynvml.FakeNvml()
    fake.inject("nvmlInit", fake_pynvml.NVMLLibraryMismatchError("mismatch"))
    with pytest.raises(GpuDriverError, match="do not match"):
        NvmlBackend(lib=fake)


def test_other_init_errors_go_through_the_table() -> None:
    fake = fake_pynvml.FakeNvml()
    fake.init_error = fake_pynvml.NVML_ERROR_NO_PERMISSION
    with pytest.raises(GpuNoPermissionError):
        NvmlBackend(lib=fake)


def test_failed_enumeration_shuts_nvml_down() -> None:
    fake = fake_pynvml.FakeNvml([fake_pynvml.A40, fake_pynvml.A40])
    fake.gpu(1).lost = True
    with pytest.raises(GpuLostError):
        NvmlBackend(lib=fake)
    assert not fake.initialized


def test_close_is_idempotent_and_balanced(fake: fake_pynvml.FakeNvml) -> None:
    backend = NvmlBackend(lib=fake)
    backend.close()
    backend.close()
    assert not fake.initialized
    assert len(fake.calls_named("nvmlShutdown")) == 1


def test_context_manager_closes(fake: fake_pynvml.FakeNvml) -> None:
    with NvmlBackend(lib=fake) as backend:
        assert fake.initialized
        assert len(backend.devices()) == 4
    assert not fake.initialized


def test_monkeypatching_the_module_works_too(monkeypatch: pytest.MonkeyPatch, fake: fake_pynvml.FakeNvml) -> None:
    monkeypatch.setattr(nvml, "pynvml", fake)
    with NvmlBackend() as backend:
        assert backend.devices()[0].identity.uuid == fake.gpu(0).uuid
    assert fake.calls[0].name == "nvmlInit"


def test_node_without_gpus(fake: fake_pynvml.FakeNvml) -> None:
    empty = fake_pynvml.FakeNvml([])
    with NvmlBackend(lib=empty) as backend:
        assert backend.devices() == ()
        assert backend.mig_parent_uuids() == {}
