"""The vLLM stand-in: a V1 metrics page the operator and promtool read, latency that follows the GPU's knob.

The stub serves over real HTTP on 127.0.0.1; the knob comes from a real simulated backend's state file,
written by the backend's own setters exactly as the agent's writes reach it. Latency percentiles are
read back from histogram bucket increases, the way PromQL's ``histogram_quantile(rate(...))`` reads them.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from promtool import check_metrics, require_promtool
from vllmstub import (
    ITL_BUCKETS,
    MODEL,
    TTFT_BUCKETS,
    GpuKnob,
    VllmStub,
    histogram_buckets,
    histogram_quantile,
    sample_value,
    state_file_knob,
)
from wattplane.agent.gpu.simulated import SimulatedBackend
from wattplane.operator.serving import ServingSample, read_serving, scrape_serving, serving_target
from wattplane.sim.inference import azure_mix

pytestmark = pytest.mark.timeout(60)

ITL = "vllm:inter_token_latency_seconds"
TTFT = "vllm:time_to_first_token_seconds"
FAMILIES = {
    "vllm:generation_tokens": "counter",
    "vllm:prompt_tokens": "counter",
    TTFT: "histogram",
    ITL: "histogram",
    "vllm:time_per_output_token_seconds": "histogram",
    "vllm:e2e_request_latency_seconds": "histogram",
    "vllm:request_generation_tokens": "histogram",
    "vllm:request_prompt_tokens": "histogram",
    "vllm:num_requests_waiting": "gauge",
    "vllm:num_requests_running": "gauge",
}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def backend(tmp_path: Path) -> SimulatedBackend:
    """A node's simulated A40s persisted where the fleet keeps them (``Fleet.state_file``)."""
    return SimulatedBackend(node_name="llm-n1", gpu_count=4, model="A40", state_file=tmp_path / "llm-n1.gpus.json")


async def scrape(session: aiohttp.ClientSession, stub: VllmStub) -> str:
    async with session.get(stub.metrics_url) as response:
        assert response.status == 200
        return await response.text()


async def window(session: aiohttp.ClientSession, stub: VllmStub, steps: int) -> tuple[str, str]:
    """The page before and after ``steps`` traffic steps."""
    before = await scrape(session, stub)
    await stub.advanced(steps)
    return before, await scrape(session, stub)


async def until_binding(stub: VllmStub, kind: str, within_s: float = 2.0) -> None:
    """Wait until the stub's binding knob is of ``kind`` (it polls the GPU every step)."""
    async with asyncio.timeout(within_s):
        while stub.last is None or stub.last.knob.kind != kind:
            await stub.advanced(1)


def p90(family: str, before: str, after: str) -> float:
    return histogram_quantile(0.9, histogram_buckets(after, family), histogram_buckets(before, family))


def mean(family: str, before: str, after: str) -> float:
    def delta(suffix: str) -> float:
        return (sample_value(after, family + suffix) or 0.0) - (sample_value(before, family + suffix) or 0.0)

    return delta("_sum") / delta("_count")


