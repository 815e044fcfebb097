"""Enumeration, identity and units: microwatts, whole watts and microjoule counts become W and J."""

from __future__ import annotations

import fake_amdsmi
import pytest
from wattplane.agent.gpu.amd import AmdSmiBackend
from wattplane.agent.gpu.base import GpuDevice, PowerConstraints


def test_enumerates_every_board_in_library_order(backend: AmdSmiBackend, fake: fake_amdsmi.FakeAmdSmi) -> None:
    devices = backend.devices()
    assert [d.identity.index for d in devices] == [0, 1, 2]
    assert [d.identity.uuid for d in devices] == [g.uuid for g in fake.gpus]
    assert [d.identity.model for d in devices] == ["AMD Instinct MI300X", "AMD Instinct MI250X", "AMD Instinct MI210"]
    assert devices[1].identity.pci_bus_id == "0000:31:00.0"
    assert all(isinstance(d, GpuDevice) for d in devices)
    assert backend.device_by_uuid(fake.gpus[2].uuid) is devices[2]


def test_initialises_for_gpus_and_shuts_down_once(fake: fake_amdsmi.FakeAmdSmi) -> None:
    backend = AmdSmiBackend(lib=fake, clock=fake.monotonic)
    assert fake.calls_named("amdsmi_init")[0].args == (fake_amdsmi.AmdSmiInitFlags.INIT_AMD_GPUS,)
    backend.close()
    backend.close()
    assert len(fake.calls_named("amdsmi_shut_down")) == 1
    assert fake.initialised == 0


def test_constraints_are_microwatts_converted_to_watts(backend: AmdSmiBackend) -> None:
    assert backend.devices()[1].constraints() == PowerConstraints(min_watts=100.0, max_watts=560.0, default_watts=500.0)


def test_reading_converts_units(backend: AmdSmiBackend, fake: fake_amdsmi.FakeAmdSmi) -> None:
    fake.gpus[0].load = 0.5
    reading = backend.devices()[0].read()
    assert reading.power_watts == float(fake.gpus[0].power_w) == 445.0
    assert reading.power_limit_watts == 750.0
    assert reading.enforced_power_limit_watts == 750.0
    assert reading.utilization_ratio == 0.5
    assert reading.sm_clock_mhz == 1300
    assert reading.temperature_celsius == 62.0
    assert reading.throttle_reasons == 0


def test_power_falls_back_to_the_average_field_of_older_boards(
    backend: AmdSmiBackend, fake: fake_amdsmi.FakeAmdSmi
) -> None:
    fake.gpus[1].load = 1.0
    info = fake.amdsmi_get_power_info(backend.devices()[1]._handle)
    assert info["socket_power"] == "N/A" and info["current_socket_power"] == "N/A"
    assert backend.devices()[1].read().power_watts == 500.0  # capped at the 500 W default


def test_optional_reads_are_skipped_once_unsupported(backend: AmdSmiBackend, fake: fake_amdsmi.FakeAmdSmi) -> None:
    gpu = backend.devices()[2]
    fake.gpus[2].unsupported |= {"amdsmi_get_gpu_activity", "amdsmi_get_temp_metric"}
    first = gpu.read()
    fake.calls.clear()
    second = gpu.read()
    assert first.utilization_ratio is None and first.temperature_celsius is None
    assert second.utilization_ratio is None
    assert fake.calls_named("amdsmi_get_gpu_activity") == []
    assert gpu.unsupported_features == {"activity", "temperature"}


def test_info_names_the_backend_and_energy_sources(backend: AmdSmiBackend) -> None:
    assert backend.info.name == "amdsmi"
    assert backend.info.driver_version == "6.12.12"
    assert set(backend.info.details.values()) >= {"unprobed"}
    backend.devices()[0].read()
    assert backend.info.details[f"energy_source/{backend.devices()[0].identity.uuid}"] == "counter"


@pytest.mark.parametrize("status", [fake_amdsmi.AMDSMI_STATUS_DRIVER_NOT_LOADED, fake_amdsmi.AMDSMI_STATUS_INIT_ERROR])
def test_no_amd_stack_is_a_driver_error_with_a_hint(status: int) -> None:
    from wattplane.agent.gpu.errors import GpuDriverError

    fake = fake_amdsmi.FakeAmdSmi([fake_amdsmi.MI300X], init_status=status)
    with pytest.raises(GpuDriverError, match="/dev/kfd") as caught:
        AmdSmiBackend(lib=fake)
    assert isinstance(caught.value.__cause__, fake_amdsmi.AmdSmiLibraryException)


def test_pci_addresses_name_boards_for_the_pod_mapper(backend: AmdSmiBackend, fake: fake_amdsmi.FakeAmdSmi) -> None:
    # AMD's device plugin hands pods PCI addresses; the mapper needs them as AMD SMI UUIDs.
    assert backend.device_id_aliases() == {g.bdf: g.uuid for g in fake.gpus}
    assert backend.device_id_aliases()["0000:31:00.0"] == fake.gpus[1].uuid


def test_an_address_several_devices_share_names_none_of_them(fake: fake_amdsmi.FakeAmdSmi) -> None:
    fake.gpus[2].bdf = fake.gpus[1].bdf  # as the partitions of one board may report
    with AmdSmiBackend(lib=fake, clock=fake.monotonic) as backend:
        assert backend.device_id_aliases() == {fake.gpus[0].bdf: fake.gpus[0].uuid}
