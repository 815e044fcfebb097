"""Resident memory of the node agent on lightkube against the same agent on its former hand-written client.

The agent runs as a real process (``python -m wattplane.agent``, simulated A40s, status every 2 s,
pods listed every second, as ``tests/support/fleet.py`` starts it) against a real kube-apiserver +
etcd started on loopback (``tests/support/controlplane.py``; build the binaries first with
``tests/controlplane/build.sh``). The node has two pods bound to it and one pod bound elsewhere.
Each variant runs alone, one after the other, on the same node and the same simulated GPUs; after
``--steady`` seconds (60) the bench reads ``VmRSS`` from ``/proc/<pid>/status`` and checks that the
agent wrote its GpuNode status, so a figure always belongs to a working agent.

The lightkube variant is the agent as it is (``wattplane.agent.kube`` on lightkube). The ``ours``
variant is the same agent with ``wattplane.agent.kube`` and ``wattplane.agent.apiserver`` (JSON over
aiohttp, about 880 lines) as they were at commit ``OURS_COMMIT``, read with ``git show`` into a
temporary directory and put in place at start-up; nothing of lightkube is imported then. Import
footprints are measured in fresh interpreters (``VmRSS`` after importing the whole agent). Lines of
code of ours: every line of the client modules each variant needs, and the lines that are neither
blank nor comments.

Run ``python bench/agent_client_rss.py`` from a git checkout (``--steady`` to wait less).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "support"))

from controlplane import TOKEN, ControlPlane, ensure_binaries, spawn, start_control_plane  # noqa: E402
from kubeapi import connect, create_namespace, create_node, create_pod  # noqa: E402

GOAL_RSS_MIB = 80.0
NODE = "rss-node"
#: The last commit with the agent's hand-written API client (``wattplane.agent.apiserver``).
OURS_COMMIT = "7396b2d19b0463798cc536f05ace9e8c724c5276"
OURS_FILES = [
    f"agent/wattplane/agent/{name}.py"
    for name in (
        "kube",
        *(f"apiserver/{m}" for m in ("__init__", "client", "config", "credentials", "errors", "watch")),
    )
]
#: Puts the hand-written client (files under the directory in sys.argv[1]) in place of lightkube's.
OURS_SHIM = """
import importlib.util, sys
import wattplane.agent
root = sys.argv[1]
wattplane.agent.__path__.insert(0, root)  # wattplane.agent.apiserver comes from there
import wattplane.agent.apiserver as api
spec = importlib.util.spec_from_file_location("wattplane.agent.kube", root + "/kube.py")
kube = importlib.util.module_from_spec(spec)
sys.modules["wattplane.agent.kube"] = kube
spec.loader.exec_module(kube)
kube.ConfigError, kube.NotFound, kube.load_config, kube.make_client = (
    api.ConfigError, api.NotFound, api.load_config, api.ApiClient
)
"""
ENTRY = {
    "ours": OURS_SHIM + "from wattplane.agent.__main__ import main\n",
    "lightkube": "import sys\nfrom wattplane.agent.__main__ import main\n",
}
#: What each variant must not have loaded: the other client.
FOREIGN = {"ours": "lightkube", "lightkube": "wattplane.agent.apiserver"}
AGENT_ENV = {
    "WATTPLANE_AGENT_POD_MAPPER": "sim",
    "WATTPLANE_AGENT_SIM_GPU_COUNT": "4",
    "WATTPLANE_AGENT_SIM_MODEL": "A40",
    "WATTPLANE_AGENT_STATUS_INTERVAL_S": "2",
    "WATTPLANE_AGENT_POD_SYNC_INTERVAL_S": "1",
    "WATTPLANE_AGENT_TICK_S": "0.5",
    "WATTPLANE_AGENT_METRICS_PORT": "0",
    "WATTPLANE_AGENT_METRICS_HOST": "127.0.0.1",
}


def vm_rss_mib(pid: int) -> float:
    """``VmRSS`` of a process, MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def extract_ours(into: Path) -> list[Path]:
    """Write the hand-written client of ``OURS_COMMIT`` under ``into`` (``kube.py``, ``apiserver/``)."""
    paths = []
    for name in OURS_FILES:
        text = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{OURS_COMMIT}:{name}"], capture_output=True, text=True, check=True
        ).stdout
        path = into / name.removeprefix("agent/wattplane/agent/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        paths.append(path)
    return paths


def import_rss_mib(variant: str, env: dict[str, str], ours_dir: Path) -> float:
    """``VmRSS`` of a fresh interpreter that imported the whole agent of ``variant``, MiB (median of 3)."""
    probe = ENTRY[variant] + f"assert {FOREIGN[variant]!r} not in sys.modules, 'both clients loaded'\n"
    probe += "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])\n"
    argv = [sys.executable, "-c", probe, str(ours_dir)]
    runs = sorted(
        int(subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout) for _ in range(3)
    )
    return runs[1] / 1024


def lines_of_code(paths: list[Path]) -> tuple[int, int]:
    """(all lines, lines that are neither blank nor comments) of ``paths``."""
    total = code = 0
    for path in paths:
        for line in path.read_text().splitlines():
            total += 1
            code += bool(line.strip()) and not line.lstrip().startswith("#")
    return total, code


async def prepare_cluster(cp: ControlPlane) -> None:
    """The node, two pods bound to it and one bound to another node."""
    api = await connect(cp.kubeconfig)
    async with api:
        for name in (NODE, "rss-other"):
            await create_node(api, name, gpus=4)
        await create_namespace(api, "rss")
        for pod, node in (("a", NODE), ("b", NODE), ("c", "rss-other")):
            await create_pod(api, "rss", f"train-{pod}", node=node, gpus=1)


def gpunode_heartbeat(cp: ControlPlane) -> str | None:
    """``status.heartbeat`` of the node's GpuNode (the agent's last status write), if any."""
    request = urllib.request.Request(
        f"{cp.server}/apis/wattplane.io/v1alpha1/gpunodes/{NODE}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    try:
        with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=str(cp.ca_file))) as answer:
            heartbeat = (json.load(answer).get("status") or {}).get("heartbeat")
    except urllib.error.HTTPError:
        return None
    return str(heartbeat) if heartbeat else None


