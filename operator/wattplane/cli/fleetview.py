"""``wattplane status`` and ``wattplane explain pod NS/NAME``: read the cluster, say what is going on.

Both read only what the operator and agents already publish (GpuNodes, EnergyPolicies, pods), so they
work with the RBAC of anyone allowed to ``kubectl get`` those. Rendering is pure (objects in, text out)
and tested without a cluster; fetching is a thin layer over the API.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError
from wattplane.api.annotations import PodIntent, parse_pod_annotations
from wattplane.api.v1alpha1 import energypolicy, gpunode
from wattplane.api.v1alpha1.energypolicy import ENFORCING_SECTIONS, EnergyPolicy, EnergyPolicySpec, EnergyPolicyStatus
from wattplane.api.v1alpha1.gpunode import GpuNode, GpuStatus, GpuTarget
from wattplane.kube.client import api_client
from wattplane.operator.serving import serving_target
from wattplane.operator.views import pod_view, policy_parse
from wattplane.planner.jobs import job_id
from wattplane.planner.selection import rank_key, selects, sets_pod_limits
from wattplane.planner.snapshot import PodView, PolicyView


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
    measured = measured_by_policy(nodes)
    policy_rows = [
        ["POLICY", "PRIO", "PODS", "JOBS", "GPUS", "ALLOC W", "MEAS W", "BUDGET/QUOTA W", "CARBON", "READY", "DEGRADED"]
    ]
    unsettled = False
    for p in sorted(policies, key=lambda x: x.name):
        st = p.status
        meas = measured.get(p.name)
        if meas is None:
            meas_text = f"{st.measured_watts:.0f}"
        else:
            meas_text = f"{meas.watts:.0f}" + ("*" if meas.unsettled else "")
            unsettled = unsettled or meas.unsettled
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
                meas_text,
                _power_limit(st),
                carbon,
                _condition(st.conditions, "Ready"),
                _condition(st.conditions, "Degraded"),
            ]
        )
    summary = f"{len(nodes)} node(s), {total_gpus} GPU(s), {total_power:.0f} W measured, {len(policies)} policy(ies)"
    parts = [summary, _table(node_rows), _table(policy_rows)]
    if unsettled:
        parts.append(UNSETTLED_NOTE)
    return "\n\n".join(parts)


def _power_limit(status: EnergyPolicyStatus) -> str:
    """A policy's budget target (and the window setting it) or its quota, with what its GPUs draw."""
    parts = []
    if status.budget is not None:
        budget = status.budget
        window = f" ({budget.window})" if budget.window else ""
        target = f"{budget.watts:.0f}" if budget.watts > 0 else "none"
        parts.append(f"budget {target}{window}")
    if status.quota is not None:
        parts.append(f"quota {status.quota.watts:.0f} (uses {status.quota.measured_watts:.0f})")
    return "; ".join(parts) or "-"


#: Footnote for a starred MEAS W.
UNSETTLED_NOTE = (
    "* measured before some of the policy's GPUs took their new limits (the agent has not applied the\n"
    "  node's latest plan, or the GPU still reports its old limit or draws above the new one): a\n"
    "  measurement above ALLOC W here is the previous limit, not a cap being exceeded; it settles\n"
    "  within one agent report (about 10 s)"
)

#: Power a capped GPU may read above its limit before its measurement counts as older than the limit.
_OVERSHOOT_W = 5.0


@dataclass(frozen=True)
class PolicyMeasurement:
    """What a policy's GPUs draw now, from the agents' reports (fresher than the policy's status)."""

    watts: float
    #: Some GPU's measurement predates its current target (see :data:`UNSETTLED_NOTE`).
    unsettled: bool


def measured_by_policy(nodes: Sequence[GpuNode]) -> dict[str, PolicyMeasurement]:
    """Power of the GPUs each policy targets, from ``GpuNode.status``, and whether it is settled.

    A policy's ``measuredWatts`` is written with the other measurements, at most every 30 s, while
    ``allocatedWatts`` changes at once: right after an apply the two disagree. The agents' reports are
    at most ~10 s old, and say whether the plan was applied; a measurement is *unsettled* when the node
    has not confirmed the plan generation, the GPU still reports a limit above its (non-dry-run)
    target, or it draws clearly above the limit it reports (the average spans the change).
    """
    watts: dict[str, float] = {}
    unsettled: dict[str, bool] = {}
    for node in nodes:
        by_uuid = {g.uuid: g for g in node.status.gpus}
        behind = (node.status.observed_plan_generation or 0) < node.spec.plan_generation
        for target in node.spec.gpus:
            gpu = by_uuid.get(target.uuid)
            if gpu is None or not target.policy:
                continue
            watts[target.policy] = watts.get(target.policy, 0.0) + gpu.power_watts
            late = not target.dry_run and (
                behind
                or gpu.power_limit_watts > target.power_limit_watts + 0.5
                or gpu.power_watts > gpu.power_limit_watts + _OVERSHOOT_W
            )
            unsettled[target.policy] = unsettled.get(target.policy, False) or late
    return {name: PolicyMeasurement(round(w, 1), unsettled[name]) for name, w in watts.items()}


