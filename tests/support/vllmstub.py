"""A stand-in for a vLLM serving pod: its V1 ``/metrics`` page, with latency that follows the GPU's knob.

End-to-end tests need an inference pod whose metrics react to what the wattplane agent does to its GPU,
without a GPU or a model. :class:`VllmStub` serves, on 127.0.0.1, the families a vLLM V1 engine exposes
through prometheus_client (same names, HELP texts, types, ``model_name``/``engine`` labels, ``_created``
series and bucket boundaries as vLLM's ``PrometheusStatLogger``), fed by virtual traffic:

* Every ``step_s`` it reads the knob in force on its GPU (by default the simulated backend's state file
  the agent writes: power limit and locked SM clock of one board), maps it onto the serving model's GPU
  (:class:`BoardScale`), and asks :mod:`wattplane.sim.inference` for the steady state at the current
  request rate and mix: p90 and mean time per output token and time to first token, power, queue.
* It then adds what that much serving would have recorded in the step: output and prompt tokens, one
  inter-token latency observation per output token and one TTFT / end-to-end latency / length
  observation per finished request. Latencies are drawn from lognormals whose p90 is the model's p90 and
  whose mean is the model's mean (seeded RNG), so the histogram's p90 over a window is the model's p90.
* Overload (arrival rate above what the knob lets the replica serve) grows a backlog: the waiting gauge
  and TTFT rise while it lasts and drain when the rate falls or the knob is lifted.

Metric names and buckets follow vLLM's V1 metrics design document (docs/design/metrics.md) and its
``vllm/v1/metrics/loggers.py``, written here from those lists; no vLLM code is copied.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from aiohttp import web
from loopback import serving
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from wattplane.agent.gpu.simmodels import MODELS, SimGpuModel
from wattplane.agent.gpu.simulated import simulated_gpu_uuid
from wattplane.sim.inference import (
    Z90,
    BatchPolicy,
    GpuPower,
    Knob,
    Load,
    Operating,
    ServiceModel,
    azure_mix,
    h100_llama8b,
    operate,
    operate_limits,
)

MODEL: Final = "meta-llama/Llama-3.1-8B-Instruct"
#: vLLM's bucket boundaries (V1 ``PrometheusStatLogger``).
TTFT_BUCKETS: Final = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
    80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
ITL_BUCKETS: Final = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
REQUEST_LATENCY_BUCKETS: Final = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0,
    960.0, 1920.0, 7680.0,
)  # fmt: skip
#: Llama-3.1-8B's context length, vLLM's default ``max_model_len`` for it.
MAX_MODEL_LEN: Final = 131072


def build_1_2_5_buckets(max_value: int) -> list[float]:
    """1, 2, 5, 10, 20, 50, ... up to ``max_value``: vLLM's buckets for token-count histograms."""
    out: list[float] = []
    base = 1
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * base
            if value > max_value:
                return out
            out.append(float(value))
        base *= 10


# --- the knob on the GPU --------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuKnob:
    """What is in force on the board, in its own units: power limit (W) and the top of a clock lock (MHz)."""

    power_limit_watts: float | None = None
    locked_clock_max_mhz: float | None = None


def state_file_knob(path: Path, index: int) -> Callable[[], GpuKnob | None]:
    """A reader of board ``index``'s knob in a simulated backend's state file (``Fleet.state_file(node)``).

    The agent rewrites that file whole (a temporary file renamed over it), so a read sees the old or the
    new state. The reader still answers ``None`` (the stub keeps the knob it had) when the file is not
    there yet, does not parse or lacks the board, rather than guessing.
    """

    def read() -> GpuKnob | None:
        try:
            payload = json.loads(path.read_text())
            device = payload["devices"][simulated_gpu_uuid(str(payload["node"]), index)]
            clocks = device.get("locked_clocks_mhz")
            return GpuKnob(
                power_limit_watts=float(device["power_limit_watts"]),
                locked_clock_max_mhz=float(clocks[1]) if clocks else None,
            )
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return None

    return read


