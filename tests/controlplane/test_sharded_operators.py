"""Two operator shards on one real kube-apiserver: one per node pool, each with its labelled policies.

Three simulated nodes: ``shard-a1`` and ``shard-a2`` in pool ``a``, ``shard-b1`` in pool ``b``; two
operator processes, ``pool-a`` (nodes ``wattplane-test/pool=a``, policies
``wattplane-test/shard=a``) and ``pool-b``. Both policies select the same pods (every training pod
of the test namespace): what a shard's policy does is bounded by the shard's nodes, so each pool's
GPUs get their own policy's limit. Who wrote what is read from ``managedFields`` (each shard's
operator is its own field manager) and from the operators' logs. Then the pool-a policy is
relabelled into shard b (taken over: shard b's finalizer, status and limits; shard a restores its
GPUs and lets go), and node ``shard-a2`` is relabelled into pool b (planned by shard b from then on).

The module also checks the selector-string parser against the API server's own ``labelSelector``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from controlplane import ControlPlane, Process
from fleet import Fleet
from kubeapi import GROUP, VERSION, connect, create_namespace, create_node, create_pod, eventually, get_cluster_object
from kubernetes_asyncio import client
from wattplane.api.selectorsyntax import SelectorSyntaxError, parse_selector

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(300)]

POOL = "wattplane-test/pool"
SHARD = "wattplane-test/shard"
NODES = {"shard-a1": "a", "shard-a2": "a", "shard-b1": "b"}
NS = "shard-ml"
DEFAULT_WATTS = 300.0  # simulated A40
MERGE = "application/merge-patch+json"


@dataclass
class Shards:
    """The simulated nodes with their agents, and one operator process per pool."""

    fleet: Fleet
    operators: dict[str, Process]

    def logs(self) -> str:
        """Tails of every process log, for failure messages."""
        procs = [*self.fleet.agents.values(), *self.operators.values()]
        return "\n".join(f"--- {p.name}\n{p.tail(25)}" for p in procs)

    def plan_writes(self, pool: str) -> list[str]:
        """Nodes named in the GpuNode spec writes the pool's operator logged, in order."""
        text = self.operators[pool].log.read_text(errors="replace")
        return [
            line.split("GpuNode ", 1)[1].split(":", 1)[0] for line in text.splitlines() if ": plan generation " in line
        ]


async def _create_nodes(cp: ControlPlane) -> None:
    async with await connect(cp.kubeconfig) as api:
        for name, pool in NODES.items():
            await create_node(api, name, gpus=4, labels={POOL: pool})


@pytest.fixture(scope="module")
def shards(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shards]:
    """Agents on the three nodes and the two shard operators (no unsharded operator runs)."""
    asyncio.run(_create_nodes(control_plane))
    fleet = Fleet(control_plane, list(NODES), tmp_path_factory.mktemp("shards"))
    for node in NODES:
        fleet.start_agent(node)
    operators = {
        pool: control_plane.spawn_python(
            f"operator-pool-{pool}",
            "wattplane.operator",
            ["--shard", f"pool-{pool}", "--node-selector", f"{POOL}={pool}"],
            WATTPLANE_OPERATOR_POLICY_SELECTOR=f"{SHARD} in ({pool})",  # the environment works as well
            WATTPLANE_OPERATOR_DEBOUNCE_S="0.2",
            WATTPLANE_OPERATOR_RESYNC_INTERVAL_S="3",
            WATTPLANE_OPERATOR_STATUS_REFRESH_S="2",
            WATTPLANE_OPERATOR_METRICS_PORT="0",
        )
        for pool in ("a", "b")
    }
    try:
        yield Shards(fleet, operators)
    finally:
        for process in [*fleet.agents.values(), *operators.values()]:
            process.stop()


@pytest.fixture
async def api(shards: Shards) -> AsyncIterator[client.ApiClient]:
    async with await connect(shards.fleet.cp.kubeconfig) as api_client:
        yield api_client


def _writes(obj: dict[str, Any], *, status: bool) -> dict[str, str]:
    """Operator field managers of a GpuNode's spec (``status=False``) or a policy's status, with times.

    The time is that of each manager's last write that changed a field it owns. A write that leaves a
    field's value as it was does not take the field over, so a shard that took an object over may
    share its managed fields with the previous one, whose time then stops moving.
    """
    out = {}
    for entry in obj["metadata"].get("managedFields", []):
        if not entry["manager"].startswith("wattplane-operator"):
            continue
        if status and entry.get("subresource") == "status":
            out[entry["manager"]] = entry["time"]
        if not status and not entry.get("subresource") and "f:spec" in entry.get("fieldsV1", {}):
            out[entry["manager"]] = entry["time"]
    return out


def _writers(obj: dict[str, Any], *, status: bool) -> set[str]:
    return set(_writes(obj, status=status))