#: What moves a GPU's limit, per binding section: the knobs a user can turn, and what moves by itself.
_WHAT_CHANGES: dict[str, str] = {
    "limits": "the policy's limits (maxWatts / maxFractionOfDefault): edit them to move the cap",
    "efficiency": "the job's Zeus profile (efficiency.eta / maxSlowdown, or the pod's wattplane.io/max-slowdown); "
    "it is measured again after efficiency.reprofileAfterSeconds",
    "carbon": "the grid's carbon intensity (carbon.curve; or, under mode Budgeted, the forecast and the job's "
    "slowdown account below): a cleaner grid raises the limit",
    "stragglers": "the job's slowest pod: the cap lifts step by step once this pod no longer outpaces it",
}
#: What lifts a node budget's cut. The cut is the agent's, below the target (never a plan's section),
#: so it is read from the GPU's status (``budgetLimitWatts``).
_WHAT_LIFTS_A_CUT = (
    "the node's share of the budget: raise budget.watts, or lower other GPUs' draw; pods annotated "
    "wattplane.io/priority: high or wattplane.io/workload: inference are cut last"
)
#: How each vendor's GPUs are driven, for ``explain``; one node may run several backends (``nvml+amdsmi``).
_VENDOR_BACKENDS = {"nvidia": "NVIDIA, via NVML", "amd": "AMD, via AMD SMI", "simulated": "simulated"}
#: Backends that drive one vendor's GPUs only: a GPU from an agent that predates ``vendor`` is theirs.
_BACKEND_VENDORS = {"nvml": "nvidia", "amdsmi": "amd", "sim": "simulated"}


def _gpu_vendor(gpu: GpuStatus, node_backend: str) -> str:
    """``"; AMD, via AMD SMI"`` for the GPU line, or ``""`` when neither the GPU nor its node says."""
    vendor = gpu.vendor or _BACKEND_VENDORS.get(node_backend)
    return f"; {_VENDOR_BACKENDS[vendor]}" if vendor in _VENDOR_BACKENDS else ""


@dataclass(frozen=True)
class _Selection:
    """Which policies select the pod, as the planner would rank them."""

    governing: PolicyView | None
    shadowed: tuple[PolicyView, ...]
    observers: tuple[PolicyView, ...]
    budgets: tuple[PolicyView, ...]
    invalid: tuple[str, ...]
    missing_opt_in: str | None


def _select(
    pod: PodView,
    intent: PodIntent,
    policies: Sequence[Mapping[str, Any]],
    namespace_labels: Mapping[str, str],
    node_labels: Mapping[str, str] | None,
) -> _Selection:
    parsed = [policy_parse(body) for body in policies]
    views = [p.view for p in parsed if p.view is not None and not p.view.deleting]
    invalid = tuple(sorted(p.name for p in parsed if p.view is None))
    chosen = [v for v in views if selects(v, pod, namespace_labels, intent)]
    contenders = sorted((v for v in chosen if sets_pod_limits(v.spec)), key=rank_key)
    observers = tuple(v for v in sorted(chosen, key=rank_key) if not sets_pod_limits(v.spec) and v.spec.budget is None)
    budgets = tuple(
        v
        for v in sorted(views, key=rank_key)
        if v.spec.budget is not None
        and node_labels is not None
        and (v.spec.budget.node_selector is None or v.spec.budget.node_selector.matches(node_labels))
    )
    known = {p.name for p in parsed}
    missing = intent.policy if intent.policy is not None and intent.policy not in known else None
    return _Selection(
        governing=contenders[0] if contenders else None,
        shadowed=tuple(contenders[1:]),
        observers=observers,
        budgets=budgets[:1],  # a node belongs to the highest-ranked budget that covers it
        invalid=invalid,
        missing_opt_in=missing,
    )


