"""SLO-guarded serving caps over a day: uncapped, the controller, and a hindsight oracle (modelled).

``python bench/inference_energy.py [--replicas 8] [--peak 0.8] [--flat] [--noise 0.05] [--seed 1]``

Every figure is **modelled**: a Llama-3.1-8B replica on an H100 SXM as :mod:`wattplane.sim.inference`
models it (decode step time and draw measured by ML.ENERGY v3 at default limits; the behaviour under
caps and clock locks is the model's, see docs/simulator-calibration.md).

The day. The shipped Azure LLM inference trace 2023 (conversation) covers one hour
(2023-11-16 18:15–19:14 UTC, 58 complete minutes). Each minute keeps its own request count and its
requests' prompt and output lengths; the hour is looped over 24 h and, unless ``--flat``, scaled by a
diurnal envelope ``0.7 + 0.3·cos(2π(h - 14)/24)`` (0.4 at 02:00, 1.0 at 14:00; an assumption, the trace
has no day in it).

The scaling. The trace's absolute rate belongs to Azure's deployment, whose size is not published.
What matters for capping is each replica's load against its capacity, so the rates are scaled so that
the busiest minute of the day gives each of ``--replicas`` replicas ``--peak`` times the highest rate one
uncapped replica serves within the SLOs (found by bisection on the model). A load balancer that routes
each request to a random replica splits a Poisson stream into Poisson streams of 1/N the rate, so one
replica is simulated and the fleet's energy is N times its energy; the ratios do not depend on N.

Per minute (the scrape interval) the replica runs one knob. Three runs:

* **uncapped**: default limit, no clock lock;
* **controller**: :func:`wattplane.planner.servingcap.decide_serving_cap`, fed each minute's modelled p90
  TPOT, p90 TTFT, token speed, queue, prefill share and joules per token, with ``--noise`` (relative,
  log-normal, seeded) on the latency and speed figures as a histogram estimate would have;
* **oracle**: for each 5-minute window, the knob (any clock lock or power cap of the grid) with the
  least energy per output token among those meeting every SLO in each of its minutes, knowing the load
  in advance.

Goals: controller saving ≥ 0.90 of the oracle's (energy per output token against uncapped); minutes
above an SLO ≤ uncapped + 0.5 % of the minutes; token speed never below the floor for more than one
scrape in a row.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from wattplane.planner.servingcap import (
    ServingCapSettings,
    ServingCapState,
    ServingSlo,
    ServingWindow,
    decide_serving_cap,
)
from wattplane.sim.inference import (
    BatchPolicy,
    Knob,
    Load,
    Operating,
    ServiceModel,
    ServiceSlo,
    azure_windows,
    cap_knobs,
    clock_knobs,
    h100_llama8b,
    operate,
)

MINUTE = 60.0
WINDOW_MINUTES = 5
SLO = ServiceSlo(tpot_p90_s=0.050, ttft_p90_s=1.0, speed_floor_tps=10.0, queue_bound=8.0)
POLICY = BatchPolicy()


def envelope(minute: int, flat: bool) -> float:
    """The assumed diurnal load multiplier at ``minute`` of the day."""
    if flat:
        return 1.0
    return 0.7 + 0.3 * math.cos(2 * math.pi * (minute / 60 - 14) / 24)


def day_loads(flat: bool) -> list[Load]:
    """The trace's minutes looped over a day, at the recorded deployment's rate times the envelope."""
    hour = azure_windows()
    return [hour[m % len(hour)].load.scaled(envelope(m, flat)) for m in range(24 * 60)]


def slo_capacity(model: ServiceModel, load: Load) -> float:
    """Highest rate (req/s) at which one uncapped replica meets the SLOs with this request mix."""
    lo, hi = 0.0, 50.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if SLO.met(operate(model, load.scaled(mid / load.rate), Knob(), POLICY)):
            lo = mid
        else:
            hi = mid
    return lo


@dataclass
class Run:
    """A day's per-minute results for one strategy."""

    name: str
    ops: list[Operating]
    knobs: list[Knob]

    @property
    def joules(self) -> float:
        """GPU energy over the day (one replica)."""
        return math.fsum(o.power_w * MINUTE for o in self.ops)

    @property
    def tokens(self) -> float:
        """Output tokens served over the day (one replica)."""
        return math.fsum(o.tokens_per_s * MINUTE for o in self.ops)

    @property
    def jpt(self) -> float:
        """Joules per output token over the day."""
        return self.joules / self.tokens

    def above_slo(self) -> int:
        """Minutes in which a latency objective or the queue bound was broken."""
        return sum(1 for o in self.ops if not within(o))

    def slow_runs(self) -> int:
        """Stretches of two or more consecutive minutes with token speed below the floor."""
        runs, streak = 0, 0
        for o in self.ops:
            streak = streak + 1 if o.speed_tps < SLO.speed_floor_tps else 0
            if streak == 2:
                runs += 1
        return runs


