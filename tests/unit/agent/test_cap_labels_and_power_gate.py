"""Cap-range labels and the power-verified verdict, as pure functions.

The API server's side is tests/controlplane/test_agent_node_labels_and_power_gate.py.

* Any model name becomes a valid label key (the API server's own syntax rules, checked for arbitrary
  text), distinct long names keep distinct keys, and values are integer watts inside the range.
* Label changes set what differs, remove stale keys under the prefix and never name a foreign label.
* The verdict: each reason of ``False``, the worst across GPUs winning, a node budget's cut counting
  as the applied cap, and the read-back tolerance.
* The publisher retries after a failure and re-checks when due, without raising.
* The gate writes gated pods only, only on a change, and rests after a failure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wattplane.agent.caplabels import LABEL_PREFIX, CapLabelPublisher, cap_labels, label_changes, model_slug
from wattplane.agent.engine import GpuOutcome, NodeEngine
from wattplane.agent.gate import CONDITION_TYPE, GpuFacts, PowerGate, has_gate, verdict
from wattplane.agent.gpu.base import GpuReading, PowerConstraints
from wattplane.agent.gpu.errors import GpuLostError
from wattplane.agent.gpu.simulated import SimulatedBackend, SimulatedGpu
from wattplane.agent.journal import Journal
from wattplane.agent.kube import ApiError, NodeObjects, PodList
from wattplane.agent.loop import AgentLoop, budget_params
from wattplane.agent.settings import AgentSettings
from wattplane.api.v1alpha1.gpunode import PodRef

#: Kubernetes' qualified-name rule for the part of a label key after the prefix, and for label values.
NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
A40 = PowerConstraints(min_watts=100.0, max_watts=300.0, default_watts=300.0)


@given(st.text(max_size=200))
def test_any_model_name_makes_valid_label_keys(model: str) -> None:
    for key, value in cap_labels([(model, A40)]).items():
        prefix, _, name = key.partition("/")
        assert f"{prefix}/" == LABEL_PREFIX
        assert len(name) <= 63 and NAME.match(name), key
        assert len(value) <= 63 and NAME.match(value), value


def test_model_names_in_key_syntax() -> None:
    assert model_slug("NVIDIA A100-SXM4-80GB") == "nvidia-a100-sxm4-80gb"
    assert model_slug("A40") == "a40"
    assert model_slug("  ") == "gpu"
    long_a, long_b = "X" * 60 + " variant A", "X" * 60 + " variant B"
    assert model_slug(long_a) != model_slug(long_b), "a cut name keeps a hash of the whole"
    assert len(model_slug(long_a)) == 49


def test_one_range_per_model_that_every_gpu_of_it_accepts() -> None:
    odd = PowerConstraints(min_watts=100.4, max_watts=299.6, default_watts=290.0)
    labels = cap_labels([("NVIDIA A40", A40), ("NVIDIA A40", odd), ("H100", PowerConstraints(200, 700, 700))])
    assert labels == {
        "power.wattplane.io/nvidia-a40.min-watts": "101",
        "power.wattplane.io/nvidia-a40.max-watts": "299",
        "power.wattplane.io/nvidia-a40.default-watts": "290",
        "power.wattplane.io/h100.min-watts": "200",
        "power.wattplane.io/h100.max-watts": "700",
        "power.wattplane.io/h100.default-watts": "700",
    }


def test_changes_remove_stale_labels_and_leave_others_alone() -> None:
    current = {
        "power.wattplane.io/a40.max-watts": "300",
        "power.wattplane.io/old.max-watts": "250",
        "power.example.com/max-watts": "1",
        "team": "ml",
    }
    desired = {"power.wattplane.io/a40.max-watts": "300", "power.wattplane.io/a40.min-watts": "100"}
    assert label_changes(current, desired) == {
        "power.wattplane.io/a40.min-watts": "100",
        "power.wattplane.io/old.max-watts": None,
    }
    assert label_changes({**current, **desired, "power.wattplane.io/old.max-watts": "x"}, desired) == {
        "power.wattplane.io/old.max-watts": None
    }
    assert label_changes(desired, desired) == {}


def _reading(limit: float) -> GpuReading:
    return GpuReading(power_watts=100.0, energy_joules=1.0, power_limit_watts=limit)


def _applied(target: float, limit: float, index: int = 0, budget: float | None = None) -> GpuFacts:
    outcome = GpuOutcome(state="Applied", target_watts=target, budget_limit_watts=budget)
    return GpuFacts(index=index, outcome=outcome, reading=_reading(limit))


def test_verified_when_every_gpu_holds_its_applied_limit() -> None:
    result = verdict([_applied(200, 200.0, 1), _applied(200, 200.2, 0)], expired=False)
    assert (result.status, result.reason) == ("True", "Verified")
    assert result.message.startswith("GPU 0 at 200.2 W, GPU 1 at 200 W")
    held = verdict([_applied(250, 180.0, budget=180.0)], expired=False)
    assert (held.status, held.reason) == ("True", "Verified") and "(node budget)" in held.message


@pytest.mark.parametrize(
    ("facts", "expired", "reason"),
    [
        ([], False, "NoGpu"),
        ([_applied(200, 250.0)], False, "Pending"),
        ([GpuFacts(0, GpuOutcome(state="Default"), _reading(300.0))], False, "NoTarget"),
        (
            [GpuFacts(0, GpuOutcome(state="DryRun", target_watts=200, message="dry run"), _reading(300.0))],
            False,
            "DryRun",
        ),
        ([_applied(200, 200.0)], True, "PlanExpired"),
        ([GpuFacts(0, GpuOutcome(state="Error", message="lost"), GpuLostError("lost"))], False, "GpuError"),
    ],
)
def test_each_reason_for_false(facts: list[GpuFacts], expired: bool, reason: str) -> None:
    result = verdict(facts, expired=expired)
    assert (result.status, result.reason) == ("False", reason), result


def test_the_worst_gpu_names_the_reason_and_every_problem_is_in_the_message() -> None:
    facts = [
        _applied(200, 200.0, 0),
        _applied(200, 300.0, 1),
        GpuFacts(2, GpuOutcome(state="Error", message="injected NoPermission"), _reading(300.0)),
    ]
    result = verdict(facts, expired=False)
    assert result.reason == "GpuError"
    assert result.message == "GPU 2: injected NoPermission; GPU 1: limit 300 W on the device, 200 W wanted"


def test_gate_is_read_from_the_pod_spec() -> None:
    assert has_gate({"spec": {"readinessGates": [{"conditionType": "wattplane.io/power-verified"}]}})
    assert not has_gate({"spec": {"readinessGates": [{"conditionType": "example.com/other"}]}})
    assert not has_gate({"spec": {}})


class Node:
    def __init__(self) -> None:
        self.labels: dict[str, str] = {"team": "ml"}
        self.fail: Exception | None = None
        self.gets = 0

    async def get(self) -> Mapping[str, str]:
        self.gets += 1
        if self.fail:
            raise self.fail
        return dict(self.labels)

    async def patch(self, changes: Mapping[str, str | None]) -> None:
        for key, value in changes.items():
            if value is None:
                self.labels.pop(key, None)
            else:
                self.labels[key] = value


async def test_publisher_retries_after_a_failure_and_rechecks_when_due() -> None:
    node = Node()
    publisher = CapLabelPublisher(node.get, node.patch, recheck_s=300, retry_s=30)
    desired = cap_labels([("A40", A40)])
    node.fail = ApiError(403, "Forbidden", "no")
    await publisher.sync(desired, now=0.0)  # does not raise
    assert not publisher.due(desired, now=29.0), "resting after a failure"
    assert publisher.due(desired, now=30.0) and node.labels == {"team": "ml"}
    node.fail = None
    await publisher.sync(desired, now=30.0)
    assert node.labels == {"team": "ml", **desired}
    assert not publisher.due(desired, now=100.0)
    node.labels.pop("power.wattplane.io/a40.max-watts")  # removed by hand
    assert publisher.due(desired, now=330.0)
    await publisher.sync(desired, now=330.0)
    assert node.labels == {"team": "ml", **desired}
    assert publisher.due({}, now=331.0), "new GPUs are published at once"


class Pods:
    """The gate's view of the API: a pod list and a status patch that lands in it (or fails)."""

    def __init__(self, pods: list[dict[str, Any]]) -> None:
        self.pods = pods
        self.last_pod_list: PodList | None = None
        self.patched: list[tuple[str, dict[str, Any]]] = []
        self.fail: Exception | None = None
        self.now = 0.0

    async def list_pods(self) -> list[dict[str, Any]]:
        if self.fail:
            raise self.fail
        self.last_pod_list = PodList(self.now, [dict(p) for p in self.pods])
        return self.last_pod_list.pods

    async def patch_pod_condition(self, namespace: str, name: str, uid: str, condition: Mapping[str, Any]) -> None:
        if self.fail:
            raise self.fail
        self.patched.append((name, dict(condition)))
        pod = next(p for p in self.pods if p["metadata"]["uid"] == uid)
        others = [c for c in pod["status"]["conditions"] if c["type"] != CONDITION_TYPE]
        pod["status"]["conditions"] = [*others, dict(condition)]


