"""LLM serving services in the fleet simulator: the serving model of :mod:`wattplane.sim.inference` per GPU.

An inference service is an **LLM service** when its job carries an :class:`LlmDemand` (requests per
second and the request mix per time step, per GPU replica) and it runs on a GPU the serving model
covers (H100: Llama-3.1-8B calibrated on ML.ENERGY v3; **modelled** under caps and clock locks). Each of
its GPUs is one replica serving an equal share of the service's requests (a load balancer splitting a
Poisson stream). On any other GPU the same job falls back to the training-curve duty cycle of
:mod:`wattplane.sim.physics` with its ``demand``.

Per replica the steady state follows :func:`wattplane.sim.inference.operate_limits` at the board's
power limit and locked SM clock (what the real agent wrote to the :class:`~wattplane.sim.devices.SimGpu`),
so between events everything is constant and the accounting stays exact: output tokens, prompt tokens,
finished requests and time above the run's latency objectives are integrals of constants. A replica
that cannot keep up builds a backlog of requests, served at its capacity once it can.

**The engine's metrics page.** :meth:`LlmService.sample` gives what a vLLM ``/metrics`` scrape of the
service would read (:class:`~wattplane.operator.serving.ServingSample`): counters of output and prompt
tokens, the per-request histograms, the waiting queue, and cumulative inter-token-latency and TTFT
buckets with vLLM's bounds. Each constant stretch adds its observations to the buckets so that the
PromQL-style p90 of that stretch alone is exactly the model's p90 (90 % − 10 %·f of them at or below the
bucket under it, 10 % in the bucket holding it, the rest above); a window covering several stretches
reads the p90 of their mixture through the same buckets, as the operator would. The operator's own
:class:`~wattplane.operator.servingcontrol.ServingController` therefore runs unchanged in the simulator.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Final

from wattplane.operator.serving import Buckets, Histogram, ServingSample
from wattplane.operator.servingwindow import bucket_quantile
from wattplane.sim.inference import (
    Knob,
    Load,
    Operating,
    ServiceModel,
    ServiceSlo,
    azure_mix,
    azure_windows,
    h100_llama8b,
    operate,
    operate_limits,
)

#: The workload name that marks a service as Llama-3.1-8B serving (the serving model's only model).
LLM_WORKLOAD: Final = "llm/llama3.1-8b"
#: Busiest step of an Azure trace per replica, as a fraction of what one uncapped replica serves within
#: :data:`CAPACITY_SLO` (``bench/inference_energy.py``'s default peak).
AZURE_PEAK: Final = 0.8
#: Objectives the per-replica capacity is found under (the serving benches' stricter SLO).
CAPACITY_SLO: Final = ServiceSlo()
#: vLLM's bucket bounds (seconds) for ``inter_token_latency_seconds`` and ``time_to_first_token_seconds``.
ITL_BOUNDS: Final = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0)
TTFT_BOUNDS: Final = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
_ITL_NAME: Final = "vllm:inter_token_latency_seconds"
_TTFT_NAME: Final = "vllm:time_to_first_token_seconds"
#: The SLO minutes are clock minutes of virtual time.
MINUTE_S: Final = 60.0
#: A request rate far beyond any replica's capacity: the model's figures at saturation.
_SATURATED_RPS: Final = 1e6


def is_llm_workload(name: str) -> bool:
    """Whether a job's workload names the serving model (``llm/...``)."""
    return name.strip().lower().startswith("llm/")


def serves_on(gpu_model: str) -> bool:
    """Whether the serving model covers a GPU model (H100 only, for now)."""
    return "H100" in gpu_model.upper()


@cache
def serving_model() -> ServiceModel:
    """Llama-3.1-8B on one H100 (fitted once per process)."""
    return h100_llama8b()