def within(op: Operating) -> bool:
    """Latency objectives and queue bound met in a minute (what "above SLO" counts)."""
    return (
        not op.overloaded
        and op.tpot_p90_s <= SLO.tpot_p90_s
        and op.ttft_p90_s <= SLO.ttft_p90_s
        and op.waiting <= SLO.queue_bound
    )


def run_uncapped(model: ServiceModel, loads: Sequence[Load]) -> Run:
    ops = [operate(model, load, Knob(), POLICY) for load in loads]
    return Run("uncapped", ops, [Knob()] * len(ops))


def to_knob(kind: str, value: float | None) -> Knob:
    if value is None:
        return Knob()
    return Knob.clock(value) if kind == "clock" else Knob.cap(value)


def run_controller(model: ServiceModel, loads: Sequence[Load], noise: float, seed: int) -> tuple[Run, dict[str, int]]:
    rng = random.Random(seed)
    settings = ServingCapSettings()
    slo = ServingSlo(SLO.tpot_p90_s, SLO.ttft_p90_s, SLO.speed_floor_tps, SLO.queue_bound)
    state = ServingCapState.initial(settings, "clock")
    knob = Knob()
    ops: list[Operating] = []
    knobs: list[Knob] = []
    actions: dict[str, int] = {}
    for minute, load in enumerate(loads):
        op = operate(model, load, knob, POLICY)
        ops.append(op)
        knobs.append(knob)

        def noisy(v: float) -> float:
            return v * math.exp(rng.gauss(0.0, noise)) if noise > 0 else v

        window = ServingWindow(
            tpot_p90_s=noisy(op.tpot_p90_s),
            ttft_p90_s=noisy(op.ttft_p90_s),
            speed_tps=noisy(op.speed_tps),
            queue=op.waiting,
            prefill_share=load.rate * load.prompt_mean * model.prefill_s_per_token,
            load=op.capacity_rps * (load.prompt_mean + load.output_mean),
            joules_per_token=op.joules_per_token if math.isfinite(op.joules_per_token) else None,
        )
        decision = decide_serving_cap(state, window, slo, settings, now=(minute + 1) * MINUTE)
        state = decision.state
        actions[decision.action] = actions.get(decision.action, 0) + 1
        knob = to_knob(decision.kind, decision.value)
    return Run("controller", ops, knobs), actions


def run_oracle(model: ServiceModel, loads: Sequence[Load], ladders: Sequence[Sequence[Knob]]) -> Run:
    """Best knob per window; each ladder is one knob kind from its default downwards.

    Slowing down never shortens a latency, so a ladder is walked until its first knob that breaks an
    SLO in the window: every lower knob breaks it too.
    """
    ops: list[Operating] = []
    knobs: list[Knob] = []
    for start in range(0, len(loads), WINDOW_MINUTES):
        block = loads[start : start + WINDOW_MINUTES]
        free = [operate(model, load, Knob(), POLICY) for load in block]
        best: tuple[float, Knob, list[Operating]] = (math.inf, Knob(), free)
        for ladder in ladders:
            for knob in ladder:
                trial = [operate(model, load, knob, POLICY) for load in block]
                if not all(SLO.met(o) for o in trial):
                    break
                jpt = math.fsum(o.power_w for o in trial) / math.fsum(o.tokens_per_s for o in trial)
                if jpt < best[0]:
                    best = (jpt, knob, trial)
        ops += best[2]
        knobs += [best[1]] * len(block)
    return Run("oracle", ops, knobs)


