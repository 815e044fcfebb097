"""The node engine drives AMD boards through the protocol: VM refusals stay per GPU, whole watts stay idempotent."""

from __future__ import annotations

from pathlib import Path

import fake_amdsmi
from wattplane.agent.engine import NodeEngine
from wattplane.agent.gpu.amd import AmdSmiBackend
from wattplane.agent.journal import Journal
from wattplane.api.v1alpha1.gpunode import GpuTarget


def target(backend: AmdSmiBackend, index: int, watts: float) -> GpuTarget:
    return GpuTarget(uuid=backend.devices()[index].identity.uuid, power_limit_watts=watts, policy="cap")


def test_a_vm_guest_board_is_an_error_and_the_others_are_applied(
    backend: AmdSmiBackend, fake: fake_amdsmi.FakeAmdSmi, tmp_path: Path
) -> None:
    fake.gpus[0].vm_guest = True
    fake.gpus[2].unknown_range = True
    engine = NodeEngine(backend, Journal(tmp_path / "journal.json"))
    engine.read_all()
    outcomes = engine.reconcile([target(backend, i, 250) for i in range(3)])
    by_index = [outcomes[d.identity.uuid] for d in backend.devices()]
    assert (by_index[0].state, by_index[0].reason) == ("Error", "NoPermission")
    assert (by_index[1].state, fake.gpus[1].cap_uw) == ("Applied", 250_000_000)
    assert (by_index[2].state, by_index[2].reason) == ("Error", "NotSupported")
    # The guest was asked (and refused); the board without a range was never asked.
    assert {c.args[0]._index for c in fake.calls_named("amdsmi_set_power_cap")} == {0, 1}
    assert fake.gpus[2].cap_uw == 300_000_000
    engine.read_all()
    assert engine.readings[backend.devices()[0].identity.uuid].power_watts > 0  # type: ignore[union-attr]


def test_a_fractional_target_is_written_once(
    backend: AmdSmiBackend, fake: fake_amdsmi.FakeAmdSmi, tmp_path: Path
) -> None:
    engine = NodeEngine(backend, Journal(tmp_path / "journal.json"))
    for _ in range(3):
        engine.read_all()
        engine.reconcile([target(backend, 1, 412.6)])
    assert fake.gpus[1].cap_uw == 413_000_000
    assert len(fake.calls_named("amdsmi_set_power_cap")) == 1