async def test_the_page_is_vllm_v1s_and_both_the_operator_and_promtool_read_it(
    session: aiohttp.ClientSession,
) -> None:
    async with VllmStub(rate_rps=5.0, seed=1) as stub:
        await stub.advanced(4)
        text = await scrape(session, stub)
        assert stub.last is not None
        op = stub.last.op

    types = {family.name: family.type for family in text_string_to_metric_families(text)}
    assert {name: types.get(name) for name in FAMILIES} == FAMILIES
    for name in FAMILIES:
        exposed = name + "_total" if FAMILIES[name] == "counter" else name
        assert f"# HELP {exposed} " in text and f"# TYPE {exposed} {FAMILIES[name]}\n" in text
    assert f'{ITL}_bucket{{engine="0",le="0.01",model_name="{MODEL}"}}' in text
    assert histogram_buckets(text, ITL).keys() == {*ITL_BUCKETS, float("inf")}
    assert histogram_buckets(text, TTFT).keys() == {*TTFT_BUCKETS, float("inf")}
    assert "vllm:generation_tokens_created{" in text  # prometheus_client's _created series, as vLLM serves them

    # The operator's own reader, on the page as fetched, and its scrape path from a pod annotation.
    sample = read_serving(text, stub.metrics_url)
    assert isinstance(sample, ServingSample), sample
    assert sample.engine == "vllm"
    assert sample.output_tokens == sample_value(text, "vllm:generation_tokens_total")
    assert sample.output_tokens > 0
    assert sample.prompt_tokens == sample_value(text, "vllm:prompt_tokens_total")
    assert sample.queue == sample_value(text, "vllm:num_requests_waiting")
    assert sample.itl is not None and sample.itl.mean == pytest.approx(op.tpot_mean_s, rel=0.15)
    assert sample.ttft is not None and sample.ttft.count > 0

    # promtool parses the page (a parse error is exit 1); its only lint finding is vLLM's own choice of
    # ':' in names, which Prometheus reserves for recording rules (exit 3 with one line per series).
    checked = check_metrics(require_promtool(), text)
    colon = " metric names should not contain ':'"
    assert checked.returncode == 3 and all(line.endswith(colon) for line in checked.problems), checked.output
    assert {line.removesuffix(colon) for line in checked.problems} >= {ITL, TTFT, "vllm:generation_tokens_total"}

    async with VllmStub(rate_rps=5.0, expose_itl=False) as older:  # a release before the rename
        await older.advanced(2)
        older_target = serving_target({"wattplane.io/serving-metrics": older.metrics_url})
        assert not isinstance(older_target, str)
        scraped = await scrape_serving(session, older_target, None, 2.0)
        assert isinstance(scraped, ServingSample), scraped
        assert ITL not in await scrape(session, older)  # neither the family nor the deprecation notice
        assert scraped.itl is not None and scraped.itl.count > 0  # read from vllm:time_per_output_token_seconds


@pytest.mark.parametrize("knob", ["clock", "cap"])
async def test_a_tighter_knob_on_the_pods_gpu_raises_the_served_p90_tpot_within_seconds(
    session: aiohttp.ClientSession, backend: SimulatedBackend, tmp_path: Path, knob: str
) -> None:
    bound = 0.075  # a vLLM ITL bucket bound between the free (~10 ms) and the held-back (~95-130 ms) p90
    state = tmp_path / "llm-n1.gpus.json"
    async with VllmStub(rate_rps=5.0, state_file=state, gpu_index=1, seed=2) as stub:
        first, second = await window(session, stub, 4)
        free = p90(ITL, first, second)
        assert stub.last is not None and stub.last.knob.kind == "none"
        assert 0.010 <= stub.last.tpot_p90_s <= free <= 0.025  # the model's ~10 ms, read within its bucket

        board0, board1 = backend.devices()[0], backend.devices()[1]
        board0.set_locked_clocks_mhz(210, 300)  # another pod's GPU: no effect here
        await stub.advanced(2)
        assert stub.last.board_knob == GpuKnob(power_limit_watts=300.0) and stub.last.knob.kind == "none"

        set_at = time.monotonic()
        if knob == "clock":
            board1.set_locked_clocks_mhz(210, 450)  # ~600 MHz on the model's H100
        else:
            board1.set_power_limit_watts(100.0)  # the A40's floor: the H100's 200 W floor
        await until_binding(stub, knob)
        seen_s = time.monotonic() - set_at
        before, after = await window(session, stub, 4)
        slow = p90(ITL, before, after)
        model = stub.last.tpot_p90_s
        assert slow >= bound > free
        assert slow == pytest.approx(model, rel=0.25), (slow, model)
        assert p90("vllm:time_per_output_token_seconds", before, after) == pytest.approx(slow, rel=0.25)
        assert stub.last.power_w < 300.0  # the modelled H100 draws far below its uncapped ~530 W
        sys.stderr.write(
            f"\nvllm stub, {knob}: p90 ITL {free * 1e3:.1f} -> {slow * 1e3:.1f} ms (model {model * 1e3:.1f} ms), "
            f"seen after {seen_s:.2f} s\n"
        )

        if knob == "clock":
            board1.reset_locked_clocks()
        else:
            board1.set_power_limit_watts(300.0)
        await until_binding(stub, "none")
        before, after = await window(session, stub, 4)
        assert p90(ITL, before, after) < bound


