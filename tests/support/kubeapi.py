"""Async helpers for tests that drive the real API server like a user with kubectl would."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from kubernetes_asyncio import client, config

T = TypeVar("T")
GROUP, VERSION = "wattplane.io", "v1alpha1"


async def connect(kubeconfig: Path) -> client.ApiClient:
    """An ApiClient for the test cluster."""
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return client.ApiClient(configuration)


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, within_s: float, interval: float = 0.2, what: str = "condition"
) -> tuple[T, float]:
    """Poll ``probe`` until it returns something truthy; return it and the seconds it took."""
    started = time.monotonic()
    last: object = None
    while time.monotonic() - started < within_s:
        try:
            result = await probe()
        except Exception as exc:  # the object may not exist yet
            last = exc
            result = None
        if result:
            return result, time.monotonic() - started
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {within_s} s waiting for {what}; last: {last!r}")


async def create_node(api: client.ApiClient, name: str, *, gpus: int = 4, labels: dict[str, str] | None = None) -> None:
    """A fake node (kwok keeps it Ready) with ``nvidia.com/gpu`` capacity."""
    capacity = {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": str(gpus)}
    body = {
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {"kubernetes.io/hostname": name, "type": "kwok", **(labels or {})},
        },
        "status": {"capacity": capacity, "allocatable": capacity},
    }
    await client.CoreV1Api(api).create_node(body)


async def create_namespace(api: client.ApiClient, name: str, labels: dict[str, str] | None = None) -> None:
    """A namespace with labels."""
    await client.CoreV1Api(api).create_namespace({"metadata": {"name": name, "labels": labels or {}}})


async def create_pod(
    api: client.ApiClient,
    namespace: str,
    name: str,
    *,
    node: str,
    gpus: int,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A pod bound to ``node`` asking for ``gpus`` GPUs (kwok moves it to Running)."""
    body = {
        "metadata": {"name": name, "labels": labels or {}, "annotations": annotations or {}},
        "spec": {
            "nodeName": node,
            "containers": [
                {"name": "main", "image": "example.com/train:1", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}
            ],
        },
    }
    pod = await client.CoreV1Api(api).create_namespaced_pod(namespace, body)
    return dict(api.sanitize_for_serialization(pod))


async def apply_policy(api: client.ApiClient, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Create or replace an EnergyPolicy with strict field validation (like ``kubectl apply``)."""
    custom = client.CustomObjectsApi(api)
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "EnergyPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }
    for attempt in range(10):
        try:
            current = await custom.get_cluster_custom_object(GROUP, VERSION, "energypolicies", name)
        except client.exceptions.ApiException as exc:
            if exc.status != 404:
                raise
            result: dict[str, Any] = await custom.create_cluster_custom_object(
                GROUP, VERSION, "energypolicies", body, field_validation="Strict"
            )
            return result
        # Like ``kubectl apply``: the spec is ours, the operator's finalizer and annotations are kept,
        # and a write that races the operator's own (a 409) is retried on the fresh object.
        meta = current["metadata"]
        body["metadata"] = {"name": name, "resourceVersion": meta["resourceVersion"]} | {
            k: meta[k] for k in ("labels", "annotations", "finalizers") if k in meta
        }
        try:
            result = await custom.replace_cluster_custom_object(
                GROUP, VERSION, "energypolicies", name, body, field_validation="Strict"
            )
            return result
        except client.exceptions.ApiException as exc:
            if exc.status != 409 or attempt == 9:
                raise
    raise AssertionError("unreachable")


async def get_cluster_object(api: client.ApiClient, plural: str, name: str) -> dict[str, Any]:
    """A wattplane object by name."""
    obj: dict[str, Any] = await client.CustomObjectsApi(api).get_cluster_custom_object(GROUP, VERSION, plural, name)
    return obj


async def delete_cluster_object(api: client.ApiClient, plural: str, name: str) -> None:
    """Delete a wattplane object."""
    await client.CustomObjectsApi(api).delete_cluster_custom_object(GROUP, VERSION, plural, name)
