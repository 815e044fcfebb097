"""The agent's view of Kubernetes: its own GpuNode, its node's pods, and nothing else.

RBAC cannot restrict a DaemonSet pod to one object by name, so this module does: every call is
scoped to ``NODE_NAME`` (GET/PATCH by name, watches with a ``metadata.name`` field selector, pod lists
with a ``spec.nodeName`` field selector). The whole surface, which the chart's agent ClusterRole
mirrors verb for verb:

* ``GET    /apis/wattplane.io/v1alpha1/gpunodes/{node}``: read the plan;
* ``GET    /api/v1/nodes/{node}``: the Node's UID, for the owner reference of a new GpuNode;
* ``POST   /apis/wattplane.io/v1alpha1/gpunodes``: create the GpuNode when missing;
* ``PATCH  /apis/wattplane.io/v1alpha1/gpunodes/{node}/status``: the telemetry summary (merge patch);
* ``GET    /apis/wattplane.io/v1alpha1/gpunodes?watch=true&fieldSelector=metadata.name={node}``: new plans;
* ``GET    /api/v1/pods?fieldSelector=spec.nodeName={node}``: the pods bound here (attribution, readiness gate);
* ``PATCH  /api/v1/nodes/{node}``: its own ``power.wattplane.io/*`` labels, the GPUs' power-limit ranges
  (merge patch of ``metadata.labels`` only, see :mod:`wattplane.agent.caplabels`);
* ``PATCH  /api/v1/namespaces/{ns}/pods/{pod}/status``: the ``wattplane.io/power-verified`` condition of
  a pod on this node that asked for it by readiness gate (strategic merge, see :mod:`wattplane.agent.gate`).

The chart's admission policy holds the agent to exactly that: its own Node, its own label prefix, pods
bound to its node, one condition type.

The client is lightkube: it finds the cluster (kubeconfig, or in a pod the mounted CA and
service-account token, re-read when the server answers 401 as the kubelet rotates it), speaks TLS
and decodes objects (the GpuNode as a plain-dict generic resource). What stays here is what the
agent needs beyond that: total deadlines on every request and a read deadline on the watch (a server
that stops talking must not hang the agent), the watch's resume position and bookmarks, and errors
the loop can branch on without knowing the HTTP library (``bench/agent_client_rss.py`` measured this
client against the hand-written one it replaced: both under the 80 MiB goal, a third of the code).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from lightkube import AsyncClient, KubeConfig, SingleConfig
from lightkube import ConfigError as LightkubeConfigError
from lightkube.config.kubeconfig import SERVICE_ACCOUNT
from lightkube.generic_resource import create_global_resource
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.resources.core_v1 import Node, Pod
from lightkube.types import PatchType
from wattplane.api.v1alpha1.gpunode import CRD

logger = logging.getLogger(__name__)

GpuNodeResource = create_global_resource(CRD.group, CRD.version, CRD.kind, CRD.plural)
#: Seconds before a unary request (GET, POST, PATCH, LIST) is abandoned. The agent's objects are small
#: and a healthy API server answers in milliseconds; longer than this is an outage, and the caller's
#: control tick should not wait it out.
REQUEST_TIMEOUT_S = 10.0
#: Seconds of silence tolerated past a watch's own server-side timeout before the stream is dropped.
READ_SLACK_S = 30.0
#: How much of an error body that is not a ``Status`` goes into the message.
_BODY_EXCERPT_CHARS = 300


class KubeError(Exception):
    """Any failure of a request to the API server."""


class ConfigError(KubeError):
    """The kubeconfig or in-cluster environment cannot be turned into a connection."""


class ApiUnreachable(KubeError):
    """No answer: connection refused or reset, TLS failure, timeout (the transport's error is the cause)."""


class ApiError(KubeError):
    """The API server answered with an error: HTTP ``status``, and ``reason`` and ``message`` of its ``Status``."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")
        self.status, self.reason, self.message = status, reason, message


class NotFound(ApiError):
    """404: no such object (or the CRD is not installed)."""


class Conflict(ApiError):
    """409: the object already exists."""


class Gone(ApiError):
    """410: the resource version a watch asked for is too old."""


_BY_STATUS: dict[int, type[ApiError]] = {404: NotFound, 409: Conflict, 410: Gone}


def api_error(status: int, reason: str, message: str) -> ApiError:
    """The typed error for an HTTP status."""
    return _BY_STATUS.get(status, ApiError)(status, reason, message)


@contextlib.asynccontextmanager
async def _request(what: str) -> AsyncIterator[None]:
    """One unary request: abandoned after ``REQUEST_TIMEOUT_S`` in all, its failures as :class:`KubeError`."""
    with _typed_errors(what):
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            yield


@contextlib.contextmanager
def _typed_errors(what: str) -> Iterator[None]:
    """Turn lightkube's and httpx2's exceptions (and deadlines) into :class:`KubeError` subclasses."""
    try:
        yield
    except httpx2.HTTPStatusError as exc:  # lightkube's ApiError is one too
        raise error_from_response(exc.response) from exc
    except (httpx2.HTTPError, TimeoutError) as exc:
        raise ApiUnreachable(f"{what}: {exc.__class__.__name__}: {exc}".rstrip(": ")) from exc


def error_from_response(response: httpx2.Response) -> ApiError:
    """The typed error for an error answer (read): the message of its ``Status`` body when there is one."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        reason, message = str(body.get("reason") or response.reason_phrase), str(body.get("message") or "")
    else:
        reason, message = response.reason_phrase, " ".join(response.text.split())[:_BODY_EXCERPT_CHARS]
    return api_error(response.status_code, reason, message)


@dataclass(frozen=True)
class Cluster:
    """The selected kubeconfig context (or in-cluster settings), and where it came from for logs."""

    config: SingleConfig
    server: str
    source: str


def load_config(
    kubeconfig: str | os.PathLike[str] | None = None, *, service_account_dir: str | Path = SERVICE_ACCOUNT
) -> Cluster:
    """The cluster to talk to: the named kubeconfig, else in-cluster when a token is mounted, else ``$KUBECONFIG``.

    Raises:
        ConfigError: Nothing usable found; the message says what was tried.
    """
    try:
        if kubeconfig is not None:
            source = f"kubeconfig {kubeconfig}"
            config = KubeConfig.from_file(kubeconfig).get()
        else:
            source = "in-cluster or $KUBECONFIG"
            config = KubeConfig.from_env(service_account=service_account_dir).get()
    except (LightkubeConfigError, OSError, KeyError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    if config is None:
        raise ConfigError(f"{source}: no current context")
    user = config.user
    if user and bool(user.client_cert or user.client_cert_data) != bool(user.client_key or user.client_key_data):
        raise ConfigError(f"{source}: a client certificate needs its key, and a key its certificate")
    origin = f"kubeconfig {config.fname}" if config.fname else "in-cluster"
    return Cluster(config, config.cluster.server, f"{origin}, context {config.context_name}")


def make_client(cluster: Cluster) -> AsyncClient:
    """A lightkube client for ``cluster``; connects lazily, :meth:`AsyncClient.close` it.

    Raises:
        ConfigError: The CA or client certificate files cannot be loaded (found at start-up, not on the
            first request).
    """
    try:
        return AsyncClient(cluster.config, timeout=httpx2.Timeout(REQUEST_TIMEOUT_S), trust_env=False)
    except (LightkubeConfigError, OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{cluster.source}: cannot set up TLS: {exc}") from exc


@dataclass(frozen=True)
class PodList:
    """The pods bound to this node, and when (monotonic seconds) the request for them was sent."""

    started: float
    pods: list[dict[str, Any]]


class NodeObjects:
    """This node's GpuNode (GET/CREATE/PATCH status, watch), its Node's labels and its pods (list, status)."""

    def __init__(self, api: AsyncClient, node_name: str, *, watch_timeout_s: int = 300) -> None:
        self.node_name = node_name
        self.watch_timeout_s = watch_timeout_s
        #: Where the next watch starts (``None``: from now, with the current object sent as ``ADDED``).
        self.resource_version: str | None = None
        #: The last pod list that worked: attribution and the readiness gate share it (one LIST, two users).
        self.last_pod_list: PodList | None = None
        self._api = api

    async def ensure_gpunode(self) -> dict[str, Any]:
        """Return this node's GpuNode, creating it (owned by the Node) when missing."""
        with contextlib.suppress(NotFound):
            return await self.get_gpunode()
        async with _request(f"GET node {self.node_name}"):
            node = await self._api.get(Node, self.node_name)
        uid = node.metadata.uid if node.metadata else None
        if not uid:
            raise KubeError(f"node {self.node_name} has no uid")
        owner = OwnerReference(apiVersion="v1", kind="Node", name=self.node_name, uid=uid, blockOwnerDeletion=False)
        labels = {"app.kubernetes.io/managed-by": "wattplane-agent"}
        metadata = ObjectMeta(name=self.node_name, labels=labels, ownerReferences=[owner])
        try:
            async with _request(f"POST gpunode {self.node_name}"):
                created = await self._api.create(GpuNodeResource(metadata=metadata, spec={}))
        except Conflict:  # raced with ourselves after a restart
            return await self.get_gpunode()
        logger.info("created GpuNode %s", self.node_name)
        return dict(created)

    async def get_gpunode(self) -> dict[str, Any]:
        """This node's GpuNode object."""
        async with _request(f"GET gpunode {self.node_name}"):
            return dict(await self._api.get(GpuNodeResource, self.node_name))

    async def watch_gpunode(self) -> AsyncIterator[dict[str, Any]]:
        """Watch events (``{"type": ..., "object": ...}``) of this node's GpuNode, until the server ends it.

        The next call resumes after the last event seen, bookmarks included, so changes between two
        watches arrive exactly once and an unchanged object is not sent again; bookmarks themselves are
        not yielded. The first call, and the one after an expired resource version (410 Gone, typically
        after an API server restart), starts from now with the current object as ``ADDED`` (the relist).
        A second expiry in a row, and any other failure, is raised for the caller to retry with backoff.
        """
        relisted = False
        while True:
            try:
                async for event in self._watch_once():
                    yield event
                return
            except Gone as exc:
                if relisted or self.resource_version is None:
                    raise
                logger.info("GpuNode watch: %s; starting over from the current state", exc)
                self.resource_version, relisted = None, True

    async def _watch_once(self) -> AsyncIterator[dict[str, Any]]:
        # lightkube's public watch() reconnects forever, cannot ask for bookmarks and has no read
        # deadline: one watch request is built with its request builder and sent by hand.
        params = {
            "fieldSelector": f"metadata.name={self.node_name}",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": self.watch_timeout_s,
            "resourceVersion": self.resource_version,
        }
        generic = self._api._client
        request = generic.prepare_request("list", res=GpuNodeResource, watch=True, params=params)
        request.timeout = httpx2.Timeout(REQUEST_TIMEOUT_S, read=self.watch_timeout_s + READ_SLACK_S)
        with _typed_errors(f"watch gpunode {self.node_name}"):
            response = await generic.send(generic.build_adapter_request(request), stream=True)  # type: ignore[no-untyped-call]
            try:
                if response.status_code >= 400:
                    await response.aread()
                    raise error_from_response(response)
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    kind, obj = parse_event(line)
                    version = (obj.get("metadata") or {}).get("resourceVersion")
                    if version:
                        self.resource_version = str(version)
                    if kind != "BOOKMARK":
                        yield {"type": kind, "object": obj}
            finally:
                await response.aclose()

    async def patch_status(self, status: dict[str, Any]) -> None:
        """Merge-patch ``status`` (lists are replaced whole, which is what a summary wants)."""
        async with _request(f"PATCH gpunode {self.node_name} status"):
            await self._api.patch(
                GpuNodeResource.Status, self.node_name, {"status": status}, patch_type=PatchType.MERGE
            )

    async def list_pods(self) -> list[dict[str, Any]]:
        """Pods bound to this node, as plain dicts (kept in :attr:`last_pod_list` too)."""
        started = time.monotonic()
        async with _request(f"LIST pods on {self.node_name}"):
            pods = self._api.list(Pod, namespace="*", fields={"spec.nodeName": self.node_name})
            listed = [pod.to_dict() async for pod in pods]
        self.last_pod_list = PodList(started, listed)
        return listed

    async def get_node_labels(self) -> dict[str, str]:
        """The labels of this node's Node object."""
        async with _request(f"GET node {self.node_name}"):
            node = await self._api.get(Node, self.node_name)
        return dict((node.metadata.labels if node.metadata else None) or {})

    async def patch_node_labels(self, changes: Mapping[str, str | None]) -> None:
        """Merge-patch labels of this node's Node: a value sets a label, ``None`` removes it; others stay."""
        async with _request(f"PATCH node {self.node_name} labels"):
            await self._api.patch(
                Node, self.node_name, {"metadata": {"labels": dict(changes)}}, patch_type=PatchType.MERGE
            )

    async def patch_pod_condition(self, namespace: str, name: str, uid: str, condition: Mapping[str, Any]) -> None:
        """Set one condition of a pod's status, by type, leaving the pod's other conditions alone.

        A strategic merge patch: ``status.conditions`` merges on ``type``, so only the entry of
        ``condition["type"]`` is added or replaced. The pod's ``uid`` rides along as a precondition: a pod
        deleted and created again under the same name is another pod, and the server refuses the write
        (422, ``metadata.uid`` is immutable) instead of putting one pod's verdict on the other.
        """
        body = {"metadata": {"uid": uid}, "status": {"conditions": [dict(condition)]}}
        async with _request(f"PATCH pod {namespace}/{name} status"):
            await self._api.patch(Pod.Status, name, body, namespace=namespace, patch_type=PatchType.STRATEGIC)


def parse_event(line: str | bytes) -> tuple[str, dict[str, Any]]:
    """One watch line as ``(type, object)``; an ``ERROR`` event is raised as the typed error it carries.

    Raises:
        ApiError: The line is an ``ERROR`` event (a :class:`Gone` for an expired resource version).
        KubeError: The line is not a watch event.
    """
    try:
        event = json.loads(line)
    except ValueError as exc:
        raise KubeError(f"watch line is not JSON: {line[:200]!r}") from exc
    if (
        not isinstance(event, dict)
        or not isinstance(event.get("type"), str)
        or not isinstance(event.get("object"), dict)
    ):
        raise KubeError(f"watch line is not an event: {str(line)[:200]}")
    if event["type"] == "ERROR":
        status = event["object"]
        code = status.get("code")
        code = code if isinstance(code, int) and code > 0 else 500
        raise api_error(code, str(status.get("reason") or ""), str(status.get("message") or ""))
    return event["type"], event["object"]
