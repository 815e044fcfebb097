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
* ``GET    /api/v1/pods?fieldSelector=spec.nodeName={node}``: the pods bound here (simulated attribution).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from wattplane.agent.apiserver import MERGE_PATCH, ApiClient, Conflict, NotFound, ResumableWatch
from wattplane.api.v1alpha1.gpunode import CRD

logger = logging.getLogger(__name__)

GPUNODES = f"/apis/{CRD.group}/{CRD.version}/{CRD.plural}"


class NodeObjects:
    """GET/CREATE/PATCH of this node's GpuNode, a watch on it, and a list of the pods bound to this node."""

    def __init__(self, api: ApiClient, node_name: str, *, watch_timeout_s: int = 300) -> None:
        self.node_name = node_name
        self._api = api
        self._name = quote(node_name, safe="")
        self._watch = ResumableWatch(
            api, GPUNODES, field_selector=f"metadata.name={node_name}", timeout_s=watch_timeout_s
        )

    async def ensure_gpunode(self) -> dict[str, Any]:
        """Return this node's GpuNode, creating it (owned by the Node) when missing."""
        with contextlib.suppress(NotFound):
            return await self.get_gpunode()
        node = await self._api.request("GET", f"/api/v1/nodes/{self._name}")
        body = {
            "apiVersion": CRD.api_version,
            "kind": CRD.kind,
            "metadata": {
                "name": self.node_name,
                "labels": {"app.kubernetes.io/managed-by": "wattplane-agent"},
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "Node",
                        "name": self.node_name,
                        "uid": node["metadata"]["uid"],
                        "blockOwnerDeletion": False,
                    }
                ],
            },
            "spec": {},
        }
        try:
            created = await self._api.request("POST", GPUNODES, body=body)
        except Conflict:  # raced with ourselves after a restart
            return await self.get_gpunode()
        logger.info("created GpuNode %s", self.node_name)
        return created

    async def get_gpunode(self) -> dict[str, Any]:
        """This node's GpuNode object."""
        return await self._api.request("GET", f"{GPUNODES}/{self._name}")

    async def watch_gpunode(self) -> AsyncIterator[dict[str, Any]]:
        """Watch events (``{"type": ..., "object": ...}``) of this node's GpuNode, until the server ends it.

        The next call resumes after the last event seen (see :class:`ResumableWatch`); the first one,
        and the one after an expired resource version, starts with the current object as ``ADDED``.
        """
        events = self._watch.events()
        async with contextlib.aclosing(events):
            async for event in events:
                yield event

    async def patch_status(self, status: dict[str, Any]) -> None:
        """Merge-patch ``status`` (lists are replaced whole, which is what a summary wants)."""
        await self._api.request(
            "PATCH", f"{GPUNODES}/{self._name}/status", body={"status": status}, content_type=MERGE_PATCH
        )

    async def list_pods(self) -> list[dict[str, Any]]:
        """Pods bound to this node, as plain dicts."""
        payload = await self._api.request(
            "GET", "/api/v1/pods", params={"fieldSelector": f"spec.nodeName={self.node_name}"}
        )
        items: list[dict[str, Any]] = payload.get("items") or []
        return items
