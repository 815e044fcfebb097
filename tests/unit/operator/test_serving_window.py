"""From two scrapes of a serving engine's metrics page to the window the serving controller decides on.

The pages are rendered here from lists of observations, in each engine's exposition shape (vLLM V1 and
SGLang through prometheus_client: ``# HELP``/``# TYPE`` lines, ``model_name`` and ``engine`` labels,
``_bucket``/``_count``/``_sum``/``_created``; TGI through the Rust exporter: ``# TYPE`` only, no labels),
so every expected figure can be computed by hand from the observations of the window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wattplane.operator.serving import Buckets, ServingSample, read_serving
from wattplane.operator.servingwindow import bucket_quantile, serving_window, window_counts, window_p90

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
# vLLM V1 bucket bounds (vllm/v1/metrics/loggers.py); request tokens use its 1-2-5 series up to max_model_len.
VLLM_TTFT = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0)
VLLM_ITL = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0)
VLLM_E2E = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0)
TOKENS_125 = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0)
SGLANG_TTFT = (0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0)
SGLANG_ITL = (0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.06, 0.08, 0.1, 0.2)
SGLANG_E2E = (0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 200.0)
TGI_SECONDS = (0.0001, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _le(bound: float) -> str:
    return "+Inf" if bound == math.inf else repr(float(bound))


def histogram(
    name: str,
    doc: str | None,
    bounds: Sequence[float],
    series: Mapping[str, Sequence[float]],
    *,
    le_first: bool = False,
    created: bool = True,
) -> list[str]:
    """One histogram family: per label set, cumulative buckets, ``_count``, ``_sum`` (and ``_created``)."""
    lines = [f"# HELP {name} {doc}"] if doc else []
    lines.append(f"# TYPE {name} histogram")
    for labels, observations in series.items():
        for bound in (*bounds, math.inf):
            le = f'le="{_le(bound)}"'
            inner = le if not labels else (f"{le},{labels}" if le_first else f"{labels},{le}")
            lines.append(f"{name}_bucket{{{inner}}} {float(sum(1 for x in observations if x <= bound))!r}")
        braces = f"{{{labels}}}" if labels else ""
        lines.append(f"{name}_count{braces} {float(len(observations))!r}")
        lines.append(f"{name}_sum{braces} {math.fsum(observations)!r}")
        if created:
            lines.append(f"{name}_created{braces} 1.7330512e+09")
    return lines


@dataclass
class Traffic:
    """What one engine (one label set) has observed since it started."""

    prompt: float = 0.0
    output: float = 0.0
    waiting: float = 0.0
    ttft: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)
    tokens: list[float] = field(default_factory=list)

    def then(self, other: Traffic) -> Traffic:
        """This traffic followed by ``other`` (counters add up, the gauge is the later one)."""
        return Traffic(
            self.prompt + other.prompt,
            self.output + other.output,
            other.waiting,
            self.ttft + other.ttft,
            self.itl + other.itl,
            self.e2e + other.e2e,
            self.tokens + other.tokens,
        )


def vllm_v1_page(engines: Mapping[str, Traffic]) -> str:
    """A vLLM V1 page with one ``engine`` label per data-parallel engine."""
    labels = {f'model_name="{MODEL}",engine="{e}"': t for e, t in engines.items()}
    lines = ["# HELP vllm:num_requests_running Number of requests in model execution batches."]
    lines += ["# TYPE vllm:num_requests_running gauge"]
    lines += [f"vllm:num_requests_running{{{lb}}} 8.0" for lb in labels]
    lines += ["# HELP vllm:num_requests_waiting Number of requests waiting to be processed."]
    lines += ["# TYPE vllm:num_requests_waiting gauge"]
    lines += [f"vllm:num_requests_waiting{{{lb}}} {t.waiting!r}" for lb, t in labels.items()]
    for counter, doc, attr in (
        ("prompt_tokens", "Number of prefill tokens processed.", "prompt"),
        ("generation_tokens", "Number of generation tokens processed.", "output"),
    ):
        lines += [f"# HELP vllm:{counter}_total {doc}", f"# TYPE vllm:{counter}_total counter"]
        for lb, t in labels.items():
            lines += [f"vllm:{counter}_total{{{lb}}} {getattr(t, attr)!r}", f"vllm:{counter}_created{{{lb}}} 1.73e+09"]
    families = (
        ("vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.", TOKENS_125, "tokens"),
        ("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", VLLM_TTFT, "ttft"),
        ("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", VLLM_ITL, "itl"),
        ("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", VLLM_E2E, "e2e"),
        ("vllm:request_prompt_tokens", "Number of prefill tokens processed.", TOKENS_125, "tokens"),
        ("vllm:request_generation_tokens", "Number of generation tokens processed.", TOKENS_125, "tokens"),
    )
    for name, doc, bounds, attr in families:
        lines += histogram(name, doc, bounds, {lb: getattr(t, attr) for lb, t in labels.items()})
    return "\n".join(lines) + "\n"


def sglang_page(traffic: Traffic) -> str:
    """An SGLang page (``--enable-metrics --collect-tokens-histogram``), ``le`` written first as its docs show."""
    lb = f'model_name="{MODEL}"'
    lines = [
        "# HELP sglang:prompt_tokens_total Number of prefill tokens processed.",
        "# TYPE sglang:prompt_tokens_total counter",
        f"sglang:prompt_tokens_total{{{lb}}} {traffic.prompt:e}",
        "# HELP sglang:generation_tokens_total Number of generation tokens processed.",
        "# TYPE sglang:generation_tokens_total counter",
        f"sglang:generation_tokens_total{{{lb}}} {traffic.output:e}",
        "# HELP sglang:num_queue_reqs The number of requests in the waiting queue",
        "# TYPE sglang:num_queue_reqs gauge",
        f"sglang:num_queue_reqs{{{lb}}} {traffic.waiting!r}",
    ]
    families = (
        ("sglang:generation_tokens_histogram", "Histogram of generation token length.", TOKENS_125, "tokens"),
        ("sglang:time_to_first_token_seconds", "Histogram of time to first token in seconds.", SGLANG_TTFT, "ttft"),
        ("sglang:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", SGLANG_ITL, "itl"),
        ("sglang:e2e_request_latency_seconds", "Histogram of End-to-end request latency in seconds", SGLANG_E2E, "e2e"),
    )
    for name, doc, bounds, attr in families:
        lines += histogram(name, doc, bounds, {lb: getattr(traffic, attr)}, le_first=True, created=False)
    return "\n".join(lines) + "\n"


def tgi_page(traffic: Traffic, tpot: Sequence[float]) -> str:
    """A TGI page: token totals are per-request histograms; ``tpot`` holds each request's mean time per token."""
    lines = ["# TYPE tgi_queue_size gauge", f"tgi_queue_size {traffic.waiting:g}"]
    lines += histogram("tgi_request_duration", None, TGI_SECONDS, {"": traffic.e2e}, created=False)
    lines += histogram("tgi_request_generated_tokens", None, TOKENS_125, {"": traffic.tokens}, created=False)
    prompts = [traffic.prompt / max(1, len(traffic.tokens))] * len(traffic.tokens)
    lines += histogram("tgi_request_input_length", None, TOKENS_125, {"": prompts}, created=False)
    lines += histogram("tgi_request_mean_time_per_token_duration", None, TGI_SECONDS, {"": tpot}, created=False)
    return "\n".join(lines) + "\n"