def _pod(name: str, *, gate: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {"readinessGates": [{"conditionType": CONDITION_TYPE}]} if gate else {}
    return {
        "metadata": {"namespace": "ns", "name": name, "uid": f"uid-{name}"},
        "spec": spec,
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]},
    }


async def test_gate_patches_gated_pods_only_and_only_on_change() -> None:
    api = Pods([_pod("serve", gate=True), _pod("plain", gate=False)])
    gate = PowerGate(api, list_every_s=1.0, clock=lambda: api.now, retry_s=30.0)
    assignment = {
        "GPU-a": [PodRef(namespace="ns", name="serve", uid="uid-serve", container="c")],
        "GPU-b": [PodRef(namespace="ns", name="plain", uid="uid-plain", container="c")],
    }
    facts = {"GPU-a": _applied(200, 200.0, 0), "GPU-b": _applied(200, 200.0, 1)}
    await gate.sync(facts, assignment, expired=False)
    assert [(n, c["status"], c["reason"]) for n, c in api.patched] == [("serve", "True", "Verified")]
    api.now = 5.0
    await gate.sync(facts, assignment, expired=False)  # nothing changed: no write
    assert len(api.patched) == 1
    assert [c["type"] for c in api.pods[0]["status"]["conditions"]] == ["Ready", CONDITION_TYPE]

    api.now, api.fail = 10.0, ApiError(403, "Forbidden", "no")
    pending = {"GPU-a": _applied(180, 200.0, 0), "GPU-b": facts["GPU-b"]}
    await gate.sync(pending, assignment, expired=False)  # fails, does not raise
    api.fail, api.now = None, 20.0
    await gate.sync(pending, assignment, expired=False)  # resting until 40 s
    assert len(api.patched) == 1
    api.now = 41.0
    await gate.sync(pending, assignment, expired=False)
    assert [(c["status"], c["reason"]) for _, c in api.patched[1:]] == [("False", "Pending")]
    assert all(name == "serve" for name, _ in api.patched), "a pod without the gate is never patched"


