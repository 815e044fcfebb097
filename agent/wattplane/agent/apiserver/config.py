"""Where the API server is and how to authenticate: in-cluster, or from a kubeconfig.

The rules are client-go's, for the subset the agent needs:

* **In a pod** (``KUBERNETES_SERVICE_HOST`` set and no kubeconfig named): the service's address, the
  mounted CA, and the mounted service-account token, which is re-read as it rotates (projected
  tokens expire; the kubelet replaces the file).
* **Otherwise** the kubeconfig: the named file, else every file in ``$KUBECONFIG`` merged (the first
  file to define a name or the current context wins), else ``~/.kube/config``. The current context
  (or the one asked for) picks a cluster (``server``, ``certificate-authority[-data]``,
  ``insecure-skip-tls-verify``, ``tls-server-name``) and a user (``token``, ``tokenFile``,
  ``client-certificate[-data]``, ``client-key[-data]``). Relative paths are relative to the file that
  names them.

Credential plugins (``exec``, ``auth-provider``) and basic auth are refused with a clear error rather
than silently sending no credentials: the agent runs in-cluster, and its tests use tokens.

Reading files is kept apart from :func:`config_from_kubeconfigs`, which is pure and tested on
documents in memory.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from wattplane.agent.apiserver.errors import ConfigError

#: Where the kubelet mounts a pod's service-account token, CA and namespace.
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class ClusterConfig:
    """One API server and the credentials to present to it (secrets are kept out of ``repr``)."""

    server: str
    """Base URL, ``https://host:port`` (a path prefix is kept)."""
    ca_file: Path | None = None
    """PEM bundle to verify the server with (none: the system's trust store)."""
    ca_data: str | None = field(default=None, repr=False)
    """The same, inline (PEM text)."""
    insecure_skip_tls_verify: bool = False
    """Do not verify the server's certificate at all (test clusters only)."""
    tls_server_name: str | None = None
    """Name to verify the server's certificate against, when it differs from the host in ``server``."""
    token: str | None = field(default=None, repr=False)
    """A fixed bearer token."""
    token_file: Path | None = None
    """A file holding the bearer token, re-read periodically (wins over ``token``, as in client-go)."""
    client_cert_file: Path | None = None
    """PEM client certificate (mutual TLS)."""
    client_cert_data: bytes | None = field(default=None, repr=False)
    """The same, inline."""
    client_key_file: Path | None = None
    """PEM key of the client certificate."""
    client_key_data: bytes | None = field(default=None, repr=False)
    """The same, inline."""
    source: str = ""
    """Where this came from, for logs (``in-cluster``, or the kubeconfig and context)."""


def load_config(
    kubeconfig: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
    home: Path | None = None,
) -> ClusterConfig:
    """The cluster this process should talk to: in-cluster unless a kubeconfig is named or none applies.

    Args:
        kubeconfig: An explicit kubeconfig file (``--kubeconfig``); it must exist.
        environ: The environment (``os.environ`` by default; tests pass their own).
        service_account_dir: Where the pod's token and CA are mounted.
        home: Home directory for ``~/.kube/config`` (the user's by default).
    """
    env = os.environ if environ is None else environ
    if kubeconfig is None and env.get("KUBERNETES_SERVICE_HOST"):
        return incluster_config(env, service_account_dir)
    paths = kubeconfig_paths(kubeconfig, env, home if home is not None else Path.home())
    return config_from_kubeconfigs(read_kubeconfigs(paths, required=kubeconfig is not None))


def incluster_config(environ: Mapping[str, str], service_account_dir: Path = SERVICE_ACCOUNT_DIR) -> ClusterConfig:
    """The API server as a pod sees it: the ``kubernetes`` service, the mounted CA and token."""
    host = environ.get("KUBERNETES_SERVICE_HOST", "")
    port = environ.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise ConfigError("in-cluster configuration needs KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT")
    token_file, ca_file = service_account_dir / "token", service_account_dir / "ca.crt"
    for path in (token_file, ca_file):
        if not path.is_file():
            raise ConfigError(f"in-cluster configuration: {path} is missing (is a service-account token mounted?)")
    if ":" in host and not host.startswith("["):  # an IPv6 address
        host = f"[{host}]"
    return ClusterConfig(server=f"https://{host}:{port}", ca_file=ca_file, token_file=token_file, source="in-cluster")