async def _limits(api: client.ApiClient) -> dict[tuple[str, str], list[float]]:
    """Per (node, pod): the power limits of the GPUs the pod holds; ``(node, "")``: free GPUs."""
    out: dict[tuple[str, str], list[float]] = {}
    for node in NODES:
        gn = await get_cluster_object(api, "gpunodes", node)
        for gpu in gn.get("status", {}).get("gpus", []):
            pods = [p["name"] for p in gpu.get("pods", [])]
            out.setdefault((node, pods[0] if pods else ""), []).append(gpu["powerLimitWatts"])
    return out


def _expect(limits: dict[tuple[str, str], list[float]], wanted: dict[tuple[str, str], float]) -> bool:
    return all(limits.get(key) and all(w == watts for w in limits[key]) for key, watts in wanted.items())


async def _create_policy(api: client.ApiClient, name: str, shard: str, priority: int, fraction: float) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "EnergyPolicy",
        "metadata": {"name": name, "labels": {SHARD: shard}},
        "spec": {
            "priority": priority,
            "selector": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NS}},
                "podSelector": {"matchLabels": {"app": "train"}},
            },
            "limits": {"maxFractionOfDefault": fraction},
        },
    }
    await client.CustomObjectsApi(api).create_cluster_custom_object(GROUP, VERSION, "energypolicies", body)


async def _relabel_policy(api: client.ApiClient, name: str, shard: str) -> None:
    await client.CustomObjectsApi(api).patch_cluster_custom_object(
        GROUP, VERSION, "energypolicies", name, {"metadata": {"labels": {SHARD: shard}}}, _content_type=MERGE
    )