async def test_the_loop_publishes_only_once_every_gpu_has_answered(tmp_path: Path) -> None:
    """A GPU whose constraints are unknown would drop its model's labels: nothing is written until it answers."""
    conf = AgentSettings(node_name="node-t", backend="sim", pod_mapper="sim", journal_path=tmp_path / "journal.json")
    backend = SimulatedBackend(node_name="node-t", gpu_count=2)
    engine = NodeEngine(backend, Journal(conf.journal_path), budget_params=budget_params(conf))
    node = Node()
    objects = SimpleNamespace(list_pods=_no_pods, patch_status=_ignore, ensure_gpunode=_ignore)
    loop = AgentLoop(conf, engine, cast(NodeObjects, objects), cap_labels=CapLabelPublisher(node.get, node.patch))
    silent = cast(SimulatedGpu, backend.devices()[1])
    silent.inject_fault("read", GpuLostError("lost"))
    silent.inject_fault("constraints", GpuLostError("lost"))
    await loop.tick()
    assert node.gets == 0 and node.labels == {"team": "ml"}
    silent.inject_fault("read", None)
    silent.inject_fault("constraints", None)
    await loop.tick()
    assert node.labels == {"team": "ml", **cap_labels([("A40", A40)])}


async def _no_pods() -> list[dict[str, Any]]:
    return []


async def _ignore(*_: object) -> dict[str, Any]:
    return {}