def run_agent(cp: ControlPlane, variant: str, workdir: Path, steady_s: float, ours_dir: Path) -> float:
    """Start the agent of ``variant``, wait ``steady_s``, check it reports, return its VmRSS in MiB."""
    env = cp.python_env(
        **AGENT_ENV,
        WATTPLANE_AGENT_SIM_STATE_FILE=str(workdir / f"{variant}.gpus.json"),
        WATTPLANE_AGENT_JOURNAL_PATH=str(workdir / f"{variant}.journal.json"),
    )
    code = ENTRY[variant] + f"sys.exit(main(['--node', {NODE!r}, '--backend', 'sim']))\n"
    process = spawn(f"agent-{variant}", [sys.executable, "-c", code, str(ours_dir)], workdir, env)
    try:
        before = gpunode_heartbeat(cp)
        time.sleep(steady_s)
        if process.popen.poll() is not None:
            raise RuntimeError(f"the {variant} agent exited:\n{process.tail()}")
        rss = vm_rss_mib(process.popen.pid)
        deadline = time.monotonic() + 10
        while gpunode_heartbeat(cp) in (None, before) and time.monotonic() < deadline:
            time.sleep(0.5)
        if gpunode_heartbeat(cp) in (None, before):
            raise RuntimeError(f"the {variant} agent did not write its GpuNode status:\n{process.tail()}")
        return rss
    finally:
        process.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steady", type=float, default=60.0, help="seconds before RSS is read (60)")
    args = parser.parse_args()
    ensure_binaries()
    with tempfile.TemporaryDirectory(prefix="wattplane-rss-") as tmp:
        workdir = Path(tmp)
        ours_dir = workdir / "ours"
        code_of_ours = {
            "ours": extract_ours(ours_dir),
            "lightkube": [REPO / "agent" / "wattplane" / "agent" / "kube.py"],
        }
        cp = start_control_plane(workdir / "controlplane")
        try:
            asyncio.run(prepare_cluster(cp))
            env = cp.python_env()
            results = {}
            for variant in ("ours", "lightkube"):
                steady = run_agent(cp, variant, workdir, args.steady, ours_dir)
                imported = import_rss_mib(variant, env, ours_dir)
                results[variant] = (steady, imported, *lines_of_code(code_of_ours[variant]))
        finally:
            cp.stop()
    print(f"agent RSS after {args.steady:.0f} s on a real kube-apiserver (4 simulated A40s, 2 pods on the node)")
    print(f"{'client':<10} {'steady MiB':>10} {'import MiB':>10} {'goal':>6} {'lines':>6} {'code':>6}")
    for variant, (steady, imported, total, code) in results.items():
        met = "met" if steady <= GOAL_RSS_MIB else "MISSED"
        print(f"{variant:<10} {steady:>10.1f} {imported:>10.1f} {met:>6} {total:>6} {code:>6}")
    (ours, ours_import, *_), (light, light_import, *_) = results["ours"], results["lightkube"]
    print(f"ratio lightkube/ours: steady {light / ours:.2f}, import {light_import / ours_import:.2f}")
    print(f"goal: <= {GOAL_RSS_MIB:.0f} MiB resident; python {sys.version.split()[0]}, pid {os.getpid()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
