"""``wattplane-agent``: run the node agent (DaemonSet entry point)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from prometheus_client import CollectorRegistry
from wattplane.agent import server
from wattplane.agent.apiserver import ApiClient, ConfigError, load_config
from wattplane.agent.attribution import podresources_source
from wattplane.agent.engine import NodeEngine
from wattplane.agent.gpu.base import GpuBackend
from wattplane.agent.journal import Journal
from wattplane.agent.kube import NodeObjects
from wattplane.agent.loop import AgentLoop, budget_params
from wattplane.agent.metrics import AgentCollector
from wattplane.agent.settings import AgentSettings

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
    from wattplane.agent.gpu.nvml import NvmlBackend

    return NvmlBackend()


async def amain(settings: AgentSettings) -> int:
    """Run the agent until SIGTERM/SIGINT."""
    # First: a node without usable credentials fails before touching its GPUs.
    cluster = load_config(settings.kubeconfig)
    api = ApiClient(cluster)
    logger.info("API server %s (%s)", cluster.server, cluster.source)
    backend = make_backend(settings)
    engine = NodeEngine(
        backend, Journal(settings.journal_path), dry_run=settings.dry_run, budget_params=budget_params(settings)
    )
    source = None
    if settings.pod_mapper == "podresources":
        mig_parents = getattr(backend, "mig_parent_uuids", dict)
        uuids = [d.identity.uuid for d in backend.devices()]
        source = podresources_source(settings.podresources_socket, uuids, mig_parents)
    loop = AgentLoop(settings, engine, NodeObjects(api, settings.node_name), assignment_source=source)
    registry = CollectorRegistry()
    registry.register(AgentCollector(settings.node_name, loop.snapshot))
    runner, port = await server.start(
        server.build_app(registry, loop.readiness, loop.health), settings.metrics_host, settings.metrics_port
    )
    logger.info("agent for node %s: backend %s, metrics on port %d", settings.node_name, backend.info.name, port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    try:
        await loop.run(stop)
    finally:
        await runner.cleanup()
        await api.close()
        backend.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse flags (they override ``WATTPLANE_AGENT_*``) and run."""
    parser = argparse.ArgumentParser(prog="wattplane-agent", description=__doc__)
    parser.add_argument("--node", help="node name (default: $NODE_NAME)")
    parser.add_argument("--backend", choices=["nvml", "sim"])
    parser.add_argument("--kubeconfig")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    overrides = {
        k: v for k, v in {"node_name": args.node, "backend": args.backend, "kubeconfig": args.kubeconfig}.items() if v
    }
    settings = AgentSettings(**overrides)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not settings.node_name:
        parser.error("no node name: pass --node or set NODE_NAME")
    try:
        return asyncio.run(amain(settings))
    except ConfigError as exc:  # no cluster to talk to: say why, without a traceback
        logger.error("cannot connect to the API server: %s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