def _policy_line(view: PolicyView) -> str:
    sections = [s for s in ENFORCING_SECTIONS if getattr(view.spec, s) is not None]
    dry = ", dry run" if view.spec.dry_run else ""
    return f"{view.name} (priority {view.spec.priority}{dry}; {', '.join(sections) or 'no section'})"


def _selection_lines(pod: PodView, intent: PodIntent, chosen: _Selection) -> list[str]:
    lines: list[str] = []
    if intent.opt_out:
        lines.append(
            "opted out (wattplane.io/opt-out: true): no policy governs this pod, its GPUs keep their prior settings;"
            " remove the annotation to opt back in"
        )
    elif not pod.active:
        lines.append(f"pod phase {pod.phase}: finished pods are not governed")
    elif chosen.governing is not None:
        how = "named in wattplane.io/policy" if intent.policy == chosen.governing.name else "its selector matches"
        lines.append(f"governed by EnergyPolicy {_policy_line(chosen.governing)}: {how}")
    else:
        lines.append("no policy that sets limits selects this pod")
    if chosen.shadowed and not intent.opt_out and pod.active:
        lines.append(
            "also selected by (lower-ranked, shadowed: they set nothing on this pod): "
            + "; ".join(_policy_line(v) for v in chosen.shadowed)
        )
    if chosen.observers and not intent.opt_out and pod.active:
        lines.append("observed by (dry run, no section): " + ", ".join(v.name for v in chosen.observers))
    if chosen.budgets:
        budget = chosen.budgets[0]
        assert budget.spec.budget is not None
        standing = budget.spec.budget.watts
        held = f"{standing:g} W" if standing is not None else "scheduled windows only"
        lines.append(f"node covered by the budget of EnergyPolicy {budget.name} ({held})")
    if chosen.missing_opt_in is not None:
        lines.append(f"wattplane.io/policy names {chosen.missing_opt_in!r}, but no such EnergyPolicy exists")
    if chosen.invalid:
        lines.append(
            "EnergyPolicies with an invalid spec govern nothing (see their Ready condition): "
            + ", ".join(chosen.invalid)
        )
    return lines


def _target_lines(target: GpuTarget, gpu: GpuStatus) -> list[str]:
    dry = " (dry run: planned, not applied; set dryRun: false to apply it)" if target.dry_run else ""
    lines = [
        f"  target {target.power_limit_watts:g} W{dry} from policy {target.policy or '-'}, job {target.job or '-'}",
        f"  why: {target.reason}",
    ]
    if target.section is not None:
        lines.append(f"  binding section: {target.section}")
        lines.append(f"  what would change it: {_WHAT_CHANGES[target.section]}")
    if "raised to the floor" in target.reason:
        lines.append(
            "  held up by the floor: limits.minWatts / minFractionOfDefault, or the pod's wattplane.io/min-power-watts"
        )
    if "device minimum" in target.reason or "device maximum" in target.reason:
        c = gpu.constraints
        lines.append(f"  clamped to the device's range {c.min_watts:g}-{c.max_watts:g} W: no policy can go beyond it")
    return lines + _knob_lines(target, gpu)


def _knob_lines(target: GpuTarget, gpu: GpuStatus) -> list[str]:
    """The device knobs the target asks for beside the limit, and what the GPU did with them."""
    lines: list[str] = []
    unsupported = set(gpu.unsupported_features or ())
    if target.workload_profile is not None:
        if "workloadProfile" in unsupported:
            seen = "this GPU has no workload power profiles: left as it is"
        elif gpu.workload_profiles is None:
            seen = "not yet reported by the agent"
        else:
            seen = "requested on the GPU: " + (", ".join(gpu.workload_profiles) or "none")
        lines.append(f"  knob: workload profile {target.workload_profile} (limits.workloadProfile); {seen}")
    if target.power_smoothing is not None:
        asked = target.power_smoothing
        parts = [
            f"{label} {value:g}{unit}"
            for label, value, unit in (
                ("ramp up", asked.ramp_up_watts_per_second, " W/s"),
                ("ramp down", asked.ramp_down_watts_per_second, " W/s"),
                ("floor", asked.floor_percent, "%"),
            )
            if value is not None
        ]
        state = gpu.power_smoothing
        if "powerSmoothing" in unsupported:
            seen = "this GPU has no power smoothing: left as it is"
        elif state is None:
            seen = "not yet reported by the agent"
        else:
            seen = f"the GPU reports it {'on' if state.enabled else 'off'} (preset {state.preset_profile})"
        asked_text = ", ".join(parts) or "device preset values"
        lines.append(f"  knob: power smoothing {asked_text} (limits.powerSmoothing); {seen}")
    return lines


