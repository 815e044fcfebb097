"""Raw watch objects become planner views; bad objects become errors, never exceptions."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wattplane.operator.state import FleetState
from wattplane.operator.views import gpunode_parts, pod_view, policy_parse


def _policy(name: str, spec: Any, **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "generation": 2, **meta}, "spec": spec}


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"limits": {"maxWatts": -5}}, "limits.maxWatts"),
        ({"limits": {"minWatts": 300, "maxWatts": 200}}, "minWatts must not exceed maxWatts"),
        ({"priorty": 3}, "priorty"),
        (
            {"selector": {"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}},
            "needs at least one value",
        ),
        ("not a mapping", "spec"),
        ([1, 2], "spec"),
    ],
)
def test_a_bad_spec_becomes_an_error_message(spec: Any, words: str) -> None:
    parsed = policy_parse(_policy("bad", spec))
    assert parsed.view is None
    assert parsed.error is not None and parsed.error.startswith("invalid spec: ")
    assert words in parsed.error
    assert (parsed.name, parsed.generation) == ("bad", 2)


def test_error_messages_stay_short_with_many_problems() -> None:
    spec = {f"bogus{i}": i for i in range(50)}
    parsed = policy_parse(_policy("bad", spec))
    assert parsed.error is not None
    assert parsed.error.count(";") == 4  # the first five problems only


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=12,
)
_spec_keys = st.sampled_from(["selector", "priority", "limits", "dryRun", "maxWatts", "podSelector"])


@settings(max_examples=200, deadline=None)
@given(_json | st.dictionaries(_spec_keys, _json, max_size=4))
def test_policy_parse_never_raises(spec: Any) -> None:
    parsed = policy_parse(_policy("p", spec))
    assert (parsed.view is None) != (parsed.error is None)


def test_a_valid_policy_becomes_a_view() -> None:
    parsed = policy_parse(_policy("cap", {"limits": {"maxWatts": 200}}, deletionTimestamp="2025-01-01T00:00:00Z"))
    assert parsed.error is None and parsed.view is not None
    assert parsed.view.spec.limits is not None and parsed.view.spec.limits.max_watts == 200
    assert parsed.view.deleting is True
    assert parsed.view.generation == 2
    empty = policy_parse({"metadata": {"name": "empty", "uid": "u-1"}})  # no spec: nothing to do, refused
    assert empty.view is None and empty.error is not None and "at least one of limits" in empty.error
    assert empty.uid == "u-1"  # kept for events on the policy


def test_pod_view_reads_the_parts_planning_needs() -> None:
    view = pod_view(
        {
            "metadata": {"namespace": "ml", "name": "p", "uid": "u1", "labels": {"a": "b"}, "annotations": None},
            "spec": {"nodeName": "node-a"},
            "status": {"phase": "Running"},
        }
    )
    assert (view.key, view.uid, view.node, view.labels, view.annotations) == (
        ("ml", "p"),
        "u1",
        "node-a",
        {"a": "b"},
        {},
    )
    assert view.active
    bare = pod_view({"metadata": {"namespace": "ml", "name": "q"}})
    assert bare.phase == "Pending" and bare.node is None and bare.active


def _gpunode(name: str = "node-a", **body: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, **body}


GPU_STATUS = {
    "index": 0,
    "uuid": "GPU-0",
    "model": "A40",
    "migEnabled": True,
    "powerLimitWatts": 300.0,
    "constraints": {"minWatts": 100.0, "maxWatts": 300.0, "defaultWatts": 300.0},
    "powerWatts": 123.0,
    "pods": [{"namespace": "ml", "name": "p", "container": "c"}],
}


def test_gpunode_parts_builds_gpu_views_from_the_status() -> None:
    spec, gpus = gpunode_parts(_gpunode(spec={"planGeneration": 3}, status={"gpus": [GPU_STATUS], "kopf": {}}))
    assert spec.plan_generation == 3
    (gpu,) = gpus
    assert (gpu.node, gpu.uuid, gpu.min_watts, gpu.max_watts, gpu.default_watts) == ("node-a", "GPU-0", 100, 300, 300)
    assert gpu.pods == (("ml", "p"),)
    assert gpu.power_watts == 123.0
    assert gpu.mig_enabled is True


def test_gpunode_parts_survives_hand_edited_garbage() -> None:
    spec, gpus = gpunode_parts(_gpunode(spec={"ttlSeconds": "soon"}, status={"gpus": [{"index": "x"}]}))
    assert spec.plan_generation == 0
    assert gpus == ()


def test_fleet_state_snapshot_follows_put_and_delete_events() -> None:
    state = FleetState()
    pod_a = {"metadata": {"namespace": "ml", "name": "a"}, "status": {"phase": "Running"}}
    pod_b = {"metadata": {"namespace": "ml", "name": "b"}}
    state.put_pod(pod_a)
    state.put_pod(pod_b)
    state.put_pod({**pod_a, "metadata": {**pod_a["metadata"], "labels": {"v": "2"}}})  # an update replaces
    state.put_pod(pod_b, deleted=True)
    state.put_namespace({"metadata": {"name": "ml", "labels": {"team": "nlp"}}})
    state.put_namespace({"metadata": {"name": "tmp"}})
    state.put_namespace({"metadata": {"name": "tmp"}}, deleted=True)
    state.put_gpunode(_gpunode("node-b", status={"gpus": [{**GPU_STATUS, "uuid": "GPU-b"}]}))
    state.put_gpunode(_gpunode("node-a", status={"gpus": [GPU_STATUS]}))
    state.put_gpunode(_gpunode("node-c"))
    state.put_gpunode(_gpunode("node-c"), deleted=True)
    state.put_policy(_policy("cap", {"limits": {"maxWatts": 200}}))
    state.put_policy(_policy("bad", {"priority": "very"}))
    state.put_policy(_policy("old", {}))
    state.put_policy(_policy("old", {}), deleted=True)

    snap = state.snapshot()
    assert list(snap.pods) == [("ml", "a")]
    assert snap.pods[("ml", "a")].labels == {"v": "2"}
    assert snap.namespace_labels == {"ml": {"team": "nlp"}}
    assert snap.nodes == ("node-a", "node-b")
    assert sorted(g.uuid for g in snap.gpus) == ["GPU-0", "GPU-b"]
    assert set(state.policies) == {"cap", "bad"}
    assert state.policies["bad"].error is not None


def test_a_snapshot_is_not_changed_by_later_events() -> None:
    state = FleetState()
    state.put_namespace({"metadata": {"name": "ml", "labels": {"team": "nlp"}}})
    state.put_pod({"metadata": {"namespace": "ml", "name": "a"}})
    snap = state.snapshot()
    state.put_pod({"metadata": {"namespace": "ml", "name": "a"}}, deleted=True)
    state.namespaces["ml"]["team"] = "cv"
    assert list(snap.pods) == [("ml", "a")]
    assert snap.namespace_labels["ml"] == {"team": "nlp"}
