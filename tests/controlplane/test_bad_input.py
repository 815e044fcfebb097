"""Bad input on the real API server.

Nonsense policies are refused by the CRD schema with a clear message, and garbage pod annotations
produce a Warning event on the pod instead of breaking planning.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from fleet import Fleet
from kubeapi import apply_policy, connect, create_namespace, create_pod, eventually, get_cluster_object
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
