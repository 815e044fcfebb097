"""The kind end-to-end run (tests/e2e/run-kind-e2e.sh) as a test.

It needs a Docker engine and kind, which the project's CI machines do not have: there this test is
skipped, saying which is missing, and the real-node tier (tests/realnode, which the script itself
falls back to without Docker) runs the same story on containerd and a real kubelet instead. Where
both exist it runs the whole script (about 5-10 minutes: cluster, image build, install, policy,
pods, metrics, uninstall) and fails with its output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

SCRIPT = Path(__file__).with_name("run-kind-e2e.sh")


def _missing_prerequisite() -> str | None:
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return "docker info timed out: no Docker engine answering"
    if info.returncode != 0:
        return "no Docker engine reachable (`docker info` failed: the docker CLI alone cannot run kind)"
    if shutil.which("kind") is None:
        return "kind is not on PATH (https://kind.sigs.k8s.io, `go install sigs.k8s.io/kind@latest`)"
    return None


def test_kind_install_policy_metrics_and_uninstall_restore() -> None:
    missing = _missing_prerequisite()
    if missing is not None:
        pytest.skip(f"kind e2e needs Docker and kind: {missing} (tests/realnode runs the story without Docker)")
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=1700, check=False)
    assert result.returncode == 0, f"{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-6000:]}"
    assert "PASSED:" in result.stdout
