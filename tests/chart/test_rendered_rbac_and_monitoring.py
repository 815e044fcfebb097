"""The RBAC the chart grants, and its monitoring objects against the metrics the code exports.

RBAC is read off the rendered rules here; what the API server makes of it is tested on a real
kube-apiserver in tests/controlplane/test_chart_apply_and_rbac.py.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from typing import Any

from helmtool import CHART, REPO, find

Render = Callable[..., list[dict[str, Any]]]
Grant = tuple[str, str, str]  # (apiGroup, resource, verb)

WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


def _grants(role: dict[str, Any]) -> set[Grant]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_agent_cluster_role_is_exactly_what_its_code_calls(rendered: Render) -> None:
    role = find(rendered(), "ClusterRole", "-agent")
    assert _grants(role) == {
        ("wattplane.io", "gpunodes", "get"),
        ("wattplane.io", "gpunodes", "watch"),
        ("wattplane.io", "gpunodes", "create"),
        ("wattplane.io", "gpunodes/status", "patch"),
        ("", "nodes", "get"),
        ("", "pods", "list"),
        ("", "nodes", "patch"),  # its cap-range labels (caplabels.py)
        ("", "pods/status", "patch"),  # the readiness-gate condition (gate.py)
    }
    # Without the admission policies that narrow them to the agent's own node, the two writes are not granted.
    unguarded = find(rendered({"admissionPolicy": {"enabled": False}}), "ClusterRole", "-agent")
    assert {g for g in _grants(unguarded) if g[2] in WRITE_VERBS} == {
        ("wattplane.io", "gpunodes", "create"),
        ("wattplane.io", "gpunodes/status", "patch"),
    }


def test_operator_cluster_role_is_exactly_what_it_and_kopf_call(rendered: Render) -> None:
    role = find(rendered(), "ClusterRole", "-operator")
    assert _grants(role) == {
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
        ("", "events", "create"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "namespaces", "list"),
        ("", "namespaces", "watch"),
        ("", "nodes", "list"),
        ("", "nodes", "watch"),
        ("wattplane.io", "energypolicies", "list"),
        ("wattplane.io", "energypolicies", "watch"),
        ("wattplane.io", "energypolicies", "patch"),
        ("wattplane.io", "energypolicies/status", "patch"),
        ("wattplane.io", "gpunodes", "list"),
        ("wattplane.io", "gpunodes", "watch"),
        ("wattplane.io", "gpunodes", "patch"),
    }


def test_no_role_uses_wildcards_or_touches_secrets_cluster_wide(rendered: Render) -> None:
    objects = rendered({"carbon": {"credentialSecrets": ["em-token"]}})
    for role in (o for o in objects if o["kind"] in ("ClusterRole", "Role")):
        for group, resource, verb in _grants(role):
            assert "*" not in (group, resource, verb), role["metadata"]["name"]
            if role["kind"] == "ClusterRole":
                assert resource != "secrets", role["metadata"]["name"]
            if resource.split("/")[0] in ("pods", "nodes") and verb in WRITE_VERBS:
                # Only the agent writes there, and only where an admission policy holds it to its node.
                assert role["metadata"]["name"].endswith("-agent"), (role["metadata"]["name"], resource, verb)
                assert resource in _guarded_resources(objects), (resource, verb)


def _guarded_resources(objects: list[dict[str, Any]]) -> set[str]:
    """Resources some ValidatingAdmissionPolicy of the chart checks on every update."""
    return {
        resource
        for policy in objects
        if policy["kind"] == "ValidatingAdmissionPolicy"
        for rule in policy["spec"]["matchConstraints"]["resourceRules"]
        if "UPDATE" in rule["operations"]
        for resource in rule["resources"]
    }


def test_carbon_secrets_are_readable_by_name_in_the_release_namespace_only(rendered: Render) -> None:
    assert not [o for o in rendered() if o["kind"] in ("Role", "RoleBinding")]  # default: no Secret access
    objects = rendered({"carbon": {"credentialSecrets": ["em-token", "wt-login"]}}, namespace="power")
    role = find(objects, "Role", "-carbon-credentials")
    assert role["metadata"]["namespace"] == "power"
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["em-token", "wt-login"], "verbs": ["get"]}
    ]
    binding = find(objects, "RoleBinding", "-carbon-credentials")
    operator_sa = find(objects, "ServiceAccount", "-operator")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": operator_sa, "namespace": "power"}]


def test_each_service_account_is_bound_to_its_own_role(rendered: Render) -> None:
    objects = rendered(namespace="power")
    for component in ("-agent", "-operator"):
        binding = find(objects, "ClusterRoleBinding", component)
        account = find(objects, "ServiceAccount", component)["metadata"]["name"]
        assert binding["roleRef"]["name"] == find(objects, "ClusterRole", component)["metadata"]["name"]
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": "power"}]
    workloads = {"-agent": find(objects, "DaemonSet", "-agent"), "-operator": find(objects, "Deployment", "-operator")}
    for component, workload in workloads.items():
        account = find(objects, "ServiceAccount", component)["metadata"]["name"]
        assert workload["spec"]["template"]["spec"]["serviceAccountName"] == account


def test_admission_policy_matches_only_the_agent_account_and_every_gpunode_write(rendered: Render) -> None:
    objects = rendered(namespace="power", release="wp")
    policy = find(objects, "ValidatingAdmissionPolicy", "-own-gpunode")
    conditions = policy["spec"]["matchConditions"]
    assert [c["expression"] for c in conditions] == [
        "request.userInfo.username == 'system:serviceaccount:power:wp-wattplane-agent'"
    ]
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert set(rule["resources"]) == {"gpunodes", "gpunodes/status"}
    assert set(rule["operations"]) >= {"CREATE", "UPDATE"}
    assert policy["spec"]["failurePolicy"] == "Fail"
    binding = find(objects, "ValidatingAdmissionPolicyBinding", "-own-gpunode")
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    assert not [o for o in rendered({"admissionPolicy": {"enabled": False}}) if "Admission" in o["kind"]]


def test_node_and_pod_status_policies_match_only_the_agent_account(rendered: Render) -> None:
    objects = rendered(namespace="power", release="wp")
    for suffix, resources in (("-own-node-labels", {"nodes", "nodes/status"}), ("-own-pods-status", {"pods/status"})):
        policy = find(objects, "ValidatingAdmissionPolicy", suffix)
        assert [c["expression"] for c in policy["spec"]["matchConditions"]] == [
            "request.userInfo.username == 'system:serviceaccount:power:wp-wattplane-agent'"
        ]
        (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
        assert set(rule["resources"]) == resources and "UPDATE" in rule["operations"]
        assert policy["spec"]["failurePolicy"] == "Fail"
        binding = find(objects, "ValidatingAdmissionPolicyBinding", suffix)
        assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}


def test_user_roles_aggregate_and_never_write_gpunodes(rendered: Render) -> None:
    objects = rendered()
    viewer, editor = find(objects, "ClusterRole", "-viewer"), find(objects, "ClusterRole", "-editor")
    assert viewer["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert editor["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert not {v for v in _grants(viewer) if v[2] in WRITE_VERBS}
    assert {r for (_, r, v) in _grants(editor) if v in WRITE_VERBS} == {"energypolicies"}


def _exported_metric_names() -> set[str]:
    """Series names the code exports, read off the metric families its ``metrics`` modules build.

    Read from the source rather than by running the collectors, whose constructors belong to other
    modules: every call such as ``GaugeMetricFamily("wattplane_...")``, ``gauge(...)`` or
    ``_histogram(...)`` whose first argument is a ``wattplane_`` name. Counters are exposed with
    ``_total``; histograms as ``_bucket``, ``_sum`` and ``_count``.
    """
    names: set[str] = set()
    for path in [*(REPO / "agent").rglob("metrics.py"), *(REPO / "operator").rglob("metrics.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
                continue
            name, func = node.args[0].value, ast.unparse(node.func).lower()
            if not (isinstance(name, str) and name.startswith("wattplane_")):
                continue
            if "counter" in func:
                names.add(f"{name}_total")
            elif "histogram" in func:
                names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
            elif "gauge" in func or "metricfamily" in func:
                names.add(name)
    assert len(names) > 10, names  # the parse found the families
    return names


_METRIC = re.compile(r"\b(wattplane_[a-z0-9_]+)")


def _referenced(exprs: list[str]) -> set[str]:
    return {name for expr in exprs for name in _METRIC.findall(expr)}


def test_alerts_cover_the_four_failures_and_reference_only_exported_metrics(rendered: Render) -> None:
    rule = find(rendered({"prometheusRule": {"enabled": True}}), "PrometheusRule")
    rules = rule["spec"]["groups"][0]["rules"]
    assert {r["alert"] for r in rules} == {
        "WattplaneAgentDown",
        "WattplaneNodeBudgetBreached",
        "WattplaneCarbonSignalStale",
        "WattplaneApplyErrors",
    }
    exprs = [r["expr"] for r in rules]
    exported = _exported_metric_names()
    assert _referenced(exprs) <= exported, _referenced(exprs) - exported
    down = next(r["expr"] for r in rules if r["alert"] == "WattplaneAgentDown")
    service = find(rendered(), "Service", "-agent-metrics")["metadata"]["name"]
    assert f'job="{service}"' in down  # the ServiceMonitor's job label is the Service name


def test_dashboard_shows_power_budget_caps_pod_energy_and_carbon_from_exported_metrics(rendered: Render) -> None:
    configmap = find(rendered({"grafanaDashboard": {"enabled": True}}), "ConfigMap", "-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(configmap["data"]["wattplane.json"])
    assert dashboard == json.loads((CHART / "dashboards" / "wattplane.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    needed = {
        "wattplane_node_gpu_power_watts",
        "wattplane_node_power_budget_watts",
        "wattplane_gpu_power_limit_watts",
        "wattplane_pod_gpu_energy_joules_total",
        "wattplane_grid_carbon_intensity_grams_per_kwh",
        "wattplane_serving_gpu_energy_joules_total",
        "wattplane_serving_output_tokens_total",
    }
    assert needed <= _referenced(exprs)
    assert _referenced(exprs) <= _exported_metric_names()


def test_demand_response_gets_its_configmaps_and_named_secrets_only_when_enabled(rendered: Render) -> None:
    assert not [o for o in rendered() if o["metadata"]["name"].endswith("-grid-events")]
    objects = rendered({"demandResponse": {"enabled": True, "credentialSecrets": ["ven-rack-b"]}}, namespace="power")
    role = find(objects, "Role", "-grid-events")
    assert role["metadata"]["namespace"] == "power"
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "patch"]},
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["ven-rack-b"], "verbs": ["get"]},
    ]
    binding = find(objects, "RoleBinding", "-grid-events")
    operator_sa = find(objects, "ServiceAccount", "-operator")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": operator_sa, "namespace": "power"}]
