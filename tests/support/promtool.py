"""Prometheus' own linter, ``promtool``, for the metrics pages and the chart's alerting rules.

``./dev test`` installs it on a fresh Debian machine when it runs as root (Debian's ``prometheus``
package ships ``/usr/bin/promtool``; ``./dev`` keeps the package's service from starting). Elsewhere
the tests that need it skip with the reason, unless ``WATTPLANE_REQUIRE_CLUSTER=1`` (CI), which
turns that into a failure, as for the control plane and helm.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

INSTALL_HINT = "apt-get install --no-install-recommends prometheus (./dev test does it when run as root)"


@dataclass(frozen=True)
class Result:
    """What promtool said: its exit status and its output, one problem per line."""

    returncode: int
    output: str

    @property
    def problems(self) -> list[str]:
        """Non-empty output lines (``check metrics`` prints one per problem)."""
        return [line for line in self.output.splitlines() if line.strip()]


def require_promtool() -> Path:
    """The ``promtool`` on PATH, or skip (fail under ``WATTPLANE_REQUIRE_CLUSTER=1``) with the reason."""
    found = shutil.which("promtool")
    if found is not None:
        return Path(found)
    if os.environ.get("WATTPLANE_REQUIRE_CLUSTER") == "1":
        pytest.fail(f"promtool required (WATTPLANE_REQUIRE_CLUSTER=1) but not on PATH: {INSTALL_HINT}")
    pytest.skip(f"promtool not on PATH: {INSTALL_HINT}")


def check_metrics(promtool: Path, exposition: str) -> Result:
    """``promtool check metrics`` on a /metrics page (lint: names, units, label case, help, types)."""
    done = subprocess.run(
        [str(promtool), "check", "metrics"], input=exposition, capture_output=True, text=True, timeout=60, check=False
    )
    return Result(done.returncode, done.stdout + done.stderr)


def check_rules(promtool: Path, rules_file: Path) -> Result:
    """``promtool check rules`` on a Prometheus rules file (``groups:``): PromQL parses, fields valid."""
    done = subprocess.run(
        [str(promtool), "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60, check=False
    )
    return Result(done.returncode, done.stdout + done.stderr)


def test_rules(promtool: Path, test_file: Path) -> Result:
    """``promtool test rules``: evaluate alerts over the series a test file lists, compare with its expectations."""
    done = subprocess.run(
        [str(promtool), "test", "rules", test_file.name],
        cwd=test_file.parent,  # rule_files in the test file are relative to it
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return Result(done.returncode, done.stdout + done.stderr)
