"""The committed CRDs are generated from the models, are structural, and validate like the models do."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from crdschema import spec_validator
from pydantic import ValidationError
from wattplane.api import crdgen
from wattplane.api.v1alpha1.energypolicy import EnergyPolicySpec
from wattplane.api.v1alpha1.gpunode import GpuNodeSpec

REPO = Path(__file__).resolve().parents[3]
REGEN = "python -m wattplane.api.crdgen"


def test_committed_crds_match_the_models() -> None:
    stale = crdgen.drift(REPO)
    assert not stale, f"CRDs are out of date with the models: {stale}. Regenerate them with `{REGEN}`."


def test_drift_is_detected_when_a_file_is_edited_or_missing(tmp_path: Path) -> None:
    crdgen.main(["--root", str(tmp_path)])
    assert crdgen.drift(tmp_path) == []
    edited = tmp_path / "crds" / "energypolicies.wattplane.io.yaml"
    edited.write_text(edited.read_text().replace("maximum: 1000", "maximum: 1001"))
    (tmp_path / "charts" / "wattplane" / "crds" / "gpunodes.wattplane.io.yaml").unlink()
    assert sorted(crdgen.drift(tmp_path)) == sorted(
        [str(edited), str(tmp_path / "charts" / "wattplane" / "crds" / "gpunodes.wattplane.io.yaml")]
    )
    assert crdgen.main(["--root", str(tmp_path), "--check"]) == 1


def _load(name: str) -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load((REPO / "crds" / f"{name}.wattplane.io.yaml").read_text())
    return crd


@pytest.fixture(params=["energypolicies", "gpunodes"])
def crd(request: pytest.FixtureRequest) -> dict[str, Any]:
    return _load(request.param)


def _root(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _schema_nodes(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every schema node (not property names) below ``node``, with a readable path."""
    found = [(path or "<root>", node)]
    for name, sub in node.get("properties", {}).items():
        found += _schema_nodes(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        found += _schema_nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        found += _schema_nodes(node["additionalProperties"], f"{path}{{}}")
    return found


FORBIDDEN = ("$ref", "$defs", "definitions", "title", "anyOf", "oneOf", "allOf", "const")


def test_schema_is_structural(crd: dict[str, Any]) -> None:
    for path, node in _schema_nodes(_root(crd)):
        bad = [k for k in FORBIDDEN if k in node]
        assert not bad, f"{crd['metadata']['name']} {path} carries {bad}"
        assert "type" in node, f"{crd['metadata']['name']} {path} has no type"
        if "properties" in node:
            assert node["type"] == "object", path
        if node.get("exclusiveMinimum") is not None:
            assert node["exclusiveMinimum"] is True and "minimum" in node, path  # OpenAPI v3.0 form
        assert node.get("additionalProperties") is not False, path


def test_no_forbidden_keyword_anywhere_in_the_raw_text(crd: dict[str, Any]) -> None:
    text = yaml.safe_dump(crd)
    for keyword in ("$ref", "$defs", "anyOf"):
        assert keyword not in text


def test_names_scope_and_short_names() -> None:
    ep, gn = _load("energypolicies"), _load("gpunodes")
    # Not "ep": kubectl resolves that to Endpoints. tests/controlplane/test_kubectl_names_and_version.py
    # checks against the API server's discovery that these collide with nothing.
    assert ep["spec"]["names"]["shortNames"] == ["epol"]
    assert gn["spec"]["names"]["shortNames"] == ["gpun"]
    for crd, kind in ((ep, "EnergyPolicy"), (gn, "GpuNode")):
        assert crd["spec"]["group"] == "wattplane.io"
        assert crd["spec"]["scope"] == "Cluster"
        assert crd["spec"]["names"]["kind"] == kind
        version = crd["spec"]["versions"][0]
        assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
        assert version["subresources"] == {"status": {}}


def _undescribed(node: dict[str, Any], path: str) -> list[str]:
    """Paths of the properties below ``node`` that have no (or an empty) description.

    Every property counts, whatever its type. A ``x-kubernetes-preserve-unknown-fields`` blob with no
    ``properties`` needs a description itself and has nothing below it to describe.
    """
    missing: list[str] = []
    for name, sub in node.get("properties", {}).items():
        if not str(sub.get("description", "")).strip():
            missing.append(f"{path}.{name}")
        missing += _undescribed(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        missing += _undescribed(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        missing += _undescribed(node["additionalProperties"], f"{path}{{}}")
    return missing


def test_every_property_has_a_description(crd: dict[str, Any]) -> None:
    """`kubectl explain` shows each field's description; none may read ``<no description>``.

    The one exception is the root ``metadata``: the API server refuses a CRD whose schema says
    anything but ``type: object`` there, and serves ObjectMeta's documented schema in its place.
    """
    kind = crd["spec"]["names"]["singular"]
    assert _root(crd).get("description"), f"{kind} has no description"
    assert _root(crd)["properties"]["metadata"] == {"type": "object"}
    missing = [path for path in _undescribed(_root(crd), kind) if path != f"{kind}.metadata"]
    assert not missing, f"properties without a description (add an attribute docstring in the model): {missing}"


def test_the_description_check_finds_an_undescribed_property() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "description": "described"},
            "b": {"type": "array", "description": "list", "items": {"type": "object", "properties": {"c": {}}}},
            "d": {"type": "object", "description": " ", "x-kubernetes-preserve-unknown-fields": True},
        },
    }
    assert _undescribed(schema, "x") == ["x.b[].c", "x.d"]


