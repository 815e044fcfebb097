"""The agent's API calls on the wire: paths, verbs, headers and bodies, errors, deadlines, config, TLS, tokens.

A small aiohttp server on loopback plays the API server and records every request, so these tests
see exactly what the agent's client (lightkube under :mod:`wattplane.agent.kube`) sends. The real
kube-apiserver runs the same code in tests/controlplane (``test_agent_api_calls.py``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from lightkube import AsyncClient
from wattplane.agent import kube
from wattplane.agent.kube import (
    ApiError,
    ApiUnreachable,
    ConfigError,
    Conflict,
    Gone,
    NodeObjects,
    NotFound,
    api_error,
    load_config,
    make_client,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
GN = "/apis/wattplane.io/v1alpha1/gpunodes"


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeApiServer:
    """Answers with the handler registered for ``(method, path)``; 404 Status otherwise."""

    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    def on(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    def answer(self, method: str, path: str, status: int, body: dict[str, Any]) -> None:
        async def handler(request: web.Request) -> web.StreamResponse:
            return web.json_response(body, status=status)

        self.on(method, path, handler)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(
            Seen(request.method, request.path, dict(request.query), dict(request.headers), await request.read())
        )
        handler = self.routes.get((request.method, request.path))
        if handler is None:
            return web.json_response(status_object(404, "NotFound", f"{request.path} not found"), status=404)
        return await handler(request)


def status_object(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


async def serve(fake: FakeApiServer, ssl_context: ssl.SSLContext | None = None) -> web.AppRunner:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.dispatch)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    host, port = runner.addresses[0][:2]
    fake.url = f"{'https' if ssl_context else 'http'}://{host}:{port}"
    return runner


@pytest.fixture
async def fake() -> AsyncIterator[FakeApiServer]:
    server = FakeApiServer()
    runner = await serve(server)
    try:
        yield server
    finally:
        await runner.cleanup()


def write_kubeconfig(
    path: Path, server: str, *, cluster: dict[str, Any] | None = None, user: dict[str, Any] | None = None
) -> Path:
    """A one-context kubeconfig for ``server``."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "c",
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "agent"}}],
        "clusters": [{"name": "k", "cluster": {"server": server, **(cluster or {})}}],
        "users": [{"name": "agent", "user": user or {}}],
    }
    path.write_text(yaml.safe_dump(doc))
    return path


@contextlib.asynccontextmanager
async def client_for(
    path: Path, server: str, *, cluster: dict[str, Any] | None = None, user: dict[str, Any] | None = None
) -> AsyncIterator[AsyncClient]:
    """The agent's client, made as ``wattplane-agent`` makes it, from a kubeconfig naming ``server``."""
    client = make_client(load_config(write_kubeconfig(path, server, cluster=cluster, user=user)))
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def api(fake: FakeApiServer, tmp_path: Path) -> AsyncIterator[AsyncClient]:
    async with client_for(tmp_path / "kubeconfig", fake.url, user={"token": "secret-token"}) as client:
        yield client


def gpunode(name: str = "n1", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "wattplane.io/v1alpha1", "kind": "GpuNode", "metadata": {"name": name}, "spec": spec}


