"""The generated CRD schemas as JSON Schema validators, for tests that check objects offline.

jsonschema speaks JSON Schema 2020-12, not the API server's OpenAPI 3.0 dialect, so the schema is
translated the way the API server reads it:

* ``nullable: true``            → the type also admits ``null``;
* ``exclusiveMinimum: true``    → 2020-12's numeric ``exclusiveMinimum`` (same for maximum);
* objects with ``properties`` and no ``x-kubernetes-preserve-unknown-fields`` → no unknown fields
  (the API server prunes them, or rejects them under ``kubectl``'s strict field validation).

CEL ``x-kubernetes-validations`` are not checked here; the control-plane tier checks those.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]


def load_crd(plural: str) -> dict[str, Any]:
    """The committed CRD ``crds/<plural>.wattplane.io.yaml``."""
    crd: dict[str, Any] = yaml.safe_load((REPO / "crds" / f"{plural}.wattplane.io.yaml").read_text())
    return crd


def openapi_root(crd: dict[str, Any]) -> dict[str, Any]:
    """The ``openAPIV3Schema`` of the CRD's only version."""
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def as_json_schema(node: Any) -> Any:
    """Translate an OpenAPI 3.0 structural schema node to JSON Schema 2020-12."""
    if isinstance(node, list):
        return [as_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: as_json_schema(v) for k, v in node.items() if k != "properties"}
    if "properties" in node:
        out["properties"] = {k: as_json_schema(v) for k, v in node["properties"].items()}
        if not node.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in node:
            out["additionalProperties"] = False
    if out.pop("nullable", False):
        out["type"] = [out["type"], "null"]
    for bound in ("Minimum", "Maximum"):
        if out.get(f"exclusive{bound}") is True:
            out[f"exclusive{bound}"] = out.pop(bound.lower())
    return out


def spec_validator(plural: str) -> jsonschema.Draft202012Validator:
    """A validator for the ``spec`` of ``plural`` objects."""
    spec_schema = as_json_schema(copy.deepcopy(openapi_root(load_crd(plural))["properties"]["spec"]))
    jsonschema.Draft202012Validator.check_schema(spec_schema)
    return jsonschema.Draft202012Validator(spec_schema)
