"""Energy per output token against p90 TPOT for power caps and SM clock locks on one H100 service (modelled).

``python bench/inference_pareto.py [--peak 0.8] [--out docs/img/inference_pareto.png]``

One replica of Llama-3.1-8B on an H100 SXM as :mod:`wattplane.sim.inference` models it, serving the shipped
Azure LLM conversation trace hour minute by minute (each minute's request rate and prompt/output lengths),
the rate scaled so that the busiest minute is ``--peak`` of the highest rate one uncapped replica serves
within the default SLOs (p90 TPOT 50 ms, p90 TTFT 1 s). Every knob runs the whole hour; per knob the table
gives the hour's energy per output token, the 90th percentile over minutes of the per-minute p90 TPOT and
p90 TTFT, mean GPU power, the slowest minute's token speed, and whether every minute met the SLOs.

A second table puts the two knobs side by side at matched energy, for the trace's mix (decode-dominated)
and for a prefill-heavy mix (the trace's median minute with 4x the prompt and a quarter of the output
tokens, held steady at the rate where prefill takes ``--prefill-share`` of the GPU's time: an assumed
code-completion-like shape, not a recorded trace; latencies there are reported whatever the SLOs): which
knob reaches a given energy per token at the lower latency is what
:func:`wattplane.planner.servingcap.regime` encodes.

Every figure is **modelled** (decode step time and draw against batch are ML.ENERGY v3 measurements; the
behaviour under caps and locks is the model's, see docs/simulator-calibration.md). Writes the figure with
matplotlib when it is installed.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wattplane.sim.inference import (
    Knob,
    Load,
    ServiceModel,
    ServiceSlo,
    azure_windows,
    cap_knobs,
    checks,
    clock_knobs,
    h100_llama8b,
    operate,
)

SLO = ServiceSlo(tpot_p90_s=0.050, ttft_p90_s=1.0, speed_floor_tps=10.0, queue_bound=8.0)
ATTRIBUTION = (
    "Modelled. Decode calibration: ML.ENERGY Benchmark v3 (Apache-2.0).",
    "Load: Azure LLM inference trace 2023 (Patel et al., ISCA'24), CC-BY-4.0.",
)


@dataclass(frozen=True)
class HourPoint:
    """One knob over the hour."""

    knob: Knob
    jpt: float
    tpot_p90_ms: float
    ttft_p90_ms: float
    power_w: float
    slowest_speed: float
    met: bool


def p90(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def hour_point(model: ServiceModel, loads: Sequence[Load], knob: Knob) -> HourPoint:
    ops = [operate(model, load, knob) for load in loads]
    return HourPoint(
        knob=knob,
        jpt=math.fsum(o.power_w for o in ops) / math.fsum(o.tokens_per_s for o in ops),
        tpot_p90_ms=1000 * p90([o.tpot_p90_s for o in ops]),
        ttft_p90_ms=1000 * p90([o.ttft_p90_s for o in ops]),
        power_w=math.fsum(o.power_w for o in ops) / len(ops),
        slowest_speed=min(o.speed_tps for o in ops),
        met=all(SLO.met(o) for o in ops),
    )


def slo_capacity(model: ServiceModel, load: Load) -> float:
    lo, hi = 0.0, 50.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if SLO.met(operate(model, load.scaled(mid / load.rate), Knob())):
            lo = mid
        else:
            hi = mid
    return lo


def front(points: Sequence[HourPoint]) -> set[Knob]:
    best = math.inf
    out: set[Knob] = set()
    for p in sorted(points, key=lambda p: (p.tpot_p90_ms, p.jpt)):
        if p.jpt < best - 1e-12:
            out.add(p.knob)
            best = p.jpt
    return out


def table(points: Sequence[HourPoint], base: HourPoint) -> None:
    on_front = front(points)
    header = f"{'knob':<16} {'J/token':>8} {'vs free':>8} {'p90 TPOT':>9} {'p90 TTFT':>9} {'power W':>8}"
    print(f"{header} {'min tok/s':>9}  SLO  front")
    for p in points:
        print(
            f"{p.knob!s:<16} {p.jpt:8.4f} {p.jpt / base.jpt - 1:+8.1%} {p.tpot_p90_ms:7.1f}ms {p.ttft_p90_ms:7.0f}ms "
            f"{p.power_w:8.1f} {p.slowest_speed:9.1f}  {'met' if p.met else 'MISS':<4} "
            f"{'*' if p.knob in on_front else ''}"
        )


def matched(points: Sequence[HourPoint], kind: str, target_jpt: float) -> HourPoint | None:
    """The fastest knob of ``kind`` at or below ``target_jpt``."""
    fits = [p for p in points if p.knob.kind == kind and p.jpt <= target_jpt]
    return min(fits, key=lambda p: (p.tpot_p90_ms, p.ttft_p90_ms)) if fits else None


def regime_table(model: ServiceModel, name: str, loads: Sequence[Load]) -> None:
    base = hour_point(model, loads, Knob())
    points = [hour_point(model, loads, k) for k in (*clock_knobs()[1:], *cap_knobs()[1:])]
    share = math.fsum(load.rate * load.prompt_mean * model.prefill_s_per_token for load in loads) / len(loads)
    print(f"\n{name}: prefill {share:.0%} of the GPU's time at default clocks; uncapped {base.jpt:.4f} J/token")
    print(f"{'energy cut':>10}  {'clock lock':<34} {'power cap':<34}")
    for cut in (0.1, 0.2, 0.3, 0.4):
        cells = []
        for kind in ("clock", "cap"):
            p = matched(points, kind, base.jpt * (1 - cut))
            cells.append(
                f"{p.knob!s:<14} TPOT {p.tpot_p90_ms:5.1f} TTFT {p.ttft_p90_ms:5.0f}" if p else "not reachable"
            )
        print(f"{cut:>10.0%}  {cells[0]:<34} {cells[1]:<34}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peak", type=float, default=0.8, help="busiest minute / one replica's SLO capacity")
    parser.add_argument("--prefill-share", type=float, default=0.6, help="prefill-heavy mix: GPU time in prefill")
    parser.add_argument("--out", type=Path, default=None, help="write the figure here (PNG)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    model = h100_llama8b()
    hour = [w.load for w in azure_windows()]
    busiest = max(hour, key=lambda load: load.rate)
    capacity = slo_capacity(model, busiest)
    scale = args.peak * capacity / busiest.rate
    loads = [load.scaled(scale) for load in hour]
    print("All figures MODELLED (Llama-3.1-8B on one H100 SXM; calibration: ML.ENERGY v3, MLPerf check below).")
    print(
        f"Azure conv hour, 58 minutes, x{scale:.2f}: {min(ld.rate for ld in loads):.2f}-{busiest.rate * scale:.2f} "
        f"req/s (busiest = {args.peak:.0%} of the {capacity:.2f} req/s one uncapped replica serves within the SLOs)."
    )
    base = hour_point(model, loads, Knob())
    points = [base, *(hour_point(model, loads, k) for k in (*clock_knobs()[1:], *cap_knobs()[1:]))]
    table(points, base)

    # The hour's typical minute with 4x the prompt and a quarter of the output, held steady at the rate
    # where prefill takes --prefill-share of the GPU's time at default clocks.
    typical = sorted(hour, key=lambda ld: ld.rate)[len(hour) // 2]
    heavy = Load(
        1.0,
        4 * typical.prompt_mean,
        4 * typical.prompt_p90,
        typical.prompt_cv2,
        typical.output_mean / 4,
        typical.output_p90 / 4,
    )
    heavy = heavy.scaled(args.prefill_share / (heavy.prompt_mean * model.prefill_s_per_token))
    regime_table(model, "Trace mix (decode-dominated)", loads)
    regime_table(model, "Prefill-heavy mix (assumed shape, steady)", [heavy])

    print("\nChecks against measurements:")
    for c in checks(model, busiest):
        print(f"  {c.name}: modelled {c.modelled:.3f}, measured {c.measured:.3f} ({c.note})")
    evaluations = len(points) * len(loads)
    print(f"\n{evaluations} knob-minutes evaluated; total {time.perf_counter() - started:.1f} s")

    if args.out is not None:
        from wattplane.sim.plots import write_serving_pareto

        series = []
        for kind, name in (("clock", "SM clock lock"), ("cap", "power cap")):
            chosen = [base, *(p for p in points if p.knob.kind == kind)]
            series.append(
                (
                    name,
                    [
                        (p.tpot_p90_ms, p.jpt, f"{p.knob.value:.0f}" if p.knob.kind != "none" else "free")
                        for p in chosen
                    ],
                )
            )
        path = write_serving_pareto(
            series,
            args.out,
            title="Llama-3.1-8B on H100, Azure conv hour: energy per token vs p90 TPOT (modelled)",
            slo_ms=1000 * SLO.tpot_p90_s,
            attribution=ATTRIBUTION,
        )
        print(f"wrote {path}")
    print(" ".join(ATTRIBUTION))


if __name__ == "__main__":
    main()
