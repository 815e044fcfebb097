"""LLM serving on one GPU under a power cap or a locked SM clock: power, latency and joules per token.

What it answers, for one replica of a service (one GPU running a continuous-batching engine such as
vLLM) at a given arrival rate and prompt/output lengths: the GPU's average power, p90 time per output
token (the engine's inter-token latency histogram), p90 time to first token, the token delivery speed a
user sees, and joules per output token, for a knob that is either a power cap (W) or a locked SM clock
(MHz). Everything is closed form or a short bisection, so a simulated day of 1-minute windows times a
few dozen knobs evaluates in a fraction of a second (``bench/inference_pareto.py`` prints the time).

**Measured** (H100 SXM, Llama-3.1-8B-Instruct, bf16, vLLM, ML.ENERGY Benchmark v3, default limits,
``data/mlenergy_v3_llm_h100_llama31_8b_lm_arena_chat.csv``): median and p90 inter-token latency and
average GPU draw against the average batch (8 … 690 concurrent requests). The decode step time
``a + b·B`` is a least-squares line through the medians up to batch 256; the draw and the p90/median
jitter are interpolated in the table.

**Measured** (MLPerf Inference v4.0/v4.1, NVIDIA closed submissions,
``data/mlperf_inference_llm_power_limit_h100_h200.csv``): Llama-2-70B Offline keeps 0.805 (H100, 450 W)
and 0.807 (H200, 500 W) of its 700 W throughput. Used as a check of the power model, not fitted.

**Modelled** (assumptions, see ``docs/simulator-calibration.md``, section "LLM serving under caps and
clock locks"):

* Draw while busy is ``base + (P0 - base)·x^alpha``: ``P0`` the uncapped draw of the phase, ``x`` the
  clock as a fraction of the clock the phase runs at uncapped, ``base`` = 230 W the part that does not
  follow the SM clock (HBM, static, board; the lowest per-GPU draw under load in the whole ML.ENERGY H100
  table is 231 W), ``alpha`` = 2.5 (dynamic power ∝ f·V², V rising with f).
* **Decode** is memory-bound: its step is ``(a_mem + b_mem·B)·max(1, knee/x) + (a_cmp + b_cmp·B)/x``,
  with 5 % of ``a`` and 40 % of ``b`` following the clock, and memory work slowing too only below
  ``knee`` = 0.45 of the top clock (the SMs then issue loads too slowly to keep HBM busy). Its uncapped
  draw is the measured table, below the 700 W limit at every batch, so a cap above it does not bind.
* **Prefill** is compute-bound: ``prefill_s_per_token`` = 32.5 µs at the clock it reaches at the default
  limit (2 × 8.03 GFLOP per token at half of the H100's 989 TFLOPS dense BF16), where it draws the full
  700 W limit; its speed follows the clock.
* A **power cap** is followed per phase (the limiter acts within a step's tens of milliseconds): each
  phase runs at the highest clock whose draw fits under the cap. A **clock lock** sets the same clock
  for both phases (prefill already runs below the top clock uncapped: ``prefill_clock_mhz``).
* The engine's concurrency is an infinite-server system: the time-average number of decoding requests
  is ``N = λ·Lo·TPOT`` (Little), the GPU steps whenever one is active (probability ``1 - e^-N``), with
  ``N / (1 - e^-N)`` requests per step. Prefill is served in chunks of ``max_batched_tokens`` ahead of
  decode and takes ``ρp = λ·Lp·prefill_s_per_token / x`` of the GPU's time, which stretches every decode
  step by ``1 / (1 - ρp)``. TTFT is an M/G/1 queue of prefills (Pollaczek-Khinchine mean, exponential
  tail for the p90). p90 TPOT takes the p90 batch (Poisson spread) times the measured p90/median ITL
  ratio, and the chunk of a prefill when more than ~10 % of decode steps carry one.

Data: The ML.ENERGY Benchmark v3 (Chung et al., NeurIPS 2025 D&B), Apache-2.0; MLPerf Inference v4.0 and
v4.1 results (MLCommons, Apache-2.0; "MLPerf" is a trademark of MLCommons; result IDs v4.1-0048/-0049);
the derived ratios are not verified by MLCommons. See ``data/NOTICE.md``.
"""