def read(page: str) -> ServingSample:
    got = read_serving(page, "http://10.0.0.7:8000/metrics")
    assert isinstance(got, ServingSample), got
    return got


# Before the window: a slow start (3 s to first token, 0.4 s between tokens) that must not weigh on the
# window's p90, which is what the controller reacts to.
HISTORY = {
    "0": Traffic(prompt=50_000, output=9_000, ttft=[3.0] * 100, itl=[0.4] * 500, e2e=[30.0] * 100, tokens=[90] * 100),
    "1": Traffic(prompt=40_000, output=8_000, ttft=[3.0] * 80, itl=[0.4] * 400, e2e=[30.0] * 80, tokens=[100] * 80),
}
# The window (60 s): TTFT 14 + 6 observations, rank 18 falls in (0.25, 0.5] holding 3 (17 below it):
# 0.25 + 0.25 * (18 - 17) / 3. ITL 60 + 40 observations, rank 90 falls in (0.075, 0.1] holding 15 (85
# below): 0.075 + 0.025 * 5 / 15. Two requests finished: 400 tokens over 6 s of latency.
WINDOW = {
    "0": Traffic(prompt=2_000, output=350, waiting=2.0, ttft=[0.03] * 8 + [0.07] * 6, itl=[0.02] * 60),
    "1": Traffic(
        prompt=1_000,
        output=250,
        waiting=3.0,
        ttft=[0.09] * 3 + [0.3] * 3,
        itl=[0.04] * 25 + [0.09] * 15,
        e2e=[2.0, 4.0],
        tokens=[100, 300],
    ),
}


