"""``wattplane status`` and ``wattplane explain pod NS/NAME``: read the cluster, say what is going on.

Both read only what the operator and agents already publish (GpuNodes, EnergyPolicies, pods), so they
work with the RBAC of anyone allowed to ``kubectl get`` those. Rendering is pure (objects in, text out)
and tested without a cluster; fetching is a thin layer over the API.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from wattplane.api.v1alpha1 import energypolicy, gpunode
from wattplane.api.v1alpha1.energypolicy import EnergyPolicy
from wattplane.api.v1alpha1.gpunode import GpuNode
from wattplane.kube.client import api_client


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _condition(conditions: Sequence[Any], type_: str) -> str:
    for c in conditions:
        if c.type == type_:
            return f"{c.status} ({c.reason})" if c.reason else c.status
    return "-"


def render_status(nodes: Sequence[GpuNode], policies: Sequence[EnergyPolicy]) -> str:
    """The fleet at a glance: per node, per policy, and the totals."""
    node_rows = [["NODE", "BACKEND", "GPUS", "TARGETED", "POWER W", "BUDGET W", "LIMITS W", "PLAN", "HEARTBEAT"]]
    total_power = 0.0
    total_gpus = 0
    for n in sorted(nodes, key=lambda x: x.name):
        limits = sorted({round(g.power_limit_watts) for g in n.status.gpus})
        total_power += n.status.node_power_watts
        total_gpus += n.status.gpu_count
        node_rows.append(
            [
                n.name,
                n.status.backend or "-",
                str(n.status.gpu_count),
                str(n.status.targeted_gpus),
                f"{n.status.node_power_watts:.0f}",
                f"{n.spec.node_budget_watts:.0f}" if n.spec.node_budget_watts is not None else "-",
                ",".join(str(v) for v in limits[:4]) + ("…" if len(limits) > 4 else "") or "-",
                f"{n.status.observed_plan_generation or 0}/{n.spec.plan_generation}",
                n.status.heartbeat.isoformat(timespec="seconds") if n.status.heartbeat else "-",
            ]
        )
    policy_rows = [["POLICY", "PRIO", "PODS", "JOBS", "GPUS", "ALLOC W", "MEAS W", "CARBON", "READY", "DEGRADED"]]
    for p in sorted(policies, key=lambda x: x.name):
        st = p.status
        carbon = "-"
        if st.carbon is not None and st.carbon.intensity is not None:
            carbon = f"{st.carbon.intensity:.0f} g/kWh{' (stale)' if st.carbon.stale else ''}"
        policy_rows.append(
            [
                p.name + (" [dry-run]" if p.spec.dry_run else ""),
                str(p.spec.priority),
                str(st.matched_pods),
                str(st.matched_jobs),
                str(st.matched_gpus),
                f"{st.allocated_watts:.0f}",
                f"{st.measured_watts:.0f}",
                carbon,
                _condition(st.conditions, "Ready"),
                _condition(st.conditions, "Degraded"),
            ]
        )
    summary = f"{len(nodes)} node(s), {total_gpus} GPU(s), {total_power:.0f} W measured, {len(policies)} policy(ies)"
    return "\n\n".join([summary, _table(node_rows), _table(policy_rows)])


def render_explain(pod: Mapping[str, Any], node: GpuNode | None) -> str:
    """Why ``pod``'s GPUs have the limits they have."""
    meta = pod.get("metadata", {})
    name = f"{meta.get('namespace')}/{meta.get('name')}"
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith("wattplane.io/")}
    lines = [f"pod {name} on node {(pod.get('spec') or {}).get('nodeName') or '(not scheduled)'}"]
    if annotations:
        lines.append("annotations: " + ", ".join(f"{k}={v}" for k, v in sorted(annotations.items())))
    if node is None:
        lines.append("no GpuNode for this node: no wattplane agent runs there")
        return "\n".join(lines)
    targets = {t.uuid: t for t in node.spec.gpus}
    mine = [
        g
        for g in node.status.gpus
        if any(p.namespace == meta.get("namespace") and p.name == meta.get("name") for p in g.pods)
    ]
    if not mine:
        lines.append("the agent reports no GPU allocated to this pod")
        return "\n".join(lines)
    for g in mine:
        c = g.constraints
        lines.append(
            f"GPU {g.index} {g.uuid} ({g.model}): limit {g.power_limit_watts:g} W "
            f"[device {c.min_watts:g}-{c.max_watts:g} W, default {c.default_watts:g} W], "
            f"drawing {g.power_watts:.0f} W, state {g.state}"
        )
        target = targets.get(g.uuid)
        if target is None:
            lines.append("  no target: no policy governs this GPU, it runs at its prior settings")
        else:
            dry = " (dry run: not applied)" if target.dry_run else ""
            lines.append(
                f"  target {target.power_limit_watts:g} W{dry} from policy {target.policy or '-'},"
                f" job {target.job or '-'}"
            )
            lines.append(f"  why: {target.reason}")
        if g.message:
            lines.append(f"  agent: {g.message}")
    if node.spec.node_budget_watts is not None:
        lines.append(
            f"node budget {node.spec.node_budget_watts:g} W (node draws {node.status.node_power_watts:.0f} W); "
            "the agent cuts lower-priority GPUs first when it is exceeded"
        )
    return "\n".join(lines)


