"""The Helm chart on a real kube-apiserver.

It is accepted as rendered, and its two ServiceAccounts get exactly what they need:

1. The rendered chart (CRDs included) is server-side applied with strict field validation and every
   object is accepted; a rendered object with a stray field is refused, so the check can fail.
2. SelfSubjectAccessReviews, impersonating each ServiceAccount, list what each may and may not do.
3. The agent's per-node restriction (ValidatingAdmissionPolicy) is exercised with real projected
   tokens from the TokenRequest API, bound to pods on two nodes: the token carries the node name,
   the agent on node A writes GpuNode A and is refused GpuNode B.
4. The real operator and agent run under those ServiceAccounts' tokens with the environment the chart
   renders: a policy caps the GPUs of a pod and deleting it restores them, with no 403 in either log.

Everything lives in its own namespaces, nodes and release name; the admission policy matches only
this release's agent account, and all of it is deleted afterwards (the shared CRDs are left alone).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import ssl
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from controlplane import TOKEN, ControlPlane, Process, free_port
from helmtool import Tools, find, render, require_tools, template
from kubeapi import connect, create_node
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(240)]

T = TypeVar("T")
RELEASE, NAMESPACE = "wpchart", "wattplane-chart"
WORKLOADS = "wattplane-chart-workloads"
NODE_A, NODE_B = "wpchart-node-a", "wpchart-node-b"
AGENT_SA, OPERATOR_SA = f"{RELEASE}-wattplane-agent", f"{RELEASE}-wattplane-operator"
CARBON_SECRET = "wpchart-carbon"
GN = "/apis/wattplane.io/v1alpha1/gpunodes"
EP = "/apis/wattplane.io/v1alpha1/energypolicies"
A40_DEFAULT_WATTS = 300.0


@dataclass
class Api:
    """Raw HTTPS calls to the test API server as admin, as a bearer token, or impersonating someone.

    http.client rather than urllib: impersonating a ServiceAccount repeats ``Impersonate-Group``.
    """

    cp: ControlPlane
    token: str = TOKEN
    impersonate: dict[str, list[str]] | None = None

    def call(
        self, method: str, path: str, body: object = None, content_type: str = "application/json"
    ) -> tuple[int, Any]:
        """(HTTP status, decoded JSON body, or the text when it is not JSON)."""
        url = urllib.parse.urlsplit(self.cp.server)
        context = ssl.create_default_context(cafile=str(self.cp.ca_file))
        conn = http.client.HTTPSConnection(url.hostname or "", url.port, context=context, timeout=10)
        data = b"" if body is None else json.dumps(body).encode()
        try:
            conn.putrequest(method, path)
            conn.putheader("Authorization", f"Bearer {self.token}")
            conn.putheader("Accept", "application/json")
            conn.putheader("Content-Type", content_type)
            conn.putheader("Content-Length", str(len(data)))
            for name, values in (self.impersonate or {}).items():
                for value in values:
                    conn.putheader(name, value)
            conn.endheaders(data)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            return response.status, json.loads(raw) if raw else None
        except ValueError:
            return response.status, raw.decode(errors="replace")

    def ok(self, method: str, path: str, body: object = None, content_type: str = "application/json") -> Any:
        """The decoded body of a call that must succeed."""
        status, payload = self.call(method, path, body, content_type)
        assert status in (200, 201), f"{method} {path}: HTTP {status}: {payload}"
        return payload


def wait_for(
    probe: Callable[[], T | None],
    *,
    within_s: float,
    what: str,
    interval: float = 0.3,
    context: Callable[[], str] = str,
) -> T:
    """Poll ``probe`` until it returns something truthy; on timeout, fail with ``context()`` too."""
    deadline = time.monotonic() + within_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = probe()
            last = result
        except Exception as exc:  # not there yet
            last, result = exc, None
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {within_s} s waiting for {what}; last: {last!r}{context()}")


def kubectl(tools: Tools, cp: ControlPlane, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run kubectl against the test cluster as admin."""
    return subprocess.run(
        [str(tools.kubectl), f"--kubeconfig={cp.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


# kubectl's server-side apply, with the API server's strict field validation spelled out.
SERVER_SIDE = ("--server-side", "--validate=strict", "--field-manager=wattplane-chart-test")

# The release under test: nvml backend (the privileged variant), carbon Secret access, everything the
# API server can validate without the Prometheus Operator's CRDs.
RELEASE_VALUES: dict[str, Any] = {"carbon": {"credentialSecrets": [CARBON_SECRET]}}


@dataclass
class Release:
    """The applied release and what the tests need to reach it."""

    tools: Tools
    api: Api
    manifest: str
    objects: list[dict[str, Any]]


def _path_of(obj: dict[str, Any]) -> str:
    group_version = obj["apiVersion"]
    base = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
    plural = {
        "ServiceAccount": "serviceaccounts",
        "ClusterRole": "clusterroles",
        "ClusterRoleBinding": "clusterrolebindings",
        "Role": "roles",
        "RoleBinding": "rolebindings",
        "ValidatingAdmissionPolicy": "validatingadmissionpolicies",
        "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings",
        "DaemonSet": "daemonsets",
        "Deployment": "deployments",
        "Service": "services",
        "NetworkPolicy": "networkpolicies",
        "CustomResourceDefinition": "customresourcedefinitions",
        "ConfigMap": "configmaps",
    }[obj["kind"]]
    namespace = obj["metadata"].get("namespace")
    scope = f"/namespaces/{namespace}" if namespace else ""
    return f"{base}{scope}/{plural}/{obj['metadata']['name']}"


@pytest.fixture(scope="module")
def release(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    tools = require_tools()
    api = Api(control_plane)
    manifest = template(tools, RELEASE, NAMESPACE, RELEASE_VALUES, include_crds=True)
    objects = [o for o in yaml.safe_load_all(manifest) if o]
    path = tmp_path_factory.mktemp("chart") / "rendered.yaml"
    path.write_text(manifest)
    try:
        for namespace, labels in ((NAMESPACE, {}), (WORKLOADS, {"wattplane.io/chart-test": "true"})):
            api.ok("POST", "/api/v1/namespaces", {"metadata": {"name": namespace, "labels": labels}})
        applied = kubectl(tools, control_plane, "apply", *SERVER_SIDE, "-f", str(path))
        assert applied.returncode == 0, applied.stderr
        _wait_until_policy_enforced(api)
        yield Release(tools, api, manifest, objects)
    finally:
        for obj in reversed(objects):  # the CRDs are shared with every other control-plane test: keep them
            if obj["kind"] != "CustomResourceDefinition":
                api.call("DELETE", _path_of(obj))
        for name in (NODE_A, NODE_B):
            api.call("DELETE", f"{GN}/{name}")
            api.call("DELETE", f"/api/v1/nodes/{name}")
        for namespace in (NAMESPACE, WORKLOADS):
            api.call("DELETE", f"/api/v1/namespaces/{namespace}")


def _wait_until_policy_enforced(api: Api) -> None:
    """Admission policies take effect when the API server's policy informer refreshes (about 1 s)."""
    nowhere = Api(api.cp, impersonate=_sa(AGENT_SA))

    def enforced() -> bool:
        status, _ = nowhere.call("POST", GN, _gpunode("wpchart-policy-probe"))
        if status != 403:
            api.call("DELETE", f"{GN}/wpchart-policy-probe")
        return status == 403

    wait_for(enforced, within_s=30, what="the agent admission policy to take effect")


def test_every_rendered_object_is_accepted_and_stored(release: Release) -> None:
    kinds = {o["kind"] for o in release.objects}
    assert {"Deployment", "DaemonSet", "ValidatingAdmissionPolicy", "Role", "CustomResourceDefinition"} <= kinds
    for obj in release.objects:
        stored = release.api.ok("GET", _path_of(obj))
        managers = {m["manager"] for m in stored["metadata"].get("managedFields", [])}
        assert "wattplane-chart-test" in managers, (obj["kind"], obj["metadata"]["name"], managers)
    daemonset = release.api.ok("GET", _path_of(find(release.objects, "DaemonSet", "-agent")))
    security = daemonset["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["SYS_ADMIN"]}  # survived validation as written


def test_the_sim_variant_with_every_core_object_passes_server_side_validation(
    release: Release, control_plane: ControlPlane
) -> None:
    """Everything but the Prometheus Operator objects, whose CRDs are absent here.

    tests/chart checks those against the Services and the metrics the code exports instead.
    """
    values = {"agent": {"backend": "sim"}, "grafanaDashboard": {"enabled": True}}
    manifest = template(release.tools, "wpchart-sim", NAMESPACE, values)
    dry = kubectl(release.tools, control_plane, "apply", *SERVER_SIDE, "--dry-run=server", "-f", "-", stdin=manifest)
    assert dry.returncode == 0, dry.stderr
    assert "configmap/wpchart-sim-wattplane-dashboard serverside-applied (server dry run)" in dry.stdout


@pytest.mark.parametrize(
    "amd",
    [{"backend": "amd"}, {"backend": "auto"}, {"backend": "amd", "amd": {"privileged": False}}],
    ids=["amd", "auto", "amd-unprivileged"],
)
def test_the_amd_variants_pass_server_side_validation(
    release: Release, control_plane: ControlPlane, amd: dict[str, Any]
) -> None:
    """A privileged container must not also forbid privilege escalation: the API server refuses that pair."""
    manifest = template(release.tools, "wpchart-amd", NAMESPACE, {"agent": amd})
    dry = kubectl(release.tools, control_plane, "apply", *SERVER_SIDE, "--dry-run=server", "-f", "-", stdin=manifest)
    assert dry.returncode == 0, dry.stderr
    assert "daemonset.apps/wpchart-amd-wattplane-agent serverside-applied (server dry run)" in dry.stdout


def test_a_stray_field_in_a_rendered_object_is_refused(release: Release, control_plane: ControlPlane) -> None:
    deployment = find(release.objects, "Deployment", "-operator")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {"privileged": True}
    dry = kubectl(
        release.tools, control_plane, "apply", *SERVER_SIDE, "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(broken)
    )
    assert dry.returncode != 0
    assert "securityContxt" in dry.stderr


def _sa(name: str) -> dict[str, list[str]]:
    return {
        "Impersonate-User": [f"system:serviceaccount:{NAMESPACE}:{name}"],
        "Impersonate-Group": ["system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}", "system:authenticated"],
    }


def _can(
    api: Api, verb: str, resource: str, *, group: str = "", subresource: str = "", namespace: str = "", name: str = ""
) -> bool:
    attributes = {
        "verb": verb,
        "group": group,
        "resource": resource,
        "subresource": subresource,
        "namespace": namespace,
        "name": name,
    }
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    }
    result = api.ok("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", review)
    return bool(result["status"]["allowed"])


W = "wattplane.io"
AGENT_MAY = [
    ("get", "gpunodes", W, "", "", NODE_A),
    ("watch", "gpunodes", W, "", "", ""),
    ("create", "gpunodes", W, "", "", ""),
    ("patch", "gpunodes", W, "status", "", NODE_A),
    ("get", "nodes", "", "", "", NODE_A),
    ("list", "pods", "", "", "", ""),
    ("patch", "nodes", "", "", "", NODE_A),  # its cap-range labels; the admission policy narrows it
    ("patch", "pods", "", "status", WORKLOADS, "train"),  # the readiness-gate condition; likewise
]
AGENT_MAY_NOT = [
    ("get", "secrets", "", "", NAMESPACE, CARBON_SECRET),
    ("list", "secrets", "", "", "", ""),
    ("create", "pods", "", "", WORKLOADS, ""),
    ("patch", "pods", "", "", WORKLOADS, "train"),
    ("delete", "pods", "", "", WORKLOADS, "train"),
    ("create", "pods", "", "eviction", WORKLOADS, "train"),
    ("patch", "gpunodes", W, "", "", NODE_A),  # the spec is the operator's
    ("update", "gpunodes", W, "", "", NODE_A),
    ("delete", "gpunodes", W, "", "", NODE_A),
    ("list", "gpunodes", W, "", "", ""),
    ("patch", "energypolicies", W, "", "", ""),
    ("patch", "nodes", "", "status", "", NODE_A),
    ("update", "nodes", "", "", "", NODE_A),
    ("delete", "nodes", "", "", "", NODE_A),
    ("update", "pods", "", "status", WORKLOADS, "train"),
    ("create", "events", "", "", WORKLOADS, ""),
]
OPERATOR_MAY = [
    ("list", "pods", "", "", "", ""),
    ("watch", "pods", "", "", "", ""),
    ("watch", "namespaces", "", "", "", ""),
    ("watch", "nodes", "", "", "", ""),
    ("watch", "energypolicies", W, "", "", ""),
    ("patch", "energypolicies", W, "", "", "p"),
    ("patch", "energypolicies", W, "status", "", "p"),
    ("watch", "gpunodes", W, "", "", ""),
    ("patch", "gpunodes", W, "", "", NODE_A),
    ("create", "events", "", "", WORKLOADS, ""),
    ("watch", "customresourcedefinitions", "apiextensions.k8s.io", "", "", ""),
    ("get", "secrets", "", "", NAMESPACE, CARBON_SECRET),
]
OPERATOR_MAY_NOT = [
    ("get", "secrets", "", "", NAMESPACE, "some-other-secret"),
    ("list", "secrets", "", "", NAMESPACE, ""),
    ("get", "secrets", "", "", "kube-system", CARBON_SECRET),
    ("create", "pods", "", "", WORKLOADS, ""),
    ("delete", "pods", "", "", WORKLOADS, "train"),
    ("create", "gpunodes", W, "", "", ""),
    ("patch", "gpunodes", W, "status", "", NODE_A),  # the status is the agent's
    ("delete", "energypolicies", W, "", "", "p"),
    ("create", "customresourcedefinitions", "apiextensions.k8s.io", "", "", ""),
    ("patch", "nodes", "", "", "", NODE_A),
]


def _decisions(api: Api, table: list[tuple[str, str, str, str, str, str]]) -> list[bool]:
    return [
        _can(api, verb, resource, group=group, subresource=sub, namespace=ns, name=name)
        for verb, resource, group, sub, ns, name in table
    ]


def test_agent_account_may_do_exactly_its_job(release: Release) -> None:
    agent = Api(release.api.cp, impersonate=_sa(AGENT_SA))
    assert _decisions(agent, AGENT_MAY) == [True] * len(AGENT_MAY)
    denied = _decisions(agent, AGENT_MAY_NOT)
    assert [row for row, allowed in zip(AGENT_MAY_NOT, denied, strict=True) if allowed] == []


def test_operator_account_may_do_exactly_its_job(release: Release) -> None:
    operator = Api(release.api.cp, impersonate=_sa(OPERATOR_SA))
    assert _decisions(operator, OPERATOR_MAY) == [True] * len(OPERATOR_MAY)
    denied = _decisions(operator, OPERATOR_MAY_NOT)
    assert [row for row, allowed in zip(OPERATOR_MAY_NOT, denied, strict=True) if allowed] == []


def _node_bound_token(api: Api, account: str, node: str) -> str:
    """A projected-style token for ``account``, bound to a pod on ``node`` (what kubelet would mount)."""
    pod_name = f"{account}-on-{node}"[:63]
    body = {
        "metadata": {"name": pod_name},
        "spec": {
            "serviceAccountName": account,
            "nodeName": node,
            "automountServiceAccountToken": False,
            "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}],
        },
    }
    status, pod = api.call("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", body)
    if status == 409:
        pod = api.ok("GET", f"/api/v1/namespaces/{NAMESPACE}/pods/{pod_name}")
    else:
        assert status == 201, pod
    request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "expirationSeconds": 3600,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod_name, "uid": pod["metadata"]["uid"]},
        },
    }
    issued = api.ok("POST", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{account}/token", request)
    return str(issued["status"]["token"])


def _unbound_token(api: Api, account: str) -> str:
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}}
    issued = api.ok("POST", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{account}/token", request)
    return str(issued["status"]["token"])


@pytest.fixture(scope="module")
def nodes(release: Release) -> list[str]:
    async def create() -> None:
        async with await connect(release.api.cp.kubeconfig) as admin:
            for name in (NODE_A, NODE_B):
                await create_node(admin, name, gpus=4, labels={"wattplane.io/chart-test": "true"})

    asyncio.run(create())
    return [NODE_A, NODE_B]


def _gpunode(name: str) -> dict[str, Any]:
    return {"apiVersion": "wattplane.io/v1alpha1", "kind": "GpuNode", "metadata": {"name": name}, "spec": {}}


MERGE = "application/merge-patch+json"


def test_agent_token_names_its_node_and_may_write_only_that_gpunode(release: Release, nodes: list[str]) -> None:
    admin = release.api
    agent_a = Api(admin.cp, token=_node_bound_token(admin, AGENT_SA, NODE_A))
    review = agent_a.ok(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    user = review["status"]["userInfo"]
    assert user["username"] == f"system:serviceaccount:{NAMESPACE}:{AGENT_SA}"
    assert user["extra"]["authentication.kubernetes.io/node-name"] == [NODE_A]

    status, refused = agent_a.call("POST", GN, _gpunode(NODE_B))
    assert status == 403, refused
    assert f"may write only GpuNode {NODE_A}, not {NODE_B}" in refused["message"]
    assert agent_a.call("POST", GN, _gpunode(NODE_A))[0] == 201

    admin.ok("POST", GN, _gpunode(NODE_B))  # as its own agent would
    status_patch = {"status": {"backend": "sim"}}
    assert agent_a.call("PATCH", f"{GN}/{NODE_A}/status", status_patch, MERGE)[0] == 200
    status, refused = agent_a.call("PATCH", f"{GN}/{NODE_B}/status", status_patch, MERGE)
    assert status == 403 and "may write only GpuNode" in refused["message"], refused
    status, refused = agent_a.call("PATCH", f"{GN}/{NODE_A}", {"spec": {"planGeneration": 99}}, MERGE)
    assert status == 403 and 'cannot patch resource "gpunodes"' in refused["message"], refused  # RBAC

    # Outside its GpuNode the same credential gets nothing sensitive.
    assert agent_a.call("GET", f"/api/v1/namespaces/{NAMESPACE}/secrets/{CARBON_SECRET}")[0] == 403
    pod = {"metadata": {"name": "sneaky"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    assert agent_a.call("POST", f"/api/v1/namespaces/{WORKLOADS}/pods", pod)[0] == 403
    assert agent_a.call("GET", f"/api/v1/pods?fieldSelector=spec.nodeName%3D{NODE_A}")[0] == 200


def test_impersonating_the_agent_without_a_node_is_refused_by_the_policy(release: Release, nodes: list[str]) -> None:
    nowhere = Api(release.api.cp, impersonate=_sa(AGENT_SA))
    status, refused = nowhere.call("PATCH", f"{GN}/{NODE_A}/status", {"status": {"backend": "sim"}}, MERGE)
    assert status == 403, refused
    assert "names no node" in refused["message"]
    on_b = Api(
        release.api.cp,
        impersonate={**_sa(AGENT_SA), "Impersonate-Extra-authentication.kubernetes.io%2fnode-name": [NODE_B]},
    )
    assert on_b.call("PATCH", f"{GN}/{NODE_B}/status", {"status": {"backend": "sim"}}, MERGE)[0] == 200
    assert on_b.call("PATCH", f"{GN}/{NODE_A}/status", {"status": {"backend": "sim"}}, MERGE)[0] == 403


STRATEGIC = "application/strategic-merge-patch+json"
GATE = "wattplane.io/power-verified"


def test_agent_token_may_change_only_its_own_labels_on_its_own_node(release: Release, nodes: list[str]) -> None:
    admin = release.api
    agent_a = Api(admin.cp, token=_node_bound_token(admin, AGENT_SA, NODE_A))
    ours = "power.wattplane.io/a40.max-watts"

    def labels(patch: dict[str, str | None], node: str = NODE_A) -> tuple[int, Any]:
        return agent_a.call("PATCH", f"/api/v1/nodes/{node}", {"metadata": {"labels": patch}}, MERGE)

    status, answer = labels({ours: "300"})
    assert status == 200, json.dumps(answer)
    assert admin.ok("GET", f"/api/v1/nodes/{NODE_A}")["metadata"]["labels"][ours] == "300"
    status, refused = labels({ours: "300"}, NODE_B)
    assert status == 403 and f"may change only the labels of Node {NODE_A}" in refused["message"], refused
    status, refused = labels({"team": "ml"})
    assert status == 403 and "only power.wattplane.io/* labels" in refused["message"], refused
    status, refused = labels({"wattplane.io/chart-test": None})  # removing someone else's label
    assert status == 403 and "only power.wattplane.io/* labels" in refused["message"], refused
    for other in ({"spec": {"unschedulable": True}}, {"metadata": {"annotations": {"x": "y"}}}):
        status, refused = agent_a.call("PATCH", f"/api/v1/nodes/{NODE_A}", other, MERGE)
        assert status == 403 and "may change only labels of its Node" in refused["message"], (other, refused)
    status, refused = agent_a.call("PATCH", f"/api/v1/nodes/{NODE_A}/status", {"status": {}}, MERGE)
    assert status == 403 and "cannot patch resource" in refused["message"], refused  # RBAC
    assert labels({ours: None})[0] == 200
    assert ours not in admin.ok("GET", f"/api/v1/nodes/{NODE_A}")["metadata"]["labels"]
    # Anyone else is untouched by the policy.
    assert admin.call("PATCH", f"/api/v1/nodes/{NODE_A}", {"metadata": {"labels": {"team": "ml"}}}, MERGE)[0] == 200


def test_agent_token_may_set_only_its_condition_on_pods_of_its_node(release: Release, nodes: list[str]) -> None:
    admin = release.api
    agent_a = Api(admin.cp, token=_node_bound_token(admin, AGENT_SA, NODE_A))
    for name, node in (("gated-a", NODE_A), ("gated-b", NODE_B)):
        pod = {
            "metadata": {"name": name, "labels": {"app": "gated"}},
            "spec": {
                "nodeName": node,
                "readinessGates": [{"conditionType": GATE}],
                "containers": [{"name": "main", "image": "example.com/serve:1"}],
            },
        }
        admin.ok("POST", f"/api/v1/namespaces/{WORKLOADS}/pods", pod)
    path = f"/api/v1/namespaces/{WORKLOADS}/pods/{{}}/status"
    # Someone else's condition on the pod, which the agent's write must leave alone.
    other = {"type": "example.com/warm", "status": "True"}
    admin.ok("PATCH", path.format("gated-a"), {"status": {"conditions": [other]}}, STRATEGIC)
    ours = {"status": {"conditions": [{"type": GATE, "status": "True", "reason": "Verified", "message": "m"}]}}

    patched = agent_a.ok("PATCH", path.format("gated-a"), ours, STRATEGIC)
    by_type = {c["type"]: c for c in patched["status"]["conditions"]}
    assert by_type[GATE]["status"] == "True" and by_type["example.com/warm"]["status"] == "True", by_type
    status, refused = agent_a.call("PATCH", path.format("gated-b"), ours, STRATEGIC)
    assert status == 403 and f"only of pods bound to {NODE_A}, not of pod gated-b on {NODE_B}" in refused["message"]
    for forbidden in (
        {"status": {"conditions": [{"type": "example.com/warm", "status": "False"}]}},
        {"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Stolen"}]}},
    ):
        status, refused = agent_a.call("PATCH", path.format("gated-a"), forbidden, STRATEGIC)
        assert status == 403 and "only the pod condition wattplane.io/power-verified" in refused["message"], refused
    for forbidden in ({"status": {"phase": "Failed"}}, {"metadata": {"labels": {"app": "stolen"}}}):
        status, refused = agent_a.call("PATCH", path.format("gated-a"), forbidden, STRATEGIC)
        assert status == 403 and "nothing else of a pod" in refused["message"], (forbidden, refused)
    status, refused = agent_a.call("PATCH", f"/api/v1/namespaces/{WORKLOADS}/pods/gated-a", {"spec": {}}, STRATEGIC)
    assert status == 403 and "cannot patch resource" in refused["message"], refused  # RBAC: status only
    for name in ("gated-a", "gated-b"):
        admin.call("DELETE", f"/api/v1/namespaces/{WORKLOADS}/pods/{name}?gracePeriodSeconds=0")


def test_other_clients_are_untouched_by_the_agent_policy(release: Release, nodes: list[str]) -> None:
    admin = release.api
    assert admin.call("PATCH", f"{GN}/{NODE_B}/status", {"status": {"backend": "sim"}}, MERGE)[0] == 200
    operator = Api(admin.cp, token=_unbound_token(admin, OPERATOR_SA))
    assert operator.call("PATCH", f"{GN}/{NODE_B}", {"spec": {"planGeneration": 1}}, MERGE)[0] == 200


def _container_env(workload: dict[str, Any]) -> dict[str, str]:
    env = workload["spec"]["template"]["spec"]["containers"][0]["env"]
    return {e["name"]: e["value"] for e in env if "value" in e}


def _kubeconfig(cp: ControlPlane, token: str, path: Path) -> Path:
    config = yaml.safe_load(cp.kubeconfig.read_text())
    config["users"] = [{"name": "admin", "user": {"token": token}}]
    path.write_text(yaml.safe_dump(config))
    return path


def _forbidden_lines(process: Process) -> list[str]:
    text = process.log.read_text(errors="replace")
    # A 403 status, not the milliseconds of a log timestamp ("22:11:00,403 INFO ...").
    status_403 = re.compile(r"(?<![\d,.:])403(?!\d)")
    return [line for line in text.splitlines() if status_403.search(line) or "orbidden" in line]


def test_operator_and_agent_do_their_job_under_the_chart_accounts(
    release: Release, nodes: list[str], control_plane: ControlPlane, tmp_path: Path
) -> None:
    admin = release.api
    agent_port, health_port = free_port(), free_port()
    values = {
        "agent": {
            "backend": "sim",
            "tickSeconds": 0.5,
            "statusIntervalSeconds": 2,
            "podSyncIntervalSeconds": 1,
            "metricsPort": agent_port,
        },
        "operator": {"debounceSeconds": 0.2, "resyncIntervalSeconds": 5, "healthPort": health_port},
    }
    objects = render(release.tools, release=RELEASE, namespace=NAMESPACE, values=values)
    daemonset, deployment = find(objects, "DaemonSet", "-agent"), find(objects, "Deployment", "-operator")
    agent_env = _container_env(daemonset) | {
        "NODE_NAME": NODE_A,
        "WATTPLANE_AGENT_JOURNAL_PATH": str(tmp_path / "journal.json"),
        "WATTPLANE_AGENT_SIM_STATE_FILE": str(tmp_path / "sim-gpus.json"),
        "WATTPLANE_AGENT_METRICS_HOST": "127.0.0.1",
        "KUBECONFIG": str(
            _kubeconfig(control_plane, _node_bound_token(admin, AGENT_SA, NODE_A), tmp_path / "agent.kubeconfig")
        ),
    }
    operator_env = _container_env(deployment) | {
        "WATTPLANE_OPERATOR_NAMESPACE": NAMESPACE,
        "KUBECONFIG": str(
            _kubeconfig(control_plane, _unbound_token(admin, OPERATOR_SA), tmp_path / "operator.kubeconfig")
        ),
    }
    operator_args = [
        a.replace("0.0.0.0", "127.0.0.1") for a in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    ]
    agent_args = daemonset["spec"]["template"]["spec"]["containers"][0]["args"]
    admin.call("DELETE", f"{GN}/{NODE_A}")  # let the agent create its own, as on a fresh node
    agent = control_plane.spawn_python("chart-agent", "wattplane.agent", agent_args, **agent_env)
    operator = control_plane.spawn_python("chart-operator", "wattplane.operator", operator_args, **operator_env)
    logs = lambda: f"\n--- agent\n{agent.tail(30)}\n--- operator\n{operator.tail(30)}"  # noqa: E731
    try:
        pod = {
            "metadata": {"name": "train", "labels": {"app": "train"}},
            "spec": {
                "nodeName": NODE_A,
                "readinessGates": [{"conditionType": GATE}],
                "containers": [
                    {"name": "main", "image": "example.com/train:1", "resources": {"limits": {"nvidia.com/gpu": "2"}}}
                ],
            },
        }
        admin.ok("POST", f"/api/v1/namespaces/{WORKLOADS}/pods", pod)
        policy = {
            "apiVersion": "wattplane.io/v1alpha1",
            "kind": "EnergyPolicy",
            "metadata": {"name": "wpchart-cap"},
            "spec": {
                "selector": {"namespaceSelector": {"matchLabels": {"wattplane.io/chart-test": "true"}}},
                "limits": {"maxFractionOfDefault": 0.6},
            },
        }
        admin.ok("POST", EP, policy)

        def capped() -> list[dict[str, Any]] | None:
            gpus = admin.ok("GET", f"{GN}/{NODE_A}").get("status", {}).get("gpus", [])
            mine = [g for g in gpus if any(p["name"] == "train" for p in g.get("pods", []))]
            ok = len(mine) == 2 and all(
                g["powerLimitWatts"] == 0.6 * A40_DEFAULT_WATTS and g["state"] == "Applied" for g in mine
            )
            return mine if ok else None

        wait_for(capped, within_s=60, what="the policy's cap applied by the agent", context=logs)

        # Under the chart's RBAC and admission policies: the gated pod's condition, the node's labels.
        def verified() -> bool:
            pod = admin.ok("GET", f"/api/v1/namespaces/{WORKLOADS}/pods/train")
            conditions = {c["type"]: c for c in pod["status"].get("conditions", [])}
            # kwok (the simulated kubelet) sets every readiness-gate condition True, bare, once when it
            # starts a pod; the agent's own verdict carries its reason and message.
            gate = conditions.get(GATE, {})
            return (
                gate.get("status") == "True" and gate.get("reason") == "Verified" and "GPU" in gate.get("message", "")
            )

        wait_for(verified, within_s=20, what=f"{GATE}=True on the gated pod", context=logs)
        node_labels = admin.ok("GET", f"/api/v1/nodes/{NODE_A}")["metadata"]["labels"]
        assert node_labels["power.wattplane.io/a40.max-watts"] == "300", node_labels
        assert node_labels["wattplane.io/chart-test"] == "true"
        ready = wait_for(
            lambda: [
                c
                for c in admin.ok("GET", f"{EP}/wpchart-cap").get("status", {}).get("conditions", [])
                if c["type"] == "Ready" and c["status"] == "True"
            ],
            within_s=20,
            what="EnergyPolicy Ready",
            context=logs,
        )
        assert ready
        # kubelet's view: the probes the chart points at answer.
        with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/healthz", timeout=5) as response:
            assert response.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{agent_port}/metrics", timeout=5) as response:
            families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
        limits = sorted(s.value for s in families["wattplane_gpu_power_limit_watts"].samples)
        assert limits == [0.6 * A40_DEFAULT_WATTS] * 2 + [A40_DEFAULT_WATTS] * 2
        assert {s.labels["hostname"] for s in families["wattplane_gpu_power_limit_watts"].samples} == {NODE_A}

        admin.ok("DELETE", f"{EP}/wpchart-cap")

        def restored() -> bool:
            gone = admin.call("GET", f"{EP}/wpchart-cap")[0] == 404
            gpus = admin.ok("GET", f"{GN}/{NODE_A}").get("status", {}).get("gpus", [])
            return gone and len(gpus) == 4 and all(g["powerLimitWatts"] == A40_DEFAULT_WATTS for g in gpus)

        wait_for(restored, within_s=30, what="policy deleted and GPUs restored", context=logs)
        assert _forbidden_lines(agent) == [], logs()
        assert _forbidden_lines(operator) == [], logs()
    finally:
        admin.call("DELETE", f"{EP}/wpchart-cap")
        for process in (operator, agent):
            process.stop()  # SIGTERM, as the kubelet would
        admin.call("DELETE", f"/api/v1/namespaces/{WORKLOADS}/pods/train")
