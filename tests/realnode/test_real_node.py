"""The chart on a real node: real containers, real probes, the real kubelet's PodResources API.

One story, in the order a cluster admin lives it (the kind end-to-end script tells the same one):

1. ``helm install`` of charts/wattplane (sim backend, GPUs attributed through PodResources) with the
   image built from the repository's Dockerfile; ``--wait`` returns only when the operator's
   Deployment and the agent's DaemonSet are available, i.e. their containers run and their
   readiness probes pass on the kubelet.
2. What runc enforces is read from the containers' processes on the host (``/proc/<pid>``): user,
   capabilities, no-new-privileges, seccomp, the read-only root filesystem.
3. A workload pod requests one ``nvidia.com/gpu`` from the simulated device plugin, which
   advertises only simulated GPUs 2 and 3: the agent's own mapper would have picked GPU 0, so
   seeing the pod on GPU 2 or 3 in GpuNode status proves the attribution came from the kubelet.
   The pod has the ``wattplane.io/power-verified`` readiness gate: its container runs, but the
   kubelet keeps it not Ready while the agent says ``NoTarget``.
4. An EnergyPolicy caps that pod's GPUs at 60 % of the default; the time from creating the policy
   to the cap applied in GpuNode status, and to the gated pod turning Ready, is measured; the agent
   exports the cap in /metrics (read through the API server's pod proxy, so over the pod network),
   and its Node carries the GPUs' power-limit range as labels (``kubectl get nodes -L``).
5. ``helm uninstall``: the agent restores the GPU on SIGTERM; the simulated device state file on
   the node (the agent's hostPath journal) shows every GPU back at its default.

What each container printed at start and the timings are written to the test's output (``-s``)
and to ``report.json`` in the node's work directory.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import realnode
from helmtool import CHART, Tools, require_tools

pytestmark = [pytest.mark.realnode, pytest.mark.slow, pytest.mark.timeout(2400)]

RELEASE, NAMESPACE, WORKLOADS = "wattplane", "wattplane-system", "wattplane-realnode-workloads"
AGENT, OPERATOR = f"{RELEASE}-agent", f"{RELEASE}-operator"
GPU_COUNT = 4
PLUGIN_GPUS = (2, 3)  # the GPUs the device plugin advertises; the sim mapper would pick 0 first
CAP_FRACTION = 0.6
SIM_DEFAULT_WATTS = 300.0  # the chart's default simulated model, an A40
T = TypeVar("T")


class Cli:
    """helm and kubectl bound to the node's control plane, with private home and cache dirs."""

    def __init__(self, tools: Tools, kubeconfig: Path, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.tools = tools
        self.env = {
            **os.environ,
            "HOME": str(home),
            "HELM_CACHE_HOME": str(home / "helm-cache"),
            "HELM_CONFIG_HOME": str(home / "helm-config"),
            "HELM_DATA_HOME": str(home / "helm-data"),
            "KUBECACHEDIR": str(home / "kube-cache"),
            "KUBECONFIG": str(kubeconfig),
        }

    def ok(self, tool: str, *args: str, stdin: str | None = None, timeout: float = 120) -> str:
        """The standard output of a helm/kubectl call that must succeed."""
        binary = self.tools.helm if tool == "helm" else self.tools.kubectl
        result = subprocess.run(
            [str(binary), *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            env=self.env,
        )
        assert result.returncode == 0, f"{tool} {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
        return result.stdout

    def json(self, *args: str) -> Any:
        """``kubectl get ... -o json``."""
        return json.loads(self.ok("kubectl", "get", *args, "-o", "json"))


def _until(what: str, check: Callable[[], T | None], timeout: float, node: realnode.RealNode) -> T:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (AssertionError, subprocess.SubprocessError, KeyError, ValueError) as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last})\n{node.kubelet_log()}")


def _gpus(cli: Cli) -> list[dict[str, Any]]:
    node = cli.json("gpunode", realnode.NODE)
    return list(node.get("status", {}).get("gpus", []))


def _container_pid(node: realnode.RealNode, container_id: str) -> int:
    """The host PID of a container's main process, from containerd."""
    cid = container_id.split("://", 1)[1]
    for line in node.ctr("tasks", "ls").stdout.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == cid:
            return int(fields[1])
    raise AssertionError(f"container {cid} has no task in containerd")


def _process_security(pid: int) -> dict[str, Any]:
    """What runc applied to a process: user, effective capabilities, no_new_privs, seccomp, root ro."""
    status = dict(
        line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line
    )
    root_options = ""
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == "/":
            root_options = fields[5]
    return {
        "uid": int(status["Uid"].split()[0]),
        "gid": int(status["Gid"].split()[0]),
        "cap_eff": int(status["CapEff"].strip(), 16),
        "no_new_privs": status["NoNewPrivs"].strip() == "1",
        "seccomp": int(status["Seccomp"].strip()),
        "root_read_only": "ro" in root_options.split(","),
    }


