"""The agent's own API calls on a real kube-apiserver: its node's pods only, and a watch that bookmarks.

The client is the agent's (``wattplane.agent.kube.NodeObjects`` made from the fixture's kubeconfig
exactly as ``wattplane-agent`` makes it), in the test process, so the test can look at where its watch
stands; the cluster is changed as an admin would, with kubernetes_asyncio.

* The pod list is field-selected on the server: pods on another node (in the same namespaces) never
  come back, and a node without pods lists none (a client that dropped the selector would list them all).
* The GpuNode watch asks for bookmarks, and the API server sends one shortly before the watch's own
  timeout. Events of other GpuNodes never reach this node's watch, but they advance the resource
  version of the collection; the bookmark carries the resume point past them without being
  delivered as a change, and the next watch resumes there: it replays nothing and sees the next
  change of this node's GpuNode as ``MODIFIED``.
* The readiness-gate write sets one pod condition by type, leaving the others, and carries the pod's
  uid as a precondition: a pod recreated under the same name is not written (422, uid immutable).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from controlplane import ControlPlane
from kubeapi import GROUP, VERSION, connect, create_namespace, create_node, create_pod
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from wattplane.agent.kube import ApiError, NodeObjects, load_config, make_client

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(120)]

PREFIX = "apicalls"
#: Server-side length of each watch, seconds: the API server sends its bookmark 2 s before the end.
WATCH_S = 5


@pytest.fixture
async def admin(control_plane: ControlPlane) -> AsyncIterator[client.ApiClient]:
    async with await connect(control_plane.kubeconfig) as api_client:
        yield api_client


@pytest.fixture
async def agent_objects(control_plane: ControlPlane) -> AsyncIterator[dict[str, NodeObjects]]:
    """The agent's adapter for node names on demand (one client for all, closed at the end)."""
    api = make_client(load_config(control_plane.kubeconfig))
    try:
        yield {name: NodeObjects(api, name, watch_timeout_s=WATCH_S) for name in _names("n1", "n2", "n3")}
    finally:
        await api.close()


def _names(*suffixes: str) -> list[str]:
    return [f"{PREFIX}-{suffix}" for suffix in suffixes]


async def test_the_pod_list_holds_the_pods_bound_to_this_node_only(
    admin: client.ApiClient, agent_objects: dict[str, NodeObjects]
) -> None:
    busy, other, idle = _names("n1", "n2", "n3")
    for node in (busy, other, idle):
        await create_node(admin, node, gpus=4)
    for namespace in (f"{PREFIX}-a", f"{PREFIX}-b"):
        await create_namespace(admin, namespace)
        await create_pod(admin, namespace, "here", node=busy, gpus=1)
        await create_pod(admin, namespace, "there", node=other, gpus=1)

    listed = await agent_objects[busy].list_pods()
    assert sorted((p["metadata"]["namespace"], p["metadata"]["name"]) for p in listed) == [
        (f"{PREFIX}-a", "here"),
        (f"{PREFIX}-b", "here"),
    ]
    assert {p["spec"]["nodeName"] for p in listed} == {busy}
    assert await agent_objects[idle].list_pods() == [], "a node without pods lists none, not everybody's"


async def _create_gpunode(admin: client.ApiClient, name: str) -> str:
    """Create another node's GpuNode as an admin; its resource version."""
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuNode", "metadata": {"name": name}, "spec": {}}
    created: dict[str, Any] = await client.CustomObjectsApi(admin).create_cluster_custom_object(
        GROUP, VERSION, "gpunodes", body
    )
    return str(created["metadata"]["resourceVersion"])


async def test_bookmarks_advance_the_watch_without_being_changes(
    admin: client.ApiClient, agent_objects: dict[str, NodeObjects]
) -> None:
    objects = agent_objects[_names("n3")[0]]
    try:
        await create_node(admin, objects.node_name, gpus=4)
    except ApiException as exc:  # made by the pod-list test already
        assert exc.status == 409
    own = await objects.ensure_gpunode()
    own_version = int(own["metadata"]["resourceVersion"])

    # First watch: the current object as ADDED; meanwhile other nodes' GpuNodes change.
    async def make_others() -> list[str]:
        await asyncio.sleep(0.5)
        return [await _create_gpunode(admin, f"{PREFIX}-other-{i}") for i in range(3)]

    async with asyncio.TaskGroup() as group:  # a failure in one cancels the other
        watch, churn = group.create_task(_drain(objects)), group.create_task(make_others())
    events, others = watch.result(), churn.result()
    assert [e["type"] for e in events] == ["ADDED"], "other GpuNodes' events and bookmarks are not changes"
    assert int(events[0]["object"]["metadata"]["resourceVersion"]) == own_version
    # Resource versions are opaque to clients; on one etcd they grow, which is all this comparison uses.
    assert objects.resource_version is not None
    assert int(objects.resource_version) >= int(others[-1]) > own_version, "a bookmark moved the resume point"

    # Second watch: resumes at the bookmark, so nothing is replayed; this node's next change arrives.
    bookmark = objects.resource_version

    async def new_plan() -> None:
        await asyncio.sleep(0.5)
        await client.CustomObjectsApi(admin).patch_cluster_custom_object(
            GROUP,
            VERSION,
            "gpunodes",
            objects.node_name,
            {"spec": {"planGeneration": 5}},
            _content_type="application/merge-patch+json",
        )

    async with asyncio.TaskGroup() as group:
        watch = group.create_task(_drain(objects))
        group.create_task(new_plan())
    events = watch.result()
    assert [(e["type"], e["object"]["spec"].get("planGeneration")) for e in events] == [("MODIFIED", 5)]
    assert int(objects.resource_version) > int(bookmark)


async def _drain(objects: NodeObjects) -> list[dict[str, Any]]:
    """Every event of one watch (it ends after ``WATCH_S`` on the server)."""
    return [event async for event in objects.watch_gpunode()]


async def test_a_pod_condition_is_set_by_type_and_only_on_the_same_pod(
    admin: client.ApiClient, agent_objects: dict[str, NodeObjects]
) -> None:
    """The readiness-gate write: one condition merged by type; the pod's uid is a precondition."""
    objects = agent_objects[_names("n1")[0]]
    namespace = f"{PREFIX}-cond"
    try:
        await create_node(admin, objects.node_name, gpus=4)
    except ApiException as exc:  # made by another test already
        assert exc.status == 409
    await create_namespace(admin, namespace)
    pod = await create_pod(admin, namespace, "gated", node=objects.node_name, gpus=1)
    other = {"type": "example.com/warm", "status": "True"}
    await client.CoreV1Api(admin).patch_namespaced_pod_status("gated", namespace, {"status": {"conditions": [other]}})
    ours = {"type": "wattplane.io/power-verified", "status": "False", "reason": "NoTarget", "message": "m"}

    await objects.patch_pod_condition(namespace, "gated", pod["metadata"]["uid"], ours)
    read = admin.sanitize_for_serialization(await client.CoreV1Api(admin).read_namespaced_pod("gated", namespace))
    by_type = {c["type"]: c for c in read["status"]["conditions"]}
    assert by_type["wattplane.io/power-verified"]["reason"] == "NoTarget"
    assert by_type["example.com/warm"]["status"] == "True", "the other condition is left alone"

    with pytest.raises(ApiError) as refused:  # a pod of the same name but another uid is another pod
        await objects.patch_pod_condition(namespace, "gated", "00000000-0000-0000-0000-000000000000", ours)
    assert refused.value.status == 422 and "metadata.uid" in refused.value.message, refused.value
