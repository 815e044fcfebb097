"""Bad input on the real API server.

Nonsense policies are refused by the CRD schema with a clear message (a policy that would do nothing,
``spec: {}``, included), garbage pod annotations produce a Warning event on the pod instead of breaking
planning, and a policy that loses pods to a higher-ranked one says which and to whom.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from controlplane import ControlPlane
from fleet import Fleet
from helmtool import require_tools
from kubeapi import (
    apply_policy,
    connect,
    create_namespace,
    create_pod,
    delete_cluster_object,
    eventually,
    get_cluster_object,
)
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(120)]


@pytest.fixture
async def api(fleet: Fleet) -> AsyncIterator[client.ApiClient]:
    async with await connect(fleet.cp.kubeconfig) as api_client:
        yield api_client


@pytest.mark.parametrize(
    ("spec", "message_part"),
    [
        ({"limits": {"maxFractionOfDefault": 1.5}}, "maxFractionOfDefault"),
        ({"limits": {"maxWatts": -20}}, "maxWatts"),
        ({"limits": {"minWatts": 300, "maxWatts": 200}}, "minWatts must not exceed maxWatts"),
        ({"limits": {"lockedSmClockMHz": {"minMHz": 1500, "maxMHz": 900}}}, "minMHz must not exceed maxMHz"),
        ({"limits": {"maxWats": 200}}, "maxWats"),  # a typo is an error, not a silently ignored knob
        ({"priority": "high"}, "priority"),
        ({"selector": {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}}, "operator"),
        ({}, "at least one of limits, efficiency, carbon, budget, quota, serving or stragglers"),
        ({"priority": 5, "selector": {}, "dryRun": False}, "or dryRun: true to only observe"),
    ],
)
async def test_schema_rejects_nonsense_policies(api: client.ApiClient, spec: dict[str, Any], message_part: str) -> None:
    with pytest.raises(ApiException) as caught:
        await apply_policy(api, "bad-policy", spec)
    assert caught.value.status in (400, 422), caught.value.body  # 400: strict decoding, 422: schema
    assert message_part in caught.value.body


async def test_garbage_annotations_warn_on_the_pod_and_planning_goes_on(fleet: Fleet, api: client.ApiClient) -> None:
    node = fleet.nodes[0]
    await create_namespace(api, "garbage", {"team": "garbage"})
    await create_pod(
        api,
        "garbage",
        "weird",
        node=node,
        gpus=1,
        labels={"app": "weird"},
        annotations={"wattplane.io/priority": "super-urgent", "wattplane.io/colour": "blue"},
    )
    await apply_policy(
        api,
        "garbage-cap",
        {"selector": {"namespaceSelector": {"matchLabels": {"team": "garbage"}}}, "limits": {"maxWatts": 250}},
    )

    async def warning_event() -> list[Any] | None:
        events = await client.CoreV1Api(api).list_namespaced_event(
            "garbage", field_selector="involvedObject.name=weird,reason=InvalidAnnotation"
        )
        return events.items or None

    events, _ = await eventually(warning_event, within_s=20, what=f"InvalidAnnotation event\n{fleet.logs()}")
    message = events[0].message
    assert events[0].type == "Warning"
    assert "wattplane.io/priority" in message and "super-urgent" in message
    assert "wattplane.io/colour" in message

    async def capped() -> bool:
        gn = await get_cluster_object(api, "gpunodes", node)
        gpus = [g for g in gn["status"]["gpus"] if any(p["name"] == "weird" for p in g.get("pods", []))]
        return bool(gpus) and all(g["powerLimitWatts"] == 250 for g in gpus)

    await eventually(capped, within_s=20, what="the garbage-annotated pod still planned with defaults")


async def _wattplane(fleet: Fleet, *args: str) -> str:
    """Run the ``wattplane`` CLI against the test cluster; its standard output (it must succeed)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wattplane.cli.main", *args, "--kubeconfig", str(fleet.cp.kubeconfig),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=fleet.cp.python_env(),
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


EMPTY = "apiVersion: wattplane.io/v1alpha1\nkind: EnergyPolicy\nmetadata: {name: empty}\n"


