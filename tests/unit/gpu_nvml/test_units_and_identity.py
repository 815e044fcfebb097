"""Values cross the NVML boundary converted (mW→W, mJ→J) and boards are identified by UUID."""

from __future__ import annotations

import fake_pynvml
import pytest
from wattplane.agent.gpu.base import GpuBackend, GpuDevice
from wattplane.agent.gpu.errors import GpuNotFoundError
from wattplane.agent.gpu.nvml import NvmlBackend, sysfs_pci_bus_id


def test_backend_and_devices_satisfy_the_protocols(backend: NvmlBackend) -> None:
    backend_as_protocol: GpuBackend = backend
    assert backend_as_protocol.info.name == "nvml"
    assert all(isinstance(gpu, GpuDevice) for gpu in backend.devices())


def test_enumerates_every_board_in_index_order(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    identities = [gpu.identity for gpu in backend.devices()]
    assert [i.index for i in identities] == [0, 1, 2, 3]
    assert [i.uuid for i in identities] == [g.uuid for g in fake.gpus]
    assert [i.model for i in identities] == [
        "NVIDIA A40",
        "Tesla V100-PCIE-32GB",
        "NVIDIA H100 80GB HBM3",
        "Tesla P100-PCIE-16GB",
    ]


def test_power_and_limits_are_watts(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    board = fake.gpu(0)
    board.demand_mw = 187_654
    board.limit_mw = 250_000
    board.oob_limit_mw = 220_500
    reading = backend.devices()[0].read()
    assert reading.power_watts == pytest.approx(187.654)
    assert reading.power_limit_watts == pytest.approx(250.0)
    assert reading.enforced_power_limit_watts == pytest.approx(220.5)


def test_energy_counter_is_joules(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    fake.gpu(0).energy_mj = 123_456_789
    assert backend.devices()[0].read().energy_joules == pytest.approx(123_456.789)


@pytest.mark.parametrize(
    ("index", "expected"),
    [(0, (100.0, 300.0, 300.0)), (1, (100.0, 250.0, 250.0)), (2, (200.0, 700.0, 700.0))],
)
def test_constraints_are_watts(backend: NvmlBackend, index: int, expected: tuple[float, float, float]) -> None:
    constraints = backend.devices()[index].constraints()
    assert (constraints.min_watts, constraints.max_watts, constraints.default_watts) == expected


def test_other_fields_use_base_units(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    board = fake.gpu(0)
    board.utilization_pct = 87
    board.temperature_c = 64
    board.demand_mw = 290_000
    board.limit_mw = 200_000
    reading = backend.devices()[0].read()
    assert reading.utilization_ratio == pytest.approx(0.87)
    assert reading.temperature_celsius == 64.0
    assert reading.sm_clock_mhz == 1740
    assert reading.throttle_reasons & fake_pynvml.REASON_SW_POWER_CAP


@pytest.mark.parametrize("as_bytes", [False, True], ids=["str-struct", "raw-bytes"])
def test_pci_bus_id_is_decoded_text_with_nvml_domain(as_bytes: bool) -> None:
    fake = fake_pynvml.FakeNvml([fake_pynvml.A40], bus_id_as_bytes=as_bytes)
    with NvmlBackend(lib=fake) as backend:
        bus_id = backend.devices()[0].identity.pci_bus_id
    assert bus_id == "00000000:17:00.0"
    assert isinstance(bus_id, str)


def test_raw_bytes_variant_really_hands_out_bytes() -> None:
    fake = fake_pynvml.FakeNvml([fake_pynvml.A40], bus_id_as_bytes=True)
    fake.nvmlInit()
    assert fake.nvmlDeviceGetPciInfo(fake.nvmlDeviceGetHandleByIndex(0)).busId == b"00000000:17:00.0"


@pytest.mark.parametrize(
    ("nvml_form", "sysfs_form"),
    [("00000000:17:00.0", "0000:17:00.0"), ("00000001:AB:1F.3", "0001:ab:1f.3"), ("0000:3b:00.0", "0000:3b:00.0")],
)
def test_sysfs_pci_bus_id(nvml_form: str, sysfs_form: str) -> None:
    assert sysfs_pci_bus_id(nvml_form) == sysfs_form


def test_sysfs_pci_bus_id_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a PCI bus id"):
        sysfs_pci_bus_id("GPU-1234")


def test_device_by_uuid(backend: NvmlBackend, fake: fake_pynvml.FakeNvml) -> None:
    assert backend.device_by_uuid(fake.gpu(2).uuid) is backend.devices()[2]
    with pytest.raises(GpuNotFoundError):
        backend.device_by_uuid("GPU-nope")


def test_info_reports_versions(backend: NvmlBackend) -> None:
    info = backend.info
    assert info.driver_version == "580.95.05"
    assert info.details["nvml_version"] == "13.580.95.05"


def test_devices_are_the_same_objects_every_time(backend: NvmlBackend) -> None:
    # Per-device state (feature cache, energy integration) must survive between ticks.
    assert list(backend.devices()) == list(backend.devices())
    assert backend.devices()[0] is backend.devices()[0]