def _carbon_budget_lines(job: str, policy: str, policies: Sequence[Mapping[str, Any]]) -> list[str]:
    """The job's slowdown account under a budgeted carbon policy, from that policy's status."""
    for body in policies:
        if body.get("metadata", {}).get("name") != policy:
            continue
        try:
            status = EnergyPolicyStatus.model_validate(body.get("status") or {})
        except ValidationError:
            return []
        for account in status.carbon_budgets:
            if account.job != job:
                continue
            remaining = account.allowed_seconds - account.used_seconds
            lines = [
                f"carbon budget of job {job}: used {account.used_seconds:.0f} s of {account.allowed_seconds:.0f} s"
                f" earned ({account.max_slowdown:.1%} of its uncapped run time), {remaining:.0f} s left;"
                f" priced on its {account.curve or '?'} curve",
            ]
            if account.planned:
                steps = ", ".join(f"{p.start[11:16]} {p.watts:g} W" for p in account.planned[:8])
                lines.append(f"  planned limits (UTC): {steps}")
            if account.message:
                lines.append(f"  why: {account.message}")
            return lines
    return []


def _serving_lines(
    view: PodView, intent: PodIntent, node: GpuNode | None, policy: str | None, policies: Sequence[Mapping[str, Any]]
) -> list[str]:
    """An inference pod's joules per output token: where its tokens are read, its energy, its policy's figures."""
    if intent.workload != "inference":
        return []
    target = serving_target(view.annotations)
    if isinstance(target, str):
        lines = [f"serving metrics: not read: {target}"]
    else:
        where = target.location.url or f"port {target.location.port}, path {target.location.path}"
        lines = [f"serving metrics: {where} ({target.engine or 'engine detected from the metric names'})"]
    if node is not None:
        joules = sum(
            e.energy_joules
            for e in node.status.pod_energy
            if (e.namespace, e.name) == (view.namespace, view.name) and (not view.uid or e.uid in ("", view.uid))
        )
        lines.append(f"GPU energy the agent attributes to the pod: {joules / 3.6e6:.3f} kWh ({joules:.0f} J)")
    body = next((b for b in policies if policy is not None and b.get("metadata", {}).get("name") == policy), None)
    if body is None:
        return lines
    try:
        serving = EnergyPolicyStatus.model_validate(body.get("status") or {}).serving
    except ValidationError:
        serving = None
    if serving is None:
        lines.append(f"policy {policy} reports no joules per token yet")
        return lines
    since, recent = (
        "-" if v is None else f"{v:.4g}"
        for v in (serving.joules_per_output_token, serving.window_joules_per_output_token)
    )
    lines.append(
        f"policy {policy}: {since} J per output token over {serving.output_tokens:.0f} tokens; "
        f"recent {serving.window_seconds:.0f} s: {recent} J/token "
        f"({serving.measured_pods} of {serving.pods} pods measured)"
    )
    mine = [p for p in serving.problems if p.startswith(f"{view.namespace}/{view.name}: ")]
    lines += [f"  not measured: {p.split(': ', 1)[1]}" for p in mine]
    lines.append("  per pod: wattplane_serving_output_tokens_total and wattplane_serving_gpu_energy_joules_total")
    return lines


