"""Every ready-to-apply policy in ``policies/`` is valid: for the models and for the generated CRD schema.

The same files are applied to the real API server in tests/controlplane/test_shipped_policies_apply.py
(strict field validation and CEL rules); here the check is fast and says which field is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from crdschema import spec_validator
from wattplane.api.v1alpha1.energypolicy import EnergyPolicySpec

POLICIES = sorted((Path(__file__).resolve().parents[3] / "policies").glob("*.yaml"))
EXPECTED = {
    "carbon-aware-electricitymaps",
    "carbon-aware-uk",
    "carbon-aware-watttime",
    "demand-response",
    "dry-run-rollout",
    "energy-efficient",
    "rack-budget",
    "static-cap",
    "stragglers",
}


def _load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict)
    return doc


def test_the_documented_set_is_shipped() -> None:
    assert {p.stem for p in POLICIES} == EXPECTED


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.stem)
def test_policy_is_valid_for_models_and_schema(path: Path) -> None:
    doc = _load(path)
    assert doc["apiVersion"] == "wattplane.io/v1alpha1"
    assert doc["kind"] == "EnergyPolicy"
    assert doc["metadata"]["name"] == path.stem, "file name and policy name should agree"
    EnergyPolicySpec.model_validate(doc["spec"])
    errors = sorted(spec_validator("energypolicies").iter_errors(doc["spec"]), key=str)
    assert not errors, [e.message for e in errors]


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.stem)
def test_policy_explains_itself(path: Path) -> None:
    header = path.read_text().split("apiVersion:")[0]
    assert header.count("#") >= 2, f"{path.name} should open with a comment saying what it does and when to use it"
