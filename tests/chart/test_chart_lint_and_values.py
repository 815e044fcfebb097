"""`helm lint`, `helm template` and values.schema.json.

The chart renders for every switch, and bad values are refused by helm with the path of the mistake.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from helmtool import CHART, HelmError, Tools, template

ALL_ON: dict[str, Any] = {
    "serviceMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "grafanaDashboard": {"enabled": True},
    "carbon": {"credentialSecrets": ["electricitymaps", "watttime"]},
}


def _lint(tools: Tools, values: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    values_file = tmp_path / "values.json"
    values_file.write_text(json.dumps(values))
    args = [str(tools.helm), "lint", "--strict", str(CHART), "-f", str(values_file)]
    return subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"agent": {"backend": "sim"}},
        ALL_ON,
        {**ALL_ON, "agent": {"backend": "sim"}, "admissionPolicy": {"enabled": False}},
        {"agent": {"backend": "amd"}},
        {**ALL_ON, "agent": {"backend": "auto", "amd": {"privileged": False}}},
    ],
    ids=["defaults", "sim", "everything-on", "sim-everything-on-no-admission", "amd", "auto-unprivileged"],
)
def test_helm_lint_strict_passes(tools: Tools, values: dict[str, Any], tmp_path: Path) -> None:
    result = _lint(tools, values, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_values_yaml_satisfies_its_own_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load((CHART / "values.yaml").read_text()), schema)


def test_schema_is_strict_at_every_object_level() -> None:
    """Every object the schema describes with properties refuses unknown keys (typos fail)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    loose: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        if "properties" in node and node.get("additionalProperties") is not False:
            loose.append(path or "/")
        for key, child in node.get("properties", {}).items():
            walk(child, f"{path}/{key}")

    walk(schema, "")
    assert loose == []


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"agent": {"backnd": "sim"}}, "'backnd' not allowed"),
        ({"agent": {"backend": "cuda"}}, "/agent/backend"),
        ({"agent": {"amd": {"privileged": "yes"}}}, "/agent/amd/privileged"),
        ({"agent": {"metricsPort": 70000}}, "/agent/metricsPort"),
        ({"agent": {"tickSeconds": 0}}, "/agent/tickSeconds"),
        ({"agent": {"journal": {"hostPath": "relative/dir"}}}, "/agent/journal/hostPath"),
        ({"operator": {"planTTLSeconds": 5}}, "/operator/planTTLSeconds"),
        ({"operator": {"env": {"NOT A NAME": "x"}}}, "invalid propertyName 'NOT A NAME'"),
        ({"carbon": {"credentialSecrets": ["Not_A_Secret"]}}, "/carbon/credentialSecrets/0"),
        ({"prometheusRule": {"enabled": True, "budgetBreachFor": "five minutes"}}, "/prometheusRule/budgetBreachFor"),
        ({"rbac": {"create": False}}, "'rbac' not allowed"),
    ],
)
def test_helm_refuses_bad_values_naming_the_field(tools: Tools, values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(HelmError) as caught:
        template(tools, values=values)
    assert complaint in str(caught.value)


def test_template_renders_only_known_kinds(tools: Tools) -> None:
    text = template(tools, values={**ALL_ON}, include_crds=True)
    found = sorted({doc["kind"] for doc in yaml.safe_load_all(text) if doc})
    assert found == [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "CustomResourceDefinition",
        "DaemonSet",
        "Deployment",
        "NetworkPolicy",
        "PrometheusRule",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]


def test_chart_crds_are_the_generated_ones() -> None:
    """The chart ships the CRDs crdgen writes (drift is checked by crdgen --check and its tests)."""
    repo_crds = sorted(p.name for p in (CHART.parents[1] / "crds").glob("*.yaml"))
    chart_crds = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert chart_crds == repo_crds
    for name in chart_crds:
        assert (CHART / "crds" / name).read_text() == (CHART.parents[1] / "crds" / name).read_text()
