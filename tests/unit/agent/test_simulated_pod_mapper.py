"""The simulated device plugin: sticky, exclusive, deterministic GPU assignment."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wattplane.agent.podmap import GpuRequest, SimulatedPodMapper, gpu_requests_of

UUIDS = ["GPU-0", "GPU-1", "GPU-2", "GPU-3"]


def pod_body(
    name: str, *counts: Any, phase: str = "Running", created: str = "2025-01-01T00:00:00Z", **meta: Any
) -> dict[str, Any]:
    containers = [
        {"name": f"c{i}", "resources": {"limits": {"nvidia.com/gpu": count}} if count is not None else {}}
        for i, count in enumerate(counts)
    ]
    return {
        "metadata": {"namespace": "ml", "name": name, "uid": f"uid-{name}", "creationTimestamp": created, **meta},
        "spec": {"containers": containers},
        "status": {"phase": phase},
    }


def req(pod: str, count: int = 1, created: str = "t0", container: str = "main") -> GpuRequest:
    return GpuRequest(namespace="ml", pod=pod, uid=f"uid-{pod}", container=container, count=count, created=created)


def held(assignment: dict[str, list[Any]]) -> dict[str, str]:
    return {uuid: refs[0].name for uuid, refs in sorted(assignment.items())}


def test_requests_are_read_per_container() -> None:
    requests = gpu_requests_of(pod_body("p", 2, None, "1"))
    assert [(r.container, r.count) for r in requests] == [("c0", 2), ("c2", 1)]
    assert requests[0].key == ("uid-p", "c0")
    assert requests[0].created == "2025-01-01T00:00:00Z"


@pytest.mark.parametrize("count", ["abc", "1.5", "-1", "0", 0, -3, "", {}, [1], "1e3", True, None])
def test_garbage_counts_are_ignored(count: Any) -> None:
    assert gpu_requests_of(pod_body("p", count, 1)) == [gpu_requests_of(pod_body("p", None, 1))[0]]


@pytest.mark.parametrize(
    ("phase", "meta"), [("Succeeded", {}), ("Failed", {}), ("Running", {"deletionTimestamp": "2025-01-01T00:00:00Z"})]
)
def test_finished_or_deleting_pods_request_nothing(phase: str, meta: dict[str, str]) -> None:
    assert gpu_requests_of(pod_body("p", 2, phase=phase, **meta)) == []


def test_pods_without_containers_or_status_request_nothing() -> None:
    assert gpu_requests_of({"metadata": {"name": "p"}}) == []


def test_lowest_free_gpus_go_to_the_oldest_request() -> None:
    mapper = SimulatedPodMapper(UUIDS)
    out = mapper.assign([req("young", 1, "t2"), req("old", 2, "t1")])
    assert held(out) == {"GPU-0": "old", "GPU-1": "old", "GPU-2": "young"}
    assert mapper.unsatisfied == []


def test_assignments_are_sticky() -> None:
    mapper = SimulatedPodMapper(UUIDS)
    mapper.assign([req("b", 1, "t2")])
    # An older pod shows up later: it does not evict the holder.
    out = mapper.assign([req("b", 1, "t2"), req("a", 1, "t1")])
    assert held(out) == {"GPU-0": "b", "GPU-1": "a"}


def test_unsatisfied_requests_are_reported_and_get_nothing() -> None:
    mapper = SimulatedPodMapper(UUIDS)
    out = mapper.assign([req("a", 3, "t1"), req("big", 2, "t2"), req("c", 1, "t3")])
    assert held(out) == {"GPU-0": "a", "GPU-1": "a", "GPU-2": "a", "GPU-3": "c"}
    assert mapper.unsatisfied == ["ml/big:main"]
    # Once GPUs free up, the waiting request is served, and the report clears.
    out = mapper.assign([req("big", 2, "t2"), req("c", 1, "t3")])
    assert held(out) == {"GPU-0": "big", "GPU-1": "big", "GPU-3": "c"}
    assert mapper.unsatisfied == []


def test_finished_pods_release_their_gpus() -> None:
    mapper = SimulatedPodMapper(UUIDS)
    mapper.assign(gpu_requests_of(pod_body("a", 2)) + gpu_requests_of(pod_body("b", 1)))
    out = mapper.assign(gpu_requests_of(pod_body("a", 2, phase="Succeeded")) + gpu_requests_of(pod_body("b", 1)))
    assert held(out) == {"GPU-2": "b"}
    assert all(len(refs) == 1 and refs[0].container == "c0" and refs[0].uid == "uid-b" for refs in out.values())


_requests = st.lists(
    st.builds(req, st.sampled_from(["a", "b", "c", "d", "e"]), st.integers(1, 3), st.sampled_from(["t1", "t2", "t3"])),
    max_size=6,
    unique_by=lambda r: r.key,
)


@settings(max_examples=150, deadline=None)
@given(_requests, st.integers(0, 1000))
def test_assignment_does_not_depend_on_input_order(requests: list[GpuRequest], seed: int) -> None:
    shuffled = random.Random(seed).sample(requests, len(requests))
    first, second = SimulatedPodMapper(UUIDS), SimulatedPodMapper(UUIDS)
    assert first.assign(requests) == second.assign(shuffled)
    assert first.unsatisfied == second.unsatisfied


_PODS = ["a", "b", "c", "d", "e"]


@settings(max_examples=150, deadline=None)
@given(
    st.fixed_dictionaries({p: st.tuples(st.integers(1, 3), st.sampled_from(["t1", "t2", "t3"])) for p in _PODS}),
    st.lists(st.sets(st.sampled_from(_PODS)), min_size=1, max_size=5),
)
def test_assignment_is_exclusive_complete_and_sticky(pods: dict[str, tuple[int, str]], rounds: list[set[str]]) -> None:
    # A pod's GPU request never changes while it lives (resources are immutable); pods come and go.
    mapper = SimulatedPodMapper(UUIDS)
    previous: dict[tuple[str, str], set[str]] = {}
    for alive in rounds:
        requests = [req(name, *pods[name]) for name in sorted(alive)]
        out = mapper.assign(requests)
        assert all(len(refs) == 1 for refs in out.values()), "a GPU is never shared"
        assert set(out) <= set(UUIDS)
        holdings: dict[tuple[str, str], set[str]] = {}
        for uuid, refs in out.items():
            holdings.setdefault((refs[0].uid, refs[0].container), set()).add(uuid)
        live = {r.key: r for r in requests}
        assert set(holdings) <= set(live)
        for key, request in live.items():
            label = f"{request.namespace}/{request.pod}:{request.container}"
            if key in holdings:
                assert len(holdings[key]) == request.count
                assert label not in mapper.unsatisfied
            else:
                assert label in mapper.unsatisfied
            if key in previous:
                assert holdings.get(key) == previous[key], "a live holder keeps its GPUs"
        previous = holdings