def _pod(cli: Cli, namespace: str, component: str) -> dict[str, Any]:
    pods = cli.json("pods", "-n", namespace, "-l", f"app.kubernetes.io/component={component}")["items"]
    assert len(pods) == 1, f"expected one {component} pod, got {[p['metadata']['name'] for p in pods]}"
    return dict(pods[0])


def test_chart_runs_attributes_caps_and_restores_on_a_real_node(real_node: realnode.RealNode) -> None:
    node = real_node
    cli = Cli(require_tools(), node.cp.kubeconfig, node.workdir / "cli-home")
    report: dict[str, Any] = {"timings_s": {k: round(v, 1) for k, v in node.timings.items()}}
    uuids = realnode.sim_gpu_uuids(realnode.NODE, GPU_COUNT)
    advertised = [uuids[i] for i in PLUGIN_GPUS]

    node.start_device_plugin(advertised)

    def gpu_capacity() -> bool:
        capacity = cli.json("node", realnode.NODE)["status"].get("allocatable", {})
        return capacity.get("nvidia.com/gpu") == str(len(advertised))

    _until("nvidia.com/gpu allocatable from the device plugin", gpu_capacity, 60, node)

    # 1. helm install; --wait: the Deployment and the DaemonSet become available (probes pass).
    cli.ok("kubectl", "create", "namespace", NAMESPACE)
    cli.ok("kubectl", "label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=privileged")
    journal = node.workdir / "wattplane-journal"
    api = {"KUBERNETES_SERVICE_HOST": realnode.GATEWAY, "KUBERNETES_SERVICE_PORT": str(node.api_port)}
    repository, tag = realnode.IMAGE.rsplit(":", 1)
    settings = [
        "agent.backend=sim",
        "agent.sim.podMapper=podresources",
        f"agent.sim.gpuCount={GPU_COUNT}",
        f"agent.journal.hostPath={journal}",
        f"agent.podResources.hostPath={realnode.PODRESOURCES}",
        "agent.statusIntervalSeconds=2",
        "agent.podSyncIntervalSeconds=1",
        f"image.repository={repository}",
        f"image.tag={tag}",
        "image.pullPolicy=Never",
        *(f"{part}.env.{key}={value}" for part in ("operator", "agent") for key, value in api.items()),
    ]
    started = time.monotonic()
    cli.ok(
        "helm", "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--wait", "--timeout", "6m",
        *(arg for s in settings for arg in ("--set", s)),
        timeout=420,
    )  # fmt: skip
    report["timings_s"]["helm install --wait"] = round(time.monotonic() - started, 1)

    pods = {component: _pod(cli, NAMESPACE, component) for component in ("operator", "agent")}
    for component, pod in pods.items():
        status = pod["status"]["containerStatuses"][0]
        assert status["ready"] and "running" in status["state"], f"{component}: {status}"
        assert status["restartCount"] == 0, f"{component} restarted: {status}"
        assert pod["spec"]["nodeName"] == realnode.NODE
        assert pod["status"]["podIP"].startswith("10.213.0."), "pods run on the bridge network, not the host's"
    report["started"] = {
        component: cli.ok("kubectl", "logs", "-n", NAMESPACE, pod["metadata"]["name"], "--limit-bytes=6000")
        for component, pod in pods.items()
    }

    # 2. The securityContexts, as runc applied them to the processes.
    security = {
        component: _process_security(_container_pid(node, pod["status"]["containerStatuses"][0]["containerID"]))
        for component, pod in pods.items()
    }
    report["security"] = security
    assert security["operator"]["uid"] == 65532 and security["operator"]["gid"] == 65532
    assert security["agent"]["uid"] == 0
    for component, applied in security.items():
        assert applied["cap_eff"] == 0, f"{component}: capabilities left: {applied['cap_eff']:#x}"
        assert applied["no_new_privs"], f"{component}: allowPrivilegeEscalation=false not applied"
        assert applied["seccomp"] == 2, f"{component}: RuntimeDefault seccomp not applied"
        assert applied["root_read_only"], f"{component}: root filesystem is writable"

    # The agent registered its node with the simulated GPUs.
    _until("GpuNode with 4 simulated GPUs", lambda: len(_gpus(cli)) == GPU_COUNT, 90, node)

    # 3. A workload pod gets a GPU from the device plugin; the agent learns it from PodResources.
    cli.ok("kubectl", "create", "namespace", WORKLOADS)
    cli.ok("kubectl", "label", "namespace", WORKLOADS, "wattplane.io/realnode=true")
    cli.ok("kubectl", "apply", "-f", "-", stdin=json.dumps(_workload_pod()))
    # Its container runs, but the kubelet holds it not Ready: its readiness gate waits for the cap.
    wait = ("kubectl", "wait", "-n", WORKLOADS, "pod/train")
    cli.ok(*wait, "--for=condition=ContainersReady", "--timeout=120s", timeout=150)

    def attributed() -> dict[str, Any] | None:
        held = [g for g in _gpus(cli) if any(p.get("namespace") == WORKLOADS for p in g.get("pods", []))]
        return held[0] if len(held) == 1 else None

    gpu = _until("the pod's GPU attributed in GpuNode status", attributed, 90, node)
    _until("the gate's condition False/NoTarget", lambda: _gate(cli).get("reason") == "NoTarget", 30, node)
    ready = next(c for c in cli.json("pod", "train", "-n", WORKLOADS)["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False", f"the kubelet made a gated pod Ready before its cap: {ready}"
    assert gpu["uuid"] in advertised, f"{gpu['uuid']} is not a device the plugin advertised: not from PodResources"
    report["attributed_gpu"] = {"uuid": gpu["uuid"], "index": uuids.index(gpu["uuid"]), "pods": gpu["pods"]}

    # 4. A policy caps it; measure policy creation -> cap applied on the device.
    capped_watts = CAP_FRACTION * SIM_DEFAULT_WATTS
    created = time.monotonic()
    cli.ok("kubectl", "apply", "-f", "-", stdin=json.dumps(_policy()))

    def capped() -> bool:
        mine = next(g for g in _gpus(cli) if g["uuid"] == gpu["uuid"])
        others = [g for g in _gpus(cli) if g["uuid"] != gpu["uuid"]]
        return (
            mine.get("state") == "Applied"
            and abs(mine["powerLimitWatts"] - capped_watts) < 0.5
            and all(g["powerLimitWatts"] == g["constraints"]["defaultWatts"] for g in others)
        )

    _until("the cap applied in GpuNode status", capped, 120, node)
    report["timings_s"]["policy created -> cap applied (GpuNode status)"] = round(time.monotonic() - created, 2)
    cli.ok(*wait, "--for=condition=Ready", "--timeout=60s", timeout=90)
    report["timings_s"]["policy created -> gated pod Ready"] = round(time.monotonic() - created, 2)
    verified = _gate(cli)
    assert (verified["status"], verified["reason"]) == ("True", "Verified"), verified
    assert f"at {capped_watts:g} W" in verified["message"], verified
    report["power_verified"] = verified
    labels = cli.ok(
        "kubectl", "get", "nodes", "-L", "power.wattplane.io/a40.min-watts,power.wattplane.io/a40.max-watts"
    )
    assert labels.splitlines()[1].split()[-2:] == ["100", "300"], labels

    agent_pod = pods["agent"]["metadata"]["name"]
    metrics = cli.ok("kubectl", "get", "--raw", f"/api/v1/namespaces/{NAMESPACE}/pods/{agent_pod}:9402/proxy/metrics")
    limits = re.findall(r'^wattplane_gpu_power_limit_watts\{[^}]*uuid="([^"]+)"[^}]*\} (\S+)$', metrics, re.M)
    assert (gpu["uuid"], str(capped_watts)) in limits, f"cap not exported: {limits}"
    assert re.search(rf'^wattplane_pod_gpu_energy_joules_total\{{[^}}]*namespace="{WORKLOADS}"', metrics, re.M)

    def policy_ready() -> bool:
        conditions = cli.json("energypolicy", "realnode-cap").get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    _until("EnergyPolicy realnode-cap Ready", policy_ready, 60, node)

    # 5. helm uninstall: the agent restores on SIGTERM; read the device state on the node.
    cli.ok("helm", "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "3m", timeout=240)
    _until(
        "agent pod gone",
        lambda: not cli.json("pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=agent")["items"],
        120,
        node,
    )
    devices = json.loads((journal / "sim-gpus.json").read_text())["devices"]
    report["device_state_after_uninstall"] = {u: d["power_limit_watts"] for u, d in devices.items()}
    assert len(devices) == GPU_COUNT
    assert all(d["power_limit_watts"] == SIM_DEFAULT_WATTS and not d.get("locked_clocks_mhz") for d in devices.values())
    cli.ok("kubectl", "delete", "namespace", WORKLOADS, "--wait=false")

    (node.workdir / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def _gate(cli: Cli) -> dict[str, Any]:
    """The pod's ``wattplane.io/power-verified`` condition, read the way the user guide shows."""
    path = '{.status.conditions[?(@.type=="wattplane.io/power-verified")]}'
    shown = cli.ok("kubectl", "get", "pod", "train", "-n", WORKLOADS, "-o", f"jsonpath={path}")
    return dict(json.loads(shown)) if shown.strip() else {}


def _workload_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "train",
            "namespace": WORKLOADS,
            "annotations": {
                "wattplane.io/job": "realnode-job",
                "wattplane.io/priority": "high",
                "wattplane.io/workload": "training",
            },
        },
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "readinessGates": [{"conditionType": "wattplane.io/power-verified"}],
            "containers": [
                {
                    "name": "main",
                    "image": realnode.IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "infinity"],
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
        },
    }


def _policy() -> dict[str, Any]:
    return {
        "apiVersion": "wattplane.io/v1alpha1",
        "kind": "EnergyPolicy",
        "metadata": {"name": "realnode-cap"},
        "spec": {
            "selector": {"namespaceSelector": {"matchLabels": {"wattplane.io/realnode": "true"}}},
            "limits": {"maxFractionOfDefault": CAP_FRACTION},
        },
    }