async def test_a_missing_gpunode_is_created_owned_by_its_node(fake: FakeApiServer, api: AsyncClient) -> None:
    fake.answer("GET", "/api/v1/nodes/n1", 200, {"kind": "Node", "metadata": {"name": "n1", "uid": "node-uid-1"}})

    async def create(request: web.Request) -> web.StreamResponse:
        return web.json_response(await request.json(), status=201)

    fake.on("POST", GN, create)
    created = await NodeObjects(api, "n1").ensure_gpunode()
    assert [(s.method, s.path) for s in fake.seen] == [("GET", f"{GN}/n1"), ("GET", "/api/v1/nodes/n1"), ("POST", GN)]
    post = fake.seen[-1]
    assert post.headers["Content-Type"] == "application/json"
    assert post.headers["Authorization"] == "Bearer secret-token"
    body = json.loads(post.body)
    assert body["apiVersion"] == "wattplane.io/v1alpha1" and body["kind"] == "GpuNode"
    assert body["metadata"]["name"] == "n1"
    assert body["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "wattplane-agent"}
    assert body["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "node-uid-1", "blockOwnerDeletion": False}
    ]
    assert body["spec"] == {}
    assert created == body


async def test_an_existing_gpunode_is_only_read(fake: FakeApiServer, api: AsyncClient) -> None:
    fake.answer("GET", f"{GN}/n1", 200, gpunode(planGeneration=4))
    assert (await NodeObjects(api, "n1").ensure_gpunode())["spec"] == {"planGeneration": 4}
    assert [(s.method, s.path) for s in fake.seen] == [("GET", f"{GN}/n1")]


async def test_a_create_that_lost_a_race_reads_the_winner(fake: FakeApiServer, api: AsyncClient) -> None:
    reads = 0

    async def get(request: web.Request) -> web.StreamResponse:
        nonlocal reads
        reads += 1
        if reads == 1:
            return web.json_response(status_object(404, "NotFound", "not yet"), status=404)
        return web.json_response(gpunode(planGeneration=2))

    fake.on("GET", f"{GN}/n1", get)
    fake.answer("GET", "/api/v1/nodes/n1", 200, {"metadata": {"uid": "u"}})
    fake.answer("POST", GN, 409, status_object(409, "AlreadyExists", 'gpunodes.wattplane.io "n1" already exists'))
    assert (await NodeObjects(api, "n1").ensure_gpunode())["spec"] == {"planGeneration": 2}
    assert [s.method for s in fake.seen] == ["GET", "GET", "POST", "GET"]


async def test_a_refused_read_is_not_mistaken_for_a_missing_object(fake: FakeApiServer, api: AsyncClient) -> None:
    message = 'gpunodes.wattplane.io "n1" is forbidden: User "system:serviceaccount:w:agent" cannot get resource'
    fake.answer("GET", f"{GN}/n1", 403, status_object(403, "Forbidden", message))
    with pytest.raises(ApiError) as caught:
        await NodeObjects(api, "n1").ensure_gpunode()
    assert not isinstance(caught.value, NotFound)
    assert (caught.value.status, caught.value.reason, caught.value.message) == (403, "Forbidden", message)
    assert len(fake.seen) == 1, "nothing is created after a 403"


async def test_a_missing_node_stops_the_create(fake: FakeApiServer, api: AsyncClient) -> None:
    with pytest.raises(NotFound, match="/api/v1/nodes/n1 not found"):
        await NodeObjects(api, "n1").ensure_gpunode()
    assert [s.method for s in fake.seen] == ["GET", "GET"]


async def test_status_is_a_merge_patch_of_the_status_subresource(fake: FakeApiServer, api: AsyncClient) -> None:
    fake.answer("PATCH", f"{GN}/n1/status", 200, gpunode())
    status = {"observedPlanGeneration": 3, "gpus": [{"uuid": "GPU-1", "powerWatts": 101.5}]}
    await NodeObjects(api, "n1").patch_status(status)
    patch = fake.seen[0]
    assert (patch.method, patch.path) == ("PATCH", f"{GN}/n1/status")
    assert patch.headers["Content-Type"] == "application/merge-patch+json"
    assert json.loads(patch.body) == {"status": status}


async def test_pods_are_listed_for_this_node_only(fake: FakeApiServer, api: AsyncClient) -> None:
    pods = [{"metadata": {"name": "p1", "namespace": "a"}}, {"metadata": {"name": "p2", "namespace": "b"}}]
    fake.answer("GET", "/api/v1/pods", 200, {"kind": "PodList", "items": pods})
    assert await NodeObjects(api, "n1").list_pods() == [{"apiVersion": "v1", "kind": "Pod"} | pod for pod in pods]
    assert fake.seen[0].query == {"fieldSelector": "spec.nodeName=n1"}
    fake.answer("GET", "/api/v1/pods", 200, {"kind": "PodList", "metadata": {}, "items": []})
    assert await NodeObjects(api, "n1").list_pods() == []


async def test_pods_keep_the_fields_attribution_reads(fake: FakeApiServer, api: AsyncClient) -> None:
    pod = {
        "metadata": {"name": "p1", "namespace": "a", "uid": "u-1", "annotations": {"wattplane.io/job": "j"}},
        "spec": {
            "nodeName": "n1",
            "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "2"}}}],
        },
        "status": {"phase": "Running"},
    }
    fake.answer("GET", "/api/v1/pods", 200, {"kind": "PodList", "items": [pod]})
    listed = await NodeObjects(api, "n1").list_pods()
    assert listed == [{"apiVersion": "v1", "kind": "Pod"} | pod], "API field names, nothing dropped"


@pytest.mark.parametrize(
    ("status", "reason", "kind"),
    [
        (404, "NotFound", NotFound),
        (409, "AlreadyExists", Conflict),
        (410, "Expired", Gone),
        (500, "Internal", ApiError),
    ],
)
async def test_error_answers_become_typed_errors_with_the_status_message(
    fake: FakeApiServer, api: AsyncClient, status: int, reason: str, kind: type[ApiError]
) -> None:
    fake.answer("GET", f"{GN}/n1", status, status_object(status, reason, f"the message for {status}"))
    with pytest.raises(kind) as caught:
        await NodeObjects(api, "n1").get_gpunode()
    assert type(caught.value) is kind
    assert (caught.value.status, caught.value.reason, caught.value.message) == (
        status,
        reason,
        f"the message for {status}",
    )


async def test_an_error_answer_that_is_not_a_status_is_quoted_shortly(fake: FakeApiServer, api: AsyncClient) -> None:
    async def proxy_error(request: web.Request) -> web.StreamResponse:
        return web.Response(status=502, text="<html>\n  bad   gateway " + "x" * 1000, content_type="text/html")

    fake.on("GET", f"{GN}/n1", proxy_error)
    with pytest.raises(ApiError) as caught:
        await NodeObjects(api, "n1").get_gpunode()
    assert caught.value.status == 502 and caught.value.reason == "Bad Gateway"
    assert caught.value.message.startswith("<html> bad gateway xxx") and len(caught.value.message) == 300


def test_only_the_statuses_the_agent_branches_on_have_classes() -> None:
    assert [type(api_error(code, "", "")) for code in (404, 409, 410, 403, 503)] == [
        NotFound,
        Conflict,
        Gone,
        ApiError,
        ApiError,
    ]


async def test_a_server_that_does_not_answer_times_out(
    fake: FakeApiServer, api: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.json_response({})

    fake.on("GET", f"{GN}/n1", hang)
    monkeypatch.setattr(kube, "REQUEST_TIMEOUT_S", 0.3)
    started = time.monotonic()
    try:
        with pytest.raises(ApiUnreachable, match="GET gpunode n1"):
            await NodeObjects(api, "n1").get_gpunode()
    finally:
        release.set()
    assert time.monotonic() - started < 3.0


async def test_no_server_at_all_is_unreachable_not_a_crash(tmp_path: Path) -> None:
    runner = await serve(FakeApiServer())
    url = runner.addresses[0]
    await runner.cleanup()  # the port is free again: connections are refused
    async with client_for(tmp_path / "kubeconfig", f"http://{url[0]}:{url[1]}") as client:
        with pytest.raises(ApiUnreachable) as caught:
            await NodeObjects(client, "n1").list_pods()
    assert caught.value.__cause__ is not None, "the transport's error is kept as the cause"


async def test_a_rotated_token_file_is_picked_up_when_the_old_token_is_refused(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first\n")

    async def node(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {token_file.read_text().strip()}":
            return web.json_response(status_object(401, "Unauthorized", "Unauthorized"), status=401)
        return web.json_response({"kind": "Node", "metadata": {"name": "n1", "uid": "u"}})

    fake.on("GET", "/api/v1/nodes/n1", node)
    fake.answer("POST", GN, 201, gpunode())
    async with client_for(tmp_path / "kubeconfig", fake.url, user={"tokenFile": str(token_file)}) as client:
        objects = NodeObjects(client, "n1")
        await objects.ensure_gpunode()
        token_file.write_text("second\n")  # the kubelet rotated it, and the old one expired
        await objects.ensure_gpunode()
    nodes = [s.headers.get("Authorization") for s in fake.seen if s.path == "/api/v1/nodes/n1"]
    assert nodes == ["Bearer first", "Bearer first", "Bearer second"]
    assert [s.method for s in fake.seen].count("POST") == 2, "the retried request went through"


# Where the cluster is: an explicit kubeconfig, else the pod's service account, else $KUBECONFIG.


def service_account(tmp_path: Path) -> Path:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("sa-token\n")
    (sa / "namespace").write_text("wattplane-system")
    (sa / "ca.crt").write_text("")
    return sa


def test_in_a_pod_the_service_account_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig", "https://10.0.0.1:6443")))
    sa = service_account(tmp_path)
    cluster = load_config(service_account_dir=sa)
    assert (cluster.server, cluster.source) == ("https://10.96.0.1:443", "in-cluster, context default")
    user = cluster.config.user
    assert user is not None and user.token_file == str(sa / "token"), "the token is read from the file it rotates in"
    assert cluster.config.cluster.certificate_auth == str(sa / "ca.crt")


def test_an_explicit_kubeconfig_wins_over_the_pod_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    path = write_kubeconfig(tmp_path / "kubeconfig", "https://10.0.0.1:6443")
    cluster = load_config(path, service_account_dir=service_account(tmp_path))
    assert cluster.server == "https://10.0.0.1:6443" and cluster.source == f"kubeconfig {path}, context c"


def test_outside_a_pod_kubeconfig_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig", "https://10.0.0.1:6443")))
    assert load_config(service_account_dir=tmp_path / "no-sa").server == "https://10.0.0.1:6443"


def test_no_cluster_at_all_is_a_configuration_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="absent"):
        load_config(service_account_dir=tmp_path / "no-sa")
    with pytest.raises(ConfigError, match="missing"):
        load_config(tmp_path / "missing")


# TLS: a private CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl.


@dataclass
class Pki:
    dir: Path

    def path(self, name: str) -> Path:
        return self.dir / name


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(pki: Path, name: str, cn: str, ext: str) -> None:
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", *curve, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=pki)
    (pki / f"{name}.ext").write_text(ext)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=pki,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "other-ca"):
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2", "-subj", f"/CN={ca}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
            cwd=root,
        )  # fmt: skip
    _issue(root, "server", "127.0.0.1", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _issue(root, "client", "wattplane-agent", "extendedKeyUsage=clientAuth\n")
    return Pki(root)


@pytest.fixture
async def tls_fake(pki: Pki) -> AsyncIterator[FakeApiServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.path("ca.crt")))
    context.load_cert_chain(pki.path("server.crt"), pki.path("server.key"))
    context.verify_mode = ssl.CERT_REQUIRED  # like kube-apiserver with --client-ca-file, here mandatory
    server = FakeApiServer()

    async def whoami(request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(item[0] for item in peer["subject"]) if peer else {}
        return web.json_response({"metadata": {"name": "n1", "uid": f"CN={subject.get('commonName', '')}"}})

    async def echo(request: web.Request) -> web.StreamResponse:
        return web.json_response(await request.json(), status=201)

    server.on("GET", "/api/v1/nodes/n1", whoami)
    server.on("POST", GN, echo)
    runner = await serve(server, context)
    try:
        yield server
    finally:
        await runner.cleanup()


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


async def _whoami(client: AsyncClient) -> str:
    """The name the TLS server saw in the client certificate (put in the GpuNode's owner reference)."""
    created = await NodeObjects(client, "n1").ensure_gpunode()
    return str(created["metadata"]["ownerReferences"][0]["uid"])


async def test_mutual_tls_from_kubeconfig_data(tls_fake: FakeApiServer, pki: Pki) -> None:
    cluster = {"certificate-authority-data": _b64(pki.path("ca.crt"))}
    user = {"client-certificate-data": _b64(pki.path("client.crt")), "client-key-data": _b64(pki.path("client.key"))}
    async with client_for(pki.dir / "kc-data", tls_fake.url, cluster=cluster, user=user) as client:
        assert await _whoami(client) == "CN=wattplane-agent", "the server saw the client certificate"


async def test_mutual_tls_from_kubeconfig_files(tls_fake: FakeApiServer, pki: Pki) -> None:
    cluster = {"certificate-authority": str(pki.path("ca.crt"))}
    user = {"client-certificate": str(pki.path("client.crt")), "client-key": str(pki.path("client.key"))}
    async with client_for(pki.dir / "kc-files", tls_fake.url, cluster=cluster, user=user) as client:
        assert await _whoami(client) == "CN=wattplane-agent"


async def test_a_server_signed_by_another_ca_is_refused(tls_fake: FakeApiServer, pki: Pki) -> None:
    cluster = {"certificate-authority": str(pki.path("other-ca.crt"))}
    user = {"client-certificate": str(pki.path("client.crt")), "client-key": str(pki.path("client.key"))}
    async with client_for(pki.dir / "kc-other", tls_fake.url, cluster=cluster, user=user) as client:
        with pytest.raises(ApiUnreachable, match=r"(?i)certificate verify failed"):
            await NodeObjects(client, "n1").get_gpunode()
    assert tls_fake.seen == []


async def test_insecure_skip_tls_verify_accepts_any_server_certificate(tls_fake: FakeApiServer, pki: Pki) -> None:
    user = {"client-certificate": str(pki.path("client.crt")), "client-key": str(pki.path("client.key"))}
    cluster = {"insecure-skip-tls-verify": True}
    async with client_for(pki.dir / "kc-insecure", tls_fake.url, cluster=cluster, user=user) as client:
        assert await _whoami(client) == "CN=wattplane-agent"


def test_unusable_tls_files_are_a_configuration_error(pki: Pki, tmp_path: Path) -> None:
    server = "https://127.0.0.1:1"
    no_key = write_kubeconfig(tmp_path / "a", server, user={"client-certificate": str(pki.path("client.crt"))})
    with pytest.raises(ConfigError, match="needs its key"):
        make_client(load_config(no_key))
    no_ca = write_kubeconfig(tmp_path / "b", server, cluster={"certificate-authority": str(pki.path("absent.crt"))})
    with pytest.raises(ConfigError, match=r"cannot set up TLS: .*No such file"):
        make_client(load_config(no_ca))