async def test_a_rate_step_past_capacity_raises_ttft_and_the_queue_which_drains_after(
    session: aiohttp.ClientSession,
) -> None:
    async with VllmStub(rate_rps=5.0, seed=3) as stub:
        before, after = await window(session, stub, 6)
        calm_ttft = mean(TTFT, before, after)
        calm_queue = sample_value(after, "vllm:num_requests_waiting")
        assert stub.last is not None and not stub.last.op.overloaded
        assert calm_queue is not None and calm_queue <= 2

        stub.set_rate(30.0)  # uncapped capacity for this mix is ~17 requests/s
        await stub.advanced(2)
        before, after = await window(session, stub, 6)
        assert stub.last.op.overloaded and stub.last.backlog > 0
        busy_ttft = mean(TTFT, before, after)
        queue = [sample_value(page, "vllm:num_requests_waiting") or 0.0 for page in (before, after)]
        assert busy_ttft > 10 * calm_ttft, (busy_ttft, calm_ttft)
        assert queue[1] > queue[0] > calm_queue + 20  # the model's full batch queue, then the backlog grows
        busy_p90 = p90(TTFT, before, after)
        assert busy_p90 > 5.0
        sys.stderr.write(
            f"\nvllm stub, 5 -> 30 req/s: mean TTFT {calm_ttft:.3f} -> {busy_ttft:.2f} s (p90 {busy_p90:.1f} s), "
            f"waiting {calm_queue:.0f} -> {queue[0]:.0f} -> {queue[1]:.0f}\n"
        )

        backlog = stub.last.backlog
        stub.set_rate(1.0)  # spare capacity drains the backlog at ~16 requests/s
        await stub.advanced(4)
        assert not stub.last.op.overloaded and stub.last.backlog < backlog - 5
        assert stub.last.waiting < queue[1] - 59


async def test_counters_and_buckets_never_go_back_through_knob_and_rate_changes(
    session: aiohttp.ClientSession, backend: SimulatedBackend, tmp_path: Path
) -> None:
    pages: list[str] = []
    async with VllmStub(rate_rps=3.0, state_file=tmp_path / "llm-n1.gpus.json", seed=4, step_s=0.1) as stub:
        changes: list[Callable[[], None]] = [
            lambda: stub.set_rate(12.0),
            lambda: backend.devices()[0].set_locked_clocks_mhz(210, 600),
            lambda: stub.set_rate(0.0),
            lambda: backend.devices()[0].set_power_limit_watts(150.0),
            lambda: stub.set_rate(6.0),
        ]
        for change in changes:
            pages.append(await scrape(session, stub))
            change()
            await stub.advanced(3)
        pages.append(await scrape(session, stub))
        started, tokens_before = time.monotonic(), sample_value(pages[-1], "vllm:generation_tokens_total") or 0.0
        await asyncio.sleep(1.0)
        tokens = (sample_value(await scrape(session, stub), "vllm:generation_tokens_total") or 0.0) - tokens_before
        rate = tokens / (time.monotonic() - started)
        assert rate == pytest.approx(6.0 * azure_mix().output_mean, rel=0.35)

    def monotonic_series(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        out = {}
        for family in text_string_to_metric_families(text):
            if family.type in ("counter", "histogram"):
                for s in family.samples:
                    if not s.name.endswith("_created"):
                        out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    series = [monotonic_series(page) for page in pages]
    for older, newer in itertools.pairwise(series):
        assert older.keys() == newer.keys()
        assert all(newer[key] >= older[key] for key in older), [k for k in older if newer[k] < older[k]]
    last = pages[-1]
    for family in (ITL, TTFT, "vllm:e2e_request_latency_seconds", "vllm:request_prompt_tokens"):
        buckets = histogram_buckets(last, family)
        counts = [buckets[le] for le in sorted(buckets)]
        assert counts == sorted(counts) and counts[-1] == sample_value(last, family + "_count")
        assert counts[-1] > 0
    assert sample_value(pages[3], "vllm:num_requests_running") == 0.0  # rate 0: nothing runs


def test_an_unreadable_state_file_keeps_the_last_knob(tmp_path: Path) -> None:
    state = tmp_path / "n.gpus.json"
    read = state_file_knob(state, 0)
    assert read() is None  # not written yet
    backend = SimulatedBackend(node_name="n", gpu_count=2, model="A40", state_file=state)
    backend.devices()[0].set_power_limit_watts(180.0)
    assert read() == GpuKnob(180.0, None)
    state.write_text('{"node": "n", "devices": {')  # a torn write by some other writer
    assert read() is None
    assert state_file_knob(state, 7)() is None

    stub = VllmStub(gpu_knob=iter([GpuKnob(150.0, None), None]).__next__, mix=azure_mix())
    assert stub.step().knob.kind == "cap"
    assert stub.step().board_knob == GpuKnob(150.0, None)  # None read: the knob in force stays