@dataclass(frozen=True)
class BoardScale:
    """Maps a knob on the pod's board onto the GPU the serving model describes (an H100).

    The fleet's simulated boards (A40 by default) are not the board the serving model was measured on,
    so a knob is carried over by its position in the board's range: a cap at fraction ``f`` of the way
    from the board's lowest to its default limit becomes the cap at ``f`` of the model GPU's range, and
    likewise for the top of a clock lock between the lowest and highest SM clock. A cap at or above the
    default and a lock at or above the top clock do not bind.
    """

    board: SimGpuModel
    gpu: GpuPower

    def limits(self, knob: GpuKnob) -> tuple[float | None, float | None]:
        """``(cap_w, clock_mhz)`` on the model's GPU; ``None`` for a knob that does not bind."""
        cap: float | None = None
        watts = knob.power_limit_watts
        if watts is not None and watts < self.board.default_watts:
            f = (watts - self.board.min_watts) / (self.board.default_watts - self.board.min_watts)
            cap = self.gpu.min_limit_w + max(0.0, f) * (self.gpu.default_limit_w - self.gpu.min_limit_w)
        clock: float | None = None
        mhz = knob.locked_clock_max_mhz
        if mhz is not None and mhz < self.board.max_sm_clock_mhz:
            lo, hi = self.board.min_sm_clock_mhz, self.board.max_sm_clock_mhz
            f = (mhz - lo) / (hi - lo)
            clock = self.gpu.min_clock_mhz + max(0.0, f) * (self.gpu.max_clock_mhz - self.gpu.min_clock_mhz)
        return cap, clock


# --- latency draws -------------------------------------------------------------------------------------


def lognormal_fit(mean: float, p90: float) -> tuple[float, float]:
    """``(mu, sigma)`` of the lognormal with this p90 and, where one exists, this mean.

    The p90 is always matched (it is what SLOs and the histogram quantile read). A lognormal's p90 is at
    most ``exp(Z90**2 / 2)`` times its mean, so a heavier tail (a long queue) takes the widest spread that
    keeps the p90; a p90 at or below the mean gives a near-constant.
    """
    if p90 <= 0:
        return -30.0, 1e-6
    ratio = math.log(p90 / mean) if mean > 0 else Z90 * Z90 / 2
    if ratio <= 0:
        sigma = 1e-6
    elif ratio >= Z90 * Z90 / 2:
        sigma = Z90
    else:
        sigma = Z90 - math.sqrt(Z90 * Z90 - 2 * ratio)
    return math.log(p90) - Z90 * sigma, sigma


@dataclass(frozen=True)
class Computed:
    """What the stub computed at its last step (for test assertions).

    Attributes:
        at: The stub's clock at the step.
        rate_rps: Requests per second arriving.
        board_knob: The knob read from the board (``None``: never read one; the GPU runs uncapped).
        knob: The knob that binds, on the model's GPU.
        op: The serving model's steady state.
        tpot_p50_s, tpot_p90_s: Median and p90 inter-token latency drawn from.
        ttft_p50_s, ttft_p90_s: Median and p90 time to first token drawn from (backlog wait included).
        power_w: Modelled GPU power on the model's GPU.
        capacity_rps: Requests per second the replica serves at this knob and mix.
        served_rps: Requests per second served this step (the rate, or the capacity with a backlog).
        backlog: Requests queued beyond the model's steady-state queue (grows under overload).
        waiting, running: The gauges' values.
    """

    at: float
    rate_rps: float
    board_knob: GpuKnob | None
    knob: Knob
    op: Operating
    tpot_p50_s: float
    tpot_p90_s: float
    ttft_p50_s: float
    ttft_p90_s: float
    power_w: float
    capacity_rps: float
    served_rps: float
    backlog: float
    waiting: int
    running: int