from __future__ import annotations

import bisect
import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Final, Literal

MLENERGY_FILE: Final = "mlenergy_v3_llm_h100_llama31_8b_lm_arena_chat.csv"
MLPERF_FILE: Final = "mlperf_inference_llm_power_limit_h100_h200.csv"
AZURE_FILE: Final = "azure_llm_inference_trace_2023_conv.csv"
#: z-score of the 90th percentile of a normal distribution.
Z90: Final = 1.2816
#: Below this fraction of decode steps carrying a prefill chunk, the p90 ITL is a plain decode step.
_CHUNK_P90_LOW, _CHUNK_P90_HIGH = 0.05, 0.15
#: How many bisection halvings the concurrency solve takes (2^-32 of the batch range).
_BISECT: Final = 32


def read_shipped(name: str) -> str:
    """A data file shipped with the simulator (``wattplane/sim/data``)."""
    return resources.files("wattplane.sim").joinpath("data", name).read_text(encoding="utf-8-sig")


# --- the knob ------------------------------------------------------------------------------------------


KnobKind = Literal["none", "cap", "clock"]


@dataclass(frozen=True)
class Knob:
    """What is set on the GPU: nothing, a power cap (W) or a locked SM clock (MHz)."""

    kind: KnobKind = "none"
    value: float = 0.0

    @classmethod
    def cap(cls, watts: float) -> Knob:
        """A power limit in watts."""
        return cls("cap", float(watts))

    @classmethod
    def clock(cls, mhz: float) -> Knob:
        """A locked SM clock in MHz."""
        return cls("clock", float(mhz))

    def __str__(self) -> str:
        if self.kind == "cap":
            return f"cap {self.value:.0f} W"
        if self.kind == "clock":
            return f"clock {self.value:.0f} MHz"
        return "uncapped"


# --- the GPU and the service -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuPower:
    """How a board's draw and speed follow its SM clock (values for an H100 SXM; see the module text).

    Attributes:
        name: GPU model.
        default_limit_w: Default (and maximum) power limit; compute-bound prefill draws all of it.
        min_limit_w: Lowest settable limit.
        idle_w: Draw with nothing to do (the simulator's H100 idle figure).
        base_w: Draw while busy that does not follow the SM clock (modelled).
        alpha: Exponent of the clock-dependent draw (modelled).
        max_clock_mhz: Top SM clock, where memory-bound decode runs uncapped.
        min_clock_mhz: Lowest SM clock the board accepts.
        prefill_clock_mhz: Clock compute-bound prefill settles at under the default limit (modelled).
        memory_knee: Fraction of the top clock below which memory-bound work slows too (modelled).
    """

    name: str = "H100"
    default_limit_w: float = 700.0
    min_limit_w: float = 200.0
    idle_w: float = 70.0
    base_w: float = 230.0
    alpha: float = 2.5
    max_clock_mhz: float = 1980.0
    min_clock_mhz: float = 345.0
    prefill_clock_mhz: float = 1755.0
    memory_knee: float = 0.45

    def draw(self, uncapped_w: float, x: float) -> float:
        """Busy draw at clock fraction ``x`` of a phase that draws ``uncapped_w`` at ``x = 1``.

        Below the memory knee the memory system is fed more slowly, so its share of ``base_w`` (all but
        the idle draw) falls with the clock too; without that no clock would fit under the board's lowest
        limit. The idle draw stays whatever the clock.
        """
        base = self.idle_w + (self.base_w - self.idle_w) * min(1.0, x / self.memory_knee)
        return base + max(0.0, uncapped_w - self.base_w) * float(x**self.alpha)

    def capped_fraction(self, cap_w: float, uncapped_w: float, floor: float) -> float:
        """The clock fraction a phase drawing ``uncapped_w`` runs at under ``cap_w`` (1: the cap does not bind)."""
        if cap_w >= uncapped_w:
            return 1.0
        room = (cap_w - self.base_w) / (uncapped_w - self.base_w)
        x = float(room ** (1.0 / self.alpha)) if room > 0 else 0.0
        if x >= self.memory_knee:
            return x
        lo, hi = floor, self.memory_knee  # the draw rises with x: bisect below the knee
        if self.draw(uncapped_w, lo) >= cap_w:
            return floor
        for _ in range(30):
            mid = 0.5 * (lo + hi)
            if self.draw(uncapped_w, mid) > cap_w:
                hi = mid
            else:
                lo = mid
        return lo


