"""What the rendered workloads ask of the node and the cluster.

The operator runs unprivileged, the agent gets exactly the privileges NVML writes need (none on the
sim backend; a privileged container where AMD SMI is used, unless switched off), and every
environment variable the chart sets is a real, valid setting of the process it configures.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from helmtool import find
from wattplane.agent.settings import AgentSettings
from wattplane.operator.settings import OperatorSettings

Render = Callable[..., list[dict[str, Any]]]


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _mounts(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"].get("volumes", [])}
    return {
        m["mountPath"]: {**volumes[m["name"]], "readOnly": m.get("readOnly", False)}
        for m in _container(workload)["volumeMounts"]
    }


def test_operator_is_one_unprivileged_replica_replaced_not_rolled(rendered: Render) -> None:
    deployment = find(rendered(), "Deployment", "-operator")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    container = _container(deployment)
    assert container["command"] == ["wattplane-operator"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    assert all("hostPath" not in v for v in pod.get("volumes", []))
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    # kopf's liveness endpoint is what both probes hit; the flag and the port must agree.
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "health")
    assert f"--liveness=http://0.0.0.0:{port}/healthz" in container["args"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"]["port"] == "health"


def test_nvml_agent_adds_back_only_sys_admin_and_mounts_only_its_two_host_dirs(rendered: Render) -> None:
    daemonset = find(rendered(), "DaemonSet", "-agent")
    pod = daemonset["spec"]["template"]["spec"]
    container = _container(daemonset)
    assert container["command"] == ["wattplane-agent"]
    security = container["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["SYS_ADMIN"]}
    assert security["privileged"] is False
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    assert "resources" in container and container["resources"]["limits"]["memory"]
    # It must not consume a schedulable GPU: all GPUs come through NVIDIA_VISIBLE_DEVICES instead.
    assert not any("nvidia.com" in key for key in container["resources"].get("limits", {}))
    assert _env(container)["NVIDIA_VISIBLE_DEVICES"] == "all"
    mounts = _mounts(daemonset)
    host = {path: m["hostPath"]["path"] for path, m in mounts.items() if "hostPath" in m}
    assert host == {
        "/var/lib/wattplane": "/var/lib/wattplane",
        "/var/lib/kubelet/pod-resources": "/var/lib/kubelet/pod-resources",
    }
    assert mounts["/var/lib/kubelet/pod-resources"]["readOnly"] is True
    assert mounts["/var/lib/kubelet/pod-resources"]["hostPath"]["type"] == "Directory"  # the dir, not the socket
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


def test_sim_agent_needs_no_capability_and_no_kubelet_socket(rendered: Render) -> None:
    daemonset = find(rendered({"agent": {"backend": "sim"}}), "DaemonSet", "-agent")
    container = _container(daemonset)
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    host = {m["hostPath"]["path"] for m in _mounts(daemonset).values() if "hostPath" in m}
    assert host == {"/var/lib/wattplane"}
    env = _env(container)
    assert (env["WATTPLANE_AGENT_BACKEND"], env["WATTPLANE_AGENT_POD_MAPPER"]) == ("sim", "sim")
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert env["WATTPLANE_AGENT_SIM_STATE_FILE"].startswith("/var/lib/wattplane/")


def test_sim_agent_with_a_device_plugin_reads_the_kubelets_pod_resources_without_a_capability(
    rendered: Render,
) -> None:
    values = {"agent": {"backend": "sim", "sim": {"podMapper": "podresources"}}}
    daemonset = find(rendered(values), "DaemonSet", "-agent")
    container = _container(daemonset)
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    mounts = _mounts(daemonset)
    assert mounts["/var/lib/kubelet/pod-resources"]["readOnly"] is True
    assert mounts["/var/lib/kubelet/pod-resources"]["hostPath"]["type"] == "Directory"
    env = _env(container)
    assert env["WATTPLANE_AGENT_BACKEND"] == "sim"
    assert env["WATTPLANE_AGENT_POD_MAPPER"] == "podresources"  # once: no sim mapper entry besides
    assert [e["name"] for e in container["env"]].count("WATTPLANE_AGENT_POD_MAPPER") == 1
    assert env["WATTPLANE_AGENT_PODRESOURCES_SOCKET"] == "/var/lib/kubelet/pod-resources/kubelet.sock"
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void"


def test_amd_agent_is_privileged_with_the_amd_device_nodes_and_the_kubelet_socket(rendered: Render) -> None:
    # Helm merges maps: the default NVIDIA label must be dropped (null), as values.yaml's example does.
    selector = {"nvidia.com/gpu.present": None, "feature.node.kubernetes.io/amd-gpu": "true"}
    values = {"agent": {"backend": "amd", "nodeSelector": selector}}
    daemonset = find(rendered(values), "DaemonSet", "-agent")
    pod = daemonset["spec"]["template"]["spec"]
    container = _container(daemonset)
    security = container["securityContext"]
    # AMD SMI opens device nodes the device cgroup refuses to an unprivileged container, and writes
    # caps through sysfs, read-only there. The API server refuses privileged with no escalation.
    assert security["privileged"] is True
    assert "allowPrivilegeEscalation" not in security and "capabilities" not in security
    assert security["readOnlyRootFilesystem"] is True
    mounts = _mounts(daemonset)
    host = {path: (m["hostPath"]["path"], m["hostPath"].get("type")) for path, m in mounts.items() if "hostPath" in m}
    assert host == {
        "/var/lib/wattplane": ("/var/lib/wattplane", "DirectoryOrCreate"),
        "/var/lib/kubelet/pod-resources": ("/var/lib/kubelet/pod-resources", "Directory"),
        "/dev/kfd": ("/dev/kfd", "CharDevice"),
        "/dev/dri": ("/dev/dri", "Directory"),
    }
    env = _env(container)
    assert (env["WATTPLANE_AGENT_BACKEND"], env["WATTPLANE_AGENT_POD_MAPPER"]) == ("amd", "podresources")
    assert not any(name.startswith(("NVIDIA_", "WATTPLANE_AGENT_SIM_")) for name in env)
    assert pod["nodeSelector"] == {"feature.node.kubernetes.io/amd-gpu": "true"}


def test_amd_agent_can_stay_unprivileged(rendered: Render) -> None:
    values = {"agent": {"backend": "amd", "amd": {"privileged": False}}}
    security = _container(find(rendered(values), "DaemonSet", "-agent"))["securityContext"]
    assert security["privileged"] is False
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}  # SYS_ADMIN is NVML's need, not AMD SMI's


def test_auto_agent_serves_both_vendors_without_strict_amd_mounts(rendered: Render) -> None:
    values = {"agent": {"backend": "auto", "runtimeClassName": "nvidia"}}
    daemonset = find(rendered(values), "DaemonSet", "-agent")
    container = _container(daemonset)
    assert container["securityContext"]["privileged"] is True
    env = _env(container)
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert env["WATTPLANE_AGENT_POD_MAPPER"] == "podresources"
    assert daemonset["spec"]["template"]["spec"]["runtimeClassName"] == "nvidia"
    # auto runs on NVIDIA-only nodes too, where a CharDevice mount of /dev/kfd would keep the pod from starting.
    host = {m["hostPath"]["path"] for m in _mounts(daemonset).values() if "hostPath" in m}
    assert host == {"/var/lib/wattplane", "/var/lib/kubelet/pod-resources"}
    unprivileged = _container(find(rendered({"agent": {"backend": "auto", "amd": {"privileged": False}}}), "DaemonSet"))
    assert unprivileged["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["SYS_ADMIN"]}


def test_node_name_comes_from_the_downward_api(rendered: Render) -> None:
    env = _env(_container(find(rendered(), "DaemonSet", "-agent")))
    assert env["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


@pytest.mark.parametrize(("restore", "expected"), [(True, True), (False, False)])
def test_restore_on_uninstall_switches_the_agents_sigterm_restore(
    rendered: Render, restore: bool, expected: bool
) -> None:
    env = _env(_container(find(rendered({"agent": {"restoreOnUninstall": restore}}), "DaemonSet", "-agent")))
    assert (
        AgentSettings.model_validate({"restore_on_exit": env["WATTPLANE_AGENT_RESTORE_ON_EXIT"]}).restore_on_exit
        is expected
    )


@pytest.mark.parametrize("backend", ["nvml", "amd", "auto", "sim"])
def test_every_agent_variable_is_a_valid_agent_setting(
    rendered: Render, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A renamed setting or a typo in the chart would otherwise be ignored silently (extra=ignore)."""
    values = {"agent": {"backend": backend, "tickSeconds": 0.5, "sim": {"gpuCount": 2, "model": "A40", "load": 0.5}}}
    env = _env(_container(find(rendered(values), "DaemonSet", "-agent")))
    fields = set(AgentSettings.model_fields)
    for name, value in env.items():
        if name.startswith("WATTPLANE_AGENT_"):
            assert name.removeprefix("WATTPLANE_AGENT_").lower() in fields, name
            monkeypatch.setenv(name, str(value))
    monkeypatch.setenv("NODE_NAME", "node-a")
    settings = AgentSettings()
    assert settings.backend == backend
    assert settings.tick_s == 0.5
    assert settings.metrics_port == int(env["WATTPLANE_AGENT_METRICS_PORT"])
    if backend == "sim":
        assert (settings.sim_gpu_count, settings.sim_load) == (2, 0.5)