class _Metrics:
    """The engine's metric families on a private registry, one child per family (engine 0)."""

    def __init__(self, model_name: str, max_model_len: int, itl_renamed: bool) -> None:
        self.registry = CollectorRegistry()
        names = ["model_name", "engine"]
        values = (model_name, "0")
        r = self.registry
        token_buckets = build_1_2_5_buckets(max_model_len)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, names, registry=r).labels(*values)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, names, registry=r).labels(*values)

        def histogram(name: str, doc: str, buckets: tuple[float, ...] | list[float]) -> Histogram:
            return Histogram(name, doc, names, buckets=buckets, registry=r).labels(*values)

        self.running = gauge("vllm:num_requests_running", "Number of requests in model execution batches.")
        self.waiting = gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.")
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = counter("vllm:generation_tokens", "Number of generation tokens processed.")
        self.success = (
            Counter(
                "vllm:request_success",
                "Count of successfully processed requests.",
                [*names, "finished_reason"],
                registry=r,
            )
        ).labels(*values, "stop")
        self.request_prompt = histogram(
            "vllm:request_prompt_tokens", "Number of prefill tokens processed.", token_buckets
        )
        self.request_generation = histogram(
            "vllm:request_generation_tokens", "Number of generation tokens processed.", token_buckets
        )
        self.ttft = histogram(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", TTFT_BUCKETS
        )
        self.tpot = histogram(
            "vllm:time_per_output_token_seconds",
            "Histogram of time per output token in seconds."
            + ("DEPRECATED: Use vllm:inter_token_latency_seconds instead." if itl_renamed else ""),
            ITL_BUCKETS,
        )
        self.itl = histogram(
            "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", ITL_BUCKETS
        )
        self.e2e = histogram(
            "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", REQUEST_LATENCY_BUCKETS
        )