H100: Final = GpuPower()


@dataclass(frozen=True)
class BatchPolicy:
    """The engine's batching settings (vLLM names).

    Attributes:
        max_num_seqs: Most requests decoded together; more wait in the engine's queue.
        max_batched_tokens: Token budget of one step; a longer prompt is prefilled in chunks of it.
    """

    max_num_seqs: int = 256
    max_batched_tokens: int = 2048


@dataclass(frozen=True)
class ServiceModel:
    """One LLM on one GPU: decode step time, decode draw and ITL jitter against batch, prefill cost.

    Attributes:
        gpu: The board.
        mem_s, per_seq_mem_s: Decode step time that does not follow the clock (s, s per request).
        cmp_s, per_seq_cmp_s: Decode step time that does (at the top clock).
        prefill_s_per_token: Prefill time per prompt token at ``gpu.prefill_clock_mhz``.
        batches, decode_w, itl_p90_ratio: Measured table (batch, per-GPU draw, p90/median ITL).
        source: Where the table comes from.
    """

    gpu: GpuPower
    mem_s: float
    per_seq_mem_s: float
    cmp_s: float
    per_seq_cmp_s: float
    prefill_s_per_token: float
    batches: tuple[float, ...]
    decode_w: tuple[float, ...]
    itl_p90_ratio: tuple[float, ...]
    source: str = ""

    def _interp(self, values: Sequence[float], batch: float) -> float:
        xs = self.batches
        if batch <= xs[0]:
            slope = (values[1] - values[0]) / (xs[1] - xs[0])
            return max(values[0] + slope * (batch - xs[0]), 0.5 * values[0])
        if batch >= xs[-1]:
            return values[-1]
        i = bisect.bisect_right(xs, batch)
        w = (batch - xs[i - 1]) / (xs[i] - xs[i - 1])
        return values[i - 1] + w * (values[i] - values[i - 1])

    def decode_draw(self, batch: float) -> float:
        """Uncapped draw while decoding ``batch`` requests (measured, interpolated)."""
        return self._interp(self.decode_w, batch)

    def jitter(self, batch: float) -> float:
        """p90/median inter-token latency at ``batch`` (measured, interpolated)."""
        return max(1.0, self._interp(self.itl_p90_ratio, batch))

    def step_s(self, batch: float, x: float) -> float:
        """Decode step time with ``batch`` requests at clock fraction ``x`` of the top clock."""
        slow_memory = max(1.0, self.gpu.memory_knee / x)
        return (self.mem_s + self.per_seq_mem_s * batch) * slow_memory + (self.cmp_s + self.per_seq_cmp_s * batch) / x


#: Share of the decode step's fixed and per-request time that follows the SM clock (modelled).
COMPUTE_SHARE_FIXED: Final = 0.05
COMPUTE_SHARE_PER_SEQ: Final = 0.40
#: Prefill seconds per prompt token for an 8B model on an H100 (2·8.03e9 FLOP at 0.5 × 989 TFLOPS).
PREFILL_S_PER_TOKEN_8B_H100: Final = 2 * 8.03e9 / (0.5 * 989.4e12)


