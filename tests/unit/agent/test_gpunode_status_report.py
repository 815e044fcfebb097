"""build_status turns readings and outcomes into the GpuNode status the agent writes."""

from __future__ import annotations

from datetime import UTC, datetime

from wattplane.agent.engine import NodeEngine
from wattplane.agent.gpu.errors import GpuNoPermissionError
from wattplane.agent.gpu.simulated import SimulatedBackend
from wattplane.agent.journal import Journal
from wattplane.agent.status import PodEnergyLedger, build_status
from wattplane.api.v1alpha1.gpunode import GpuNodeStatus, GpuTarget, PodRef

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def test_status_reports_targets_errors_and_pods() -> None:
    t = [0.0]
    backend = SimulatedBackend(node_name="n", gpu_count=3, clock=lambda: t[0])
    devices = backend.devices()
    devices[1].inject_fault("set_power_limit", GpuNoPermissionError("needs CAP_SYS_ADMIN"))
    engine = NodeEngine(backend, Journal(None))
    outcomes = engine.reconcile([GpuTarget(uuid=d.identity.uuid, power_limit_watts=50) for d in devices[:2]])
    pod = PodRef(namespace="ml", name="p", uid="u")
    assignment = {devices[0].identity.uuid: [pod]}
    ledger = PodEnergyLedger()

    def status() -> GpuNodeStatus:
        return build_status(
            backend="sim",
            devices=devices,
            readings=engine.read_all(),
            constraints={d.identity.uuid: d.constraints() for d in devices},
            outcomes=outcomes,
            assignment=assignment,
            ledger=ledger,
            plan_generation=7,
            previous_conditions=[],
            problems=[],
            now=NOW,
        )

    first = status()
    t[0] = 10.0
    second = status()
    for report in (first, second):
        assert report.observed_plan_generation == 7
    gpus = second.gpus
    assert [g.state for g in gpus] == ["Applied", "Error", "Default"]
    assert gpus[0].target_watts == 100.0 and gpus[0].power_limit_watts == 100.0
    assert "clamped" in gpus[0].message
    assert gpus[0].pods == [pod]
    assert second.targeted_gpus == 1
    ready = second.conditions[0]
    assert (ready.status, ready.reason) == ("False", "GpuErrors")
    assert "CAP_SYS_ADMIN" in ready.message
    # Idle for 10 s at 30 W on the pod's GPU.
    assert [(e.name, e.energy_joules) for e in second.pod_energy] == [("p", 300.0)]
    assert second.node_power_watts == 90.0
