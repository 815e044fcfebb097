"""One release per node pool: shard settings reach the operator, and two releases never collide.

A cluster sharded over several operators runs one full release (agents, and usually the first
shard) and one operator-only release per further pool, installed with ``--skip-crds``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helmtool import CHART, HelmError, Tools, find, template
from wattplane.operator.settings import OperatorSettings

Render = Callable[..., list[dict[str, Any]]]

POOL_A = {"operator": {"shard": {"nodeSelector": "pool=a", "policySelector": "wattplane.io/shard=a"}}}
POOL_B = {
    "agent": {"enabled": False},
    "operator": {"shard": {"name": "pool-b", "nodeSelector": "pool in (b)", "policySelector": "wattplane.io/shard=b"}},
}
MONITORING = {"serviceMonitor": {"enabled": True}, "networkPolicy": {"enabled": True}}


def _operator_env(objects: list[dict[str, Any]]) -> dict[str, Any]:
    container = find(objects, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def _settings(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> OperatorSettings:
    for name, value in env.items():
        if name.startswith("WATTPLANE_OPERATOR_"):
            monkeypatch.setenv(name, value if isinstance(value, str) else "wattplane-system")
    return OperatorSettings()


def test_an_unsharded_release_sets_no_shard(rendered: Render, monkeypatch: pytest.MonkeyPatch) -> None:
    env = _operator_env(rendered())
    assert not {"WATTPLANE_OPERATOR_SHARD", "WATTPLANE_OPERATOR_NODE_SELECTOR"} & set(env)
    assert _settings(env, monkeypatch).finalizer == "wattplane.io/restore-gpus"


def test_shard_selectors_reach_the_operator_named_after_the_release_by_default(
    rendered: Render, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _operator_env(rendered(POOL_A, release="wattplane-a.prod"))
    settings = _settings(env, monkeypatch)
    assert (settings.shard, settings.node_selector, settings.policy_selector) == (
        "wattplane-a-prod",
        "pool=a",
        "wattplane.io/shard=a",
    )
    assert settings.finalizer == "wattplane.io/restore-gpus-wattplane-a-prod"
    assert _settings(_operator_env(rendered(POOL_B)), monkeypatch).shard == "pool-b"


def test_a_shard_only_release_runs_no_agent_and_nothing_agent_related(rendered: Render) -> None:
    objects = rendered({**POOL_B, **MONITORING})
    agent_side = [
        (o["kind"], o["metadata"]["name"])
        for o in objects
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "agent"
        or o["kind"] in ("DaemonSet", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
    ]
    assert agent_side == []
    assert find(objects, "Deployment", "-operator")
    assert find(objects, "ServiceMonitor", "-operator")  # the operator's own metrics stay


def test_two_releases_in_one_cluster_share_no_object_name(rendered: Render) -> None:
    full = rendered({**POOL_A, **MONITORING, "userRoles": {"enabled": True}}, release="wattplane")
    shard = rendered({**POOL_B, **MONITORING}, release="wattplane-pool-b")

    def identities(objects: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
        return {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in objects}

    assert identities(full) & identities(shard) == set()
    assert sum(o["kind"] == "DaemonSet" for o in full + shard) == 1


def test_helm_checks_the_shard_name(tools: Tools) -> None:
    with pytest.raises(HelmError) as caught:
        template(tools, values={"operator": {"shard": {"name": "Pool_B", "nodeSelector": "pool=b"}}})
    assert "/operator/shard/name" in str(caught.value)
    with pytest.raises(HelmError) as caught:
        template(tools, values={"agent": {"enabled": "no"}})
    assert "/agent/enabled" in str(caught.value)


def test_helm_lint_strict_passes_for_a_shard_only_release(tools: Tools, tmp_path: Path) -> None:
    values_file = tmp_path / "values.json"
    values_file.write_text(json.dumps({**POOL_B, **MONITORING, "prometheusRule": {"enabled": True}}))
    args = [str(tools.helm), "lint", "--strict", str(CHART), "-f", str(values_file)]
    result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