async def test_selector_strings_select_what_the_api_server_selects(shards: Shards, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    nodes = (await core.list_node()).items
    assert {n.metadata.name for n in nodes} >= set(NODES)
    for text in (
        f"{POOL}=a",
        f"{POOL}==b",
        f"{POOL}!=a",
        f"{POOL} in (a,b)",
        f"{POOL} notin (a)",
        POOL,
        f"!{POOL}",
        f"{POOL}=a,type=kwok",
        f"{POOL} in (a), kubernetes.io/hostname notin (shard-a2)",
        f"{POOL}=",
        "",
    ):
        server = {n.metadata.name for n in (await core.list_node(label_selector=text)).items}
        ours = {n.metadata.name for n in nodes if parse_selector(text).matches(n.metadata.labels or {})}
        assert ours == server, text
    for bad in ("=a", f"{POOL}=a b", f"{POOL} in (a", f"{POOL}=a,", "!", f"{POOL}=-a", f"{POOL} !a"):
        with pytest.raises(SelectorSyntaxError):
            parse_selector(bad)
        with pytest.raises(client.exceptions.ApiException) as refused:
            await core.list_node(label_selector=bad)
        assert refused.value.status == 400, bad
    # Stricter on purpose: the API server takes these, but an empty set or a numeric comparison in a
    # shard's selector is a mistake (and a LabelSelector cannot hold either).
    for stricter in (f"{POOL} in ()", f"{POOL}>3"):
        with pytest.raises(SelectorSyntaxError):
            parse_selector(stricter)
        await core.list_node(label_selector=stricter)


async def test_each_shard_plans_its_pool_with_its_policies_and_takes_over_moved_ones(
    shards: Shards, api: client.ApiClient
) -> None:
    custom = client.CustomObjectsApi(api)
    core = client.CoreV1Api(api)
    await create_namespace(api, NS)
    for node, gpus in (("shard-a1", 4), ("shard-a2", 2), ("shard-b1", 4)):
        await create_pod(api, NS, f"train-{node[-2:]}", node=node, gpus=gpus, labels={"app": "train"})

    async def attributed() -> dict[tuple[str, str], list[float]] | None:
        limits = await _limits(api)
        pods = {("shard-a1", "train-a1"): 4, ("shard-a2", "train-a2"): 2, ("shard-b1", "train-b1"): 4}
        return limits if all(len(limits.get(k, [])) == n for k, n in pods.items()) else None

    await eventually(attributed, within_s=60, what=f"pods attributed to GPUs\n{shards.logs()}")

    # Both select every training pod here; pool a's wins wherever both apply (priority 10 > 0).
    await _create_policy(api, "pool-a-cap", "a", priority=10, fraction=0.6)
    await _create_policy(api, "pool-b-cap", "b", priority=0, fraction=0.8)
    own_limits = {
        ("shard-a1", "train-a1"): 180.0,
        ("shard-a2", "train-a2"): 180.0,
        ("shard-a2", ""): DEFAULT_WATTS,
        ("shard-b1", "train-b1"): 240.0,  # pool a's higher-priority policy never reaches pool b
    }

    async def limited(wanted: dict[tuple[str, str], float]) -> dict[tuple[str, str], list[float]] | None:
        limits = await _limits(api)
        return limits if _expect(limits, wanted) else None

    _, took = await eventually(lambda: limited(own_limits), within_s=30, what=f"per-pool limits\n{shards.logs()}")
    sys.stderr.write(f"\nshards: both policies applied on their own pools in {took:.2f} s\n")

    async def policy(name: str) -> dict[str, Any]:
        return await get_cluster_object(api, "energypolicies", name)

    async def statuses_written() -> tuple[dict[str, Any], dict[str, Any]] | None:
        a, b = await policy("pool-a-cap"), await policy("pool-b-cap")
        ok = a.get("status", {}).get("matchedGpus") == 6 and b.get("status", {}).get("matchedGpus") == 4
        return (a, b) if ok else None

    (pa, pb), _ = await eventually(statuses_written, within_s=20, what=f"policy statuses\n{shards.logs()}")
    assert pa["status"]["pods"] == [f"{NS}/train-a1", f"{NS}/train-a2"]
    assert pb["status"]["pods"] == [f"{NS}/train-b1"]
    assert pa["metadata"]["finalizers"] == ["wattplane.io/restore-gpus-pool-a"]
    assert pb["metadata"]["finalizers"] == ["wattplane.io/restore-gpus-pool-b"]
    assert _writers(pa, status=True) == {"wattplane-operator-pool-a"}
    assert _writers(pb, status=True) == {"wattplane-operator-pool-b"}
    for node, pool in NODES.items():
        gn = await get_cluster_object(api, "gpunodes", node)
        assert _writers(gn, status=False) == {f"wattplane-operator-pool-{pool}"}, node
    assert set(shards.plan_writes("a")) == {"shard-a1", "shard-a2"}
    assert set(shards.plan_writes("b")) == {"shard-b1"}

    # The pool-a policy moves to shard b: b governs it (and it outranks b's own policy there); shard a
    # has no policy left and restores its GPUs; a's finalizer goes, b's comes.
    started = time.monotonic()
    await _relabel_policy(api, "pool-a-cap", "b")
    moved_limits = {
        ("shard-a1", "train-a1"): DEFAULT_WATTS,
        ("shard-a2", "train-a2"): DEFAULT_WATTS,
        ("shard-b1", "train-b1"): 180.0,
    }
    await eventually(lambda: limited(moved_limits), within_s=30, what=f"policy taken over\n{shards.logs()}")

    async def taken_over() -> dict[str, Any] | None:
        p = await policy("pool-a-cap")
        status = p.get("status", {})
        done = (
            p["metadata"].get("finalizers") == ["wattplane.io/restore-gpus-pool-b"]
            and status.get("matchedGpus") == 4
            and status.get("pods") == [f"{NS}/train-b1"]
            and "wattplane-operator-pool-b" in _writers(p, status=True)
        )
        if not done:  # what was seen last is in the timeout's message
            raise AssertionError((p["metadata"].get("finalizers"), status, _writers(p, status=True)))
        return p

    await eventually(taken_over, within_s=30, what="pool-a-cap's finalizer and status moved to shard b")
    sys.stderr.write(f"shards: relabelled policy taken over by the other shard in {time.monotonic() - started:.2f} s\n")
    # Shard a writes its status no more (it would every 2 s while it governed it: status refresh),
    # shard b goes on writing it.
    before = _writes(await policy("pool-a-cap"), status=True)
    await asyncio.sleep(5)
    after = _writes(await policy("pool-a-cap"), status=True)
    assert after.get("wattplane-operator-pool-a") == before.get("wattplane-operator-pool-a")
    assert after["wattplane-operator-pool-b"] > before["wattplane-operator-pool-b"]

    # Node shard-a2 moves to pool b: shard b plans it from now on (pool-a-cap, in shard b, caps it).
    writes_by_a = len(shards.plan_writes("a"))
    await core.patch_node("shard-a2", {"metadata": {"labels": {POOL: "b"}}})
    node_moved = {**moved_limits, ("shard-a2", "train-a2"): 180.0}
    await eventually(lambda: limited(node_moved), within_s=30, what=f"moved node planned by shard b\n{shards.logs()}")

    async def spec_by_b() -> dict[str, str] | None:
        writes = _writes(await get_cluster_object(api, "gpunodes", "shard-a2"), status=False)
        return writes if "wattplane-operator-pool-b" in writes else None

    before, _ = await eventually(spec_by_b, within_s=10, what="shard-a2's spec written by shard b")
    await asyncio.sleep(4)  # more than a resync round of shard a
    after = _writes(await get_cluster_object(api, "gpunodes", "shard-a2"), status=False)
    assert after.get("wattplane-operator-pool-a") == before.get("wattplane-operator-pool-a")
    assert "shard-a2" not in shards.plan_writes("a")[writes_by_a:]
    assert "shard-a2" in shards.plan_writes("b")

    # Deleting the policies: shard b's finalizer handling restores every GPU, and lets them go.
    for name in ("pool-a-cap", "pool-b-cap"):
        await custom.delete_cluster_custom_object(GROUP, VERSION, "energypolicies", name)

    async def gone_and_restored() -> bool:
        names = {
            p["metadata"]["name"]
            for p in (await custom.list_cluster_custom_object(GROUP, VERSION, "energypolicies"))["items"]
        }
        limits = await _limits(api)
        return not names & {"pool-a-cap", "pool-b-cap"} and all(
            w == DEFAULT_WATTS for ws in limits.values() for w in ws
        )

    await eventually(gone_and_restored, within_s=30, what=f"policies deleted and GPUs restored\n{shards.logs()}")