def fit_service(
    text: str, *, gpu: GpuPower = H100, source: str = MLENERGY_FILE, fit_up_to: float = 256.0
) -> ServiceModel:
    """A :class:`ServiceModel` from ML.ENERGY rows of one model on one GPU (one row per load level).

    Raises:
        ValueError: Fewer than two rows, or rows for several models or GPU counts.
    """
    rows = list(csv.DictReader(io.StringIO(text)))
    if len({(r["model_id"], r["gpu_model"], r["num_gpus"]) for r in rows}) != 1 or len(rows) < 2:
        raise ValueError(f"{source}: need rows of exactly one model on one GPU setup, at two loads or more")
    gpus = float(rows[0]["num_gpus"])
    table = sorted(
        (
            float(r["avg_batch_size"]),
            float(r["avg_power_watts"]) / gpus,
            float(r["median_itl_ms"]) / 1000.0,
            float(r["p90_itl_ms"]) / float(r["median_itl_ms"]),
        )
        for r in rows
    )
    fit = [(b, itl) for b, _, itl, _ in table if b <= fit_up_to]
    n = len(fit)
    mean_b = math.fsum(b for b, _ in fit) / n
    mean_t = math.fsum(t for _, t in fit) / n
    slope = math.fsum((b - mean_b) * (t - mean_t) for b, t in fit) / math.fsum((b - mean_b) ** 2 for b, _ in fit)
    intercept = mean_t - slope * mean_b
    return ServiceModel(
        gpu=gpu,
        mem_s=intercept * (1 - COMPUTE_SHARE_FIXED),
        per_seq_mem_s=slope * (1 - COMPUTE_SHARE_PER_SEQ),
        cmp_s=intercept * COMPUTE_SHARE_FIXED,
        per_seq_cmp_s=slope * COMPUTE_SHARE_PER_SEQ,
        prefill_s_per_token=PREFILL_S_PER_TOKEN_8B_H100,
        batches=tuple(t[0] for t in table),
        decode_w=tuple(t[1] for t in table),
        itl_p90_ratio=tuple(t[3] for t in table),
        source=source,
    )


def h100_llama8b() -> ServiceModel:
    """Llama-3.1-8B on one H100 SXM, from the shipped ML.ENERGY slice."""
    return fit_service(read_shipped(MLENERGY_FILE))


# --- load ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """What one replica is asked to serve in a window.

    Attributes:
        rate: Requests per second.
        prompt_mean, prompt_p90: Prompt tokens per request.
        prompt_cv2: Squared coefficient of variation of prompt tokens (for the queueing variance).
        output_mean, output_p90: Output tokens per request.
    """

    rate: float
    prompt_mean: float
    prompt_p90: float
    prompt_cv2: float
    output_mean: float
    output_p90: float

    def scaled(self, factor: float) -> Load:
        """The same request mix at ``factor`` times the rate."""
        return Load(
            self.rate * factor, self.prompt_mean, self.prompt_p90, self.prompt_cv2, self.output_mean, self.output_p90
        )


@dataclass(frozen=True)
class TraceWindow:
    """The Azure trace's requests in one window (rate is for the whole recorded deployment)."""

    start_s: float
    load: Load


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _load_of(rate: float, prompts: Sequence[float], outputs: Sequence[float]) -> Load:
    pm = math.fsum(prompts) / len(prompts)
    var = math.fsum((p - pm) ** 2 for p in prompts) / len(prompts)
    return Load(
        rate=rate,
        prompt_mean=pm,
        prompt_p90=_quantile(prompts, 0.9),
        prompt_cv2=var / pm**2 if pm > 0 else 0.0,
        output_mean=math.fsum(outputs) / len(outputs),
        output_p90=_quantile(outputs, 0.9),
    )


