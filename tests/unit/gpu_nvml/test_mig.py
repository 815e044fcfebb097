"""MIG boards are detected, reported at board level, and MIG UUIDs resolve to their board."""

from __future__ import annotations

import fake_pynvml
import pytest
from wattplane.agent.gpu.errors import GpuNotFoundError
from wattplane.agent.gpu.nvml import NvmlBackend


@pytest.fixture
def mig_fake() -> fake_pynvml.FakeNvml:
    fake = fake_pynvml.FakeNvml([fake_pynvml.H100_SXM, fake_pynvml.H100_SXM, fake_pynvml.A40])
    fake.enable_mig(0, instances=3)
    return fake


@pytest.fixture
def mig_backend(mig_fake: fake_pynvml.FakeNvml) -> NvmlBackend:
    return NvmlBackend(lib=mig_fake)


def test_mig_mode_is_detected(mig_backend: NvmlBackend) -> None:
    assert [gpu.identity.mig_enabled for gpu in mig_backend.devices()] == [True, False, False]


def test_not_supported_means_not_mig(backend: NvmlBackend) -> None:
    # A40, V100 and P100 answer NotSupported; the H100 answers "disabled".
    assert not any(gpu.identity.mig_enabled for gpu in backend.devices())


def test_mig_instances_are_not_separate_devices(mig_backend: NvmlBackend) -> None:
    assert len(mig_backend.devices()) == 3


def test_parent_map(mig_backend: NvmlBackend, mig_fake: fake_pynvml.FakeNvml) -> None:
    board = mig_fake.gpu(0)
    parents = mig_backend.mig_parent_uuids()
    assert parents == {mig.uuid: board.uuid for mig in board.mig_devices.values()}
    assert all(uuid.startswith("MIG-") for uuid in parents)


def test_empty_slots_are_skipped(mig_backend: NvmlBackend, mig_fake: fake_pynvml.FakeNvml) -> None:
    board = mig_fake.gpu(0)
    del board.mig_devices[1]  # an instance destroyed: slot 1 now answers NotFound
    assert set(mig_backend.mig_parent_uuids()) == {board.mig_devices[0].uuid, board.mig_devices[2].uuid}
    assert len(mig_fake.calls_named("nvmlDeviceGetMigDeviceHandleByIndex")) == 7


def test_board_uuid_resolves_boards_and_mig_devices(mig_backend: NvmlBackend, mig_fake: fake_pynvml.FakeNvml) -> None:
    board = mig_fake.gpu(0)
    assert mig_backend.board_uuid(board.uuid) == board.uuid
    assert mig_backend.board_uuid(mig_fake.gpu(2).uuid) == mig_fake.gpu(2).uuid
    assert mig_backend.board_uuid(board.mig_devices[2].uuid) == board.uuid
    with pytest.raises(GpuNotFoundError):
        mig_backend.board_uuid("MIG-does-not-exist")


def test_mig_board_reads_at_board_level(mig_backend: NvmlBackend, mig_fake: fake_pynvml.FakeNvml) -> None:
    mig_fake.gpu(0).demand_mw = 450_000
    reading = mig_backend.devices()[0].read()
    assert reading.power_watts == 450.0
    assert reading.utilization_ratio is None  # NVML does not report utilisation in MIG mode


def test_board_level_limit_on_a_mig_board(mig_backend: NvmlBackend, mig_fake: fake_pynvml.FakeNvml) -> None:
    mig_backend.devices()[0].set_power_limit_watts(500)
    assert mig_fake.gpu(0).limit_mw == 500_000
