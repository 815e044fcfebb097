"""An operator shard's cut of the fleet: its nodes' GpuNodes and pods, its labelled policies.

The return values of the ``put_*`` methods decide whether a watch event triggers a planning round,
so they are asserted too: other shards' heartbeats and label churn must not replan this one.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from wattplane.api.selectorsyntax import parse_selector
from wattplane.operator.settings import OperatorSettings
from wattplane.operator.state import FleetState

GPU = {
    "index": 0,
    "uuid": "GPU-0",
    "model": "A40",
    "powerLimitWatts": 300.0,
    "constraints": {"minWatts": 100.0, "maxWatts": 300.0, "defaultWatts": 300.0},
    "powerWatts": 120.0,
}


def _node(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, "status": {"conditions": []}}


def _gpunode(name: str, uuid: str, generation: int = 0) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"planGeneration": generation},
        "status": {"gpus": [{**GPU, "uuid": uuid}]},
    }


def _pod(name: str, node: str | None) -> dict[str, Any]:
    return {"metadata": {"namespace": "ml", "name": name}, "spec": {"nodeName": node}, "status": {"phase": "Running"}}


def _policy(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "generation": 1, "labels": labels}, "spec": {"limits": {"maxFraction": 0.7}}}


def _shard(nodes: str = "pool=a", policies: str = "shard=a") -> FleetState:
    return FleetState(node_selector=parse_selector(nodes), policy_selector=parse_selector(policies))


def test_without_selectors_everything_is_planned_as_before() -> None:
    state = FleetState()
    assert state.put_gpunode(_gpunode("n1", "GPU-1")) is True  # before its Node: planned at once
    assert state.put_pod(_pod("pending", None)) is True
    assert state.put_policy(_policy("any")) is True
    assert state.put_node(_node("n1", pool="b")) is True
    snap = state.snapshot()
    assert snap.nodes == ("n1",)
    assert set(snap.pods) == {("ml", "pending")}
    assert set(state.policies) == {"any"}


@pytest.mark.parametrize("node_first", [True, False])
def test_a_gpunode_joins_once_its_node_is_known_to_match_in_either_order(node_first: bool) -> None:
    state = _shard()
    events = [lambda: state.put_node(_node("a1", pool="a")), lambda: state.put_gpunode(_gpunode("a1", "GPU-a1", 7))]
    for event in events if node_first else reversed(events):
        event()
    assert list(state.nodes) == ["a1"]
    assert state.nodes["a1"].spec.plan_generation == 7  # the GpuNode's plan, parsed once it joined
    assert [g.uuid for g in state.snapshot().gpus] == ["GPU-a1"]


def test_an_unknown_or_foreign_node_is_stored_but_not_planned_and_triggers_nothing() -> None:
    state = _shard()
    assert state.put_gpunode(_gpunode("a1", "GPU-a1")) is False  # Node not seen yet
    assert state.put_node(_node("b1", pool="b")) is False
    assert state.put_gpunode(_gpunode("b1", "GPU-b1")) is False
    assert state.put_gpunode(_gpunode("b1", "GPU-b1", 3)) is False  # the other shard's writes
    assert state.put_node(_node("b1", pool="b", rack="r9")) is False  # label churn elsewhere
    assert state.put_pod(_pod("on-b", "b1")) is False
    assert state.put_pod(_pod("pending", None)) is False
    assert state.nodes == {}
    assert state.snapshot().gpus == ()
    assert state.put_node(_node("a1", pool="a")) is True  # the Node arrives: now it is ours
    assert [g.uuid for g in state.snapshot().gpus] == ["GPU-a1"]


def test_pods_of_the_shard_are_planned_others_are_kept_for_later() -> None:
    state = _shard()
    state.put_node(_node("a1", pool="a"))
    state.put_node(_node("b1", pool="b"))
    assert state.put_pod(_pod("on-a", "a1")) is True
    state.put_pod(_pod("on-b", "b1"))
    state.put_pod(_pod("pending", None))
    state.put_pod(_pod("on-unknown", "x9"))
    snap = state.snapshot()
    assert set(snap.pods) == {("ml", "on-a")}
    assert set(snap.node_labels) == {"a1"}  # budgets see only the shard's nodes
    state.put_node(_node("b1", pool="a"))  # b1 joins: its pod was kept
    assert set(state.snapshot().pods) == {("ml", "on-a"), ("ml", "on-b")}
    assert state.put_pod(_pod("on-b", "b1"), deleted=True) is True


def test_a_node_that_leaves_the_shard_is_no_longer_planned_and_can_come_back() -> None:
    state = _shard()
    state.put_node(_node("a1", pool="a"))
    state.put_gpunode(_gpunode("a1", "GPU-a1", 4))
    state.put_pod(_pod("on-a", "a1"))
    assert state.put_node(_node("a1", pool="b")) is True  # leaving replans (its GPUs drop out)
    snap = state.snapshot()
    assert (snap.nodes, snap.gpus, dict(snap.pods)) == ((), (), {})
    assert state.put_gpunode(_gpunode("a1", "GPU-a1", 9)) is False  # the new shard's plan: stored only
    assert state.nodes == {}
    assert state.put_node(_node("a1", pool="a")) is True
    assert state.nodes["a1"].spec.plan_generation == 9  # back with the latest plan, not the old one
    assert set(state.snapshot().pods) == {("ml", "on-a")}


def test_a_left_node_comes_back_with_its_record_when_no_gpunode_event_came_between() -> None:
    state = _shard()
    state.put_node(_node("a1", pool="a"))
    state.put_gpunode(_gpunode("a1", "GPU-a1", 4))
    state.put_node(_node("a1", pool="b"))
    state.put_node(_node("a1", pool="a"))
    assert state.nodes["a1"].spec.plan_generation == 4
    assert [g.uuid for g in state.snapshot().gpus] == ["GPU-a1"]


def test_a_deleted_node_or_gpunode_leaves_the_shard() -> None:
    state = _shard()
    state.put_node(_node("a1", pool="a"))
    state.put_gpunode(_gpunode("a1", "GPU-a1"))
    assert state.put_node(_node("a1", pool="a"), deleted=True) is True
    assert state.nodes == {}
    state.put_node(_node("a1", pool="a"))
    assert list(state.nodes) == ["a1"]
    assert state.put_gpunode(_gpunode("a1", "GPU-a1"), deleted=True) is True
    assert state.nodes == {} and state.outside == {}
    state.put_node(_node("a1", pool="b"))
    state.put_gpunode(_gpunode("a1", "GPU-a1"))
    assert state.put_gpunode(_gpunode("a1", "GPU-a1"), deleted=True) is False
    assert state.outside == {}


def test_only_labelled_policies_belong_to_the_shard_and_a_moved_one_is_forgotten() -> None:
    state = _shard(policies="shard in (a,both)")
    assert state.put_policy(_policy("mine", shard="a")) is True
    assert state.put_policy(_policy("also", shard="both")) is True
    assert state.put_policy(_policy("theirs", shard="b")) is False
    assert state.put_policy(_policy("unlabelled")) is False
    assert set(state.policies) == {"mine", "also"}
    assert state.put_policy(_policy("mine", shard="b")) is True  # it left: replan without it
    assert set(state.policies) == {"also"}
    assert state.put_policy(_policy("theirs", shard="a")) is True  # taken over
    assert set(state.policies) == {"also", "theirs"}
    assert state.owns_policy({"shard": "a"}) and not state.owns_policy(None)


def test_settings_need_a_shard_name_with_a_selector_and_name_the_finalizer() -> None:
    assert OperatorSettings().finalizer == "wattplane.io/restore-gpus"
    sharded = OperatorSettings(node_selector=" pool in (a) ", policy_selector="shard=a", shard="pool-a")
    assert sharded.finalizer == "wattplane.io/restore-gpus-pool-a"
    assert sharded.node_selector == "pool in (a)"
    assert sharded.node_label_selector is not None and sharded.node_label_selector.matches({"pool": "a"})
    assert OperatorSettings().node_label_selector is None and OperatorSettings().policy_label_selector is None
    with pytest.raises(ValidationError, match="needs a shard name"):
        OperatorSettings(policy_selector="shard=a")
    with pytest.raises(ValidationError, match="at position 8: expected '\\('"):
        OperatorSettings(node_selector="pool in a", shard="a")
    with pytest.raises(ValidationError, match="shard"):
        OperatorSettings(node_selector="pool=a", shard="Pool_A")


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATTPLANE_OPERATOR_NODE_SELECTOR", "pool=a")
    monkeypatch.setenv("WATTPLANE_OPERATOR_POLICY_SELECTOR", "!legacy")
    monkeypatch.setenv("WATTPLANE_OPERATOR_SHARD", "a")
    settings = OperatorSettings()
    assert (settings.node_selector, settings.policy_selector, settings.shard) == ("pool=a", "!legacy", "a")
