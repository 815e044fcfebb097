"""Operator CPU for scraping serving pods' token metrics, against the bare HTTP fetches in the same run.

Goal: scraping 1,000 serving pods every 15 s costs the operator at most 5 % of one core.

A child process serves a vLLM V1 metrics page the size of a real one (every vLLM family with its
histogram buckets, plus the Python process and GC families prometheus_client adds: about 40 KB) on
127.0.0.1, under a distinct path per pod, with counters that grow on every request. The operator's
side runs in this process, and only it is measured (``time.process_time()``):

* **observer round**: :meth:`JobObserver.observe` on a plan whose 1,000 pods are inference pods
  under one policy: the exact code path of a planning round (annotation reads, 64 scrapes in flight,
  text-format parsing, engine detection, the join with per-pod energy, the ledger and the per-policy
  sums), plus one scrape of the operator's serving metrics (``generate_latest``), as Prometheus does;
* **bare fetches** (the baseline): the same 1,000 GETs with the same session and concurrency, the body
  read and decoded, nothing parsed: the least any scraper must pay.

It prints CPU per round for both, the per-pod cost, their ratio, and the share of one core at one
round per ``--interval`` seconds (the goal's 15 s). ``--no-keepalive`` opens a TCP connection per
scrape (pods are distinct hosts, so a real fleet reuses a connection only while it is kept alive).

Run ``python bench/token_scrape.py --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time
from datetime import UTC, datetime, timedelta

import aiohttp
from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry
from wattplane.api.v1alpha1.energypolicy import EnergyPolicySpec
from wattplane.operator.metrics import ServingCollector
from wattplane.operator.observe import SERVING_CONCURRENCY, JobObserver
from wattplane.operator.progress import fetch_page
from wattplane.planner.plan import plan
from wattplane.planner.snapshot import FleetSnapshot, GpuView, PodKey, PodView, PolicyView

GOAL_PERCENT = 5.0
MODEL = "meta-llama/Llama-3.1-70B-Instruct"
_SECONDS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0)
_TOKENS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


def _histogram(lines: list[str], name: str, doc: str, buckets: tuple[float, ...], labels: str, scale: float) -> None:
    lines += [f"# HELP {name} {doc}", f"# TYPE {name} histogram"]
    count = 5000.0 * scale
    for i, le in enumerate(buckets):
        lines.append(f'{name}_bucket{{{labels},le="{float(le)}"}} {count * (i + 1) / (len(buckets) + 1):.1f}')
    lines += [
        f'{name}_bucket{{{labels},le="+Inf"}} {count:.1f}',
        f"{name}_count{{{labels}}} {count:.1f}",
        f"{name}_sum{{{labels}}} {count * 0.37:.4f}",
    ]


def vllm_page(requests: int) -> str:
    """A vLLM V1 /metrics page after ``requests`` scrapes (counters grow with it)."""
    lb = f'engine="0",model_name="{MODEL}"'
    tokens = 1_000_000.0 + 2_000.0 * requests
    lines: list[str] = []
    for name, doc, value in (
        ("python_gc_objects_collected_total", "Objects collected during gc", 12345.0),
        ("python_gc_collections_total", "Number of times this generation was collected", 321.0),
    ):
        lines += [f"# HELP {name} {doc}", f"# TYPE {name} counter"]
        lines += [f'{name}{{generation="{g}"}} {value / (g + 1):.1f}' for g in range(3)]
    lines += ["# HELP python_info Python platform information", "# TYPE python_info gauge"]
    lines.append('python_info{implementation="CPython",major="3",minor="12",patchlevel="3",version="3.12.3"} 1.0')
    for name in ("virtual_memory_bytes", "resident_memory_bytes", "start_time_seconds", "open_fds", "max_fds"):
        lines += [f"# HELP process_{name} Process {name}.", f"# TYPE process_{name} gauge", f"process_{name} 1.2e+09"]
    lines += ["# HELP process_cpu_seconds_total Total CPU time.", "# TYPE process_cpu_seconds_total counter"]
    lines.append(f"process_cpu_seconds_total {1000.0 + requests:.2f}")
    for name, doc, value in (
        ("vllm:num_requests_running", "Number of requests in model execution batches.", 24.0),
        ("vllm:num_requests_waiting", "Number of requests waiting to be processed.", 3.0),
        ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", 0.41),
    ):
        lines += [f"# HELP {name} {doc}", f"# TYPE {name} gauge", f"{name}{{{lb}}} {value}"]
    for name, doc, value in (
        ("vllm:num_preemptions", "Cumulative number of preemption from the engine.", 12.0),
        ("vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.", tokens * 3),
        ("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.", tokens),
        ("vllm:prompt_tokens", "Number of prefill tokens processed.", tokens * 4),
        ("vllm:generation_tokens", "Number of generation tokens processed.", tokens),
    ):
        lines += [f"# HELP {name}_total {doc}", f"# TYPE {name}_total counter", f"{name}_total{{{lb}}} {value}"]
        lines.append(f"{name}_created{{{lb}}} 1.7330e+09")
    lines += ["# HELP vllm:request_success_total Count of successfully processed requests."]
    lines += ["# TYPE vllm:request_success_total counter"]
    for reason in ("stop", "length", "abort"):
        lines.append(f'vllm:request_success_total{{{lb},finished_reason="{reason}"}} {requests * 7.0}')
    for name, doc, buckets in (
        ("vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.", _TOKENS),
        ("vllm:request_prompt_tokens", "Number of prefill tokens processed.", _TOKENS),
        ("vllm:request_generation_tokens", "Number of generation tokens processed.", _TOKENS),
        ("vllm:request_params_n", "Histogram of the n request parameter.", (1, 2, 5, 10, 20)),
        (
            "vllm:request_max_num_generation_tokens",
            "Histogram of maximum number of requested generation tokens.",
            _TOKENS,
        ),
        ("vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter.", _TOKENS),
        ("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", _SECONDS),
        ("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", _SECONDS),
        ("vllm:time_per_output_token_seconds", "Histogram of time per output token in seconds.", _SECONDS),
        ("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", _SECONDS),
        ("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", _SECONDS),
        ("vllm:request_inference_time_seconds", "Histogram of time spent in RUNNING phase for request.", _SECONDS),
        ("vllm:request_prefill_time_seconds", "Histogram of time spent in PREFILL phase for request.", _SECONDS),
        ("vllm:request_decode_time_seconds", "Histogram of time spent in DECODE phase for request.", _SECONDS),
    ):
        _histogram(lines, name, doc, tuple(float(b) for b in buckets), lb, 1.0 + requests / 1000.0)
    lines += [
        "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig",
        "# TYPE vllm:cache_config_info gauge",
    ]
    lines.append('vllm:cache_config_info{block_size="16",cache_dtype="auto",gpu_memory_utilization="0.9"} 1.0')
    return "\n".join(lines) + "\n"


def _serve(port: int, ready: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    """The child process: every /pod/<i>/metrics answers with a fresh vLLM page."""
    hits = 0

    async def handle(_: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.Response(
            body=vllm_page(hits).encode(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
        )

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/pod/{index}/metrics", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def fleet(pods: int, port: int) -> tuple[FleetSnapshot, PolicyView]:
    """``pods`` inference pods, one GPU each, eight to a node, all under one policy."""
    gpus, views = [], {}
    for i in range(pods):
        name = f"llm-{i}"
        gpus.append(
            GpuView(
                node=f"node-{i // 8}",
                uuid=f"GPU-{i}",
                index=i % 8,
                model="H100",
                min_watts=200.0,
                max_watts=700.0,
                default_watts=700.0,
                pods=(("serve", name),),
            )
        )
        views[("serve", name)] = PodView(
            namespace="serve",
            name=name,
            uid=f"uid-{i}",
            node=f"node-{i // 8}",
            labels={"app": "llm"},
            annotations={
                "wattplane.io/workload": "inference",
                "wattplane.io/serving-metrics": f"http://127.0.0.1:{port}/pod/{i}/metrics",
            },
        )
    spec = EnergyPolicySpec.model_validate(
        {"selector": {"podSelector": {"matchLabels": {"app": "llm"}}}, "limits": {"maxWatts": 600}, "serving": {}}
    )
    nodes = tuple(sorted({g.node for g in gpus}))
    return FleetSnapshot(gpus=tuple(gpus), pods=views, nodes=nodes), PolicyView(name="serving", spec=spec)


async def run(args: argparse.Namespace) -> int:
    snapshot, policy = fleet(args.pods, args.port)
    result = plan(snapshot, [policy])
    urls = [f"http://127.0.0.1:{args.port}/pod/{i}/metrics" for i in range(args.pods)]
    energy: dict[PodKey, dict[str, float]] = {k: {p.uid: 0.0} for k, p in snapshot.pods.items()}
    connector = aiohttp.TCPConnector(limit=SERVING_CONCURRENCY, force_close=args.no_keepalive)
    session = aiohttp.ClientSession(connector=connector)
    observer = JobObserver(timeout_s=10.0, session=session, pod_energy=lambda: energy)
    registry = CollectorRegistry()
    registry.register(ServingCollector(observer.tokens))
    gate = asyncio.Semaphore(SERVING_CONCURRENCY)

    async def bare(url: str) -> int:
        async with gate:
            page = await fetch_page(session, url, 10.0)
        return 0 if isinstance(page, tuple) else 1

    observed: list[float] = []
    fetched: list[float] = []
    failures = 0
    now = datetime(2026, 5, 1, tzinfo=UTC)
    try:
        for round_ in range(args.rounds + 1):  # the first round of each warms connections and caches
            now += timedelta(seconds=args.interval)
            for k in energy:
                energy[k] = {snapshot.pods[k].uid: 500.0 * args.interval * (round_ + 1)}
            cpu = time.process_time()
            failures += sum(await asyncio.gather(*(bare(u) for u in urls)))
            bare_cpu = time.process_time() - cpu
            cpu = time.process_time()
            await observer.observe(result, snapshot, {"serving": policy}, now)
            generate_latest(registry)
            observer_cpu = time.process_time() - cpu
            if round_:
                fetched.append(bare_cpu)
                observed.append(observer_cpu)
    finally:
        await observer.close()
        await session.close()
    status = observer.serving_status("serving", None)
    assert status is not None
    if failures or status.problem_pods or status.measured_pods != args.pods:
        print(f"scrapes failed: {failures} bare, {status.problem_pods} in the observer: {status.problems[:3]}")
        return 1
    page = len(vllm_page(1).encode())
    mean_obs, mean_bare = statistics.fmean(observed), statistics.fmean(fetched)
    share = mean_obs / args.interval * 100.0
    per_pod = 1e6 / args.pods
    keepalive = not args.no_keepalive
    print(f"{args.pods} vLLM pods, page {page / 1024:.1f} KiB, {args.rounds} rounds, keep-alive {keepalive}")
    print(
        f"observer round (scrape+parse+join+metrics): {mean_obs * 1e3:8.1f} ms CPU = {mean_obs * per_pod:6.1f} us/pod"
    )
    print(
        f"bare fetches (baseline):                    {mean_bare * 1e3:8.1f} ms CPU = {mean_bare * per_pod:6.1f} us/pod"
    )
    extra = (mean_obs - mean_bare) * per_pod
    print(f"ratio observer / bare fetches: {mean_obs / mean_bare:.2f}; parse+join on top: {extra:.1f} us/pod")
    print(f"J/token (policy): {status.joules_per_output_token} over {status.output_tokens:.0f} tokens")
    verdict = "met" if share <= GOAL_PERCENT else "MISSED"
    print(f"one round every {args.interval:g} s: {share:.2f} % of one core (goal <= {GOAL_PERCENT:g} %: {verdict})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=1000, help="serving pods (default 1000)")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds after a warm-up round (default 5)")
    parser.add_argument("--interval", type=float, default=15.0, help="seconds between rounds in the goal (default 15)")
    parser.add_argument("--port", type=int, default=18931, help="loopback port of the page server")
    parser.add_argument("--no-keepalive", action="store_true", help="a new TCP connection for every scrape")
    args = parser.parse_args()
    ready = multiprocessing.Event()
    server = multiprocessing.Process(target=_serve, args=(args.port, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(30):
            print("the page server did not start")
            return 1
        return asyncio.run(run(args))
    finally:
        server.terminate()
        server.join(5)


if __name__ == "__main__":
    raise SystemExit(main())
