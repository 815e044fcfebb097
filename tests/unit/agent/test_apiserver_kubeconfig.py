"""The agent's client finds its cluster as client-go would: in-cluster, or the kubeconfig's current context."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from wattplane.agent.apiserver.config import (
    ClusterConfig,
    config_from_kubeconfigs,
    kubeconfig_paths,
    load_config,
)
from wattplane.agent.apiserver.errors import ConfigError

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def kubeconfig(
    *,
    current: str = "dev",
    clusters: dict[str, dict[str, Any]] | None = None,
    users: dict[str, dict[str, Any]] | None = None,
    contexts: dict[str, tuple[str, str]] | None = None,
) -> dict[str, Any]:
    clusters = {"c1": {"server": "https://10.0.0.1:6443"}} if clusters is None else clusters
    users = {"u1": {"token": "t-1"}} if users is None else users
    contexts = {"dev": ("c1", "u1")} if contexts is None else contexts
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": current,
        "clusters": [{"name": n, "cluster": c} for n, c in clusters.items()],
        "users": [{"name": n, "user": u} for n, u in users.items()],
        "contexts": [{"name": n, "context": {"cluster": c, "user": u}} for n, (c, u) in contexts.items()],
    }


def one(doc: dict[str, Any], where: Path = Path("/home/me/.kube/config")) -> ClusterConfig:
    return config_from_kubeconfigs([(where, doc)])


def test_current_context_picks_server_and_token() -> None:
    doc = kubeconfig(
        current="prod",
        clusters={"c1": {"server": "https://10.0.0.1:6443"}, "c2": {"server": "https://prod.example:443/"}},
        users={"u1": {"token": "t-1"}, "u2": {"token": "t-2"}},
        contexts={"dev": ("c1", "u1"), "prod": ("c2", "u2")},
    )
    config = one(doc)
    assert (config.server, config.token) == ("https://prod.example:443", "t-2")
    assert config.source.endswith("context prod")
    assert "t-2" not in repr(config), "secrets must stay out of logs"


def test_an_explicit_context_overrides_the_current_one() -> None:
    doc = kubeconfig(
        clusters={"c1": {"server": "https://a:1"}, "c2": {"server": "https://b:2"}},
        contexts={"dev": ("c1", "u1"), "other": ("c2", "u1")},
    )
    assert config_from_kubeconfigs([(Path("/k"), doc)], context="other").server == "https://b:2"


def test_relative_files_are_relative_to_the_kubeconfig_that_names_them() -> None:
    doc = kubeconfig(
        clusters={"c1": {"server": "https://a:1", "certificate-authority": "certs/ca.crt"}},
        users={"u1": {"client-certificate": "me.crt", "client-key": "/abs/me.key", "tokenFile": "tok"}},
    )
    config = one(doc, Path("/etc/wattplane/kubeconfig"))
    assert config.ca_file == Path("/etc/wattplane/certs/ca.crt")
    assert config.client_cert_file == Path("/etc/wattplane/me.crt")
    assert config.client_key_file == Path("/abs/me.key")
    assert config.token_file == Path("/etc/wattplane/tok")


def test_inline_data_is_base64_decoded() -> None:
    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    doc = kubeconfig(
        clusters={"c1": {"server": "https://a:1", "certificate-authority-data": b64(PEM.encode())}},
        users={"u1": {"client-certificate-data": b64(b"CERT"), "client-key-data": b64(b"KEY")}},
    )
    config = one(doc)
    assert config.ca_data == PEM
    assert (config.client_cert_data, config.client_key_data) == (b"CERT", b"KEY")
    assert config.token is None


def test_insecure_skip_tls_verify_and_tls_server_name_are_kept() -> None:
    doc = kubeconfig(
        clusters={"c1": {"server": "https://a:1", "insecure-skip-tls-verify": True, "tls-server-name": "api.internal"}}
    )
    config = one(doc)
    assert config.insecure_skip_tls_verify is True
    assert config.tls_server_name == "api.internal"


def test_the_first_file_to_define_a_name_wins_when_kubeconfigs_merge() -> None:
    first = {
        "clusters": [{"name": "c1", "cluster": {"server": "https://first:1"}}],
        "users": [],
        "contexts": [],
    }
    second = kubeconfig(clusters={"c1": {"server": "https://second:2"}}, users={"u1": {"token": "from-second"}})
    config = config_from_kubeconfigs([(Path("/a/config"), first), (Path("/b/config"), second)])
    assert (config.server, config.token) == ("https://first:1", "from-second")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (kubeconfig(current=""), "no current-context"),
        (kubeconfig(current="nope"), "no context named 'nope'"),
        (kubeconfig(contexts={"dev": ("missing", "u1")}), "cluster 'missing'"),
        (kubeconfig(contexts={"dev": ("c1", "missing")}), "user 'missing'"),
        (kubeconfig(users={"u1": {"exec": {"command": "aws"}}}), "'exec'"),
        (kubeconfig(users={"u1": {"auth-provider": {"name": "gcp"}}}), "'auth-provider'"),
        (kubeconfig(users={"u1": {"username": "a", "password": "b"}}), "'username'"),
        (kubeconfig(clusters={"c1": {"server": "10.0.0.1:6443"}}), "no http(s) server URL"),
        (
            kubeconfig(
                clusters={
                    "c1": {"server": "https://a:1", "insecure-skip-tls-verify": True, "certificate-authority": "/ca"}
                }
            ),
            "exclude each other",
        ),
        (kubeconfig(clusters={"c1": {"server": "https://a:1", "certificate-authority-data": "not base64!"}}), "base64"),
    ],
)
def test_unusable_kubeconfigs_are_refused_with_the_reason(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        one(doc)


def test_kubeconfig_lookup_order(tmp_path: Path) -> None:
    env = {"KUBECONFIG": os.pathsep.join(["/a", "", "/b"])}
    assert kubeconfig_paths("/explicit", env, tmp_path) == [Path("/explicit")]
    assert kubeconfig_paths(None, env, tmp_path) == [Path("/a"), Path("/b")]
    assert kubeconfig_paths(None, {}, tmp_path) == [tmp_path / ".kube" / "config"]


def test_load_config_reads_files_and_skips_missing_ones_in_kubeconfig(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(kubeconfig()))
    env = {"KUBECONFIG": os.pathsep.join([str(tmp_path / "absent"), str(path)])}
    assert load_config(environ=env, home=tmp_path).token == "t-1"
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent", environ={})
    with pytest.raises(ConfigError, match="no kubeconfig found"):
        load_config(environ={}, home=tmp_path / "nobody")


def service_account(tmp_path: Path) -> Path:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("sa-token\n")
    (sa / "ca.crt").write_text(PEM)
    return sa


def test_in_a_pod_the_service_account_is_used(tmp_path: Path) -> None:
    sa = service_account(tmp_path)
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    config = load_config(environ=env, service_account_dir=sa)
    assert config.server == "https://10.96.0.1:443"
    assert (config.ca_file, config.token_file, config.token) == (sa / "ca.crt", sa / "token", None)
    assert config.source == "in-cluster"


def test_in_cluster_ipv6_hosts_are_bracketed(tmp_path: Path) -> None:
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    assert load_config(environ=env, service_account_dir=service_account(tmp_path)).server == "https://[fd00::1]:443"


def test_an_explicit_kubeconfig_wins_over_the_pod_environment(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(kubeconfig()))
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert load_config(str(path), environ=env, service_account_dir=service_account(tmp_path)).server == (
        "https://10.0.0.1:6443"
    )


def test_in_cluster_without_a_mounted_token_says_so(tmp_path: Path) -> None:
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    with pytest.raises(ConfigError, match="service-account token mounted"):
        load_config(environ=env, service_account_dir=tmp_path)
    with pytest.raises(ConfigError, match="KUBERNETES_SERVICE_PORT"):
        load_config(environ={"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, service_account_dir=service_account(tmp_path))
