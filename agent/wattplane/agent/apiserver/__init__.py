"""A minimal Kubernetes API client for the node agent: JSON over aiohttp, no generated models.

:mod:`.config` finds the cluster (in-cluster or kubeconfig), :mod:`.credentials` turns that into TLS
and a rotating bearer token, :mod:`.client` sends requests and streams lines, :mod:`.watch` keeps
watches resumable, and :mod:`.errors` says what went wrong. What the agent asks for, and why, is
in :mod:`wattplane.agent.kube`.
"""

from wattplane.agent.apiserver.client import MERGE_PATCH, ApiClient
from wattplane.agent.apiserver.config import ClusterConfig, load_config
from wattplane.agent.apiserver.errors import (
    ApiError,
    ApiUnreachable,
    ConfigError,
    Conflict,
    Forbidden,
    Gone,
    KubeError,
    NotFound,
    Unauthorized,
)
from wattplane.agent.apiserver.watch import ResumableWatch

__all__ = [
    "MERGE_PATCH",
    "ApiClient",
    "ApiError",
    "ApiUnreachable",
    "ClusterConfig",
    "ConfigError",
    "Conflict",
    "Forbidden",
    "Gone",
    "KubeError",
    "NotFound",
    "ResumableWatch",
    "Unauthorized",
    "load_config",
]
