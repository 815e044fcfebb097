"""Real kubectl against the real kube-apiserver: the names people type, and ``kubectl version``.

1. Short names. kubectl resolves a short name through the API server's discovery, built-in resources
   included, so a custom short name that a built-in already uses acts on the built-in (``ep`` is
   Endpoints: ``kubectl delete ep x`` deletes an Endpoints object). The discovery the API server
   publishes must list ``epol`` and ``gpun`` for our kinds and for nothing else, and kubectl
   must turn them (and the ``wattplane`` category) into our resources for get, explain and delete.
2. ``kubectl version`` needs a server version it can parse. A plain ``go build`` of kube-apiserver
   reports ``v0.0.0-master+$Format:%H$`` and kubectl exits 1; tests/controlplane/build.sh stamps the
   release pinned in gotools/kubernetes/go.mod into both Kubernetes binaries.

kubectl runs with its own discovery cache directory, so nothing cached from another cluster (or an
older CRD) can answer in place of the API server.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from controlplane import BIN, REPO, ControlPlane
from helmtool import Tools, require_tools

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(180)]

GROUP = "wattplane.io"
OURS = {"energypolicies": "epol", "gpunodes": "gpun"}
POLICY, NODE = "kubectl-names-policy", "kubectl-names-node"
GO_MOD = REPO / "tests" / "controlplane" / "gotools" / "kubernetes" / "go.mod"


def pinned_kubernetes_version() -> str:
    """The k8s.io/kubernetes release go.mod pins, e.g. ``v1.34.4`` (build.sh reads the same line)."""
    found = re.search(r"^require k8s\.io/kubernetes (v\d+\.\d+\.\d+)\s*$", GO_MOD.read_text(), re.MULTILINE)
    assert found, f"no `require k8s.io/kubernetes vX.Y.Z` line in {GO_MOD}"
    return found.group(1)


class Kubectl:
    """kubectl bound to the test cluster, as admin, with a private discovery cache."""

    def __init__(self, tools: Tools, cp: ControlPlane, cache: Path) -> None:
        self.argv = [str(tools.kubectl), f"--kubeconfig={cp.kubeconfig}", f"--cache-dir={cache}"]

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run kubectl; the caller checks the exit status."""
        return subprocess.run([*self.argv, *args], input=stdin, capture_output=True, text=True, check=False, timeout=60)

    def ok(self, *args: str, stdin: str | None = None) -> str:
        """The standard output of a kubectl call that must succeed."""
        result = self.run(*args, stdin=stdin)
        assert result.returncode == 0, f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr}"
        return result.stdout

    def settled(self, *args: str, within_s: float = 30.0) -> str:
        """The output of a call that must succeed once the API server has published the CRDs' OpenAPI.

        The server publishes a new CRD's schema (what ``kubectl explain`` reads) a moment after it
        starts serving the resource, so a fresh cluster may need a few tries.
        """
        deadline = time.monotonic() + within_s
        while True:
            result = self.run(*args)
            if result.returncode == 0 and result.stdout.strip():
                return result.stdout
            if time.monotonic() > deadline:
                raise AssertionError(f"kubectl {' '.join(args)} for {within_s} s: {result.returncode}, {result.stderr}")
            time.sleep(0.5)


@pytest.fixture
def kubectl(control_plane: ControlPlane, tmp_path: Path) -> Kubectl:
    return Kubectl(require_tools(), control_plane, tmp_path / "kube-cache")


def _names_of(resource: dict[str, Any]) -> set[str]:
    """Every name kubectl accepts for a discovered resource: plural, singular, kind, short names."""
    names = {resource["name"], resource.get("singularName", ""), resource["kind"].lower()}
    names |= set(resource.get("shortNames") or [])
    return {n for n in names if n}


def _discovered(kubectl: Kubectl, within_s: float = 30.0) -> list[dict[str, Any]]:
    """Every resource the API server's discovery lists, once it lists ours."""
    deadline = time.monotonic() + within_s
    while True:
        resources: list[dict[str, Any]] = json.loads(kubectl.ok("api-resources", "-o", "json"))["resources"]
        if {r["name"] for r in resources if r.get("group") == GROUP} >= set(OURS) or time.monotonic() > deadline:
            return resources
        time.sleep(0.5)