class VllmStub:
    """A vLLM V1 engine's ``/metrics`` on 127.0.0.1, driven by virtual traffic and the GPU's knob.

    Use as ``async with VllmStub(...) as stub:``; ``stub.metrics_url`` is the page. The knob comes from
    ``gpu_knob`` (a callable answering the knob in force, or ``None`` to keep the last one), else from
    board ``gpu_index`` of the simulated backend's ``state_file``, else the GPU runs uncapped until
    :meth:`follow_gpu` names one.

    Args:
        rate_rps: Requests per second at the start (:meth:`set_rate` changes it).
        mix: Prompt/output tokens per request (its ``rate`` is ignored); default the Azure conversation
            trace's (:func:`wattplane.sim.inference.azure_mix`).
        state_file, gpu_index: The board to follow (``Fleet.state_file(node)`` and the GPU's index).
        gpu_knob: Overrides the state-file reader.
        board: The board model the knob is set on (the fleet's simulated boards are A40s).
        service: The serving model (default Llama-3.1-8B on an H100, the shipped ML.ENERGY fit).
        policy: The engine's batching settings (vLLM's defaults when ``None``).
        model_name: The ``model_name`` label.
        step_s: Virtual traffic step (also how often the knob is polled).
        seed: Seeds the latency and length draws.
        clock: Seconds, monotonic; the stub advances by what it says between steps.
        max_model_len: Top of the token-count histograms' buckets.
        expose_itl, expose_tpot: Include ``vllm:inter_token_latency_seconds`` (vLLM 0.9 and later) and
            ``vllm:time_per_output_token_seconds`` (its older name, kept deprecated for a while); a test
            of an older release turns the former off.
    """

    def __init__(
        self,
        *,
        rate_rps: float = 2.0,
        mix: Load | None = None,
        state_file: Path | None = None,
        gpu_index: int = 0,
        gpu_knob: Callable[[], GpuKnob | None] | None = None,
        board: str = "A40",
        service: ServiceModel | None = None,
        policy: BatchPolicy | None = None,
        model_name: str = MODEL,
        step_s: float = 0.25,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
        max_model_len: int = MAX_MODEL_LEN,
        expose_itl: bool = True,
        expose_tpot: bool = True,
    ) -> None:
        self.service = service if service is not None else h100_llama8b()
        self.scale = BoardScale(MODELS[board], self.service.gpu)
        self.policy = policy if policy is not None else BatchPolicy()
        self.model_name = model_name
        self.step_s = step_s
        self.max_model_len = max_model_len
        self.expose_itl, self.expose_tpot = expose_itl, expose_tpot
        self._rate = float(rate_rps)
        self._mix = mix if mix is not None else azure_mix()
        self._gpu_knob = gpu_knob or (state_file_knob(state_file, gpu_index) if state_file is not None else None)
        self._knob: GpuKnob | None = None
        self._rng = random.Random(seed)
        self._clock = clock
        self._metrics = _Metrics(model_name, max_model_len, expose_itl)
        self._last_t: float | None = None
        self._backlog = 0.0
        self._token_acc = self._request_acc = 0.0
        self._cache: dict[tuple[float, Load, float | None, float | None], tuple[Knob, Operating, float]] = {}
        self._steps = 0
        self._stepped = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._stack = contextlib.AsyncExitStack()
        self.url = ""
        self.last: Computed | None = None
        self.scrapes = 0

    # -- control ----------------------------------------------------------------------------------------

    def set_rate(self, requests_per_s: float) -> None:
        """Change the arrival rate from the next step on (a load step)."""
        if requests_per_s < 0 or not math.isfinite(requests_per_s):
            raise ValueError(f"rate must be a finite number >= 0, not {requests_per_s}")
        self._rate = float(requests_per_s)

    def set_mix(self, mix: Load) -> None:
        """Change the prompt/output tokens per request (the mix's ``rate`` is ignored)."""
        self._mix = mix

    def follow_gpu(self, state_file: Path, index: int) -> None:
        """Follow board ``index`` of a simulated backend's state file from the next step on.

        An e2e test starts the stub before the pod exists (the pod's annotation names the stub's URL) and
        calls this once the agent reports which GPU it gave the pod.
        """
        self._gpu_knob = state_file_knob(state_file, index)

    def set_knob_reader(self, gpu_knob: Callable[[], GpuKnob | None]) -> None:
        """Take the knob from ``gpu_knob`` from the next step on."""
        self._gpu_knob = gpu_knob

    def restart(self) -> None:
        """The engine restarts: every counter and histogram starts over (the queue is lost)."""
        self._metrics = _Metrics(self.model_name, self.max_model_len, self.expose_itl)
        self._backlog = self._token_acc = self._request_acc = 0.0

    @property
    def metrics_url(self) -> str:
        """Where the page is (``http://127.0.0.1:PORT/metrics``)."""
        return f"{self.url}/metrics"

    @property
    def steps(self) -> int:
        """Traffic steps taken so far."""
        return self._steps

    async def advanced(self, steps: int = 1, timeout_s: float = 10.0) -> None:
        """Wait until ``steps`` more traffic steps have been taken."""
        target = self._steps + steps
        async with asyncio.timeout(timeout_s), self._stepped:
            await self._stepped.wait_for(lambda: self._steps >= target)

    # -- serving ----------------------------------------------------------------------------------------

    def exposition(self) -> str:
        """The page as vLLM's prometheus_client registry renders it."""
        text = generate_latest(self._metrics.registry).decode()
        if self.expose_itl and self.expose_tpot:
            return text
        drop: tuple[str, ...] = ("vllm:inter_token_latency_seconds",) if not self.expose_itl else ()
        drop += ("vllm:time_per_output_token_seconds",) if not self.expose_tpot else ()
        return "".join(
            line + "\n"
            for line in text.splitlines()
            if not any(line.startswith(d) or line[7:].startswith(d) for d in drop)  # "# HELP " / "# TYPE "
        )

    async def _handle(self, _: web.Request) -> web.Response:
        self.scrapes += 1
        return web.Response(body=self.exposition().encode(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def __aenter__(self) -> VllmStub:
        app = web.Application()
        app.router.add_get("/metrics", self._handle)
        self.url = await self._stack.enter_async_context(serving(app))
        self.step()  # the knob and the steady state are known before the first scrape
        self._task = asyncio.create_task(self._run(), name="vllm-stub-traffic")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._stack.aclose()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.step_s)
            self.step()
            async with self._stepped:
                self._stepped.notify_all()

    # -- the traffic ------------------------------------------------------------------------------------

    def _steady(self, knob: GpuKnob | None) -> tuple[Knob, Operating, float]:
        """The binding knob, the steady state and the capacity (req/s), cached for an unchanged input."""
        cap, clock = self.scale.limits(knob) if knob is not None else (None, None)
        key = (self._rate, self._mix, cap, clock)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        load = dataclasses.replace(self._mix, rate=self._rate)
        binding, op = operate_limits(self.service, load, cap_w=cap, clock_mhz=clock, policy=self.policy)
        if op.overloaded:
            capacity = op.capacity_rps
        else:  # what it could serve: the model's capacity under a rate far above it
            heavy = dataclasses.replace(self._mix, rate=1e4)
            capacity = operate(self.service, heavy, binding, self.policy).capacity_rps
        self._cache = {key: (binding, op, capacity)}
        return binding, op, capacity

    def step(self) -> Computed:
        """Advance virtual traffic to now: read the knob, evaluate the model, record what was served."""
        now = self._clock()
        dt = 0.0 if self._last_t is None else max(0.0, now - self._last_t)
        self._last_t = now
        if self._gpu_knob is not None:
            read = self._gpu_knob()
            if read is not None:
                self._knob = read
        binding, op, capacity = self._steady(self._knob)
        rate = self._rate
        # Overload queues the excess; spare capacity drains the queue.
        if rate > capacity:
            self._backlog += (rate - capacity) * dt
            served = capacity
        else:
            drained = min(self._backlog, (capacity - rate) * dt)
            self._backlog -= drained
            served = rate + (drained / dt if dt > 0 else 0.0)
        queue_wait = self._backlog / capacity if capacity > 0 else 0.0
        tpot = lognormal_fit(op.tpot_mean_s, op.tpot_p90_s)
        ttft = lognormal_fit(op.ttft_mean_s, op.ttft_p90_s)
        m = self._metrics
        # Output tokens as the engine's iterations produce them, one inter-token latency each.
        self._token_acc += served * self._mix.output_mean * dt
        tokens = int(self._token_acc)
        self._token_acc -= tokens
        if tokens:
            m.generation_tokens.inc(tokens)
            for _ in range(tokens):
                itl = self._rng.lognormvariate(*tpot)
                if self.expose_itl:
                    m.itl.observe(itl)
                if self.expose_tpot:
                    m.tpot.observe(itl)
        # Requests finishing in the step: their lengths, first-token and end-to-end latencies.
        self._request_acc += served * dt
        requests = int(self._request_acc)
        self._request_acc -= requests
        prompt = lognormal_fit(self._mix.prompt_mean, self._mix.prompt_p90)
        output = lognormal_fit(self._mix.output_mean, self._mix.output_p90)
        for _ in range(requests):
            p = min(self.max_model_len, max(1, round(self._rng.lognormvariate(*prompt))))
            o = max(1, min(self.max_model_len - p, round(self._rng.lognormvariate(*output))))
            first = self._rng.lognormvariate(*ttft) + queue_wait
            m.prompt_tokens.inc(p)
            m.request_prompt.observe(p)
            m.request_generation.observe(o)
            m.ttft.observe(first)
            m.e2e.observe(first + (o - 1) * op.tpot_mean_s)
            m.success.inc()
        waiting = round(op.waiting + self._backlog)
        running = min(self.policy.max_num_seqs, round(op.batch)) if served > 0 else 0
        m.waiting.set(waiting)
        m.running.set(running)
        self._steps += 1
        self.last = Computed(
            at=now,
            rate_rps=rate,
            board_knob=self._knob,
            knob=binding,
            op=op,
            tpot_p50_s=math.exp(tpot[0]),
            tpot_p90_s=op.tpot_p90_s,
            ttft_p50_s=math.exp(ttft[0]) + queue_wait,
            ttft_p90_s=op.ttft_p90_s + queue_wait,
            power_w=op.power_w,
            capacity_rps=capacity,
            served_rps=served,
            backlog=self._backlog,
            waiting=waiting,
            running=running,
        )
        return self.last


def gpu_index_of_pod(gpunode: Mapping[str, Any], namespace: str, pod: str) -> int | None:
    """The index of the GPU a GpuNode's status gives to ``namespace/pod`` (``None``: not reported yet).

    The sim pod mapper hands out the lowest free board, so which one a pod gets depends on what ran on
    the node before: an e2e test asks the agent's report, then :meth:`VllmStub.follow_gpu` that board.
    """
    for gpu in gpunode.get("status", {}).get("gpus", []):
        if any(p.get("namespace") == namespace and p.get("name") == pod for p in gpu.get("pods", [])):
            return int(gpu["index"])
    return None


# --- reading the page back (for assertions) --------------------------------------------------------------


def histogram_buckets(text: str, family: str) -> dict[float, float]:
    """Cumulative bucket counts of a histogram family by upper bound, summed over its label sets."""
    out: dict[float, float] = {}
    for metric in text_string_to_metric_families(text):
        if metric.name != family:
            continue
        for sample in metric.samples:
            if sample.name == family + "_bucket":
                le = float(sample.labels["le"])
                out[le] = out.get(le, 0.0) + sample.value
    return out


def sample_value(text: str, name: str) -> float | None:
    """The sum of a sample's values over its label sets (``None`` when absent)."""
    values = [s.value for m in text_string_to_metric_families(text) for s in m.samples if s.name == name]
    return math.fsum(values) if values else None


def histogram_quantile(q: float, buckets: Mapping[float, float], before: Mapping[float, float] | None = None) -> float:
    """PromQL's ``histogram_quantile`` over cumulative buckets (or their increase since ``before``).

    Linear interpolation inside the bucket holding the rank, the first bucket starting at 0, and the
    highest finite bound when the rank falls in the ``+Inf`` bucket. NaN when nothing was observed.
    """
    bounds = sorted(buckets)
    counts = [buckets[b] - (before.get(b, 0.0) if before is not None else 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return math.nan
    rank = q * counts[-1]
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * ((rank - below) / (count - below) if count > below else 0.0)
        lower, below = bound, count
    return lower


async def serve_behind_pod(
    api: Any, stub: VllmStub, *, node: str, state_file: Path, namespace: str, pod: str, app: str
) -> int:
    """Serve ``stub`` behind a new inference pod on ``node``; the index of the GPU it got.

    Creates ``namespace`` and the pod (its ``wattplane.io/serving-metrics`` names the stub's page), waits
    until the node's agent reports the pod's GPU, and points the stub at that board.
    """
    from kubeapi import create_namespace, create_pod, eventually, get_cluster_object

    await create_namespace(api, namespace, {"team": "serving"})
    await create_pod(
        api,
        namespace,
        pod,
        node=node,
        gpus=1,
        labels={"app": app},
        annotations={"wattplane.io/workload": "inference", "wattplane.io/serving-metrics": stub.metrics_url},
    )

    async def placed() -> tuple[int] | None:
        index = gpu_index_of_pod(await get_cluster_object(api, "gpunodes", node), namespace, pod)
        return None if index is None else (index,)  # index 0 is falsy for eventually()

    (index,), _ = await eventually(placed, within_s=60, what=f"the GPU of pod {namespace}/{pod} in GpuNode status")
    stub.follow_gpu(state_file, index)
    return index
