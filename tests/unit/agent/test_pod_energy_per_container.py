"""Pod energy is kept per container (the metric's labels) and forgotten a while after the pod is gone."""

from __future__ import annotations

from wattplane.agent.status import PodEnergyLedger
from wattplane.api.v1alpha1.gpunode import PodEnergy, PodRef

TRAINER = PodRef(namespace="ml", name="job-0", uid="u0", container="trainer")
SIDECAR = PodRef(namespace="ml", name="job-0", uid="u0", container="profiler")


def test_two_containers_of_one_pod_are_counted_apart() -> None:
    ledger = PodEnergyLedger()
    ledger.update({"GPU-0": 0.0, "GPU-1": 0.0}, {"GPU-0": [TRAINER], "GPU-1": [SIDECAR]})
    ledger.update({"GPU-0": 300.0, "GPU-1": 40.0}, {"GPU-0": [TRAINER], "GPU-1": [SIDECAR]})
    assert [(e.container, e.energy_joules) for e in ledger.entries()] == [("profiler", 40.0), ("trainer", 300.0)]


def test_a_seeded_container_total_continues() -> None:
    seed = [PodEnergy(namespace="ml", name="job-0", uid="u0", container="trainer", energy_joules=1000.0)]
    ledger = PodEnergyLedger(seed)
    ledger.update({"GPU-0": 5.0}, {"GPU-0": [TRAINER]})
    ledger.update({"GPU-0": 15.0}, {"GPU-0": [TRAINER]})
    assert [(e.container, e.energy_joules) for e in ledger.entries()] == [("trainer", 1010.0)]


def test_a_pod_that_stopped_holding_gpus_is_forgotten_after_the_retention() -> None:
    ledger = PodEnergyLedger()
    ledger.update({"GPU-0": 0.0}, {"GPU-0": [TRAINER]}, now=0.0)
    ledger.update({"GPU-0": 50.0}, {"GPU-0": [TRAINER]}, now=10.0)
    ledger.update({"GPU-0": 60.0}, {}, now=20.0)  # the pod is gone
    ledger.forget_unseen(now=600.0, after_s=900.0)
    assert [e.energy_joules for e in ledger.entries()] == [50.0]  # its final total is still reported
    ledger.forget_unseen(now=911.0, after_s=900.0)
    assert ledger.entries() == []


def test_a_seeded_pod_gets_the_whole_retention_from_the_restart() -> None:
    seed = [PodEnergy(namespace="ml", name="old", uid="u9", energy_joules=7.0)]
    ledger = PodEnergyLedger(seed, now=1000.0)
    ledger.forget_unseen(now=1000.0 + 899.0, after_s=900.0)
    assert [e.name for e in ledger.entries()] == ["old"]
    ledger.forget_unseen(now=1000.0 + 901.0, after_s=900.0)
    assert ledger.entries() == []
