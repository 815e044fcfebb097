"""Two releases of the chart in one cluster, one per node pool, installed with real helm.

The commands are the ones docs/operations.md ("Sharding a large cluster") gives: a full release for
pool a (CRDs, agents, operator shard a) and an operator-only release for pool b (``--skip-crds``,
``agent.enabled=false``). helm refuses to install an object another release owns, so both installs
succeeding is the proof that nothing collides; the objects are then read back from the API server:
one agent DaemonSet in all, each operator with its own shard settings, and uninstalling the pool-b
release leaves pool a's release whole. (The operators never run here: this API server has no kubelet;
tests/controlplane/test_sharded_operators.py runs two shard operators as processes.)
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from controlplane import ControlPlane
from helmtool import CHART, Tools, require_tools

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(240)]

NAMESPACE = "wattplane-shards"
POOL_A = ("wpshard", "pool=a", "wattplane.io/shard=a")
POOL_B = ("wpshard-pool-b", "pool in (b,b-spot)", "wattplane.io/shard=b")


class Cli:
    """helm and kubectl on the test cluster with private home, cache and config directories."""

    def __init__(self, tools: Tools, kubeconfig: Path, home: Path) -> None:
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

    def ok(self, tool: str, *args: str) -> str:
        binary = self.tools.helm if tool == "helm" else self.tools.kubectl
        result = subprocess.run(
            [str(binary), *args], capture_output=True, text=True, check=False, timeout=120, env=self.env
        )
        assert result.returncode == 0, f"{tool} {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
        return result.stdout

    def get(self, *args: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = json.loads(self.ok("kubectl", "get", *args, "-o", "json"))["items"]
        return items


@pytest.fixture(scope="module")
def cli(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    cli = Cli(require_tools(), control_plane.kubeconfig, tmp_path_factory.mktemp("helm-shards-home"))
    cli.ok("kubectl", "create", "namespace", NAMESPACE)
    yield cli
    for release in (POOL_B[0], POOL_A[0]):
        subprocess.run(
            [str(cli.tools.helm), "uninstall", release, "-n", NAMESPACE, "--ignore-not-found"],
            capture_output=True,
            check=False,
            timeout=120,
            env=cli.env,
        )


def _install(cli: Cli, pool: tuple[str, str, str], *extra: str) -> None:
    release, nodes, policies = pool
    cli.ok(
        "helm",
        "install",
        release,
        str(CHART),
        "-n",
        NAMESPACE,
        "--set",
        "agent.backend=sim",
        "--set-literal",  # the selector may hold commas, which --set would split on
        f"operator.shard.nodeSelector={nodes}",
        "--set",
        f"operator.shard.policySelector={policies}",
        *extra,
    )


def _release_objects(cli: Cli, release: str) -> set[tuple[str, str]]:
    selector = f"app.kubernetes.io/instance={release}"
    namespaced = cli.get("all,serviceaccounts,networkpolicies,roles,rolebindings", "-n", NAMESPACE, "-l", selector)
    cluster = cli.get("clusterroles,clusterrolebindings,validatingadmissionpolicies", "-l", selector)
    return {(o["kind"], o["metadata"]["name"]) for o in namespaced + cluster}


def _shard_env(cli: Cli, release: str) -> dict[str, str]:
    (deployment,) = cli.get("deployments", "-n", NAMESPACE, "-l", f"app.kubernetes.io/instance={release}")
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    return {e["name"]: e["value"] for e in env if e["name"] in ("WATTPLANE_OPERATOR_SHARD",) or "SELECTOR" in e["name"]}


def test_one_release_per_pool_installs_side_by_side_and_uninstalls_apart(cli: Cli) -> None:
    _install(cli, POOL_A)
    _install(cli, POOL_B, "--skip-crds", "--set", "agent.enabled=false", "--set", "operator.shard.name=pool-b")

    assert len(cli.get("daemonsets", "-n", NAMESPACE)) == 1
    assert len(cli.get("deployments", "-n", NAMESPACE)) == 2
    assert _shard_env(cli, POOL_A[0]) == {
        "WATTPLANE_OPERATOR_SHARD": POOL_A[0],  # the release name, as none was given
        "WATTPLANE_OPERATOR_NODE_SELECTOR": POOL_A[1],
        "WATTPLANE_OPERATOR_POLICY_SELECTOR": POOL_A[2],
    }
    assert _shard_env(cli, POOL_B[0]) == {
        "WATTPLANE_OPERATOR_SHARD": "pool-b",
        "WATTPLANE_OPERATOR_NODE_SELECTOR": POOL_B[1],
        "WATTPLANE_OPERATOR_POLICY_SELECTOR": POOL_B[2],
    }
    pool_a = _release_objects(cli, POOL_A[0])
    pool_b = _release_objects(cli, POOL_B[0])
    assert ("DaemonSet", f"{POOL_A[0]}-wattplane-agent") in pool_a
    assert not {kind for kind, _ in pool_b} & {"DaemonSet", "ValidatingAdmissionPolicy"}
    assert ("ClusterRole", f"{POOL_B[0]}-wattplane-operator") in pool_b

    cli.ok("helm", "uninstall", POOL_B[0], "-n", NAMESPACE, "--wait")
    assert _release_objects(cli, POOL_B[0]) == set()
    assert _release_objects(cli, POOL_A[0]) == pool_a
    assert {c["metadata"]["name"] for c in cli.get("crds")} >= {"energypolicies.wattplane.io", "gpunodes.wattplane.io"}
