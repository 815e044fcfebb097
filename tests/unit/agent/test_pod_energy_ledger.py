"""Per-pod energy from GPU counters: monotonic, split across sharers, blind to counter resets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wattplane.agent.status import THROTTLE_BITS, PodEnergyLedger, throttle_names
from wattplane.api.v1alpha1.gpunode import PodEnergy, PodRef

A = PodRef(namespace="ml", name="a", uid="ua")
B = PodRef(namespace="ml", name="b", uid="ub")


def totals(ledger: PodEnergyLedger) -> dict[str, float]:
    return {e.name: e.energy_joules for e in ledger.entries()}


def test_the_first_sample_is_a_baseline_not_energy() -> None:
    ledger = PodEnergyLedger()
    ledger.update({"GPU-0": 1_000_000.0}, {"GPU-0": [A]})
    assert totals(ledger) == {}
    ledger.update({"GPU-0": 1_000_250.0}, {"GPU-0": [A]})
    assert totals(ledger) == {"a": 250.0}


def test_energy_of_a_shared_gpu_is_split_evenly() -> None:
    ledger = PodEnergyLedger()
    ledger.update({"GPU-0": 0.0, "GPU-1": 0.0}, {"GPU-0": [A, B], "GPU-1": [A]})
    ledger.update({"GPU-0": 100.0, "GPU-1": 30.0}, {"GPU-0": [A, B], "GPU-1": [A]})
    assert totals(ledger) == {"a": 80.0, "b": 50.0}


def test_a_counter_reset_contributes_nothing_and_counting_resumes_from_it() -> None:
    ledger = PodEnergyLedger()
    assignment = {"GPU-0": [A]}
    ledger.update({"GPU-0": 500.0}, assignment)
    ledger.update({"GPU-0": 700.0}, assignment)
    ledger.update({"GPU-0": 5.0}, assignment)  # driver reload
    assert totals(ledger) == {"a": 200.0}
    ledger.update({"GPU-0": 45.0}, assignment)
    assert totals(ledger) == {"a": 240.0}


def test_energy_drawn_while_a_gpu_was_free_goes_to_nobody() -> None:
    ledger = PodEnergyLedger()
    ledger.update({"GPU-0": 0.0}, {})
    ledger.update({"GPU-0": 900.0}, {})
    ledger.update({"GPU-0": 1000.0}, {"GPU-0": [A]})
    assert totals(ledger) == {"a": 100.0}


def test_seeded_totals_continue_after_an_agent_restart() -> None:
    ledger = PodEnergyLedger([PodEnergy(namespace="ml", name="a", uid="ua", energy_joules=1234.5)])
    ledger.update({"GPU-0": 10.0}, {"GPU-0": [A]})
    ledger.update({"GPU-0": 20.0}, {"GPU-0": [A]})
    assert totals(ledger) == {"a": 1244.5}


def test_retain_forgets_pods_that_are_gone() -> None:
    ledger = PodEnergyLedger()
    ledger.update({"GPU-0": 0.0}, {"GPU-0": [A, B]})
    ledger.update({"GPU-0": 10.0}, {"GPU-0": [A, B]})
    ledger.retain([B])
    assert totals(ledger) == {"b": 5.0}


def test_a_recreated_pod_with_the_same_name_starts_from_zero() -> None:
    ledger = PodEnergyLedger()
    ledger.update({"GPU-0": 0.0}, {"GPU-0": [A]})
    ledger.update({"GPU-0": 10.0}, {"GPU-0": [A]})
    again = PodRef(namespace="ml", name="a", uid="ua-2")
    ledger.update({"GPU-0": 15.0}, {"GPU-0": [again]})
    assert sorted((e.uid, e.energy_joules) for e in ledger.entries()) == [("ua", 10.0), ("ua-2", 5.0)]


_samples = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=1e6, allow_nan=False),
        st.floats(min_value=0, max_value=1e6, allow_nan=False),
        st.sampled_from([(), (A,), (B,), (A, B)]),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(_samples)
def test_totals_never_decrease_and_add_up_to_the_counted_increases(
    samples: list[tuple[float, float, tuple[PodRef, ...]]],
) -> None:
    ledger = PodEnergyLedger()
    last: dict[str, float] = {}
    previous: dict[str, float | None] = {"GPU-0": None, "GPU-1": None}
    expected = 0.0
    for e0, e1, pods in samples:
        for uuid, energy in (("GPU-0", e0), ("GPU-1", e1)):
            prior = previous[uuid]
            if prior is not None and energy > prior and pods:
                expected += energy - prior
            previous[uuid] = energy
        ledger.update({"GPU-0": e0, "GPU-1": e1}, {"GPU-0": list(pods), "GPU-1": list(pods)})
        now = {e.name: e.energy_joules for e in ledger.entries()}
        for name, value in last.items():
            assert now[name] >= value
        last = now
    assert sum(last.values()) == pytest.approx(expected, rel=1e-9, abs=1e-2)


def test_throttle_names() -> None:
    assert throttle_names(0) == []
    assert throttle_names(0x1 | 0x4) == ["GpuIdle", "SwPowerCap"]
    assert throttle_names(0x40 | 0x8) == ["HwSlowdown", "HwThermalSlowdown"]
    assert throttle_names(0x10000) == []  # unknown bits are not invented
    assert len(throttle_names(sum(THROTTLE_BITS))) == len(THROTTLE_BITS)