@dataclass(frozen=True)
class LlmDemand:
    """Per-replica load, ``loads[i]`` from ``i * step_s``, repeating after the last step (like ``Demand``)."""

    step_s: float
    loads: tuple[Load, ...]

    def __post_init__(self) -> None:
        if self.step_s <= 0 or not self.loads:
            raise ValueError("an LLM demand needs a positive step and at least one load")
        if any(load.rate < 0 for load in self.loads):
            raise ValueError("request rates cannot be negative")

    @classmethod
    def constant(cls, load: Load) -> LlmDemand:
        """The same load forever."""
        return cls(step_s=math.inf, loads=(load,))

    def at(self, t: float) -> Load:
        """Load in force at ``t`` (seconds since the service started)."""
        if math.isinf(self.step_s):
            return self.loads[0]
        return self.loads[int(t // self.step_s) % len(self.loads)]

    def next_change(self, t: float) -> float:
        """The first step boundary after ``t`` (``inf`` for a constant load)."""
        if math.isinf(self.step_s) or len(self.loads) == 1:
            return math.inf
        return (math.floor(t / self.step_s) + 1) * self.step_s

    def shifted(self, steps: int) -> LlmDemand:
        """The same loads starting ``steps`` steps later in the cycle."""
        k = steps % len(self.loads)
        return LlmDemand(self.step_s, self.loads[k:] + self.loads[:k])


@cache
def slo_capacity(load: Load, slo: ServiceSlo = CAPACITY_SLO) -> float:
    """Highest request rate one uncapped replica serves within ``slo`` with this request mix (bisection)."""
    model = serving_model()
    lo, hi = 0.0, 50.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if slo.met(operate(model, _at(load, mid), Knob())):
            lo = mid
        else:
            hi = mid
    return lo


def _at(load: Load, rate: float) -> Load:
    return Load(rate, load.prompt_mean, load.prompt_p90, load.prompt_cv2, load.output_mean, load.output_p90)


def constant_llm_demand(fraction: float) -> LlmDemand:
    """``fraction`` of one uncapped replica's SLO capacity with the Azure trace's whole request mix."""
    mix = azure_mix(1.0)
    return LlmDemand.constant(_at(mix, fraction * slo_capacity(mix)))


def azure_llm_demand(path: Path | None = None, *, step_s: float = 60.0, peak: float = AZURE_PEAK) -> LlmDemand:
    """Per-replica loads of the Azure LLM trace: each step's rate and mix, its busiest step at ``peak`` of capacity.

    The trace's absolute rate is its deployment's; what matters is each replica's load against what it
    can serve, so the rates are scaled as ``bench/inference_energy.py`` scales them.
    """
    text = path.read_text(encoding="utf-8-sig") if path is not None else None
    windows = azure_windows(text, step_s=step_s)
    busiest = max(windows, key=lambda w: w.load.rate).load
    scale = peak * slo_capacity(busiest) / busiest.rate
    return LlmDemand(step_s, tuple(w.load.scaled(scale) for w in windows))


# --- one running service ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServingSlo:
    """The run's latency objectives that the SLO minutes are counted against."""

    tpot_p90_s: float = 0.100
    ttft_p90_s: float = 2.0


@cache
def _operate_cached(load: Load, cap_w: float | None, clock_mhz: float | None) -> Operating:
    return operate_limits(serving_model(), load, cap_w=cap_w, clock_mhz=clock_mhz)[1]


def _add_observations(counts: list[float], bounds: Sequence[float], value: float, n: float) -> None:
    """Add ``n`` observations whose PromQL p90 is ``value`` to per-bucket ``counts`` (see the module text)."""
    if n <= 0:
        return
    j = bisect.bisect_left(bounds, value)
    if j >= len(bounds):  # beyond the last finite bound: only +Inf holds them
        counts[-1] += n
        return
    lo = bounds[j - 1] if j > 0 else 0.0
    f = (value - lo) / (bounds[j] - lo)
    if j == 0:
        inside = min(n, 0.9 * n / max(f, 1e-12))
        counts[0] += inside
        counts[1] += n - inside
        return
    below = n * (0.9 - 0.1 * f)
    counts[j - 1] += below
    counts[j] += 0.1 * n
    if j + 1 < len(counts):
        counts[j + 1] += n - below - 0.1 * n


@dataclass
class LlmService:
    """The serving state and counters of one LLM service (one replica per GPU)."""

    demand: LlmDemand
    slo: ServingSlo
    replicas: int
    load: Load = field(init=False)
    #: Per replica: the steady state in force.
    ops: list[Operating] = field(default_factory=list)
    #: Requests per second served per replica (below the rate when overloaded, above it while draining).
    served_rps: float = 0.0
    backlog: float = 0.0
    """Requests waiting beyond the engine's queue (the service fell behind), all replicas."""
    backlog_rate: float = 0.0
    above_slo: bool = False
    output_tokens: float = 0.0
    prompt_tokens: float = 0.0
    requests: float = 0.0
    e2e_s: float = 0.0
    #: Seconds in which a replica's steady-state p90 was above an objective (or requests were backlogged).
    above_slo_s: float = 0.0
    itl_counts: list[float] = field(default_factory=lambda: [0.0] * (len(ITL_BOUNDS) + 1))
    ttft_counts: list[float] = field(default_factory=lambda: [0.0] * (len(TTFT_BOUNDS) + 1))
    #: Closed clock minutes, and those of them above an objective.
    minutes: int = 0
    slo_minutes_closed: int = 0
    _minute: int | None = None
    _minute_itl: list[float] = field(default_factory=lambda: [0.0] * (len(ITL_BOUNDS) + 1))
    _minute_ttft: list[float] = field(default_factory=lambda: [0.0] * (len(TTFT_BOUNDS) + 1))
    _minute_behind: bool = False

    def __post_init__(self) -> None:
        self.load = self.demand.at(0.0)

    def served_fraction(self) -> float:
        """Requests served over requests offered now (1 with nothing offered)."""
        return self.served_rps / self.load.rate if self.load.rate > 0 else 1.0

    def operate(self, knobs: Sequence[tuple[float | None, float | None]]) -> list[tuple[float, float, bool]]:
        """Steady state per replica for ``(cap_w, clock_mhz)`` knobs; ``(watts, busy, cap binds)`` per GPU."""
        load = self.load
        ops: list[Operating] = []
        served: list[float] = []
        for cap, clock in knobs:
            op = _operate_cached(load, cap, clock)
            if op.overloaded or self.backlog > 0.0:
                saturated = _operate_cached(_at(load, _SATURATED_RPS), cap, clock)
                if op.overloaded or saturated.capacity_rps > load.rate:
                    op = saturated
            ops.append(op)
            served.append(op.capacity_rps)
        self.ops = ops
        self.served_rps = math.fsum(served) / len(served)
        self.backlog_rate = (load.rate - self.served_rps) * len(ops)
        if self.backlog <= 0.0 and self.backlog_rate < 0.0:
            self.backlog_rate = 0.0
        self.above_slo = self.backlog > 0.0 or any(
            o.overloaded or o.tpot_p90_s > self.slo.tpot_p90_s or o.ttft_p90_s > self.slo.ttft_p90_s for o in ops
        )
        model = serving_model()
        out = []
        for (cap, _), op in zip(knobs, ops, strict=True):
            tokens = op.capacity_rps * load.output_mean
            step = op.tpot_mean_s * (1.0 - op.prefill_share)
            busy = min(1.0, op.prefill_share + (1.0 - op.prefill_share) * tokens * step / max(op.batch, 1.0))
            binds = cap is not None and (
                op.prefill_clock_mhz < model.gpu.prefill_clock_mhz - 0.5
                or op.decode_clock_mhz < model.gpu.max_clock_mhz - 0.5
            )
            out.append((op.power_w, busy, binds))
        return out

    def flush(self, t0: float, t1: float) -> None:
        """Integrate the counters over ``[t0, t1)`` of the state in force (virtual seconds)."""
        dt = t1 - t0
        if dt <= 0:
            return
        while t0 < t1:  # close every clock minute the stretch completes
            minute = math.floor(t0 / MINUTE_S)
            if self._minute is not None and minute != self._minute:
                self._close_minute()
            self._minute = minute
            end = min(t1, (minute + 1) * MINUTE_S)
            self._observe(end - t0)
            t0 = end
        if self.above_slo:
            self.above_slo_s += dt
        self.backlog = max(0.0, self.backlog + self.backlog_rate * dt)
        if self.backlog < 1e-9:
            self.backlog = 0.0

    def _observe(self, dt: float) -> None:
        load = self.load
        for op in self.ops:
            requests = op.capacity_rps * dt
            tokens = requests * load.output_mean
            self.output_tokens += tokens
            self.prompt_tokens += requests * load.prompt_mean
            self.requests += requests
            self.e2e_s += requests * (op.ttft_mean_s + load.output_mean * op.tpot_mean_s)
            for counts in (self.itl_counts, self._minute_itl):
                _add_observations(counts, ITL_BOUNDS, op.tpot_p90_s, tokens)
            for counts in (self.ttft_counts, self._minute_ttft):
                _add_observations(counts, TTFT_BOUNDS, op.ttft_p90_s, requests)
        if self.backlog > 0.0 or any(o.overloaded for o in self.ops):
            self._minute_behind = True

    def _minute_above(self) -> bool:
        """Whether the open minute's p90 TPOT or p90 TTFT (PromQL over its buckets) is above the objective."""
        if self._minute is None:
            return False
        tpot = bucket_quantile(0.9, _cumulative(ITL_BOUNDS, self._minute_itl))
        ttft = bucket_quantile(0.9, _cumulative(TTFT_BOUNDS, self._minute_ttft))
        return (
            self._minute_behind
            or (tpot is not None and tpot > self.slo.tpot_p90_s * (1 + 1e-9))
            or (ttft is not None and ttft > self.slo.ttft_p90_s * (1 + 1e-9))
        )

    def _close_minute(self) -> None:
        self.minutes += 1
        self.slo_minutes_closed += 1 if self._minute_above() else 0
        self._minute_itl = [0.0] * len(self._minute_itl)
        self._minute_ttft = [0.0] * len(self._minute_ttft)
        self._minute_behind = False

    @property
    def slo_minutes(self) -> int:
        """Clock minutes whose p90 TPOT or p90 TTFT was above the objective, or with requests backlogged.

        Each minute's p90 is read from that minute's latency buckets, as a dashboard's per-minute
        ``histogram_quantile`` would; the minute still open counts as well.
        """
        return self.slo_minutes_closed + (1 if self._minute_above() else 0)

    @property
    def minutes_seen(self) -> int:
        """Clock minutes the service served in (the open one included)."""
        return self.minutes + (1 if self._minute is not None else 0)

    def backlog_cleared_in(self) -> float:
        """Seconds until a draining backlog is served (``inf`` when it is not draining)."""
        if self.backlog <= 0.0 or self.backlog_rate >= 0.0:
            return math.inf
        return self.backlog / -self.backlog_rate

    def sample(self, url: str, *, share: float = 1.0) -> ServingSample:
        """What a vLLM metrics scrape reads now (counters as of the last flush), times ``share`` of the replicas."""
        queue = math.fsum(o.waiting for o in self.ops) + self.backlog
        return ServingSample(
            engine="vllm",
            output_tokens=self.output_tokens * share,
            prompt_tokens=self.prompt_tokens * share,
            ttft=None,
            itl=None,
            queue=queue * share,
            url=url,
            ttft_buckets=_buckets(_TTFT_NAME, TTFT_BOUNDS, self.ttft_counts, share),
            itl_buckets=_buckets(_ITL_NAME, ITL_BOUNDS, self.itl_counts, share),
            e2e=Histogram(self.e2e_s * share, self.requests * share),
            request_output=Histogram(self.output_tokens * share, self.requests * share),
        )


def _cumulative(bounds: Sequence[float], counts: Sequence[float]) -> tuple[tuple[float, float], ...]:
    return tuple(zip((*bounds, math.inf), itertools.accumulate(counts), strict=True))


def _buckets(name: str, bounds: Sequence[float], counts: Sequence[float], share: float) -> Buckets:
    """Cumulative whole-number buckets, as Prometheus exposes them.

    Whole numbers keep every difference between two scrapes exact: fractional running sums could
    differ by a rounding error between neighbouring buckets, which a reader rightly refuses as a
    decreasing histogram.
    """
    cumulative = list(itertools.accumulate(float(math.floor(c * share)) for c in counts))
    return Buckets(name, tuple(zip((*bounds, math.inf), cumulative, strict=True)))