def describe_knobs(run: Run) -> str:
    clocks = [k.value for k in run.knobs if k.kind == "clock"]
    caps = [k.value for k in run.knobs if k.kind == "cap"]
    free = sum(1 for k in run.knobs if k.kind == "none")
    parts = [f"released {free} min"]
    if clocks:
        parts.append(f"clock lock {len(clocks)} min (mean {sum(clocks) / len(clocks):.0f} MHz, min {min(clocks):.0f})")
    if caps:
        parts.append(f"power cap {len(caps)} min (mean {sum(caps) / len(caps):.0f} W, min {min(caps):.0f})")
    return ", ".join(parts)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=8, help="replicas sharing the trace's requests")
    parser.add_argument("--peak", type=float, default=0.8, help="busiest minute per replica / SLO capacity")
    parser.add_argument("--flat", action="store_true", help="no diurnal envelope: the hour looped as recorded")
    parser.add_argument("--noise", type=float, default=0.05, help="relative noise on scraped latencies")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    model = h100_llama8b()
    recorded = day_loads(args.flat)
    busiest = max(recorded, key=lambda load: load.rate)
    capacity = slo_capacity(model, busiest)
    scale = args.peak * capacity * args.replicas / busiest.rate
    loads = [load.scaled(scale / args.replicas) for load in recorded]
    print("All figures MODELLED (wattplane.sim.inference: Llama-3.1-8B on H100 SXM, calibrated on ML.ENERGY v3).")
    print(
        f"Day: Azure conv trace hour looped x24{'' if args.flat else ' with a diurnal envelope 0.4-1.0'}; "
        f"busiest minute {busiest.rate:.2f} req/s as recorded -> {busiest.rate * scale:.1f} req/s over "
        f"{args.replicas} replicas = {busiest.rate * scale / args.replicas:.2f} req/s each "
        f"({args.peak:.0%} of the {capacity:.2f} req/s one uncapped replica serves within the SLOs)."
    )
    mean_rate = sum(load.rate for load in loads) / len(loads)
    print(
        f"Per replica: mean {mean_rate:.2f} req/s; SLOs p90 TPOT {SLO.tpot_p90_s * 1000:.0f} ms, "
        f"p90 TTFT {SLO.ttft_p90_s:.1f} s, speed floor {SLO.speed_floor_tps:g} tok/s, queue {SLO.queue_bound:g}."
    )

    t0 = time.perf_counter()
    base = run_uncapped(model, loads)
    t_base = time.perf_counter() - t0
    t0 = time.perf_counter()
    ctrl, actions = run_controller(model, loads, args.noise, args.seed)
    t_ctrl = time.perf_counter() - t0
    t0 = time.perf_counter()
    ladders = (clock_knobs()[1:], cap_knobs()[1:])
    oracle = run_oracle(model, loads, ladders)
    oracle_clock = run_oracle(model, loads, ladders[:1])
    oracle_clock.name = "oracle-clk"
    t_oracle = time.perf_counter() - t0

    minutes = len(loads)
    print()
    header = f"{'run':<11} {'J/token':>8} {'saving':>7} {'kWh/replica':>11} {'fleet kWh':>9} {'min>SLO':>7}"
    print(f"{header} {'slow>1':>6}  knobs")
    for run in (base, ctrl, oracle_clock, oracle):
        saving = 1 - run.jpt / base.jpt
        print(
            f"{run.name:<11} {run.jpt:8.4f} {saving:7.1%} {run.joules / 3.6e6:11.2f} "
            f"{run.joules * args.replicas / 3.6e6:9.1f} {run.above_slo():7d} {run.slow_runs():6d}  "
            f"{describe_knobs(run)}"
        )
    oracle_saving = 1 - oracle.jpt / base.jpt
    clock_saving = 1 - oracle_clock.jpt / base.jpt
    ctrl_saving = 1 - ctrl.jpt / base.jpt
    share = ctrl_saving / oracle_saving if oracle_saving > 0 else float("nan")
    share_clock = ctrl_saving / clock_saving if clock_saving > 0 else float("nan")
    allowed = base.above_slo() + 0.005 * minutes
    print()
    print(f"controller saving / oracle saving: {share:.3f} (goal >= 0.90: {'met' if share >= 0.9 else 'MISSED'})")
    print(f"controller saving / clock-lock-only oracle saving: {share_clock:.3f} (the controller's own knob)")
    print(
        f"minutes above SLO: controller {ctrl.above_slo()}, uncapped {base.above_slo()}, allowed {allowed:.1f} "
        f"(goal: {'met' if ctrl.above_slo() <= allowed else 'MISSED'})"
    )
    slow = ctrl.slow_runs()
    print(f"token speed below floor for > 1 scrape: {slow} times (goal 0: {'met' if slow == 0 else 'MISSED'})")
    print(f"controller actions: {dict(sorted(actions.items()))}")
    print(
        f"time: uncapped {t_base:.2f} s, controller {t_ctrl:.2f} s, oracle {t_oracle:.2f} s "
        f"(up to {sum(map(len, ladders))} knobs x {minutes} min); total {time.perf_counter() - started:.1f} s"
    )
    print(
        "Data: ML.ENERGY Benchmark v3 (Apache-2.0); Azure LLM inference trace 2023 (Patel et al., ISCA'24), CC-BY-4.0."
    )


if __name__ == "__main__":
    main()
