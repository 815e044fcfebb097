"""The agent's view of Kubernetes: its own GpuNode, its node's pods, and nothing else.

RBAC cannot restrict a DaemonSet pod to one object by name, so this module does: every call is
scoped to ``NODE_NAME`` (GET/PATCH by name, watches with a ``metadata.name`` field selector, pod lists
with a ``spec.nodeName`` field selector).
"""

from __future__ import annotations

import logging
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from wattplane.api.v1alpha1.gpunode import CRD

logger = logging.getLogger(__name__)


class NodeObjects:
    """GET/CREATE/PATCH of this node's GpuNode, and a list of the pods bound to this node."""

    def __init__(self, api: client.ApiClient, node_name: str) -> None:
        self.node_name = node_name
        self._custom = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)

    async def ensure_gpunode(self) -> dict[str, Any]:
        """Return this node's GpuNode, creating it (owned by the Node) when missing."""
        try:
            return await self.get_gpunode()
        except ApiException as exc:
            if exc.status != 404:
                raise
        node = await self._core.read_node(self.node_name)
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
                        "uid": node.metadata.uid,
                        "blockOwnerDeletion": False,
                    }
                ],
            },
            "spec": {},
        }
        try:
            created: dict[str, Any] = await self._custom.create_cluster_custom_object(
                CRD.group, CRD.version, CRD.plural, body
            )
            logger.info("created GpuNode %s", self.node_name)
            return created
        except ApiException as exc:
            if exc.status == 409:  # raced with ourselves after a restart
                return await self.get_gpunode()
            raise

    async def get_gpunode(self) -> dict[str, Any]:
        """This node's GpuNode object."""
        obj: dict[str, Any] = await self._custom.get_cluster_custom_object(
            CRD.group, CRD.version, CRD.plural, self.node_name
        )
        return obj

    async def patch_status(self, status: dict[str, Any]) -> None:
        """Merge-patch ``status`` (lists are replaced whole, which is what a summary wants)."""
        await self._custom.patch_cluster_custom_object_status(
            CRD.group,
            CRD.version,
            CRD.plural,
            self.node_name,
            {"status": status},
            _content_type="application/merge-patch+json",
        )

    async def list_pods(self) -> list[dict[str, Any]]:
        """Pods bound to this node, as plain dicts."""
        result = await self._core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={self.node_name}", _preload_content=False
        )
        payload: dict[str, Any] = await result.json()
        items: list[dict[str, Any]] = payload.get("items", [])
        return items
