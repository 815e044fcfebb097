"""Fault-injection helpers for the reliability suite: fleets with special settings, and ways to hurt them.

Everything here drives real processes on the real API server; the only things reached around the
API are the ones a node itself owns (the simulated device state file, the agent's journal, the
faults file the simulated backend re-reads, ``/proc`` for RSS), exactly as an operator of the node
could see them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from controlplane import ControlPlane, Process
from fleet import Fleet
from kubeapi import connect, create_node
from wattplane.agent.gpu.simulated import SimulatedBackend

T = TypeVar("T")


def sim_uuids(node: str, count: int = 4) -> list[str]:
    """UUIDs of a node's simulated GPUs by index (derived from the node name, as the backend does)."""
    backend = SimulatedBackend(node_name=node, gpu_count=count)
    return [d.identity.uuid for d in backend.devices()]


def seed_devices(
    state_file: Path, node: str, settings: Mapping[int, tuple[float, tuple[int, int] | None]], count: int = 4
) -> None:
    """Hand-set GPUs before wattplane ever runs: ``index → (limit watts, locked clocks or None)``.

    This is the site's own prior state, which the agent must journal and later put back exactly.
    """
    backend = SimulatedBackend(node_name=node, gpu_count=count, state_file=state_file)
    for device in backend.devices():
        wanted = settings.get(device.identity.index)
        if wanted is None:
            continue
        watts, clocks = wanted
        device.set_power_limit_watts(watts)
        if clocks is not None:
            device.set_locked_clocks_mhz(*clocks)
    backend.close()


def devices(fleet: Fleet, node: str) -> dict[str, dict[str, Any]]:
    """The node's simulated device state (UUID → fields), as the hardware holds it right now."""
    for _ in range(5):  # the backend replaces the file atomically; a read can only miss it if absent
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            state: dict[str, dict[str, Any]] = json.loads(fleet.state_file(node).read_text())["devices"]
            return state
        time.sleep(0.02)
    raise FileNotFoundError(fleet.state_file(node))


def limits(fleet: Fleet, node: str) -> dict[str, float]:
    """UUID → power limit in force on the device."""
    return {u: float(d["power_limit_watts"]) for u, d in devices(fleet, node).items()}


def writes(fleet: Fleet, nodes: list[str] | None = None) -> dict[str, int]:
    """UUID → power-limit writes the device has seen so far (idempotence and flapping checks)."""
    out: dict[str, int] = {}
    for node in nodes or fleet.nodes:
        out.update({u: int(d["power_limit_writes"]) for u, d in devices(fleet, node).items()})
    return out


def faults_file(fleet: Fleet, node: str) -> Path:
    """Where the simulated backend of ``node`` looks for injected faults."""
    return fleet.workdir / f"{node}.faults.json"


def set_faults(fleet: Fleet, node: str, faults: Mapping[str, Mapping[str, object]]) -> None:
    """Replace the node's injected faults (``{}`` clears them); the agent notices on its next device call."""
    path = faults_file(fleet, node)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(faults))
    os.replace(tmp, path)


@dataclass
class FaultFleet(Fleet):
    """A :class:`Fleet` whose agents read injected faults from ``<workdir>/<node>.faults.json``.

    Process logs are shared by name across the session (every module's operator appends to
    ``operator.log``), so the fleet remembers where each of its processes started in its log.
    """

    log_offsets: dict[str, int] = field(default_factory=dict)

    def _mark(self, name: str) -> None:
        log = self.cp.workdir / f"{name}.log"
        self.log_offsets.setdefault(name, log.stat().st_size if log.exists() else 0)

    def start_agent(self, node: str) -> Process:
        """Start the agent of ``node`` with its faults file (absent until :func:`set_faults` writes it)."""
        self._mark(f"agent-{node}")
        shared = self.agent_env
        self.agent_env = {**shared, "WATTPLANE_AGENT_SIM_FAULTS_FILE": str(faults_file(self, node))}
        try:
            return super().start_agent(node)
        finally:
            self.agent_env = shared

    def start_operator(self) -> Process:
        """Start the operator, remembering where this fleet's part of ``operator.log`` begins."""
        self._mark("operator")
        return super().start_operator()

    def problems(self, process: Process) -> list[str]:
        """:func:`log_problems` of ``process``, counting only what this fleet's processes wrote."""
        return log_problems(process, since=self.log_offsets.get(process.name, 0))