def test_short_names_are_ours_alone_in_the_api_servers_discovery(kubectl: Kubectl) -> None:
    resources = _discovered(kubectl)
    ours = {r["name"]: r for r in resources if r.get("group") == GROUP}
    others = [r for r in resources if r.get("group") != GROUP]
    assert {plural: ours.get(plural, {}).get("shortNames") for plural in OURS} == {p: [s] for p, s in OURS.items()}
    # The discovery read here includes the built-ins' short names: the trap the old name fell into.
    endpoints = next(r for r in others if r["name"] == "endpoints" and not r.get("group"))
    assert "ep" in endpoints["shortNames"]
    assert len(others) > 40, f"discovery lists only {len(others)} built-in resources"
    for plural, short in OURS.items():
        taken = {short, plural, ours[plural]["singularName"]}
        clashes = [
            f"{r.get('group') or 'core'}/{r['name']}: {sorted(_names_of(r) & taken)}"
            for r in others
            if _names_of(r) & taken
        ]
        assert not clashes, f"{plural}'s names are also used by {clashes}"


def test_kubectl_resolves_the_short_names_and_category_to_our_kinds(kubectl: Kubectl) -> None:
    policy = {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": "EnergyPolicy",
        "metadata": {"name": POLICY},
        # Observes nothing: no pod carries this label, and dry run never touches a device.
        "spec": {"dryRun": True, "priority": -1000, "selector": {"podSelector": {"matchLabels": {"x": POLICY}}}},
    }
    node = {"apiVersion": f"{GROUP}/v1alpha1", "kind": "GpuNode", "metadata": {"name": NODE}, "spec": {}}
    kubectl.ok("apply", "--server-side", "--field-manager=kubectl-names-test", "-f", "-", stdin=json.dumps(policy))
    kubectl.ok("apply", "--server-side", "--field-manager=kubectl-names-test", "-f", "-", stdin=json.dumps(node))
    try:
        what = "-o=jsonpath={.apiVersion} {.kind} {.metadata.name}"
        assert kubectl.ok("get", "epol", POLICY, what) == f"{GROUP}/v1alpha1 EnergyPolicy {POLICY}"
        assert kubectl.ok("get", "gpun", NODE, what) == f"{GROUP}/v1alpha1 GpuNode {NODE}"
        listed = set(kubectl.ok("get", "wattplane", "-o", "name").split())
        assert {f"energypolicy.{GROUP}/{POLICY}", f"gpunode.{GROUP}/{NODE}"} <= listed
        for short, kind in (("epol", "EnergyPolicy"), ("gpun", "GpuNode")):
            explained = kubectl.settled("explain", short)
            assert re.search(rf"^GROUP:\s+{re.escape(GROUP)}$", explained, re.MULTILINE), explained
            assert re.search(rf"^KIND:\s+{kind}$", explained, re.MULTILINE), explained
        # The old short name reaches Endpoints, never the policy of that name.
        wrong = kubectl.run("get", "ep", POLICY, "--namespace=default")
        assert wrong.returncode != 0
        assert f'endpoints "{POLICY}" not found' in wrong.stderr
    finally:
        kubectl.run("delete", "epol", POLICY, "--ignore-not-found", "--wait=false")
        kubectl.run("delete", "gpun", NODE, "--ignore-not-found", "--wait=false")
    for short, name in (("epol", POLICY), ("gpun", NODE)):
        gone = kubectl.run("get", short, name)
        assert gone.returncode != 0 and "NotFound" in gone.stderr, f"{short} {name} survived delete: {gone}"


def test_explain_describes_the_gpu_status_fields(kubectl: Kubectl) -> None:
    explained = kubectl.settled("explain", "gpunode.status.gpus")
    assert "<no description>" not in explained, explained
    for field in ("index", "model", "powerLimitWatts", "powerWatts", "pods", "message", "migEnabled"):
        assert re.search(rf"^\s+{field}\s+<", explained, re.MULTILINE), f"{field} missing from:\n{explained}"


def test_kubectl_version_parses_the_servers_pinned_release(kubectl: Kubectl) -> None:
    pinned = pinned_kubernetes_version()
    result = kubectl.run("version", "-o", "json")
    assert result.returncode == 0, f"kubectl version exited {result.returncode}: {result.stderr}"
    server = json.loads(result.stdout)["serverVersion"]
    major, minor = pinned.removeprefix("v").split(".")[:2]
    assert (server["gitVersion"], server["major"], server["minor"]) == (pinned, major, minor), server
    assert server["gitTreeState"] == "clean"
    for binary in ("kube-apiserver", "kube-controller-manager"):
        printed = subprocess.run([str(BIN / binary), "--version"], capture_output=True, text=True, check=True).stdout
        assert printed.strip() == f"Kubernetes {pinned}", f"{binary} --version: {printed!r}"