def azure_windows(text: str | None = None, *, step_s: float = 60.0) -> list[TraceWindow]:
    """The shipped Azure conversation trace cut into ``step_s`` windows (the last, partial one dropped).

    A window without requests takes the lengths of the whole trace at rate 0.
    """
    stamps: list[float] = []
    prompts: list[float] = []
    outputs: list[float] = []
    first: datetime | None = None
    for row in csv.DictReader(io.StringIO(text if text is not None else read_shipped(AZURE_FILE))):
        at = datetime.fromisoformat(row["TIMESTAMP"].strip()[:26])
        first = first or at
        stamps.append((at - first).total_seconds())
        prompts.append(float(row["ContextTokens"]))
        outputs.append(float(row["GeneratedTokens"]))
    if not stamps:
        raise ValueError("the trace has no requests")
    bins = int(max(stamps) // step_s)  # complete windows only
    overall = _load_of(0.0, prompts, outputs)
    grouped: list[tuple[list[float], list[float]]] = [([], []) for _ in range(bins)]
    for t, p, o in zip(stamps, prompts, outputs, strict=True):
        b = int(t // step_s)
        if b < bins:
            grouped[b][0].append(p)
            grouped[b][1].append(o)
    return [
        TraceWindow(i * step_s, _load_of(len(ps) / step_s, ps, os) if ps else overall)
        for i, (ps, os) in enumerate(grouped)
    ]


# --- one window under one knob ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Operating:
    """A replica's steady state in a window (modelled).

    Attributes:
        power_w: Average GPU draw.
        tpot_p90_s: p90 inter-token latency (what vLLM's ``inter_token_latency_seconds`` histogram shows).
        tpot_mean_s: Mean time per output token.
        ttft_p90_s, ttft_mean_s: Time to first token (queue wait for prefill plus the prefill itself).
        speed_tps: Token delivery speed a request sees: output tokens over its whole latency, mean request.
        tokens_per_s: Output tokens served per second.
        joules_per_token: ``power_w / tokens_per_s`` (``inf`` when nothing is served).
        batch: Requests per decode step while decoding.
        prefill_share: Fraction of the GPU's time spent in prefill.
        decode_clock_mhz, prefill_clock_mhz: Clocks the phases run at.
        waiting: Mean requests waiting for their prefill (Little's law on the prefill queue).
        overloaded: The replica cannot keep up with the rate (queue grows without bound); the latency
            figures are then those at its capacity and ``capacity_rps`` tells how much it serves.
        capacity_rps: Requests per second served (the rate when not overloaded).
    """

    power_w: float
    tpot_p90_s: float
    tpot_mean_s: float
    ttft_p90_s: float
    ttft_mean_s: float
    speed_tps: float
    tokens_per_s: float
    joules_per_token: float
    batch: float
    prefill_share: float
    decode_clock_mhz: float
    prefill_clock_mhz: float
    waiting: float
    overloaded: bool
    capacity_rps: float


@dataclass(frozen=True)
class _Clocks:
    x_pre: float
    prefill_w: float
    #: For a cap, the decode clock depends on the batch (its draw does); None otherwise.
    cap_w: float | None
    x_dec: float


def _clocks(model: ServiceModel, knob: Knob) -> _Clocks:
    gpu = model.gpu
    gpu.min_clock_mhz / gpu.max_clock_mhz
    pre_floor = gpu.min_clock_mhz / gpu.prefill_clock_mhz
    if knob.kind == "cap":
        cap = min(max(knob.value, gpu.min_limit_w), gpu.default_limit_w)
        x_pre = gpu.capped_fraction(cap, gpu.default_limit_w, pre_floor)
        return _Clocks(x_pre, gpu.draw(gpu.default_limit_w, x_pre), cap, 1.0)
    if knob.kind == "clock":
        mhz = min(max(knob.value, gpu.min_clock_mhz), gpu.max_clock_mhz)
        x_pre = min(1.0, mhz / gpu.prefill_clock_mhz)
        return _Clocks(x_pre, gpu.draw(gpu.default_limit_w, x_pre), None, mhz / gpu.max_clock_mhz)
    return _Clocks(1.0, gpu.default_limit_w, None, 1.0)


def _decode_x(model: ServiceModel, clocks: _Clocks, batch: float) -> float:
    if clocks.cap_w is None:
        return clocks.x_dec
    gpu = model.gpu
    return gpu.capped_fraction(clocks.cap_w, model.decode_draw(batch), gpu.min_clock_mhz / gpu.max_clock_mhz)


def _busy_batch(active: float) -> tuple[float, float]:
    """``(P(busy), batch while busy)`` for a Poisson number of active requests with mean ``active``."""
    if active <= 1e-9:
        return 0.0, 1.0
    busy = -math.expm1(-active)
    return busy, max(1.0, active / busy)


@dataclass
class _Solve:
    active: float
    busy: float
    batch: float
    x_dec: float
    step: float


def _decode_state(
    model: ServiceModel, clocks: _Clocks, token_rate: float, stretch: float, limit: float
) -> _Solve | None:
    """The decode fixed point ``N = token_rate · step(B(N)) · stretch`` (bisection).

    ``None`` when it needs more than the batch limit: the replica cannot keep up.
    """

    def at(active: float) -> _Solve:
        busy, batch = _busy_batch(active)
        x = _decode_x(model, clocks, batch)
        return _Solve(active, busy, batch, x, model.step_s(batch, x))

    top = at(limit)
    if token_rate * top.step * stretch > limit:
        return None
    lo, hi = 0.0, limit
    for _ in range(_BISECT):
        mid = 0.5 * (lo + hi)
        if token_rate * at(mid).step * stretch > mid:
            lo = mid
        else:
            hi = mid
    return at(hi)


def operate(model: ServiceModel, load: Load, knob: Knob, policy: BatchPolicy = BatchPolicy()) -> Operating:
    """The replica's steady state serving ``load`` with ``knob`` set (modelled; see the module text)."""
    clocks = _clocks(model, knob)
    limit = float(policy.max_num_seqs)
    solved = _feasible(model, load, load.rate, clocks, limit)
    if solved is not None:
        return _evaluate(model, load, load.rate, clocks, policy, False, solved)
    return _evaluate(model, load, _capacity(model, load, clocks, limit), clocks, policy, True, None)


def _evaluate(
    model: ServiceModel,
    load: Load,
    rate: float,
    clocks: _Clocks,
    policy: BatchPolicy,
    overloaded: bool,
    solved: _Solve | None,
) -> Operating:
    gpu = model.gpu
    pre_s = model.prefill_s_per_token / clocks.x_pre
    rho_p = min(rate * load.prompt_mean * pre_s, 0.999999)
    stretch = 1.0 / (1.0 - rho_p)
    if solved is None:
        solved = _decode_state(model, clocks, rate * load.output_mean, stretch, policy.max_num_seqs)
    if solved is None:  # only at the capacity edge, through float rounding: take the full batch
        batch = float(policy.max_num_seqs)
        x = _decode_x(model, clocks, batch)
        solved = _Solve(batch, 1.0, batch, x, model.step_s(batch, x))
    step = solved.step
    tpot_mean = step * stretch
    # p90 inter-token latency: the p90 batch, the measured spread, and prefill chunks when frequent.
    b90 = min(float(policy.max_num_seqs), solved.batch + Z90 * math.sqrt(solved.batch))
    x90 = _decode_x(model, clocks, b90)
    step90 = model.step_s(b90, x90) * model.jitter(b90)
    budget = max(1.0, policy.max_batched_tokens - solved.batch)
    chunks_per_req = load.prompt_mean / budget + 0.5
    steps_per_s = solved.busy / step if rate > 0 else 0.0
    chunk_share = min(1.0, rate * chunks_per_req / steps_per_s) if steps_per_s > 0 else 0.0
    ramp = min(1.0, max(0.0, (chunk_share - _CHUNK_P90_LOW) / (_CHUNK_P90_HIGH - _CHUNK_P90_LOW)))
    chunk_s = min(load.prompt_mean, budget) * pre_s
    tpot_p90 = step90 * stretch + ramp * chunk_s
    # TTFT: prefills queue (M/G/1); each is its compute plus the decode steps its chunks ride on.
    service = load.prompt_mean * pre_s + chunks_per_req * step
    service90 = load.prompt_p90 * pre_s + (load.prompt_p90 / budget + 0.5) * step
    rho_s = min(rate * service, 0.98)
    second_moment = service**2 * (1.0 + load.prompt_cv2)
    wait = rate * second_moment / (2.0 * (1.0 - rho_s)) if rate > 0 else 0.0
    wait90 = (wait / rho_s) * math.log(rho_s / 0.1) if rho_s > 0.1 else 0.0
    ttft_mean = wait + service + 0.5 * step
    ttft_p90 = wait90 + service90 + step
    # Power: prefill time at the prefill draw, decoding at the decode draw, the rest idle.
    decode_time = (1.0 - rho_p) * solved.busy
    idle_time = max(0.0, 1.0 - rho_p - decode_time)
    decode_w = gpu.draw(model.decode_draw(solved.batch), solved.x_dec)
    power = rho_p * clocks.prefill_w + decode_time * decode_w + idle_time * gpu.idle_w
    tokens = rate * load.output_mean
    latency = ttft_mean + load.output_mean * tpot_mean
    return Operating(
        power_w=power,
        tpot_p90_s=tpot_p90,
        tpot_mean_s=tpot_mean,
        ttft_p90_s=ttft_p90,
        ttft_mean_s=ttft_mean,
        speed_tps=load.output_mean / latency if latency > 0 else math.inf,
        tokens_per_s=tokens,
        joules_per_token=power / tokens if tokens > 0 else math.inf,
        batch=solved.batch,
        prefill_share=rho_p,
        decode_clock_mhz=solved.x_dec * gpu.max_clock_mhz,
        prefill_clock_mhz=clocks.x_pre * gpu.prefill_clock_mhz,
        waiting=rate * wait,
        overloaded=overloaded,
        capacity_rps=rate,
    )


def _feasible(model: ServiceModel, load: Load, rate: float, clocks: _Clocks, limit: float) -> _Solve | None:
    """The decode state at ``rate``, or ``None`` when the replica cannot keep up (prefill or batch limit)."""
    pre_s = model.prefill_s_per_token / clocks.x_pre
    rho_p = rate * load.prompt_mean * pre_s
    if rho_p >= 0.98:
        return None
    return _decode_state(model, clocks, rate * load.output_mean, 1.0 / (1.0 - rho_p), limit)


def _capacity(model: ServiceModel, load: Load, clocks: _Clocks, limit: float) -> float:
    """Most requests per second the replica keeps up with for this request mix (bisection on the rate)."""
    if _feasible(model, load, load.rate, clocks, limit) is not None:
        return load.rate
    hi = 1.0 / (load.prompt_mean * model.prefill_s_per_token / clocks.x_pre)
    lo = 0.0
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        if _feasible(model, load, mid, clocks, limit) is not None:
            lo = mid
        else:
            hi = mid
    return lo


# --- knob sweeps -----------------------------------------------------------------------------------------


def cap_knobs(gpu: GpuPower = H100, step_w: float = 25.0) -> list[Knob]:
    """Power caps from the board's minimum to its default, every ``step_w``."""
    count = int((gpu.default_limit_w - gpu.min_limit_w) // step_w)
    return [Knob.cap(gpu.default_limit_w - i * step_w) for i in range(count + 1)]


def clock_knobs(gpu: GpuPower = H100, low_mhz: float = 510.0, step_mhz: float = 105.0) -> list[Knob]:
    """Locked clocks from the top clock down to ``low_mhz``, every ``step_mhz``."""
    count = int((gpu.max_clock_mhz - low_mhz) // step_mhz)
    return [Knob.clock(gpu.max_clock_mhz - i * step_mhz) for i in range(count + 1)]


@dataclass(frozen=True)
class ServiceSlo:
    """What a serving replica promises (used by the oracle and the benches)."""

    tpot_p90_s: float = 0.050
    ttft_p90_s: float = 1.0
    speed_floor_tps: float = 10.0
    queue_bound: float = 8.0

    def met(self, op: Operating) -> bool:
        """All objectives hold in this steady state."""
        return (
            not op.overloaded
            and op.tpot_p90_s <= self.tpot_p90_s
            and op.ttft_p90_s <= self.ttft_p90_s
            and op.speed_tps >= self.speed_floor_tps
            and op.waiting <= self.queue_bound
        )


@dataclass(frozen=True)
class SweepPoint:
    """One knob at one load."""

    knob: Knob
    op: Operating


def sweep(
    model: ServiceModel, load: Load, knobs: Iterable[Knob], policy: BatchPolicy = BatchPolicy()
) -> list[SweepPoint]:
    """Every knob at ``load``."""
    return [SweepPoint(k, operate(model, load, k, policy)) for k in knobs]


def pareto_front(points: Sequence[SweepPoint]) -> list[SweepPoint]:
    """Points no other point beats on both joules per token and p90 TPOT, by rising TPOT."""
    ordered = sorted(points, key=lambda p: (p.op.tpot_p90_s, p.op.joules_per_token))
    front: list[SweepPoint] = []
    best = math.inf
    for p in ordered:
        if p.op.joules_per_token < best - 1e-12:
            front.append(p)
            best = p.op.joules_per_token
    return front


@dataclass(frozen=True)
class Check:
    """A model figure next to the measurement it is checked against."""

    name: str
    modelled: float
    measured: float
    note: str = ""


def mlperf_rows(text: str | None = None) -> list[dict[str, str]]:
    """The shipped MLPerf LLM rows (MaxP/MaxQ pairs), as dicts."""
    return list(csv.DictReader(io.StringIO(text if text is not None else read_shipped(MLPERF_FILE))))


def saturation_ratio(model: ServiceModel, load: Load, knob: Knob, policy: BatchPolicy = BatchPolicy()) -> float:
    """Throughput at saturation with ``knob`` over that uncapped (an Offline-like figure), modelled."""
    heavy = load.scaled(1e6 / max(load.rate, 1e-9))
    limit = float(policy.max_num_seqs)
    capped = _capacity(model, heavy, _clocks(model, knob), limit)
    free = _capacity(model, heavy, _clocks(model, Knob()), limit)
    return capped / free


def checks(model: ServiceModel, load: Load) -> list[Check]:
    """The model against what was measured: ML.ENERGY step times and draws, MLPerf capped throughput."""
    out: list[Check] = []
    for batch, watts in zip(model.batches, model.decode_w, strict=True):
        if batch in (model.batches[0], model.batches[len(model.batches) // 2]):
            out.append(Check(f"decode draw at batch {batch:.0f} (W)", model.decode_draw(batch), watts, "interpolated"))
    rows = {(r["gpu"], r["benchmark"], r["scenario"], r["power_setting"]): r for r in mlperf_rows()}
    for gpu, cap in (("H100-SXM-80GB", 450.0), ("H200-SXM-141GB", 500.0)):
        bench = "llama2-70b-99.9" if gpu.startswith("H100") else "llama2-70b-99"
        row = rows.get((gpu, bench, "Offline", "MaxQ"))
        if row is not None:
            out.append(
                Check(
                    f"saturated throughput at {cap:.0f} W / 700 W ({gpu} measures Llama-2-70B Offline)",
                    saturation_ratio(model, load, Knob.cap(cap)),
                    float(row["throughput_ratio_vs_default"]),
                    "model: Llama-3.1-8B mix on H100; measured: a larger model, another engine",
                )
            )
    return out


# --- helpers for callers that drive the model from a live GPU (test stand-ins for a serving engine) ------


def azure_mix(rate: float = 0.0, text: str | None = None) -> Load:
    """The request mix of the whole shipped Azure conversation trace, at ``rate`` requests per second.

    A stand-in serving engine takes its prompt and output lengths from here when a test does not name
    a mix, so its tokens per request are those the rest of the serving model is calibrated on.

    Raises:
        ValueError: The trace has no requests.
    """
    prompts: list[float] = []
    outputs: list[float] = []
    for row in csv.DictReader(io.StringIO(text if text is not None else read_shipped(AZURE_FILE))):
        prompts.append(float(row["ContextTokens"]))
        outputs.append(float(row["GeneratedTokens"]))
    if not prompts:
        raise ValueError("the trace has no requests")
    return _load_of(rate, prompts, outputs)


def operate_limits(
    model: ServiceModel,
    load: Load,
    *,
    cap_w: float | None = None,
    clock_mhz: float | None = None,
    policy: BatchPolicy = BatchPolicy(),
) -> tuple[Knob, Operating]:
    """The steady state when a power cap and a clock lock may both be set, and the knob that binds.

    A GPU can carry both at once (an agent may cap and lock the same board); the model takes one knob,
    so each set one is evaluated and the slower outcome (higher p90 TPOT, then lower power) is the one
    in force: the tighter of two limits governs, as on the board. With neither set, the GPU runs
    uncapped. Values outside the board's ranges are clamped by :func:`operate`.
    """
    knobs = [Knob.cap(cap_w)] if cap_w is not None else []
    if clock_mhz is not None:
        knobs.append(Knob.clock(clock_mhz))
    if not knobs:
        knobs = [Knob()]
    results = [(knob, operate(model, load, knob, policy)) for knob in knobs]
    return max(results, key=lambda kr: (kr[1].tpot_p90_s, -kr[1].power_w))