async def _fetch_status(kubeconfig: str | None) -> tuple[list[GpuNode], list[EnergyPolicy]]:
    api = await api_client(kubeconfig)
    try:
        custom = client.CustomObjectsApi(api)
        g = await custom.list_cluster_custom_object(gpunode.CRD.group, gpunode.CRD.version, gpunode.CRD.plural)
        e = await custom.list_cluster_custom_object(
            energypolicy.CRD.group, energypolicy.CRD.version, energypolicy.CRD.plural
        )
        return (
            [GpuNode.model_validate(i) for i in g.get("items", [])],
            [EnergyPolicy.model_validate(i) for i in e.get("items", [])],
        )
    finally:
        await api.close()


async def _fetch_explain(kubeconfig: str | None, namespace: str, name: str) -> tuple[dict[str, Any], GpuNode | None]:
    api = await api_client(kubeconfig)
    try:
        core = client.CoreV1Api(api)
        pod = api.sanitize_for_serialization(await core.read_namespaced_pod(name, namespace))
        node_name = (pod.get("spec") or {}).get("nodeName")
        if not node_name:
            return pod, None
        custom = client.CustomObjectsApi(api)
        try:
            body = await custom.get_cluster_custom_object(
                gpunode.CRD.group, gpunode.CRD.version, gpunode.CRD.plural, node_name
            )
        except ApiException as exc:
            if exc.status == 404:
                return pod, None
            raise
        return pod, GpuNode.model_validate(body)
    finally:
        await api.close()


def _status(args: argparse.Namespace) -> int:
    nodes, policies = asyncio.run(_fetch_status(args.kubeconfig))
    if args.json:
        print(
            json.dumps(
                {
                    "nodes": [n.model_dump(by_alias=True, mode="json", exclude_none=True) for n in nodes],
                    "policies": [p.model_dump(by_alias=True, mode="json", exclude_none=True) for p in policies],
                },
                indent=2,
            )
        )
    else:
        print(render_status(nodes, policies))
    return 0


def _explain(args: argparse.Namespace) -> int:
    namespace, _, name = args.pod.partition("/")
    if not name:
        print("usage: wattplane explain pod NAMESPACE/NAME")
        return 2
    try:
        pod, node = asyncio.run(_fetch_explain(args.kubeconfig, namespace, name))
    except ApiException as exc:
        print(f"cannot read pod {args.pod}: {exc.status} {exc.reason}")
        return 1
    print(render_explain(pod, node))
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``status`` and ``explain`` to the CLI."""
    status = commands.add_parser("status", help="the fleet at a glance: nodes, GPUs, watts, caps, policies, carbon")
    status.add_argument("--kubeconfig", default=None)
    status.add_argument("--json", action="store_true", help="print the objects as JSON")
    status.set_defaults(func=_status)
    explain = commands.add_parser("explain", help="why a pod's GPUs have their limits")
    explain.add_argument("kind", choices=["pod"])
    explain.add_argument("pod", metavar="NAMESPACE/NAME")
    explain.add_argument("--kubeconfig", default=None)
    explain.set_defaults(func=_explain)