def test_every_operator_variable_is_a_valid_operator_setting(rendered: Render, monkeypatch: pytest.MonkeyPatch) -> None:
    values = {"operator": {"planTTLSeconds": 900, "resyncIntervalSeconds": 15}}
    env = _env(_container(find(rendered(values), "Deployment", "-operator")))
    fields = set(OperatorSettings.model_fields)
    names = [n for n in env if n.startswith("WATTPLANE_OPERATOR_")]
    assert names
    for name in names:
        assert name.removeprefix("WATTPLANE_OPERATOR_").lower() in fields, name
        value = env[name]
        if isinstance(value, dict):  # valueFrom: what the downward API would fill in
            assert value == {"fieldRef": {"fieldPath": "metadata.namespace"}}
            value = "power"
        monkeypatch.setenv(name, str(value))
    settings = OperatorSettings()
    assert (settings.plan_ttl_s, settings.resync_interval_s, settings.namespace) == (900, 15.0, "power")


def test_extra_env_passes_through_as_strings(rendered: Render) -> None:
    values = {"operator": {"env": {"WATTPLANE_OPERATOR_CARBON_REFRESH_S": 120}}, "agent": {"env": {"FOO": True}}}
    objects = rendered(values)
    assert _env(_container(find(objects, "Deployment", "-operator")))["WATTPLANE_OPERATOR_CARBON_REFRESH_S"] == "120"
    assert _env(_container(find(objects, "DaemonSet", "-agent")))["FOO"] == "true"


