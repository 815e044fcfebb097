"""Generate CustomResourceDefinitions from the pydantic models (the single source of truth).

``python -m wattplane.api.crdgen`` rewrites ``crds/`` and the chart's copy; ``--check`` only compares
and exits non-zero on drift (the unit test does the same in memory). The JSON Schema pydantic emits is
turned into a Kubernetes *structural* schema: ``$ref``/``$defs`` inlined (the API server rejects
them), ``title`` dropped, ``X | None`` turned into ``X`` plus ``nullable``, numeric
``exclusiveMinimum`` rewritten in OpenAPI v3.0 form, ``additionalProperties: false`` dropped (the
server prunes or, with strict field validation, rejects unknown fields anyway), and our
``x-kubernetes-*`` extensions kept.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from pydantic import BaseModel
from wattplane.api.crd import CrdInfo
from wattplane.api.v1alpha1 import KINDS

_DROP = {"title", "$defs"}

# The envelope fields, described as Kubernetes' own types describe them, so `kubectl explain` leaves
# no property of our kinds without a description (``metadata`` gets ObjectMeta's from the API server).
_API_VERSION_DOC = (
    "APIVersion defines the versioned schema of this representation of an object. Servers should convert"
    " recognized schemas to the latest internal value, and may reject unrecognized values."
)
_KIND_DOC = (
    "Kind is a string value representing the REST resource this object represents. Servers may infer this"
    " from the endpoint the client submits requests to. Cannot be updated. In CamelCase."
)


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    """Recursively rewrite one JSON Schema node into Kubernetes structural form."""
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    any_of = node.get("anyOf")
    if any_of is not None:
        kinds = [branch for branch in any_of if branch.get("type") != "null"]
        if len(kinds) == 1:
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            if rest.get("default", ...) is None:
                rest.pop("default")
            merged = {**_structural(kinds[0], defs), **_structural(rest, defs)}
            if len(kinds) != len(any_of):
                merged["nullable"] = True
            return merged
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "additionalProperties" and value is False:
            continue
        if key == "exclusiveMinimum":
            out["minimum"] = value
            out["exclusiveMinimum"] = True
            continue
        if key == "exclusiveMaximum":
            out["maximum"] = value
            out["exclusiveMaximum"] = True
            continue
        if key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
            continue
        out[key] = _structural(value, defs)
    return out


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """Structural OpenAPI v3 schema of one model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    result: dict[str, Any] = _structural(raw, raw.get("$defs", {}))
    return result


def build_crd(
    info: CrdInfo,
    spec_model: type[BaseModel],
    status_model: type[BaseModel],
    description: str,
    *,
    spec_required: bool = False,
) -> dict[str, Any]:
    """The full ``apiextensions.k8s.io/v1`` CRD object for one kind.

    ``spec_required``: the object model has no default ``spec`` (an object without one is refused,
    as the model refuses it, instead of slipping past the spec's own rules).
    """
    spec_schema = schema_of(spec_model)
    status_schema = schema_of(status_model)
    root = {
        "type": "object",
        "description": description,
        "properties": {
            "apiVersion": {"type": "string", "description": _API_VERSION_DOC},
            "kind": {"type": "string", "description": _KIND_DOC},
            # Nothing but the type: the API server refuses a CRD that says more about the root
            # metadata, and publishes ObjectMeta's own schema and descriptions in its place.
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
        **({"required": ["spec"]} if spec_required else {}),
    }
    columns = [
        {
            "name": col.name,
            "type": col.type,
            "jsonPath": col.json_path,
            **({"description": col.description} if col.description else {}),
            **({"priority": col.priority} if col.priority else {}),
        }
        for col in info.printer_columns
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": info.crd_name, "labels": {"app.kubernetes.io/part-of": "wattplane"}},
        "spec": {
            "group": info.group,
            "scope": info.scope,
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
                "categories": list(info.categories),
            },
            "versions": [
                {
                    "name": info.version,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def _models_of(kind_module: ModuleType) -> tuple[CrdInfo, type[BaseModel], type[BaseModel]]:
    info: CrdInfo = kind_module.CRD
    spec_model: type[BaseModel] = getattr(kind_module, f"{info.kind}Spec")
    status_model: type[BaseModel] = getattr(kind_module, f"{info.kind}Status")
    return info, spec_model, status_model


def render_all() -> dict[str, str]:
    """File name → YAML text for every kind."""
    header = "# Generated by `python -m wattplane.api.crdgen` from wattplane.api models. Do not edit.\n"
    files: dict[str, str] = {}
    for module in KINDS:
        info, spec_model, status_model = _models_of(module)
        summary = (module.__doc__ or info.kind).strip().split("\n\n")[0].replace("\n", " ")
        whole: type[BaseModel] | None = getattr(module, info.kind, None)
        spec_required = whole is not None and whole.model_fields["spec"].is_required()
        crd = build_crd(info, spec_model, status_model, summary, spec_required=spec_required)
        files[f"{info.crd_name}.yaml"] = header + yaml.safe_dump(crd, sort_keys=False, width=100)
    return files


def output_dirs(repo_root: Path) -> list[Path]:
    """Where the generated CRDs live: ``crds/`` and the chart's ``crds/`` copy."""
    return [repo_root / "crds", repo_root / "charts" / "wattplane" / "crds"]


def drift(repo_root: Path) -> list[str]:
    """Paths whose committed content differs from what the models generate."""
    problems: list[str] = []
    for folder in output_dirs(repo_root):
        for name, text in render_all().items():
            path = folder / name
            if not path.exists() or path.read_text() != text:
                problems.append(str(path))
    return problems


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` verify) the CRD YAML files."""
    parser = argparse.ArgumentParser(prog="python -m wattplane.api.crdgen", description=__doc__)
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="repository root")
    parser.add_argument("--check", action="store_true", help="fail if committed CRDs differ")
    args = parser.parse_args(argv)
    if args.check:
        stale = drift(args.root)
        for path in stale:
            print(f"stale: {path}", file=sys.stderr)
        return 1 if stale else 0
    for folder in output_dirs(args.root):
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in render_all().items():
            (folder / name).write_text(text)
            print(f"wrote {folder / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