@pytest.mark.parametrize(
    ("manifest", "message_part"),
    [
        (
            EMPTY + "spec: {}\n",
            "a policy needs at least one of limits, efficiency, carbon, budget, quota, serving or stragglers",
        ),
        (EMPTY + "spec: {priority: 100, selector: {}}\n", "or dryRun: true to only observe the pods it selects"),
        (EMPTY, "spec: Required value"),
    ],
)
@pytest.mark.parametrize("verb", [("apply", "-f", "-"), ("create", "-f", "-")])
def test_kubectl_refuses_a_policy_that_would_do_nothing(
    control_plane: ControlPlane, tmp_path: Path, manifest: str, message_part: str, verb: tuple[str, ...]
) -> None:
    """``spec: {}`` selects every pod and, at priority 0, used to take them from capping policies."""
    tools = require_tools()
    argv = [str(tools.kubectl), f"--kubeconfig={control_plane.kubeconfig}", f"--cache-dir={tmp_path}"]
    refused = subprocess.run([*argv, *verb], input=manifest, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0, refused.stdout
    assert message_part in refused.stderr, refused.stderr
    assert subprocess.run([*argv, "get", "energypolicy", "empty"], capture_output=True, timeout=60).returncode != 0
    observe = EMPTY.replace("name: empty", "name: observe-only") + "spec: {dryRun: true}\n"
    created = subprocess.run([*argv, *verb], input=observe, capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr  # observe-only is a policy that does something: it reports
    subprocess.run([*argv, "delete", "energypolicy", "observe-only"], capture_output=True, timeout=60, check=True)


async def test_an_observer_takes_no_pod_and_the_loser_says_what_it_lost_to_whom(
    fleet: Fleet, api: client.ApiClient
) -> None:
    """An observer takes no pod; a capping policy above the cap does, and the loser says so.

    An inference pod capped at 150 W by a policy at priority -5 keeps its cap when an observe-only
    policy (every pod, priority 0) arrives; a capping policy above it takes the pod, and the loser's
    status and events say so, naming the pod and the winner.
    """
    node = fleet.nodes[1]
    await create_namespace(api, "serving", {"team": "serving"})
    await create_pod(api, "serving", "llm-0", node=node, gpus=1, labels={"wattplane.io/workload": "inference"})
    only_serving = {"namespaceSelector": {"matchLabels": {"team": "serving"}}}
    await apply_policy(api, "inference-cap", {"selector": only_serving, "priority": -5, "limits": {"maxWatts": 150}})

    async def llm_limit(watts: float) -> bool:
        gn = await get_cluster_object(api, "gpunodes", node)
        gpus = [g for g in gn["status"]["gpus"] if any(p["name"] == "llm-0" for p in g.get("pods", []))]
        return bool(gpus) and all(g["powerLimitWatts"] == watts for g in gpus)

    await eventually(lambda: llm_limit(150), within_s=30, what=f"llm-0 capped at 150 W\n{fleet.logs()}")
    try:
        await apply_policy(api, "watch-everything", {"dryRun": True})

        async def observing() -> dict[str, Any] | None:
            status = (await get_cluster_object(api, "energypolicies", "watch-everything")).get("status", {})
            return status if "serving/llm-0" in status.get("pods", []) else None

        watched, _ = await eventually(observing, within_s=30, what="the observer reports the pod")
        ready = {c["type"]: c for c in watched["conditions"]}["Ready"]
        assert ready["reason"] == "ObserveOnly", ready
        assert await llm_limit(150)
        cap = (await get_cluster_object(api, "energypolicies", "inference-cap"))["status"]
        assert cap["pods"] == ["serving/llm-0"] and cap.get("shadowedPods", 0) == 0

        await apply_policy(
            api, "serving-fast", {"selector": only_serving, "priority": 10, "limits": {"maxFractionOfDefault": 1}}
        )
        await eventually(lambda: llm_limit(300), within_s=30, what="the higher-ranked policy governs llm-0")

        async def lost() -> dict[str, Any] | None:
            status = (await get_cluster_object(api, "energypolicies", "inference-cap")).get("status", {})
            return status if status.get("shadowedPods") == 1 else None

        status, _ = await eventually(lost, within_s=30, what="inference-cap reports the pod it lost")
        assert status["shadowed"] == [{"pod": "serving/llm-0", "governedBy": "serving-fast"}]
        ready = {c["type"]: c for c in status["conditions"]}["Ready"]
        assert "serving/llm-0 by serving-fast" in ready["message"], ready

        async def warning() -> list[Any] | None:
            events = await client.CoreV1Api(api).list_event_for_all_namespaces(
                field_selector="involvedObject.kind=EnergyPolicy,involvedObject.name=inference-cap,reason=PodsShadowed"
            )
            return events.items or None

        events, _ = await eventually(warning, within_s=30, what=f"PodsShadowed event\n{fleet.logs()}")
        policy = await get_cluster_object(api, "energypolicies", "inference-cap")
        assert events[0].type == "Warning"
        assert events[0].involved_object.uid == policy["metadata"]["uid"]  # so kubectl describe shows it
        assert "serving/llm-0 (governed by serving-fast)" in events[0].message

        # The same story from the pod's side, through the CLI against the real API server.
        explain = await _wattplane(fleet, "explain", "pod", "serving/llm-0")
        assert "governed by EnergyPolicy serving-fast (priority 10; limits): its selector matches" in explain
        assert "also selected by (lower-ranked, shadowed: they set nothing on this pod): inference-cap" in explain
        assert "observed by (dry run, no section): watch-everything" in explain
        assert "  binding section: limits" in explain, explain
        status = await _wattplane(fleet, "status")
        assert any(line.startswith("inference-cap ") for line in status.splitlines()), status
    finally:
        for name in ("watch-everything", "serving-fast", "inference-cap"):
            with contextlib.suppress(ApiException):
                await delete_cluster_object(api, "energypolicies", name)