def test_a_vllm_v1_window_is_read_from_two_scrapes_of_two_engines() -> None:
    before = read(vllm_v1_page(HISTORY))
    after = read(vllm_v1_page({e: HISTORY[e].then(WINDOW[e]) for e in HISTORY}))
    assert after.ttft_buckets is not None and after.ttft_buckets.name == "vllm:time_to_first_token_seconds"
    assert after.ttft_buckets.counts[-1] == (math.inf, 200.0)  # 180 + 20, summed over both engines
    assert after.e2e is not None and after.e2e.count == 182.0
    assert after.request_output is not None and after.request_output.sum == 9000 + 8000 + 400

    window = serving_window(before, after, seconds=60.0, prefill_s_per_token=1e-4, joules=1_800.0)
    assert window.ttft_p90_s == pytest.approx(0.25 + 0.25 / 3)
    assert window.tpot_p90_s == pytest.approx(0.075 + 0.025 / 3)
    assert window.speed_tps == pytest.approx(400 / 6)
    assert window.queue == 5.0
    assert window.load == pytest.approx((3_000 + 600) / 60)
    assert window.prefill_share == pytest.approx(3_000 / 60 * 1e-4)
    assert window.joules_per_token == pytest.approx(1_800 / 600)

    # The same pages read as since-start figures would put the p90 in the slow history instead.
    since_start = bucket_quantile(0.9, after.ttft_buckets.counts)
    assert since_start is not None and since_start > 2.5


def test_an_sglang_window_reads_its_own_names() -> None:
    history = Traffic(prompt=8e6, output=7e6, ttft=[0.15] * 50, itl=[0.012] * 900, e2e=[5.0] * 50, tokens=[200] * 50)
    # 10 new TTFTs, rank 9 in (0.6, 0.8] holding 2 (8 below): 0.6 + 0.2 * 1 / 2.
    window = Traffic(
        prompt=12_000,
        output=3_000,
        waiting=7.0,
        ttft=[0.3] * 8 + [0.7] * 2,
        itl=[0.005] * 10,
        e2e=[1.5, 2.5, 6.0],
        tokens=[40, 60, 100],
    )
    before, after = read(sglang_page(history)), read(sglang_page(history.then(window)))
    got = serving_window(before, after, seconds=30.0, prefill_s_per_token=5e-5, joules=None)
    assert got.ttft_p90_s == pytest.approx(0.7)
    assert got.tpot_p90_s == pytest.approx(0.004 + 0.002 * 9 / 10)  # all ten in (0.004, 0.006]
    assert got.speed_tps == pytest.approx(200 / 10)
    assert got.queue == 7.0 and got.load == pytest.approx(15_000 / 30)
    assert got.prefill_share == pytest.approx(400 * 5e-5) and got.joules_per_token is None


def test_a_tgi_window_has_no_ttft_and_its_tpot_is_per_request() -> None:
    history = Traffic(prompt=20_000, e2e=[3.0] * 20, tokens=[100] * 20)
    window = Traffic(prompt=6_000, waiting=1.0, e2e=[1.0, 2.0, 3.0, 4.0], tokens=[50, 100, 150, 200])
    tpot_before = [0.03] * 20
    tpot_window = [0.015] * 3 + [0.04]  # rank 3.6 in (0.02, 0.05] holding 1 (3 below): 0.02 + 0.03 * 0.6
    before = read(tgi_page(history, tpot_before))
    after = read(tgi_page(history.then(window), tpot_before + tpot_window))
    assert after.engine == "tgi" and after.output_tokens == 2_000 + 500
    got = serving_window(before, after, seconds=20.0, prefill_s_per_token=None, joules=1_000.0)
    assert got.ttft_p90_s is None
    assert got.tpot_p90_s == pytest.approx(0.02 + 0.03 * 0.6)
    assert got.speed_tps == pytest.approx(500 / 10)
    assert got.load == pytest.approx((6_000 + 500) / 20) and got.prefill_share is None
    assert got.joules_per_token == pytest.approx(2.0) and got.queue == 1.0


