"""The agent's API calls on the wire: paths, verbs, headers and bodies, errors, deadlines, TLS and tokens.

A small aiohttp server on loopback plays the API server and records every request, so these tests
see exactly what the agent sends. (The real kube-apiserver runs the same code in tests/controlplane.)
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from wattplane.agent.apiserver import ApiClient, ApiUnreachable, ClusterConfig, ConfigError, Forbidden, NotFound
from wattplane.agent.apiserver.config import config_from_kubeconfigs
from wattplane.agent.apiserver.credentials import TokenSource
from wattplane.agent.kube import NodeObjects

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


@pytest.fixture
async def api(fake: FakeApiServer) -> AsyncIterator[ApiClient]:
    async with ApiClient(ClusterConfig(server=fake.url, token="secret-token"), request_timeout_s=2.0) as client:
        yield client


def gpunode(name: str = "n1", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "wattplane.io/v1alpha1", "kind": "GpuNode", "metadata": {"name": name}, "spec": spec}


async def test_a_missing_gpunode_is_created_owned_by_its_node(fake: FakeApiServer, api: ApiClient) -> None:
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


async def test_an_existing_gpunode_is_only_read(fake: FakeApiServer, api: ApiClient) -> None:
    fake.answer("GET", f"{GN}/n1", 200, gpunode(planGeneration=4))
    assert (await NodeObjects(api, "n1").ensure_gpunode())["spec"] == {"planGeneration": 4}
    assert [(s.method, s.path) for s in fake.seen] == [("GET", f"{GN}/n1")]
    assert fake.seen[0].headers["Accept"] == "application/json"


async def test_a_create_that_lost_a_race_reads_the_winner(fake: FakeApiServer, api: ApiClient) -> None:
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


async def test_a_refused_read_is_not_mistaken_for_a_missing_object(fake: FakeApiServer, api: ApiClient) -> None:
    message = 'gpunodes.wattplane.io "n1" is forbidden: User "system:serviceaccount:w:agent" cannot get resource'
    fake.answer("GET", f"{GN}/n1", 403, status_object(403, "Forbidden", message))
    with pytest.raises(Forbidden) as caught:
        await NodeObjects(api, "n1").ensure_gpunode()
    assert caught.value.status == 403 and caught.value.message == message
    assert len(fake.seen) == 1, "nothing is created after a 403"


async def test_a_missing_node_stops_the_create(fake: FakeApiServer, api: ApiClient) -> None:
    with pytest.raises(NotFound, match="/api/v1/nodes/n1 not found"):
        await NodeObjects(api, "n1").ensure_gpunode()
    assert [s.method for s in fake.seen] == ["GET", "GET"]


async def test_status_is_a_merge_patch_of_the_status_subresource(fake: FakeApiServer, api: ApiClient) -> None:
    fake.answer("PATCH", f"{GN}/n1/status", 200, gpunode())
    status = {"observedPlanGeneration": 3, "gpus": [{"uuid": "GPU-1", "powerWatts": 101.5}]}
    await NodeObjects(api, "n1").patch_status(status)
    patch = fake.seen[0]
    assert (patch.method, patch.path) == ("PATCH", f"{GN}/n1/status")
    assert patch.headers["Content-Type"] == "application/merge-patch+json"
    assert json.loads(patch.body) == {"status": status}


async def test_pods_are_listed_for_this_node_only(fake: FakeApiServer, api: ApiClient) -> None:
    pods = [{"metadata": {"name": "p1", "namespace": "a"}}, {"metadata": {"name": "p2", "namespace": "b"}}]
    fake.answer("GET", "/api/v1/pods", 200, {"kind": "PodList", "items": pods})
    assert await NodeObjects(api, "n1").list_pods() == pods
    assert fake.seen[0].query == {"fieldSelector": "spec.nodeName=n1"}
    fake.answer("GET", "/api/v1/pods", 200, {"kind": "PodList", "items": None})
    assert await NodeObjects(api, "n1").list_pods() == []


async def test_a_server_that_does_not_answer_times_out(fake: FakeApiServer) -> None:
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.json_response({})

    fake.on("GET", f"{GN}/n1", hang)
    async with ApiClient(ClusterConfig(server=fake.url), request_timeout_s=0.3) as client:
        started = time.monotonic()
        try:
            with pytest.raises(ApiUnreachable, match=f"GET {GN}/n1"):
                await NodeObjects(client, "n1").get_gpunode()
        finally:
            release.set()
        assert time.monotonic() - started < 3.0


async def test_no_server_at_all_is_unreachable_not_a_crash() -> None:
    runner = await serve(FakeApiServer())
    url = runner.addresses[0]
    await runner.cleanup()  # the port is free again: connections are refused
    async with ApiClient(ClusterConfig(server=f"http://{url[0]}:{url[1]}")) as client:
        with pytest.raises(ApiUnreachable) as caught:
            await client.request("GET", "/api/v1/nodes/n1")
    assert caught.value.__cause__ is not None, "the transport's error is kept as the cause"


async def test_a_rotated_token_file_is_picked_up(fake: FakeApiServer, tmp_path: Path) -> None:
    fake.answer("GET", "/api/v1/nodes/n1", 200, {"metadata": {"uid": "u"}})
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    now = [0.0]
    tokens = TokenSource(token_file=token_file, refresh_s=60.0, clock=lambda: now[0])
    async with ApiClient(ClusterConfig(server=fake.url, token_file=token_file), tokens=tokens) as client:
        await client.request("GET", "/api/v1/nodes/n1")
        token_file.write_text("second\n")  # the kubelet rotated it
        now[0] = 30.0
        await client.request("GET", "/api/v1/nodes/n1")
        now[0] = 61.0
        await client.request("GET", "/api/v1/nodes/n1")
        token_file.unlink()  # mid-rotation: the last good token is kept
        now[0] = 200.0
        await client.request("GET", "/api/v1/nodes/n1")
    assert [s.headers["Authorization"] for s in fake.seen] == [
        "Bearer first",
        "Bearer first",
        "Bearer second",
        "Bearer second",
    ]


def test_the_client_reads_the_token_file_of_its_config(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file")
    client = ApiClient(ClusterConfig(server="http://127.0.0.1:1", token="fixed", token_file=token_file))
    assert client._headers(None)["Authorization"] == "Bearer from-file"


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
        return web.json_response({"metadata": {"uid": "u", "name": subject.get("commonName", "")}})

    server.on("GET", "/api/v1/nodes/n1", whoami)
    runner = await serve(server, context)
    try:
        yield server
    finally:
        await runner.cleanup()


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


async def test_mutual_tls_from_kubeconfig_data(tls_fake: FakeApiServer, pki: Pki) -> None:
    doc = {
        "current-context": "c",
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "agent"}}],
        "clusters": [
            {"name": "k", "cluster": {"server": tls_fake.url, "certificate-authority-data": _b64(pki.path("ca.crt"))}}
        ],
        "users": [
            {
                "name": "agent",
                "user": {
                    "client-certificate-data": _b64(pki.path("client.crt")),
                    "client-key-data": _b64(pki.path("client.key")),
                },
            }
        ],
    }
    async with ApiClient(config_from_kubeconfigs([(pki.dir / "kubeconfig", doc)])) as client:
        node = await client.request("GET", "/api/v1/nodes/n1")
    assert node["metadata"]["name"] == "wattplane-agent", "the server saw the client certificate"


async def test_mutual_tls_from_kubeconfig_files(tls_fake: FakeApiServer, pki: Pki) -> None:
    config = ClusterConfig(
        server=tls_fake.url,
        ca_file=pki.path("ca.crt"),
        client_cert_file=pki.path("client.crt"),
        client_key_file=pki.path("client.key"),
    )
    async with ApiClient(config) as client:
        assert (await client.request("GET", "/api/v1/nodes/n1"))["metadata"]["name"] == "wattplane-agent"


async def test_a_server_signed_by_another_ca_is_refused(tls_fake: FakeApiServer, pki: Pki) -> None:
    config = ClusterConfig(
        server=tls_fake.url,
        ca_file=pki.path("other-ca.crt"),
        client_cert_file=pki.path("client.crt"),
        client_key_file=pki.path("client.key"),
    )
    async with ApiClient(config) as client:
        with pytest.raises(ApiUnreachable, match="certificate verify failed"):
            await client.request("GET", "/api/v1/nodes/n1")
    assert tls_fake.seen == []


async def test_insecure_skip_tls_verify_accepts_any_server_certificate(tls_fake: FakeApiServer, pki: Pki) -> None:
    config = ClusterConfig(
        server=tls_fake.url,
        insecure_skip_tls_verify=True,
        client_cert_file=pki.path("client.crt"),
        client_key_file=pki.path("client.key"),
    )
    async with ApiClient(config) as client:
        assert (await client.request("GET", "/api/v1/nodes/n1"))["metadata"]["uid"] == "u"


def test_a_certificate_without_its_key_is_a_configuration_error(pki: Pki) -> None:
    with pytest.raises(ConfigError, match="needs its key"):
        ApiClient(ClusterConfig(server="https://127.0.0.1:1", client_cert_file=pki.path("client.crt")))
    with pytest.raises(ConfigError, match="cluster CA"):
        ApiClient(ClusterConfig(server="https://127.0.0.1:1", ca_file=pki.path("absent.crt")))
