"""Backend selection: nvml, amd, or auto (one library, or both on a mixed node behind one backend)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import fake_amdsmi
import fake_pynvml
import pytest
from wattplane.agent.engine import NodeEngine
from wattplane.agent.gpu.amd import AmdSmiBackend
from wattplane.agent.gpu.base import GpuBackend
from wattplane.agent.gpu.errors import GpuDriverError
from wattplane.agent.gpu.multi import MultiBackend, open_real_backend
from wattplane.agent.gpu.nvml import NvmlBackend
from wattplane.agent.journal import Journal
from wattplane.agent.settings import AgentSettings
from wattplane.agent.status import PodEnergyLedger, build_status
from wattplane.api.v1alpha1.gpunode import GpuTarget


def openers(nvml: fake_pynvml.FakeNvml, amd: fake_amdsmi.FakeAmdSmi) -> dict[str, Callable[[], GpuBackend]]:
    return {
        "nvml": lambda: NvmlBackend(lib=nvml, clock=nvml.monotonic),
        "amd": lambda: AmdSmiBackend(lib=amd, clock=amd.monotonic),
    }


@pytest.fixture
def nvml() -> fake_pynvml.FakeNvml:
    return fake_pynvml.FakeNvml([fake_pynvml.A40, fake_pynvml.H100_SXM])


@pytest.fixture
def amd() -> fake_amdsmi.FakeAmdSmi:
    return fake_amdsmi.FakeAmdSmi([fake_amdsmi.MI300X])


def test_settings_accept_the_new_backends() -> None:
    assert AgentSettings(backend="amd").backend == "amd"
    assert AgentSettings(backend="auto").effective_pod_mapper() == "podresources"


def test_named_backend_is_opened_alone(nvml: fake_pynvml.FakeNvml, amd: fake_amdsmi.FakeAmdSmi) -> None:
    backend = open_real_backend("amd", openers(nvml, amd))
    assert backend.info.name == "amdsmi"
    assert nvml.calls == []  # NVML is not touched when AMD is asked for
    backend.close()


def test_auto_on_a_mixed_node_combines_both(
    nvml: fake_pynvml.FakeNvml, amd: fake_amdsmi.FakeAmdSmi, tmp_path: Path
) -> None:
    backend = open_real_backend("auto", openers(nvml, amd))
    assert isinstance(backend, MultiBackend)
    assert backend.info.name == "nvml+amdsmi"
    devices = backend.devices()
    assert [d.identity.index for d in devices] == [0, 1, 2]
    assert [d.identity.model for d in devices][2] == "AMD Instinct MI300X"
    assert devices[2].identity.uuid == amd.gpus[0].uuid
    # One engine drives both vendors' boards through the same protocol.
    engine = NodeEngine(backend, Journal(tmp_path / "journal.json"))
    targets = [GpuTarget(uuid=d.identity.uuid, power_limit_watts=250, policy="cap") for d in devices]
    outcomes = engine.reconcile(targets)
    assert {o.state for o in outcomes.values()} == {"Applied"}, outcomes
    assert amd.gpus[0].cap_uw == 250_000_000
    assert nvml.gpu(0).limit_mw == 250_000
    engine.reconcile([])
    assert amd.gpus[0].cap_uw == 750_000_000  # restored
    backend.close()
    assert amd.initialised == 0


def test_auto_uses_the_one_library_that_finds_gpus(nvml: fake_pynvml.FakeNvml) -> None:
    amd_without_gpus = fake_amdsmi.FakeAmdSmi([])
    backend = open_real_backend("auto", openers(nvml, amd_without_gpus))
    assert isinstance(backend, NvmlBackend)
    assert amd_without_gpus.initialised == 0  # opened, found nothing, closed again
    backend.close()


def test_auto_without_any_gpu_names_each_reason(amd: fake_amdsmi.FakeAmdSmi) -> None:
    def no_nvml() -> GpuBackend:
        raise GpuDriverError("NVML cannot initialise: libnvidia-ml.so.1 not found")

    amd.init_status = fake_amdsmi.AMDSMI_STATUS_DRIVER_NOT_LOADED
    with pytest.raises(GpuDriverError, match=r"nvml: NVML cannot initialise.*amd: AMD SMI cannot initialise"):
        open_real_backend("auto", {"nvml": no_nvml, "amd": lambda: AmdSmiBackend(lib=amd)})


def test_duplicate_uuids_across_backends_are_refused(amd: fake_amdsmi.FakeAmdSmi) -> None:
    first = AmdSmiBackend(lib=amd, clock=amd.monotonic)
    with pytest.raises(ValueError, match="same GPU UUID"):
        MultiBackend([first, first])
    first.close()


def test_agent_asked_for_amd_without_rocm_says_what_is_missing() -> None:
    # The real amdsmi package on a machine without libamd_smi.so (as in CI).
    from wattplane.agent.__main__ import make_backend

    with pytest.raises(GpuDriverError, match=r"amdsmi cannot load libamd_smi\.so.*amd-smi-lib"):
        make_backend(AgentSettings(node_name="n", backend="amd"))


def test_status_of_a_mixed_node_names_each_gpus_vendor(
    nvml: fake_pynvml.FakeNvml, amd: fake_amdsmi.FakeAmdSmi, tmp_path: Path
) -> None:
    backend = open_real_backend("auto", openers(nvml, amd))
    try:
        engine = NodeEngine(backend, Journal(tmp_path / "journal.json"))
        devices = backend.devices()
        status = build_status(
            backend=backend.info.name,
            devices=devices,
            readings=engine.read_all(),
            constraints={d.identity.uuid: d.constraints() for d in devices},
            outcomes=engine.reconcile([]),
            assignment={},
            ledger=PodEnergyLedger(),
            plan_generation=1,
            previous_conditions=[],
            problems=[],
            now=datetime(2026, 1, 1, tzinfo=UTC),
        )
    finally:
        backend.close()
    assert status.backend == "nvml+amdsmi"
    assert [(g.index, g.vendor) for g in status.gpus] == [(0, "nvidia"), (1, "nvidia"), (2, "amd")]
    written = status.model_dump(by_alias=True, mode="json", exclude_none=True)
    assert [g["vendor"] for g in written["gpus"]] == ["nvidia", "nvidia", "amd"]