def test_a_counter_reset_voids_every_difference_but_keeps_the_queue() -> None:
    before = read(vllm_v1_page(HISTORY))
    # The engine restarted and has since served more ITL observations than before (those counts grew),
    # but the token counters show the reset: no figure across the restart.
    restarted = {
        "0": Traffic(prompt=100, output=50, waiting=4.0, ttft=[0.05] * 200, itl=[0.02] * 900),
        "1": Traffic(prompt=100, output=50, waiting=0.0, ttft=[0.05] * 200, itl=[0.02] * 900),
    }
    got = serving_window(before, read(vllm_v1_page(restarted)), seconds=60.0, prefill_s_per_token=1e-4, joules=5.0)
    assert (got.ttft_p90_s, got.tpot_p90_s, got.speed_tps) == (None, None, None)
    assert (got.load, got.prefill_share, got.joules_per_token) == (None, None, None)
    assert got.queue == 4.0
    # A bucket count that went down alone (the rest unchanged) is a reset of that histogram.
    assert before.itl_buckets is not None
    counts = list(before.itl_buckets.counts)
    counts[0] = (counts[0][0], counts[0][1] - 1)
    assert window_counts(before.itl_buckets, Buckets(before.itl_buckets.name, tuple(counts))) is None
    assert window_counts(before.itl_buckets, before.itl_buckets) == tuple((le, 0.0) for le, _ in counts)


def test_a_window_without_traffic_has_no_latency_speed_or_energy_per_token() -> None:
    idle = {e: Traffic(**{**vars(t), "waiting": 0.0}) for e, t in HISTORY.items()}
    sample = read(vllm_v1_page(idle))
    got = serving_window(sample, sample, seconds=60.0, prefill_s_per_token=1e-4, joules=9_000.0)
    assert (got.ttft_p90_s, got.tpot_p90_s, got.speed_tps, got.joules_per_token) == (None, None, None, None)
    assert got.load == 0.0 and got.prefill_share == 0.0 and got.queue == 0.0
    # A zero or negative interval gives no rates, but the latencies of the window stand.
    after = read(vllm_v1_page({e: HISTORY[e].then(WINDOW[e]) for e in HISTORY}))
    odd = serving_window(read(vllm_v1_page(HISTORY)), after, seconds=0.0, prefill_s_per_token=1e-4, joules=None)
    assert odd.load is None and odd.prefill_share is None and odd.ttft_p90_s == pytest.approx(0.25 + 0.25 / 3)


def test_prefill_share_is_clamped_and_other_engines_or_pages_are_not_differenced() -> None:
    before = read(vllm_v1_page(HISTORY))
    after = read(vllm_v1_page({e: HISTORY[e].then(WINDOW[e]) for e in HISTORY}))
    assert serving_window(before, after, seconds=1.0, prefill_s_per_token=0.01, joules=None).prefill_share == 1.0
    moved = read_serving(vllm_v1_page({e: HISTORY[e].then(WINDOW[e]) for e in HISTORY}), "http://10.0.0.8:8000/m")
    assert isinstance(moved, ServingSample)
    got = serving_window(before, moved, seconds=60.0, prefill_s_per_token=None, joules=None)
    assert got.ttft_p90_s is None and got.load is None


def test_quantiles_interpolate_like_promql() -> None:
    counts = ((0.01, 10.0), (0.025, 50.0), (0.05, 80.0), (0.075, 95.0), (math.inf, 100.0))
    assert bucket_quantile(0.9, counts) == pytest.approx(0.05 + 0.025 * 10 / 15)
    assert bucket_quantile(0.05, counts) == pytest.approx(0.005)  # the first bucket starts at 0
    assert bucket_quantile(0.5, counts) == pytest.approx(0.025)  # rank 50 closes the second bucket
    assert bucket_quantile(0.99, counts) == 0.075  # the +Inf bucket: only its lower bound is known
    assert bucket_quantile(0.9, ((0.1, 0.0), (math.inf, 0.0))) is None  # no observation
    assert bucket_quantile(0.9, ((math.inf, 5.0),)) is None  # one bucket: no bound to place it
    assert bucket_quantile(0.9, ((0.1, 5.0), (0.2, 7.0))) is None  # no +Inf bucket
    assert bucket_quantile(0.9, ((0.1, 5.0), (0.2, 4.0), (math.inf, 9.0))) is None  # decreasing


