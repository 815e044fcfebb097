"""kopf handlers: translate watch events into :class:`FleetState` updates, nothing more.

Every handler is a line or two. Deciding happens in the planner, writing in :mod:`reconcile`. The
only handler that waits is the EnergyPolicy finalizer: it holds deletion until a planning round has
written the plans without that policy, so "delete the policy" reliably means "restore the GPUs".
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from typing import Any

import kopf
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from wattplane.api.v1alpha1 import energypolicy, gpunode
from wattplane.carbon.service import CarbonService
from wattplane.grid import ConfigMapBackend, GridService
from wattplane.kube.client import api_client
from wattplane.operator.metrics import registry_for, serve_metrics
from wattplane.operator.observe import JobObserver
from wattplane.operator.reconcile import Reconciler
from wattplane.operator.settings import OperatorSettings
from wattplane.operator.signals import CarbonSignals, SecretReader
from wattplane.operator.state import FleetState

EP = (energypolicy.CRD.group, energypolicy.CRD.version, energypolicy.CRD.plural)
Logger = logging.Logger | logging.LoggerAdapter[Any]
GN = (gpunode.CRD.group, gpunode.CRD.version, gpunode.CRD.plural)


class MetricsPortInUse(kopf.PermanentError):
    """The metrics port is taken: retrying will not help, the operator stops with this message."""


@kopf.on.startup()
async def startup(memo: kopf.Memo, settings: kopf.OperatorSettings, logger: Logger, **_: Any) -> None:
    """Build the shared state and client, tune kopf, start the planning loop."""
    given = memo.get("wattplane_settings")  # set by wattplane-operator (flags applied); else the environment
    ours = given if isinstance(given, OperatorSettings) else OperatorSettings()
    settings.watching.server_timeout = 300  # re-establish watches regularly (kopf#204, #698)
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.posting.level = logging.WARNING
    # A shard's own finalizer: kopf removes its finalizer from every object its filters skip, so
    # shards sharing one name would take each other's off, over and over.
    settings.persistence.finalizer = ours.finalizer
    memo.state = FleetState(node_selector=ours.node_label_selector, policy_selector=ours.policy_label_selector)
    memo.api = await api_client(ours.kubeconfig)
    # The API server names the field manager after the user agent: managedFields then say which
    # operator (which shard) wrote each GpuNode spec and policy status.
    memo.api.user_agent = f"wattplane-operator-{ours.shard}" if ours.shard else "wattplane-operator"
    memo.carbon = CarbonService()
    memo.observer = JobObserver(
        timeout_s=ours.progress_timeout_s,
        pod_energy=memo.state.pod_energy,
        serving_interval_s=ours.serving_scrape_interval_s,
    )
    signals = CarbonSignals(memo.carbon, _secret_reader(memo.api), default_namespace=ours.namespace)
    memo.reconciler = Reconciler(ours, memo.state, memo.api, signals=signals, observer=memo.observer)
    memo.observer.set_serving_listener(memo.reconciler.trigger)
    memo.grid = GridService(
        backend=ConfigMapBackend(memo.api, ours.namespace),
        read_secret=_secret_reader(memo.api),
        default_namespace=ours.namespace,
        measured_watts=memo.reconciler.budget_measured_watts,
        on_change=memo.reconciler.trigger,
    )
    memo.reconciler.grid = memo.grid
    signals.grid_prices = memo.grid.prices
    memo.metrics = None
    if ours.metrics_port:
        try:
            memo.metrics = await serve_metrics(
                registry_for(memo.reconciler, memo.carbon, memo.observer.tokens),
                ours.metrics_host,
                ours.metrics_port,
            )
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise MetricsPortInUse(
                f"metrics port {ours.metrics_port} on {ours.metrics_host} is already in use: set "
                "WATTPLANE_OPERATOR_METRICS_PORT (or --metrics-port) to a free port, or 0 to turn metrics off"
            ) from None
    memo.tasks = [
        asyncio.create_task(memo.reconciler.run(), name="planning-loop"),
        asyncio.create_task(memo.reconciler.run_signals(), name="carbon-feed"),
    ]
    logger.info("wattplane operator started (plan TTL %d s)", ours.plan_ttl_s)
    if ours.shard:
        logger.info(
            "shard %s: nodes %r, policies %r (empty: all)", ours.shard, ours.node_selector, ours.policy_selector
        )


def _secret_reader(api: client.ApiClient) -> SecretReader:
    core = client.CoreV1Api(api)

    async def read(namespace: str, name: str) -> dict[str, str]:
        try:
            secret = await core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            raise LookupError({403: "access denied", 404: "not found"}.get(exc.status, f"HTTP {exc.status}")) from None
        return dict(secret.data or {})

    return read


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Stop the loops and close the clients."""
    for task in memo.tasks:
        task.cancel()
    for task in memo.tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if memo.metrics is not None:
        await memo.metrics.cleanup()
    await memo.observer.close()
    await memo.carbon.close()
    await memo.grid.close()
    await memo.api.close()


def _deleted(event: kopf.RawEvent) -> bool:
    return event["type"] == "DELETED"


@kopf.on.event("", "v1", "pods")
async def pod_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Pods: labels, annotations, node and phase feed selection (a shard replans for its own nodes' pods)."""
    if memo.state.put_pod(event["object"], deleted=_deleted(event)):
        memo.reconciler.trigger()


@kopf.on.event("", "v1", "namespaces")
async def namespace_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Namespaces: their labels feed namespaceSelectors."""
    memo.state.put_namespace(event["object"], deleted=_deleted(event))
    memo.reconciler.trigger()


@kopf.on.event("", "v1", "nodes")
async def node_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Nodes: their labels feed budget node selectors (e.g. a rack label) and a shard's membership."""
    if memo.state.put_node(event["object"], deleted=_deleted(event)):
        memo.reconciler.trigger()  # heartbeats, and other shards' label changes: no replanning


@kopf.on.event(*GN)
async def gpunode_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """GpuNodes: the GPUs agents report and the plans they hold (other shards' only stored)."""
    if memo.state.put_gpunode(event["object"], deleted=_deleted(event)):
        memo.reconciler.trigger()


@kopf.on.event(*EP)
async def policy_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """EnergyPolicies: every change of one of this shard's, including a deletion mark, replans.

    Unfiltered on purpose: a policy whose labels leave the shard must be seen leaving.
    """
    if memo.state.put_policy(event["object"], deleted=_deleted(event)):
        memo.reconciler.trigger()


def _owned_policy(labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> bool:
    """Filter for kopf: this shard's policies get its finalizer; it is removed from one that leaves."""
    owned: bool = memo.state.owns_policy(labels)
    return owned


@kopf.on.delete(*EP, when=_owned_policy)
async def policy_delete(body: kopf.Body, memo: kopf.Memo, logger: Logger, **_: Any) -> None:
    """Hold the finalizer until the plans without this policy are written (GPUs get restored)."""
    memo.state.put_policy(dict(body))  # carries deletionTimestamp: excluded from planning
    await memo.reconciler.round_after_now()
    logger.info("plans without EnergyPolicy %s written; agents restore the GPUs it governed", body["metadata"]["name"])