def test_status_keeps_unknown_fields_for_kopf(crd: dict[str, Any]) -> None:
    assert _root(crd)["properties"]["status"]["x-kubernetes-preserve-unknown-fields"] is True
    assert "x-kubernetes-preserve-unknown-fields" not in _root(crd)["properties"]["spec"]


def test_conditions_are_a_list_map_keyed_by_type(crd: dict[str, Any]) -> None:
    conditions = _root(crd)["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    # The API server requires map keys to be required (or defaulted).
    assert "type" in conditions["items"]["required"]


def test_gpu_targets_are_a_list_map_keyed_by_uuid() -> None:
    gpus = _root(_load("gpunodes"))["properties"]["spec"]["properties"]["gpus"]
    assert gpus["x-kubernetes-list-type"] == "map"
    assert gpus["x-kubernetes-list-map-keys"] == ["uuid"]
    assert "uuid" in gpus["items"]["required"]


def _resolve(schema: dict[str, Any], json_path: str) -> dict[str, Any] | None:
    """Follow a printer-column jsonPath through the schema (filters step into list items)."""
    node = schema
    for part in re.sub(r"\[[^\]]*\]", "[]", json_path).lstrip(".").split("."):
        name = part.split("[", 1)[0]
        if name == "metadata" and node is schema:
            return {"type": "object"}  # the API server owns metadata
        props = node.get("properties", {})
        if name not in props:
            return None
        node = props[name]
        if "[" in part:
            node = node["items"]
    return node


COLUMN_TYPES = {"integer": {"integer"}, "number": {"number", "integer"}, "boolean": {"boolean"}, "string": {"string"}}


@pytest.mark.parametrize(
    ("name", "columns"),
    [
        (
            "energypolicies",
            {
                "Priority",
                "DryRun",
                "Pods",
                "GPUs",
                "Allocated W",
                "Quota W",
                "Quota Used W",
                "Ready",
                "Reason",
                "J/Token",
                "Age",
            },
        ),
        ("gpunodes", {"Backend", "GPUs", "Power W", "Budget W", "Targets", "Ready", "Heartbeat", "Age"}),
    ],
)
def test_printer_columns_exist_and_point_at_real_fields(name: str, columns: set[str]) -> None:
    crd = _load(name)
    printed = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    assert {c["name"] for c in printed} == columns
    for column in printed:
        target = _resolve(_root(crd), column["jsonPath"])
        assert target is not None, f"{name}: column {column['name']} points at nothing ({column['jsonPath']})"
        if column["type"] in COLUMN_TYPES:
            assert target["type"] in COLUMN_TYPES[column["type"]], column
        elif column["type"] == "date" and not column["jsonPath"].startswith(".metadata"):
            assert target.get("format") == "date-time", column


def test_limit_ordering_rules_are_enforced_by_the_api_server() -> None:
    limits = _root(_load("energypolicies"))["properties"]["spec"]["properties"]["limits"]
    rules = " ".join(r["rule"] for r in limits["x-kubernetes-validations"])
    assert "self.minWatts <= self.maxWatts" in rules
    assert "self.minFractionOfDefault <= self.maxFractionOfDefault" in rules
    clocks = limits["properties"]["lockedSmClockMHz"]
    assert [r["rule"] for r in clocks["x-kubernetes-validations"]] == ["self.minMHz <= self.maxMHz"]


def test_a_policy_needs_a_section_or_dry_run_in_the_schema_and_the_model() -> None:
    """``spec: {}`` selects every pod and does nothing: the API server and the model both refuse it."""
    root = _root(_load("energypolicies"))
    assert root["required"] == ["spec"]
    (rule,) = root["properties"]["spec"]["x-kubernetes-validations"]
    for section in ("limits", "efficiency", "carbon", "budget", "stragglers"):
        assert f"has(self.{section})" in rule["rule"]
    assert "self.dryRun" in rule["rule"] and "dryRun: true" in rule["message"]
    for empty in ({}, {"dryRun": False}, {"priority": 5, "selector": {}}, {"limits": None}):
        with pytest.raises(ValidationError, match="at least one of limits"):
            EnergyPolicySpec.model_validate(empty)
    for enough in ({"dryRun": True}, {"limits": {}}, {"budget": {"watts": 100}}, {"stragglers": {}}):
        EnergyPolicySpec.model_validate(enough)


# --- The generated schema and the pydantic model agree -------------------------------------------------
#
# jsonschema speaks JSON Schema 2020-12, not the API server's OpenAPI 3.0 dialect, so the schema is
# translated for the check, the way the API server reads it:
#   * ``nullable: true``            → the type also admits ``null``;
#   * ``exclusiveMinimum: true``    → 2020-12's numeric ``exclusiveMinimum`` (same for maximum);
#   * objects with ``properties`` and no ``x-kubernetes-preserve-unknown-fields`` → no unknown fields
#     (the API server prunes them, or rejects them under ``kubectl``'s strict field validation).
# What jsonschema cannot check are the CEL ``x-kubernetes-validations`` (min ≤ max, "a section or
# dryRun"): those cases are left out of the agreement table (cases below carry ``dryRun: true`` or a
# section) and covered by the two tests above and, on the real API server, tests/controlplane.
# Also left out: pydantic's lax coercions ("5" → 5, "yes" → True), which only make the model *more*
# permissive than the schema; the API server validates before the operator ever parses.


def _validator(crd_name: str) -> jsonschema.Draft202012Validator:
    return spec_validator(crd_name.split(".")[0])


EXCLUSIVE = "relies on the exclusiveMinimum translation"
POLICY_CASES: list[tuple[dict[str, Any], bool, str]] = [
    ({"dryRun": True}, True, ""),
    ({"priority": 1000, "dryRun": True}, True, ""),
    ({"limits": {"maxWatts": 200}}, True, ""),
    ({"limits": {"maxFractionOfDefault": 1}}, True, ""),
    ({"limits": {"maxFractionOfDefault": 0.6, "maxWatts": 250, "minWatts": 100}}, True, ""),
    ({"limits": None, "dryRun": True}, True, "relies on the nullable translation"),
    ({"selector": {"podSelector": None}, "dryRun": True}, True, "relies on the nullable translation"),
    ({"limits": {"lockedSmClockMHz": {"minMHz": 210, "maxMHz": 1400}}}, True, ""),
    (
        {"selector": {"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Exists"}]}}, "dryRun": True},
        True,
        "",
    ),
    ({"priority": 1001, "dryRun": True}, False, ""),
    ({"priority": -1001, "dryRun": True}, False, ""),
    ({"priority": 1.5, "dryRun": True}, False, ""),
    ({"dryRun": 1.5}, False, ""),
    ({"limits": {"maxWatts": 0}}, False, EXCLUSIVE),
    ({"limits": {"minFractionOfDefault": 0}}, False, EXCLUSIVE),
    ({"limits": {"maxWatts": -5}}, False, ""),
    ({"limits": {"maxWatts": 10000.5}}, False, ""),
    ({"limits": {"maxFractionOfDefault": 1.2}}, False, ""),
    ({"limits": {"lockedSmClockMHz": {"minMHz": 210}}}, False, ""),
    ({"limits": {"lockedSmClockMHz": {"minMHz": 0, "maxMHz": 20000}}}, False, ""),
    ({"limits": {"maxWats": 200}}, False, "relies on the unknown-field translation"),
    ({"limitz": {}}, False, "relies on the unknown-field translation"),
    ({"selector": {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Gt"}]}}, "dryRun": True}, False, ""),
    (
        {"selector": {"podSelector": {"matchExpressions": [{"key": "", "operator": "Exists"}]}}, "dryRun": True},
        False,
        "",
    ),
    ({"selector": {"podSelector": {"matchLabels": {"a": 1}}}, "dryRun": True}, False, ""),
    ({"selector": [], "dryRun": True}, False, ""),
]


@pytest.mark.parametrize(("spec", "valid", "note"), POLICY_CASES)
def test_energypolicy_schema_and_model_agree(spec: dict[str, Any], valid: bool, note: str) -> None:
    schema_ok = _validator("energypolicies").is_valid(spec)
    try:
        EnergyPolicySpec.model_validate(spec)
        model_ok = True
    except ValidationError:
        model_ok = False
    assert (schema_ok, model_ok) == (valid, valid), note


GPUNODE_CASES: list[tuple[dict[str, Any], bool]] = [
    ({}, True),
    ({"planGeneration": 3, "ttlSeconds": 10, "issuedAt": "2025-01-01T00:00:00Z"}, True),
    ({"gpus": [{"uuid": "GPU-1", "powerLimitWatts": 210.5, "dryRun": True}]}, True),
    ({"nodeBudgetWatts": None, "issuedAt": None}, True),
    ({"ttlSeconds": 9}, False),
    ({"planGeneration": -1}, False),
    ({"nodeBudgetWatts": 0}, False),
    ({"gpus": [{"uuid": "GPU-1", "powerLimitWatts": 0}]}, False),
    ({"gpus": [{"uuid": "", "powerLimitWatts": 10}]}, False),
    ({"gpus": [{"powerLimitWatts": 10}]}, False),
    ({"gpus": [{"uuid": "GPU-1", "powerLimitWatts": 10, "oops": 1}]}, False),
]


@pytest.mark.parametrize(("spec", "valid"), GPUNODE_CASES)
def test_gpunode_schema_and_model_agree(spec: dict[str, Any], valid: bool) -> None:
    schema_ok = _validator("gpunodes").is_valid(spec)
    try:
        GpuNodeSpec.model_validate(spec)
        model_ok = True
    except ValidationError:
        model_ok = False
    assert (schema_ok, model_ok) == (valid, valid)


def test_what_the_model_writes_the_schema_accepts() -> None:
    full = EnergyPolicySpec.model_validate(
        {
            "selector": {"podSelector": {"matchLabels": {"a": "b"}}},
            "priority": -3,
            "limits": {"maxFractionOfDefault": 0.7, "minWatts": 100, "lockedSmClockMHz": {"minMHz": 1, "maxMHz": 2}},
            "dryRun": True,
        }
    )
    _validator("energypolicies").validate(full.to_wire())
    _validator("gpunodes").validate(GpuNodeSpec.model_validate(GPUNODE_CASES[2][0]).to_wire())
