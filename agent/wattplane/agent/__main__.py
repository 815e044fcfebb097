"""``wattplane-agent``: run the node agent (DaemonSet entry point)."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import signal
import sys
import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from wattplane.agent import server
from wattplane.agent.attribution import podresources_source
from wattplane.agent.caplabels import CapLabelPublisher
from wattplane.agent.engine import NodeEngine
from wattplane.agent.gate import PowerGate
from wattplane.agent.gpu.base import GpuBackend
from wattplane.agent.journal import Journal
from wattplane.agent.kube import ConfigError, NodeObjects, load_config, make_client
from wattplane.agent.loop import AgentLoop, budget_params
from wattplane.agent.metrics import AgentCollector
from wattplane.agent.settings import FLAGS, AgentSettings
from wattplane.api.settingsdoc import parse_settings, settings_parser

if TYPE_CHECKING:
    from lightkube import AsyncClient

logger = logging.getLogger("wattplane.agent")


def make_backend(settings: AgentSettings) -> GpuBackend:
    """The GPU backend the settings ask for."""
    if settings.backend == "sim":
        from wattplane.agent.gpu.simulated import SimulatedBackend

        return SimulatedBackend(
            node_name=settings.node_name,
            gpu_count=settings.sim_gpu_count,
            model=settings.sim_model,
            state_file=settings.sim_state_file,
            profiles=settings.sim_profiles,
            faults_file=settings.sim_faults_file,
        )
    from wattplane.agent.gpu.multi import open_real_backend

    return open_real_backend(settings.backend)


class MetricsPortInUse(RuntimeError):
    """The metrics port is taken (often: a second agent on the same host)."""


async def amain(settings: AgentSettings) -> int:
    """Run the agent until SIGTERM/SIGINT."""
    # First: a node without usable credentials fails before touching its GPUs.
    cluster = load_config(settings.kubeconfig)
    api = make_client(cluster)
    logger.info("API server %s (%s)", cluster.server, cluster.source)
    backend = make_backend(settings)
    try:
        return await _serve(settings, api, backend)
    finally:
        await api.close()
        backend.close()


async def _serve(settings: AgentSettings, api: AsyncClient, backend: GpuBackend) -> int:
    engine = NodeEngine(
        backend, Journal(settings.journal_path), dry_run=settings.dry_run, budget_params=budget_params(settings)
    )
    objects = NodeObjects(api, settings.node_name)
    source = None
    mapper = settings.effective_pod_mapper()
    if settings.pod_mapper == "auto":
        logger.info(
            "pod mapper: %s (auto for the %s backend%s; WATTPLANE_AGENT_POD_MAPPER chooses)",
            mapper,
            settings.backend,
            ": simulated GPUs are unknown to the kubelet" if mapper == "sim" else "",
        )
    if mapper == "podresources":
        if not settings.podresources_socket.exists():
            logger.warning(
                "no kubelet PodResources socket at %s: pods stay unattributed until it appears. Mount the "
                "kubelet's pod-resources directory, set WATTPLANE_AGENT_PODRESOURCES_SOCKET, or for simulated "
                "GPUs set WATTPLANE_AGENT_POD_MAPPER=sim",
                settings.podresources_socket,
            )
        mig_parents = getattr(backend, "mig_parent_uuids", dict)
        # AMD's device plugin names boards by PCI address; the AMD backend maps those to its UUIDs.
        aliases = getattr(backend, "device_id_aliases", dict)
        uuids = [d.identity.uuid for d in backend.devices()]
        # The node's pod list gives the pods their uids (PodResources names them only).
        source = podresources_source(
            settings.podresources_socket, uuids, mig_parents, device_aliases=aliases, node_pods=objects.list_pods
        )
    loop = AgentLoop(
        settings,
        engine,
        objects,
        assignment_source=source,
        cap_labels=CapLabelPublisher(objects.get_node_labels, objects.patch_node_labels),
        power_gate=PowerGate(objects, list_every_s=settings.pod_sync_interval_s, clock=time.monotonic),
    )
    registry = CollectorRegistry()
    registry.register(AgentCollector(settings.node_name, loop.snapshot))
    try:
        runner, port = await server.start(
            server.build_app(registry, loop.readiness, loop.health), settings.metrics_host, settings.metrics_port
        )
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        raise MetricsPortInUse(
            f"metrics port {settings.metrics_port} on {settings.metrics_host} is already in use (another agent on "
            f"this host?): set WATTPLANE_AGENT_METRICS_PORT (or --metrics-port) to a free port, or 0 for any"
        ) from None
    logger.info("agent for node %s: backend %s, metrics on port %d", settings.node_name, backend.info.name, port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    try:
        await loop.run(stop)
    finally:
        await runner.cleanup()
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line: a flag for each setting in :data:`FLAGS`, every setting listed in ``--help``."""
    return settings_parser("wattplane-agent", __doc__, AgentSettings, FLAGS)


def main(argv: list[str] | None = None) -> int:
    """Parse flags (they override ``WATTPLANE_AGENT_*``) and run."""
    parser = build_parser()
    settings = parse_settings(parser, AgentSettings, FLAGS, argv)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one INFO line per request otherwise
    if not settings.node_name:
        parser.error("no node name: pass --node or set NODE_NAME")
    try:
        return asyncio.run(amain(settings))
    except ConfigError as exc:  # no cluster to talk to: say why, without a traceback
        logger.error("cannot connect to the API server: %s", exc)
    except MetricsPortInUse as exc:
        logger.error("%s", exc)
    return 1


if __name__ == "__main__":
    sys.exit(main())