async def create_nodes(cp: ControlPlane, names: list[str], labels: Mapping[str, str] | None = None) -> None:
    """Fake GPU nodes (kwok keeps them Ready), 4 GPUs each."""
    async with await connect(cp.kubeconfig) as api:
        for name in names:
            await create_node(api, name, gpus=4, labels={"wattplane.io/rack": "r1", **(labels or {})})


@contextlib.contextmanager
def running_fleet(
    cp: ControlPlane,
    workdir: Path,
    names: list[str],
    *,
    agent_env: Mapping[str, str] | None = None,
    operator_env: Mapping[str, str] | None = None,
    before_agents: Callable[[FaultFleet], None] | None = None,
    start_operator: bool = True,
) -> Iterator[FaultFleet]:
    """Nodes, one agent each and the operator, with extra settings; every process stopped at the end."""
    workdir.mkdir(parents=True, exist_ok=True)
    asyncio.run(create_nodes(cp, names))
    fleet = FaultFleet(cp, names, workdir, agent_env=dict(agent_env or {}), operator_env=dict(operator_env or {}))
    if before_agents is not None:
        before_agents(fleet)
    for node in names:
        fleet.start_agent(node)
    if start_operator:
        fleet.start_operator()
    try:
        yield fleet
    finally:
        for process in [*fleet.agents.values(), *([fleet.operator] if fleet.operator else [])]:
            with contextlib.suppress(Exception):
                process.stop()


def kill(process: Process, sig: signal.Signals = signal.SIGKILL, *, wait_s: float = 15.0) -> int:
    """Send ``sig`` and wait for the process to exit; return its exit code."""
    os.kill(process.popen.pid, sig)
    return int(process.popen.wait(timeout=wait_s))


_PORT = re.compile(r"metrics on port (\d+)")


def agent_metrics_port(process: Process, *, within_s: float = 20.0) -> int:
    """The port an agent (started with port 0) reports it serves ``/metrics`` on (its latest start)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        found = _PORT.findall(process.log.read_text(errors="replace"))
        if found:
            return int(found[-1])
        time.sleep(0.1)
    raise AssertionError(f"{process.name} never said where its metrics are:\n{process.tail()}")


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """(status, body) of a plain GET, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")


def rss_mib(pid: int) -> float:
    """Resident set size of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def log_problems(process: Process, *, since: int = 0) -> list[str]:
    """Lines of a process log (from byte ``since``) that report unexpected trouble (tracebacks, ERROR)."""
    with process.log.open("rb") as handle:
        handle.seek(since)
        text = handle.read().decode(errors="replace")
    return [line for line in text.splitlines() if "Traceback" in line or " ERROR " in line or " CRITICAL " in line]


async def watch_until(
    probe: Callable[[], Awaitable[T | None]] | Callable[[], T | None],
    *,
    within_s: float,
    interval: float = 0.05,
    what: str = "condition",
) -> tuple[T, float]:
    """Poll ``probe`` (sync or async) fast until truthy; return the result and the seconds it took."""
    started = time.monotonic()
    last: object = None
    while time.monotonic() - started < within_s:
        try:
            result = probe()
            if asyncio.iscoroutine(result):
                result = await result
        except Exception as exc:
            last, result = exc, None
        if result:
            return result, time.monotonic() - started  # type: ignore[return-value]
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {within_s} s waiting for {what}; last: {last!r}")


def record(scenario: str, what: str, seconds: float) -> None:
    """Report a measured convergence time (stderr, and ``$WATTPLANE_RELIABILITY_TIMINGS`` as JSON lines)."""
    sys.stderr.write(f"\nreliability: {scenario}: {what}: {seconds:.2f} s\n")
    target = os.environ.get("WATTPLANE_RELIABILITY_TIMINGS")
    if target:
        with open(target, "a") as handle:
            handle.write(json.dumps({"scenario": scenario, "what": what, "seconds": round(seconds, 3)}) + "\n")