def kubeconfig_paths(explicit: str | os.PathLike[str] | None, environ: Mapping[str, str], home: Path) -> list[Path]:
    """The kubeconfig files to read, in precedence order."""
    if explicit is not None:
        return [Path(explicit).expanduser()]
    listed = [Path(p).expanduser() for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    return listed or [home / ".kube" / "config"]


def read_kubeconfigs(paths: Sequence[Path], *, required: bool = False) -> list[tuple[Path, Mapping[str, Any]]]:
    """Parse the kubeconfig files that exist (all of them when ``required``), keeping where each came from."""
    docs: list[tuple[Path, Mapping[str, Any]]] = []
    for path in paths:
        if not path.is_file():
            if required:
                raise ConfigError(f"kubeconfig {path} does not exist")
            continue
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read kubeconfig {path}: {exc}") from exc
        if not isinstance(doc, Mapping):
            raise ConfigError(f"kubeconfig {path} is not a mapping")
        docs.append((path.resolve(), doc))
    if not docs:
        raise ConfigError(f"no kubeconfig found (looked at {', '.join(str(p) for p in paths)}) and not in a cluster")
    return docs


def config_from_kubeconfigs(
    docs: Sequence[tuple[Path, Mapping[str, Any]]], context: str | None = None
) -> ClusterConfig:
    """Resolve the current (or given) context of merged kubeconfig documents into a :class:`ClusterConfig`.

    Args:
        docs: ``(file path, parsed document)`` pairs in precedence order; relative paths in a
            document are resolved against its file's directory.
        context: The context to use instead of ``current-context``.
    """
    name = context or next((str(d["current-context"]) for _, d in docs if d.get("current-context")), "")
    if not name:
        raise ConfigError("kubeconfig has no current-context")
    ctx, _ = _named(docs, "contexts", "context", name)
    if ctx is None:
        raise ConfigError(f"kubeconfig has no context named {name!r}")
    cluster_name, user_name = str(ctx.get("cluster") or ""), str(ctx.get("user") or "")
    cluster, cluster_dir = _named(docs, "clusters", "cluster", cluster_name)
    if cluster is None:
        raise ConfigError(f"kubeconfig context {name!r} names cluster {cluster_name!r}, which is not defined")
    user, user_dir = _named(docs, "users", "user", user_name) if user_name else ({}, cluster_dir)
    if user is None:
        raise ConfigError(f"kubeconfig context {name!r} names user {user_name!r}, which is not defined")
    for unsupported in ("exec", "auth-provider", "username", "password"):
        if user.get(unsupported):
            raise ConfigError(
                f"kubeconfig user {user_name!r} uses {unsupported!r}, which the agent's client does not support;"
                " use a token, a token file or a client certificate"
            )
    server = str(cluster.get("server") or "").rstrip("/")
    if not server.startswith(("https://", "http://")):
        raise ConfigError(f"kubeconfig cluster {cluster_name!r} has no http(s) server URL: {server!r}")
    insecure = bool(cluster.get("insecure-skip-tls-verify", False))
    ca_file = _path(cluster.get("certificate-authority"), cluster_dir)
    ca_data = _b64(cluster.get("certificate-authority-data"), "certificate-authority-data")
    if insecure and (ca_file or ca_data):
        raise ConfigError(f"kubeconfig cluster {cluster_name!r}: a CA and insecure-skip-tls-verify exclude each other")
    return ClusterConfig(
        server=server,
        ca_file=ca_file,
        ca_data=ca_data.decode("ascii", "replace") if ca_data else None,
        insecure_skip_tls_verify=insecure,
        tls_server_name=str(cluster["tls-server-name"]) if cluster.get("tls-server-name") else None,
        token=str(user["token"]) if user.get("token") else None,
        token_file=_path(user.get("tokenFile"), user_dir),
        client_cert_file=_path(user.get("client-certificate"), user_dir),
        client_cert_data=_b64(user.get("client-certificate-data"), "client-certificate-data"),
        client_key_file=_path(user.get("client-key"), user_dir),
        client_key_data=_b64(user.get("client-key-data"), "client-key-data"),
        source=f"kubeconfig {docs[0][0]} context {name}",
    )


def _named(
    docs: Sequence[tuple[Path, Mapping[str, Any]]], section: str, key: str, name: str
) -> tuple[Mapping[str, Any] | None, Path]:
    """The first entry called ``name`` in ``section`` across the documents, and its file's directory."""
    for path, doc in docs:
        for entry in doc.get(section) or []:
            if isinstance(entry, Mapping) and entry.get("name") == name:
                body = entry.get(key) or {}
                if not isinstance(body, Mapping):
                    raise ConfigError(f"kubeconfig {path}: {section} entry {name!r} is not a mapping")
                return body, path.parent
    return None, docs[0][0].parent


def _path(value: object, base: Path) -> Path | None:
    if not value:
        return None
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else base / path


def _b64(value: object, what: str) -> bytes | None:
    if not value:
        return None
    try:
        return base64.b64decode("".join(str(value).split()), validate=True)  # line breaks are tolerated
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"kubeconfig {what} is not valid base64: {exc}") from exc
