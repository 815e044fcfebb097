"""``wattplane-agent`` as a real process: what a newcomer sees when starting it by hand.

* ``--backend sim`` without ``WATTPLANE_AGENT_POD_MAPPER``: the simulated pod mapper is chosen, and
  the log says so once (a kubelet never knows simulated GPUs);
* a metrics port another process holds (a second agent on the host): one error line naming the
  setting to change, exit status 1, no traceback, and no GPU touched.

The agent stops before its first API call in both cases, so the kubeconfig points nowhere.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

AGENT = [sys.executable, "-m", "wattplane.agent", "--node", "n1", "--backend", "sim"]
KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "current-context": "dev",
    "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
    "users": [{"name": "u", "user": {"token": "t"}}],
    "contexts": [{"name": "dev", "context": {"cluster": "c", "user": "u"}}],
}


def test_second_agent_on_a_busy_metrics_port_says_which_setting_to_change(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(KUBECONFIG))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WATTPLANE_", "NODE_NAME", "KUBECONFIG"))}
    env |= {
        "WATTPLANE_AGENT_JOURNAL_PATH": str(tmp_path / "journal.json"),
        "WATTPLANE_AGENT_SIM_STATE_FILE": str(tmp_path / "sim.json"),
        "WATTPLANE_AGENT_METRICS_HOST": "127.0.0.1",
    }
    with socket.socket() as first_agent:
        first_agent.bind(("127.0.0.1", 0))
        first_agent.listen()
        port = first_agent.getsockname()[1]
        done = subprocess.run(
            [*AGENT, "--kubeconfig", str(kubeconfig), "--metrics-port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=tmp_path,
            check=False,
        )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert lines[-1].endswith(
        f"ERROR wattplane.agent: metrics port {port} on 127.0.0.1 is already in use (another agent on this host?): "
        "set WATTPLANE_AGENT_METRICS_PORT (or --metrics-port) to a free port, or 0 for any"
    ), done.stderr
    choice = [line for line in lines if "pod mapper:" in line]
    assert len(choice) == 1 and "pod mapper: sim (auto for the sim backend" in choice[0], done.stderr
    assert not (tmp_path / "journal.json").exists()  # stopped before any device write