def render_explain(
    pod: Mapping[str, Any],
    node: GpuNode | None,
    policies: Sequence[Mapping[str, Any]] = (),
    namespace_labels: Mapping[str, str] | None = None,
    node_labels: Mapping[str, str] | None = None,
) -> str:
    """Why ``pod``'s GPUs have the limits they have: who governs it, who else selects it, and what would change it.

    Selection is worked out here with the planner's own rules from the policies, the pod and its
    namespace's labels; the limits come from the node's plan (``GpuNode.spec``) and the agent's report.
    """
    meta = pod.get("metadata", {})
    view = pod_view(pod)
    name = f"{view.namespace}/{view.name}"
    intent = parse_pod_annotations(view.annotations)
    annotations = {k: v for k, v in view.annotations.items() if k.startswith("wattplane.io/")}
    lines = [f"pod {name} on node {view.node or '(not scheduled)'}"]
    if annotations:
        lines.append("annotations: " + ", ".join(f"{k}={v}" for k, v in sorted(annotations.items())))
    for problem in intent.problems:
        lines.append(f"annotation problem: {problem}")
    chosen = _select(view, intent, policies, namespace_labels or {}, node_labels)
    lines += _selection_lines(view, intent, chosen)
    governing = chosen.governing.name if chosen.governing is not None else None
    lines += _serving_lines(view, intent, node, governing, policies)
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
            f"GPU {g.index} {g.uuid} ({g.model}{_gpu_vendor(g, node.status.backend)}): limit {g.power_limit_watts:g} W "
            f"[device {c.min_watts:g}-{c.max_watts:g} W, default {c.default_watts:g} W], "
            f"drawing {g.power_watts:.0f} W, state {g.state}"
        )
        target = targets.get(g.uuid)
        if target is not None:
            lines += _target_lines(target, g)
        elif intent.opt_out:
            lines.append("  no target: the pod opted out, the GPU runs at its prior settings")
        elif g.mig_enabled:
            lines.append("  no target: MIG is on, and MIG boards are never capped per instance")
        elif chosen.governing is not None:
            lines.append(
                f"  no target: policy {chosen.governing.name} governs the pod but set no limit here "
                "(its sections need a signal or profile they lack: see its Ready/Degraded conditions)"
            )
        else:
            lines.append("  no target: no policy governs this GPU, it runs at its prior settings")
        if g.budget_limit_watts is not None:
            lines.append(f"  held at {g.budget_limit_watts:g} W by the node budget (the agent's cut, below the target)")
            lines.append(f"  what would lift it: {_WHAT_LIFTS_A_CUT}")
        if g.message:
            lines.append(f"  agent: {g.message}")
    if chosen.governing is not None:
        lines += _carbon_budget_lines(job_id(view, intent), chosen.governing.name, policies)
    if node.spec.node_budget_watts is not None:
        lines.append(
            f"node budget {node.spec.node_budget_watts:g} W (node draws {node.status.node_power_watts:.0f} W); "
            "the agent cuts lower-priority GPUs first when it is exceeded"
        )
    return "\n".join(lines)


def policy_from_api(body: Mapping[str, Any]) -> EnergyPolicy:
    """The policy; one whose spec the models refuse (stored before a rule existed) is still listed.

    Its spec is left at the defaults and its status, written by the operator, shows ``InvalidSpec``.
    """
    try:
        return EnergyPolicy.model_validate(body)
    except ValidationError:
        return EnergyPolicy.model_construct(
            metadata=dict(body.get("metadata") or {}),
            spec=EnergyPolicySpec.model_construct(),
            status=EnergyPolicyStatus.model_validate(body.get("status") or {}),
        )


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
            [policy_from_api(i) for i in e.get("items", [])],
        )
    finally:
        await api.close()


@dataclass(frozen=True)
class _ExplainInputs:
    pod: dict[str, Any]
    node: GpuNode | None
    policies: list[dict[str, Any]]
    namespace_labels: dict[str, str]
    node_labels: dict[str, str] | None


async def _labels_or_none(read: Awaitable[Any]) -> dict[str, str] | None:
    """An object's labels, or ``None`` when it is missing or the caller may not read it (explain goes on)."""
    try:
        obj = await read
    except ApiException as exc:
        if exc.status in (403, 404):
            return None
        raise
    return dict(obj.metadata.labels or {})


async def _fetch_explain(kubeconfig: str | None, namespace: str, name: str) -> _ExplainInputs:
    api = await api_client(kubeconfig)
    try:
        core = client.CoreV1Api(api)
        custom = client.CustomObjectsApi(api)
        pod = api.sanitize_for_serialization(await core.read_namespaced_pod(name, namespace))
        listed = await custom.list_cluster_custom_object(
            energypolicy.CRD.group, energypolicy.CRD.version, energypolicy.CRD.plural
        )
        namespace_labels = await _labels_or_none(core.read_namespace(namespace)) or {}
        node_name = (pod.get("spec") or {}).get("nodeName")
        node: GpuNode | None = None
        node_labels: dict[str, str] | None = None
        if node_name:
            node_labels = await _labels_or_none(core.read_node(node_name))
            try:
                body = await custom.get_cluster_custom_object(
                    gpunode.CRD.group, gpunode.CRD.version, gpunode.CRD.plural, node_name
                )
                node = GpuNode.model_validate(body)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        return _ExplainInputs(pod, node, list(listed.get("items", [])), namespace_labels, node_labels)
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
        got = asyncio.run(_fetch_explain(args.kubeconfig, namespace, name))
    except ApiException as exc:
        print(f"cannot read pod {args.pod}: {exc.status} {exc.reason}")
        return 1
    print(render_explain(got.pod, got.node, got.policies, got.namespace_labels, got.node_labels))
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
