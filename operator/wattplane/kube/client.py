"""Build a kubernetes_asyncio ApiClient the way every Kubernetes tool does.

In a pod: the mounted service-account token. Elsewhere: ``--kubeconfig``, then ``$KUBECONFIG``, then
``~/.kube/config``. Timeouts are set on the client so no request can hang a control loop forever.
"""

from __future__ import annotations

import os

from kubernetes_asyncio import client, config

#: Seconds before any single API request is abandoned (watches pass their own timeouts).
REQUEST_TIMEOUT_S = 30


async def api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """An ApiClient for the cluster this process runs in (or the one ``kubeconfig`` names)."""
    configuration = client.Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)
    else:
        await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return client.ApiClient(configuration)