def test_image_tag_defaults_to_app_version(rendered: Render) -> None:
    default = _container(find(rendered(), "Deployment", "-operator"))["image"]
    pinned = _container(find(rendered({"image": {"repository": "r.example/wp", "tag": "9.9"}}), "DaemonSet", "-agent"))
    assert default == "wattplane:0.1.0"
    assert pinned["image"] == "r.example/wp:9.9"


def test_services_select_the_pods_they_front(rendered: Render) -> None:
    objects = rendered({"serviceMonitor": {"enabled": True}})
    service = find(objects, "Service", "-agent-metrics")
    labels = find(objects, "DaemonSet", "-agent")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["publishNotReadyAddresses"] is True
    monitor = find(objects, "ServiceMonitor", "-agent")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [service["spec"]["ports"][0]["name"]]


def test_every_namespaced_object_lands_in_the_release_namespace(rendered: Render) -> None:
    cluster_scoped = {
        "ClusterRole",
        "ClusterRoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    values = {
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "grafanaDashboard": {"enabled": True},
    }
    for obj in rendered(values, namespace="power"):
        if obj["kind"] in cluster_scoped:
            assert "namespace" not in obj["metadata"], obj["metadata"]["name"]
        else:
            assert obj["metadata"]["namespace"] == "power", (obj["kind"], obj["metadata"]["name"])
