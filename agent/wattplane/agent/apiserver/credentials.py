"""Turning a :class:`ClusterConfig` into what goes on the wire: a TLS context and a bearer token.

The token may come from a file that changes under the agent: the kubelet rotates projected
service-account tokens (they expire after an hour by default, and the one the chart's agent gets is
bound to its pod and node). :class:`TokenSource` re-reads the file once a minute, as client-go does,
and keeps the last good token if a read fails midway through a rotation.
"""

from __future__ import annotations

import logging
import ssl
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from wattplane.agent.apiserver.config import ClusterConfig
from wattplane.agent.apiserver.errors import ConfigError

logger = logging.getLogger(__name__)

#: How long a token read from a file is used before the file is read again, seconds (client-go: 1 min).
TOKEN_REFRESH_S = 60.0


class TokenSource:
    """The bearer token to send with each request: fixed, or read from a file that rotates."""

    def __init__(
        self,
        token: str | None = None,
        token_file: Path | None = None,
        *,
        refresh_s: float = TOKEN_REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fixed = token
        self._file = token_file
        self._refresh_s = refresh_s
        self._clock = clock
        self._cached: str | None = None
        self._read_at = 0.0

    def token(self) -> str | None:
        """The current token (``None``: send no ``Authorization`` header)."""
        if self._file is None:
            return self._fixed
        now = self._clock()
        if self._cached is not None and now - self._read_at < self._refresh_s:
            return self._cached
        try:
            fresh = self._file.read_text().strip()
        except OSError as exc:
            if self._cached is None:
                raise ConfigError(f"cannot read the token file {self._file}: {exc}") from exc
            logger.warning("cannot re-read the token file %s (%s); using the previous token", self._file, exc)
            return self._cached
        if fresh:
            self._cached = fresh
        elif self._cached is None:
            raise ConfigError(f"the token file {self._file} is empty")
        self._read_at = now
        return self._cached


def ssl_context(config: ClusterConfig) -> ssl.SSLContext | None:
    """The TLS context for ``config.server`` (``None`` for plain ``http://``): CA, client certificate."""
    if not config.server.startswith("https://"):
        return None
    try:
        context = ssl.create_default_context(
            cafile=str(config.ca_file) if config.ca_file else None, cadata=config.ca_data or None
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the cluster CA ({config.ca_file or 'inline data'}): {exc}") from exc
    if config.insecure_skip_tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    has_cert = config.client_cert_file or config.client_cert_data
    has_key = config.client_key_file or config.client_key_data
    if bool(has_cert) != bool(has_key):
        raise ConfigError("a client certificate needs its key, and a key its certificate")
    if has_cert:
        _load_client_certificate(context, config)
    return context


def _load_client_certificate(context: ssl.SSLContext, config: ClusterConfig) -> None:
    # ssl loads certificates only from files: inline data goes to a private directory for the call.
    with tempfile.TemporaryDirectory(prefix="wattplane-tls-") as tmp:
        cert, key = config.client_cert_file, config.client_key_file
        if config.client_cert_data:
            cert = Path(tmp) / "client.crt"
            cert.write_bytes(config.client_cert_data)
        if config.client_key_data:
            key = Path(tmp) / "client.key"
            key.write_bytes(config.client_key_data)
        try:
            context.load_cert_chain(str(cert), str(key))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the client certificate and key: {exc}") from exc
