"""Serving engines' metrics pages (vLLM, SGLang, TGI) served over real HTTP on 127.0.0.1, read by the operator.

The pages come from :mod:`tests.support.serving_pages` in each engine's exposition format; the reads go
through the operator's own code: :func:`scrape_serving` for one page, and :class:`JobObserver` for a
planning round's scrape of the inference pods a policy governs, joined with the agents' pod energy.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry
from promtool import check_metrics, require_promtool
from serving_pages import sglang_page, tgi_page, vllm_page
from wattplane.api.v1alpha1.energypolicy import EnergyPolicySpec
from wattplane.operator.metrics import ServingCollector
from wattplane.operator.observe import JobObserver
from wattplane.operator.progress import ScrapeError
from wattplane.operator.serving import ServingSample, ServingTarget, scrape_serving, serving_target
from wattplane.planner.plan import plan
from wattplane.planner.snapshot import FleetSnapshot, GpuView, PodKey, PodView, PolicyView

Serve = Callable[[web.Application], Awaitable[TestServer]]
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


class Page:
    """A metrics endpoint whose body the test changes between scrapes."""

    def __init__(self, body: str, content_type: str = "text/plain; version=0.0.4; charset=utf-8") -> None:
        self.body = body
        self.content_type = content_type
        self.hits = 0

    async def handle(self, _: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(body=self.body.encode(), headers={"Content-Type": self.content_type})


async def serve_page(serve: Serve, page: Page) -> TestServer:
    app = web.Application()
    app.router.add_get("/metrics", page.handle)
    return await serve(app)


def target_of(server: TestServer, engine: str | None = None) -> ServingTarget:
    annotations = {"wattplane.io/serving-metrics": f"http://127.0.0.1:{server.port}/metrics"}
    if engine is not None:
        annotations["wattplane.io/serving-engine"] = engine
    got = serving_target(annotations)
    assert isinstance(got, ServingTarget)
    return got


@pytest.mark.parametrize(
    ("body", "engine", "output", "prompt", "queue", "itl_mean"),
    [
        (vllm_page(1234.0, 5678.0, waiting=4.0), "vllm", 1234.0, 5678.0, 4.0, 30.0 / 1500.0),
        (sglang_page(7.557572e6, 8.128902e6, queue=3.0), "sglang", 7.557572e6, 8.128902e6, 3.0, 90.0 / 4500.0),
        (tgi_page(20000.0, 50000.0, queue=1.0), "tgi", 20000.0, 50000.0, 1.0, 0.02),
    ],
)
async def test_each_engine_page_is_read_with_its_own_names(
    serve: Serve,
    session: aiohttp.ClientSession,
    body: str,
    engine: str,
    output: float,
    prompt: float,
    queue: float,
    itl_mean: float,
) -> None:
    server = await serve_page(serve, Page(body))
    got = await scrape_serving(session, target_of(server), None, 2.0)
    assert isinstance(got, ServingSample), got
    assert got.engine == engine  # detected from the names on the page
    assert got.output_tokens == pytest.approx(output)
    assert got.prompt_tokens == pytest.approx(prompt)
    assert got.queue == pytest.approx(queue)
    assert got.itl is not None and got.itl.mean == pytest.approx(itl_mean)
    if engine == "tgi":
        assert got.ttft is None  # TGI exposes no time to first token
    else:
        assert got.ttft is not None and got.ttft.mean is not None and got.ttft.mean > 0


async def test_vllm_data_parallel_engines_are_summed_and_old_tpot_is_used_without_itl(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    server = await serve_page(serve, Page(vllm_page(900.0, 300.0, engines=3, itl=None, tpot=(8.0, 400.0))))
    got = await scrape_serving(session, target_of(server, "vllm"), None, 2.0)
    assert isinstance(got, ServingSample)
    assert got.output_tokens == pytest.approx(900.0) and got.prompt_tokens == pytest.approx(300.0)
    assert got.itl is not None and got.itl.mean == pytest.approx(0.02)


async def test_openmetrics_pages_are_read_too(serve: Serve, session: aiohttp.ClientSession) -> None:
    body = (
        "# TYPE vllm:generation_tokens counter\n"
        "# HELP vllm:generation_tokens Number of generation tokens processed.\n"
        'vllm:generation_tokens_total{model_name="m"} 42.0\n'
        "# EOF\n"
    )
    server = await serve_page(serve, Page(body, "application/openmetrics-text; version=1.0.0; charset=utf-8"))
    got = await scrape_serving(session, target_of(server), None, 2.0)
    assert isinstance(got, ServingSample) and got.output_tokens == 42.0


@pytest.mark.parametrize(
    ("body", "engine", "kind", "words"),
    [
        (
            vllm_page(1.0, 1.0).replace("vllm:generation_tokens_total{", "vllm:other_total{"),
            None,
            "missing",
            "vllm:gen",
        ),
        (sglang_page(10.0, 10.0), "vllm", "missing", "no vLLM"),
        ("# TYPE up gauge\nup 1\n", None, "missing", "no vLLM, SGLang or TGI"),
        ("vllm:generation_tokens_total{ 12\n", None, "parse", "unreadable sample line of vllm:generation_tokens_total"),
    ],
)
async def test_unusable_pages_give_a_reason_not_a_number(
    serve: Serve, session: aiohttp.ClientSession, body: str, engine: str | None, kind: str, words: str
) -> None:
    server = await serve_page(serve, Page(body))
    got = await scrape_serving(session, target_of(server, engine), None, 2.0)
    assert isinstance(got, ScrapeError), got
    assert got.kind == kind and words.lower() in got.message.lower()


@pytest.mark.parametrize("value", ["NaN", "-5", "+Inf"])
async def test_garbage_counters_are_refused(serve: Serve, session: aiohttp.ClientSession, value: str) -> None:
    body = vllm_page(100.0, 10.0).replace(
        'vllm:generation_tokens_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 100.0',
        f'vllm:generation_tokens_total{{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"}} {value}',
    )
    assert value in body
    server = await serve_page(serve, Page(body))
    got = await scrape_serving(session, target_of(server), None, 2.0)
    assert isinstance(got, ScrapeError) and got.kind == "invalid"


# --- the observer: a planning round's scrape of governed inference pods, joined with pod energy ---


def _fleet(ports: dict[str, int], extra: dict[str, dict[str, str]] | None = None) -> tuple[FleetSnapshot, PolicyView]:
    gpus, pods = [], {}
    for i, (name, port) in enumerate(sorted(ports.items())):
        gpus.append(
            GpuView(
                node="node-a",
                uuid=f"GPU-{i}",
                index=i,
                model="H100",
                min_watts=200.0,
                max_watts=700.0,
                default_watts=700.0,
                power_watts=500.0,
                pods=(("serve", name),),
            )
        )
        annotations = {
            "wattplane.io/workload": "inference",
            "wattplane.io/serving-metrics": f"http://127.0.0.1:{port}/metrics",
        } | (extra or {}).get(name, {})
        pods[("serve", name)] = PodView(
            namespace="serve",
            name=name,
            uid=f"uid-{name}",
            node="node-a",
            labels={"app": "llm"},
            annotations=annotations,
        )
    spec = EnergyPolicySpec.model_validate(
        {"selector": {"podSelector": {"matchLabels": {"app": "llm"}}}, "limits": {"maxWatts": 600}}
    )
    return FleetSnapshot(gpus=tuple(gpus), pods=pods, nodes=("node-a",)), PolicyView(name="serving", spec=spec)


async def test_a_round_joins_tokens_with_pod_energy_per_pod_and_per_policy(serve: Serve) -> None:
    pages = {
        "vllm-0": Page(vllm_page(1000.0, 500.0)),
        "sglang-0": Page(sglang_page(2000.0, 100.0)),
        "tgi-0": Page(tgi_page(50.0, 10.0)),
    }
    servers = {name: await serve_page(serve, page) for name, page in pages.items()}
    energy: dict[PodKey, dict[str, float]] = {("serve", n): {f"uid-{n}": 10_000.0} for n in pages}
    snapshot, policy = _fleet({n: s.port for n, s in servers.items()})
    result = plan(snapshot, [policy])
    assert {k for j in result.jobs.values() for k in j.pods} == set(snapshot.pods)
    observer = JobObserver(timeout_s=2.0, pod_energy=lambda: energy)
    try:
        await observer.observe(result, snapshot, {"serving": policy}, NOW)
        # A restarted operator: status already holds 1,000 tokens on 4,000 J, and they are carried on.
        first = observer.serving_status("serving", {"serving": {"outputTokens": 1000, "energyJoules": 4000.0}})
        assert first is not None and first.pods == 3 and first.window_joules_per_output_token is None  # baselines
        assert first.joules_per_output_token == 4.0
        # 15 s later: vLLM made 500 tokens on 2,000 J, SGLang 1,000 on 1,000 J; TGI's page broke.
        pages["vllm-0"].body = vllm_page(1500.0, 700.0)
        pages["sglang-0"].body = sglang_page(3000.0, 200.0)
        pages["tgi-0"].body = "garbage{\n"
        energy[("serve", "vllm-0")] = {"uid-vllm-0": 12_000.0}
        energy[("serve", "sglang-0")] = {"uid-sglang-0": 11_000.0}
        energy[("serve", "tgi-0")] = {"uid-tgi-0": 10_500.0}
        await observer.observe(result, snapshot, {"serving": policy}, NOW + timedelta(seconds=15))
    finally:
        await observer.close()
    pods = observer.tokens.pods
    assert pods[("serve", "vllm-0")].joules_per_output_token == pytest.approx(4.0)
    assert pods[("serve", "sglang-0")].window_joules_per_output_token == pytest.approx(1.0)
    tgi = pods[("serve", "tgi-0")]
    assert tgi.energy_joules == 0.0 and tgi.joules_per_output_token is None
    assert tgi.problem is not None and "no vLLM, SGLang or TGI metrics" in tgi.problem
    status = observer.serving_status("serving", {"serving": {"outputTokens": 1, "energyJoules": 1}})
    assert status is not None  # the seed is adopted once, not again from a later status
    assert status.output_tokens == 2500 and status.energy_joules == 7000.0
    assert status.joules_per_output_token == pytest.approx(2.8)
    assert status.window_joules_per_output_token == pytest.approx(2.0) and status.window_seconds == 15.0
    assert status.measured_pods == 2 and status.problem_pods == 1
    assert status.problems[0].startswith("serve/tgi-0: serving metrics:")
    # The operator's metrics: counters PromQL can take rates of, valid for promtool.
    registry = CollectorRegistry()
    registry.register(ServingCollector(observer.tokens))
    text = generate_latest(registry).decode()
    assert 'wattplane_serving_output_tokens_total{engine="vllm",namespace="serve",pod="vllm-0"} 500.0' in text
    assert 'wattplane_serving_gpu_energy_joules_total{namespace="serve",pod="sglang-0"} 1000.0' in text
    assert 'wattplane_serving_joules_per_output_token{engine="vllm",namespace="serve",pod="vllm-0"} 4.0' in text
    assert "wattplane_serving_unmeasured_pods 1.0" in text
    checked = check_metrics(require_promtool(), text)
    assert (checked.returncode, checked.problems) == (0, [])


async def test_an_engine_restart_drops_the_interval_and_never_goes_negative(serve: Serve) -> None:
    page = Page(vllm_page(10_000.0, 0.0))
    server = await serve_page(serve, page)
    energy = {("serve", "vllm-0"): {"uid-vllm-0": 1_000.0}}
    snapshot, policy = _fleet({"vllm-0": server.port})
    result = plan(snapshot, [policy])
    observer = JobObserver(timeout_s=2.0, pod_energy=lambda: energy)
    try:
        await observer.observe(result, snapshot, {"serving": policy}, NOW)
        page.body = vllm_page(200.0, 0.0)  # the engine restarted: its counter starts over
        energy[("serve", "vllm-0")] = {"uid-vllm-0": 1_900.0}
        await observer.observe(result, snapshot, {"serving": policy}, NOW + timedelta(seconds=15))
        pod = observer.tokens.pods[("serve", "vllm-0")]
        assert pod.output_tokens == 0.0 and pod.energy_joules == 0.0
        assert pod.problem is not None and "went backwards" in pod.problem
        status = observer.serving_status("serving")
        assert status is not None and status.joules_per_output_token is None and status.problem_pods == 1
        page.body = vllm_page(700.0, 0.0)  # measuring resumes from the restarted counter
        energy[("serve", "vllm-0")] = {"uid-vllm-0": 2_900.0}
        await observer.observe(result, snapshot, {"serving": policy}, NOW + timedelta(seconds=30))
    finally:
        await observer.close()
    pod = observer.tokens.pods[("serve", "vllm-0")]
    assert pod.problem is None and pod.joules_per_output_token == pytest.approx(2.0)
    assert all(math.isfinite(v) and v >= 0 for v in (pod.output_tokens, pod.energy_joules))


async def test_a_pod_without_reported_energy_or_annotation_is_explained(serve: Serve) -> None:
    page = Page(vllm_page(10.0, 0.0))
    server = await serve_page(serve, page)
    snapshot, policy = _fleet({"vllm-0": server.port, "bare-0": 1}, extra={})
    bare = snapshot.pods[("serve", "bare-0")]
    pods = dict(snapshot.pods)
    pods[("serve", "bare-0")] = PodView(
        namespace="serve",
        name="bare-0",
        uid=bare.uid,
        node="node-a",
        labels=bare.labels,
        annotations={"wattplane.io/workload": "inference"},
    )
    snapshot = FleetSnapshot(gpus=snapshot.gpus, pods=pods, nodes=snapshot.nodes)
    observer = JobObserver(timeout_s=2.0, pod_energy=dict)
    try:
        await observer.observe(plan(snapshot, [policy]), snapshot, {"serving": policy}, NOW)
    finally:
        await observer.close()
    assert "no GPU energy reported" in (observer.tokens.pods[("serve", "vllm-0")].problem or "")
    assert "no wattplane.io/serving-metrics" in (observer.tokens.pods[("serve", "bare-0")].problem or "")
    assert page.hits == 1


async def test_a_failing_energy_source_costs_the_round_its_figures_not_the_loop(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    server = await serve_page(serve, Page(vllm_page(10.0, 0.0)))
    snapshot, policy = _fleet({"vllm-0": server.port})

    def broken() -> dict[PodKey, dict[str, float]]:
        raise RuntimeError("state unreadable")

    observer = JobObserver(timeout_s=2.0, pod_energy=broken)
    try:
        await observer.observe(plan(snapshot, [policy]), snapshot, {"serving": policy}, NOW)  # does not raise
    finally:
        await observer.close()
    assert "serving-token observation failed" in caplog.text
    assert observer.serving_status("serving") is None


async def test_rounds_closer_than_the_serving_interval_do_not_scrape_again(serve: Serve) -> None:
    page = Page(vllm_page(10.0, 0.0))
    server = await serve_page(serve, page)
    snapshot, policy = _fleet({"vllm-0": server.port})
    result = plan(snapshot, [policy])
    observer = JobObserver(timeout_s=2.0, pod_energy=dict, serving_interval_s=15.0)
    try:
        for seconds in (0, 1, 5, 14.9, 15, 20, 30):
            await observer.observe(result, snapshot, {"serving": policy}, NOW + timedelta(seconds=seconds))
    finally:
        await observer.close()
    assert page.hits == 3  # at 0, 15 and 30 s
