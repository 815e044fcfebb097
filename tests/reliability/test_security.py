"""Security: no credential shows up anywhere wattplane writes or serves.

Credentials in play: an Electricity Maps token and a WattTime username and password, each in a
Kubernetes Secret a policy names; the bearer token WattTime hands out at login; the API server
token in the operator's and agents' kubeconfig. With carbon policies using both providers running
(and failing in places: a WattTime account without data access, an Electricity Maps zone the server
refuses), none of them may appear in:

* the operator's and the agents' logs;
* any EnergyPolicy or GpuNode object (spec and status), or any event in the cluster;
* the operator's and the agents' ``/metrics``, or the agents' ``/healthz`` and ``/readyz``.

And the endpoints serve only what they are for: every other path is a 404, nothing answers with a
stack trace, and no metric or label carries a URL, a path or anything named like a secret.

The chart's RBAC is verified on the real API server in
``tests/controlplane/test_chart_apply_and_rbac.py`` (each ServiceAccount's exact permissions, the
agent's per-node admission policy exercised with real projected tokens, and the real processes run
under those tokens). The containers' ``securityContext`` (non-root, read-only root filesystem, all
capabilities dropped except ``SYS_ADMIN`` for the NVML agent, seccomp ``RuntimeDefault``) is checked on
the rendered chart in ``tests/chart/test_rendered_workloads.py``. Dependency auditing is described in
``docs/security.md``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web
from carbongrid import GridServer
from controlplane import TOKEN as API_TOKEN
from controlplane import ControlPlane
from faults import FaultFleet, agent_metrics_port, http_get, running_fleet
from kubeapi import apply_policy, create_namespace, create_pod, eventually, get_cluster_object
from kubernetes_asyncio import client
from loopback import serving
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(180)]

NODE = "rel-sec-n1"
NS = "rel-sec"
EM_TOKEN = "em-tok-9d2f61aa0c"
WT_USER = "wt-user-5e1b"
WT_PASSWORD = "wt-pass-77c0e2f1"
WT_BEARER = "wt-bearer-0b8e4c3d22"
SECRETS = [EM_TOKEN, WT_USER, WT_PASSWORD, WT_BEARER, API_TOKEN]


@pytest.fixture(scope="module")
def fleet(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultFleet]:
    env = {"WATTPLANE_OPERATOR_NAMESPACE": NS, "WATTPLANE_OPERATOR_SIGNAL_REFRESH_S": "2"}
    with running_fleet(control_plane, tmp_path_factory.mktemp("sec"), [NODE], operator_env=env) as fleet:
        yield fleet


@pytest.fixture
async def watttime() -> AsyncIterator[tuple[str, list[str]]]:
    """WattTime v3: login checks HTTP Basic and hands out a bearer token; data needs a plan this account lacks."""
    seen: list[str] = []
    expected = "Basic " + base64.b64encode(f"{WT_USER}:{WT_PASSWORD}".encode()).decode()

    async def login(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != expected:
            return web.json_response({"error": "invalid credentials"}, status=401)
        return web.json_response({"token": WT_BEARER})

    async def data(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response(
            {"error": "subscription required", "echo": request.headers.get("Authorization")}, status=403
        )

    app = web.Application()
    app.router.add_get("/login", login)
    app.router.add_get("/v3/{tail:.*}", data)
    async with serving(app) as url:
        yield url, seen


@pytest.fixture
async def electricitymaps() -> AsyncIterator[GridServer]:
    server = GridServer(token=EM_TOKEN, zone="DE")
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def _secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def _carbon(provider: str, zone: str, url: str, secret: str) -> dict[str, Any]:
    return {
        "source": {"provider": provider, "zone": zone, "baseUrl": url, "credentialsSecretRef": {"name": secret},
                   "refreshIntervalSeconds": 10, **({"signal": "marginal"} if provider == "watttime" else {})},
        "curve": {"basis": "Absolute", "points": [{"x": 100, "weight": 1.0}, {"x": 500, "weight": 0.0}]},
    }  # fmt: skip


def _leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


async def test_no_credential_in_logs_objects_events_or_endpoints(
    fleet: FaultFleet,
    api: client.ApiClient,
    watttime: tuple[str, list[str]],
    electricitymaps: GridServer,
) -> None:
    wt_url, wt_seen = watttime
    core = client.CoreV1Api(api)
    await create_namespace(api, NS, {"team": NS})
    await core.create_namespaced_secret(NS, _secret("em", {"token": EM_TOKEN}))
    await core.create_namespaced_secret(NS, _secret("wt", {"username": WT_USER, "password": WT_PASSWORD}))
    for name in ("em", "wt", "em-bad-zone"):
        await create_pod(api, NS, f"job-{name}", node=NODE, gpus=1, labels={"sec": name})
    policies = {
        "rel-sec-em": _carbon("electricitymaps", "DE", electricitymaps.url, "em"),
        "rel-sec-wt": _carbon("watttime", "CAISO_NORTH", wt_url, "wt"),
        "rel-sec-em-bad-zone": _carbon("electricitymaps", "FR", electricitymaps.url, "em"),  # the server says DE
    }
    for name, carbon in policies.items():
        selector = {"podSelector": {"matchLabels": {"sec": name.removeprefix("rel-sec-")}}}
        await apply_policy(api, name, {"selector": selector, "carbon": carbon})

    async def signals_settled() -> bool:
        fresh = {}
        for name in policies:
            ep = await get_cluster_object(api, "energypolicies", name)
            cond = next((c for c in ep.get("status", {}).get("conditions", []) if c["type"] == "SignalFresh"), None)
            if cond is None or "no reading fetched yet" in cond["message"]:
                return False
            fresh[name] = cond["status"]
        return fresh == {"rel-sec-em": "True", "rel-sec-wt": "False", "rel-sec-em-bad-zone": "False"}

    await eventually(signals_settled, within_s=60, interval=0.5, what=f"carbon signals settled\n{fleet.logs()}")
    assert EM_TOKEN in electricitymaps.tokens_seen, "the Electricity Maps token never reached its API"
    assert any(a.startswith("Basic ") for a in wt_seen) and f"Bearer {WT_BEARER}" in wt_seen, wt_seen

    # Objects and events.
    for plural in ("energypolicies", "gpunodes"):
        listed = await client.CustomObjectsApi(api).list_cluster_custom_object("wattplane.io", "v1alpha1", plural)
        assert not _leaks(json.dumps(listed)), f"a credential in {plural}"
    events = await core.list_event_for_all_namespaces()
    assert not _leaks(json.dumps(api.sanitize_for_serialization(events))), "a credential in an event"

    # Endpoints (the agent's readiness first: what it serves once running is what must not leak).
    assert fleet.operator is not None
    port = agent_metrics_port(fleet.agents[NODE])

    async def agent_ready() -> bool:
        return http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200

    await eventually(agent_ready, within_s=30, interval=0.5, what=f"agent ready\n{fleet.logs()}")
    served = {
        "operator /metrics": http_get(fleet.operator_metrics_url),
        "agent /metrics": http_get(f"http://127.0.0.1:{port}/metrics"),
        "agent /healthz": http_get(f"http://127.0.0.1:{port}/healthz"),
        "agent /readyz": http_get(f"http://127.0.0.1:{port}/readyz"),
    }
    for what, (status, body) in served.items():
        assert status == 200, (what, status, body[:300])
        assert not _leaks(body), f"a credential in {what}"
    for what in ("operator /metrics", "agent /metrics"):
        _assert_nothing_sensitive(served[what][1], what)
    base = fleet.operator_metrics_url.removesuffix("/metrics")
    for probe in ("/", "/debug/pprof", "/env", "/metrics/../../etc/passwd", "/config", "/.env"):
        for root in (base, f"http://127.0.0.1:{port}"):
            status, body = http_get(root + probe)
            assert status == 404, (root + probe, status, body[:200])
            assert "Traceback" not in body

    # Logs, last: everything above has had time to be logged.
    for process in [fleet.operator, *fleet.agents.values()]:
        assert not _leaks(process.log.read_text(errors="replace")), f"a credential in the log of {process.name}"


_SENSITIVE_WORDS = re.compile(r"token|password|secret|bearer|authorization|apikey|api_key", re.IGNORECASE)
#: Language-model tokens (what a serving engine generates) are not credentials.
_LLM_TOKENS = re.compile(r"_(output|prompt)_tokens?(_|$)|_per_output_token$")


def _assert_nothing_sensitive(body: str, what: str) -> None:
    """No metric or label names a secret, and no label value is a URL, a file path or a credential."""
    for family in text_string_to_metric_families(body):
        assert not _SENSITIVE_WORDS.search(_LLM_TOKENS.sub("", family.name)), (what, family.name)
        for sample in family.samples:
            for label, value in sample.labels.items():
                assert not _SENSITIVE_WORDS.search(label), (what, family.name, label)
                assert "://" not in value and not value.startswith("/"), (what, family.name, label, value)