def test_unusable_buckets_drop_only_their_figure() -> None:
    page = vllm_v1_page({e: HISTORY[e].then(WINDOW[e]) for e in HISTORY})
    garbled = page.replace('engine="1",le="0.05"} ', 'engine="1",le="0.05"} x', 1)
    got = read(garbled)
    assert got.itl_buckets is None and got.itl is not None and got.ttft_buckets is not None
    bad_le = read(page.replace('engine="0",le="0.001"}', 'engine="0",le="fast"}', 1))
    assert bad_le.ttft_buckets is None and bad_le.itl_buckets is not None
    # Label sets with different bounds cannot be summed per bound.
    missing = read("\n".join(line for line in page.splitlines() if 'engine="1",le="0.25"' not in line))
    assert missing.ttft_buckets is None
    # Garbage in a per-request histogram drops the speed, never the page.
    broken = read(page.replace("vllm:e2e_request_latency_seconds_sum{", "vllm:e2e_request_latency_seconds_sum{=", 1))
    assert broken.e2e is None and broken.request_output is not None and broken.output_tokens == 17_600


def test_the_older_tpot_histogram_is_used_and_a_switch_between_names_is_not_differenced() -> None:
    old = read(vllm_v1_page(HISTORY).replace("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"))
    assert old.itl_buckets is not None and old.itl_buckets.name == "vllm:time_per_output_token_seconds"
    new = read(vllm_v1_page({e: HISTORY[e].then(WINDOW[e]) for e in HISTORY}))
    assert window_p90(old.itl_buckets, new.itl_buckets) is None
    # A page carrying both names (a release in the middle of the rename) is read with the newer one.
    tpot = histogram("vllm:time_per_output_token_seconds", "Deprecated.", VLLM_ITL, {f'model_name="{MODEL}"': [9.0]})
    both = read(vllm_v1_page(HISTORY) + "\n".join(tpot) + "\n")
    assert both.itl_buckets is not None and both.itl_buckets == read(vllm_v1_page(HISTORY)).itl_buckets
    assert both.itl_buckets.name == "vllm:inter_token_latency_seconds"


BOUNDS = st.lists(st.floats(0.001, 50.0, allow_nan=False), min_size=1, max_size=6, unique=True).map(sorted)


@settings(max_examples=150, deadline=None)
@given(
    history=st.lists(st.floats(0.0, 200.0), max_size=40),
    window=st.lists(st.floats(0.0, 200.0), min_size=1, max_size=60),
    split=st.integers(0, 60),
)
def test_p90_lies_in_the_bucket_of_the_90th_observation_of_the_window(
    history: list[float], window: list[float], split: int
) -> None:
    """Through the real path: two rendered pages, parsed, differenced; whatever the history before."""
    first, second = window[:split], window[split:]
    before = read(vllm_v1_page({"0": Traffic(itl=history), "1": Traffic()}))
    after = read(vllm_v1_page({"0": Traffic(itl=history + first), "1": Traffic(itl=second)}))
    p90 = serving_window(before, after, seconds=15.0, prefill_s_per_token=None, joules=None).tpot_p90_s
    assert p90 is not None
    nth = sorted(window)[math.ceil(0.9 * len(window)) - 1]
    bounds = (*VLLM_ITL, math.inf)
    b = next(i for i, le in enumerate(bounds) if nth <= le)
    low = bounds[b - 1] if b > 0 else 0.0
    assert low <= p90 <= bounds[b]


@settings(max_examples=200, deadline=None)
@given(bounds=BOUNDS, observations=st.lists(st.floats(0.0, 100.0), min_size=1, max_size=80))
def test_p90_of_any_buckets_lies_in_the_bucket_of_the_90th_observation(
    bounds: list[float], observations: list[float]
) -> None:
    edges = (*bounds, math.inf)
    counts = tuple((le, float(sum(1 for x in observations if x <= le))) for le in edges)
    p90 = bucket_quantile(0.9, counts)
    assert p90 is not None
    nth = sorted(observations)[math.ceil(0.9 * len(observations)) - 1]
    b = next(i for i, le in enumerate(edges) if nth <= le)
    assert (edges[b - 1] if b > 0 else 0.0) <= p90 <= edges[b]
