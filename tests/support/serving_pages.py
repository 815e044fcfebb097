"""Metrics pages as vLLM, SGLang and TGI serve them, with counters the caller sets.

The shapes follow each engine's exposition: vLLM and SGLang come from prometheus_client (``# HELP`` and
``# TYPE`` lines, colons in the names, ``model_name`` labels, histograms with ``_bucket``/``_sum``/
``_count`` and ``_created`` series); TGI comes from the Rust ``metrics-exporter-prometheus`` crate
(``# TYPE`` lines, plain names, histograms of per-request token counts). Written for wattplane's tests
from the engines' documented metric lists; no engine output is copied.
"""

from __future__ import annotations

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def _histogram(name: str, labels: str, total: float, count: float, buckets: tuple[float, ...], created: bool) -> str:
    lines = []
    for le in buckets:
        lines.append(f'{name}_bucket{{{labels},le="{le}"}} {count * 0.5:.1f}')
    lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {count:.1f}')
    lines.append(f"{name}_count{{{labels}}} {count:.1f}")
    lines.append(f"{name}_sum{{{labels}}} {total!r}")
    if created:
        lines.append(f"{name}_created{{{labels}}} 1.7330e+09")
    return "\n".join(lines)


def vllm_page(
    output: float,
    prompt: float,
    *,
    waiting: float = 2.0,
    ttft: tuple[float, float] = (12.5, 50.0),
    itl: tuple[float, float] | None = (30.0, 1500.0),
    tpot: tuple[float, float] | None = None,
    engines: int = 1,
) -> str:
    """A vLLM V1 page; with ``engines`` > 1 the counters are split over ``engine`` labels (data parallel)."""
    out = []
    for i in range(engines):
        labels = f'engine="{i}",model_name="{MODEL}"'
        out.append((labels, output / engines, prompt / engines))
    lines = [
        "# HELP vllm:num_requests_running Number of requests in model execution batches.",
        "# TYPE vllm:num_requests_running gauge",
        *[f"vllm:num_requests_running{{{lb}}} 7.0" for lb, _, _ in out],
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
        "# TYPE vllm:num_requests_waiting gauge",
        *[f"vllm:num_requests_waiting{{{lb}}} {waiting / engines!r}" for lb, _, _ in out],
        "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.",
        "# TYPE vllm:kv_cache_usage_perc gauge",
        *[f"vllm:kv_cache_usage_perc{{{lb}}} 0.31" for lb, _, _ in out],
        "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.",
        "# TYPE vllm:prompt_tokens_total counter",
        *[
            line
            for lb, _, p in out
            for line in (f"vllm:prompt_tokens_total{{{lb}}} {p!r}", f"vllm:prompt_tokens_created{{{lb}}} 1.7330e+09")
        ],
        "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
        "# TYPE vllm:generation_tokens_total counter",
        *[  # prometheus_client writes each child's _total and _created lines together
            line
            for lb, o, _ in out
            for line in (
                f"vllm:generation_tokens_total{{{lb}}} {o!r}",
                f"vllm:generation_tokens_created{{{lb}}} 1.7330e+09",
            )
        ],
        "# HELP vllm:iteration_tokens_total Histogram of number of tokens per engine_step.",
        "# TYPE vllm:iteration_tokens_total histogram",
        _histogram("vllm:iteration_tokens_total", out[0][0], 9000.0, 300.0, (1.0, 8.0, 16.0), True),
        "# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.",
        "# TYPE vllm:time_to_first_token_seconds histogram",
        _histogram("vllm:time_to_first_token_seconds", out[0][0], *ttft, (0.001, 0.005, 0.01, 0.1), True),
    ]
    if itl is not None:
        lines += [
            "# HELP vllm:inter_token_latency_seconds Histogram of inter-token latency in seconds.",
            "# TYPE vllm:inter_token_latency_seconds histogram",
            _histogram("vllm:inter_token_latency_seconds", out[0][0], *itl, (0.01, 0.025, 0.05), True),
        ]
    if tpot is not None:
        lines += [
            "# HELP vllm:time_per_output_token_seconds Histogram of time per output token in seconds.",
            "# TYPE vllm:time_per_output_token_seconds histogram",
            _histogram("vllm:time_per_output_token_seconds", out[0][0], *tpot, (0.01, 0.025, 0.05), True),
        ]
    return "\n".join(lines) + "\n"


def sglang_page(output: float, prompt: float, *, queue: float = 3.0, ttft: tuple[float, float] = (40.0, 100.0)) -> str:
    """An SGLang page (``--enable-metrics``)."""
    labels = f'model_name="{MODEL}"'
    return (
        "\n".join(
            [
                "# HELP sglang:prompt_tokens_total Number of prefill tokens processed.",
                "# TYPE sglang:prompt_tokens_total counter",
                f"sglang:prompt_tokens_total{{{labels}}} {prompt:e}",
                "# HELP sglang:generation_tokens_total Number of generation tokens processed.",
                "# TYPE sglang:generation_tokens_total counter",
                f"sglang:generation_tokens_total{{{labels}}} {output:e}",
                "# HELP sglang:token_usage The token usage",
                "# TYPE sglang:token_usage gauge",
                f"sglang:token_usage{{{labels}}} 0.28",
                "# HELP sglang:num_queue_reqs The number of requests in the waiting queue",
                "# TYPE sglang:num_queue_reqs gauge",
                f"sglang:num_queue_reqs{{{labels}}} {queue!r}",
                "# HELP sglang:time_to_first_token_seconds Histogram of time to first token in seconds.",
                "# TYPE sglang:time_to_first_token_seconds histogram",
                _histogram("sglang:time_to_first_token_seconds", labels, *ttft, (0.001, 0.1, 1.0), False),
                "# HELP sglang:inter_token_latency_seconds Histogram of inter-token latency in seconds.",
                "# TYPE sglang:inter_token_latency_seconds histogram",
                _histogram("sglang:inter_token_latency_seconds", labels, 90.0, 4500.0, (0.002, 0.02, 0.2), False),
            ]
        )
        + "\n"
    )


def tgi_page(output: float, prompt: float, *, requests: float = 100.0, queue: float = 1.0) -> str:
    """A TGI page: token totals are the ``_sum`` of per-request histograms."""
    return (
        "\n".join(
            [
                "# TYPE tgi_queue_size gauge",
                f"tgi_queue_size {queue:g}",
                "# TYPE tgi_request_count counter",
                f"tgi_request_count {requests:g}",
                "# TYPE tgi_request_generated_tokens histogram",
                f'tgi_request_generated_tokens_bucket{{le="1"}} {0:g}',
                f'tgi_request_generated_tokens_bucket{{le="100"}} {requests / 2:g}',
                f'tgi_request_generated_tokens_bucket{{le="+Inf"}} {requests:g}',
                f"tgi_request_generated_tokens_sum {output:g}",
                f"tgi_request_generated_tokens_count {requests:g}",
                "# TYPE tgi_request_input_length histogram",
                f'tgi_request_input_length_bucket{{le="+Inf"}} {requests:g}',
                f"tgi_request_input_length_sum {prompt:g}",
                f"tgi_request_input_length_count {requests:g}",
                "# TYPE tgi_request_mean_time_per_token_duration histogram",
                f'tgi_request_mean_time_per_token_duration_bucket{{le="+Inf"}} {requests:g}',
                f"tgi_request_mean_time_per_token_duration_sum {requests * 0.02:g}",
                f"tgi_request_mean_time_per_token_duration_count {requests:g}",
            ]
        )
        + "\n"
    )
