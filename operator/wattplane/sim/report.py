"""The comparison as a text table, a short savings summary, and JSON with stable keys.

JSON layout (``schema: wattplane.simulate/v1``): ``scenario`` (inputs), ``runs`` (one object per run,
uncapped first, each with its totals, ``vs_uncapped`` ratios, ``budgets`` and per-job ``jobs`` receipts),
``attribution`` (licence notices of the data used) and ``timing`` (wall-clock figures: the only part
that differs between two runs with the same seed). With LLM services (:mod:`wattplane.sim.llm`) each
run also has ``serving`` (totals, the objectives and per-service figures, all modelled) and
``vs_uncapped`` has ``joules_per_token_change`` and ``slo_minutes_change``; without them these keys are
absent, so earlier reports keep their layout.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from wattplane.sim.results import Comparison, JobReceipt, RunResult, compare

SCHEMA = "wattplane.simulate/v1"
ZEUS_ATTRIBUTION = "GPU power curves: Zeus (You, Chung, Chowdhury, NSDI'23), github.com/ml-energy/zeus, Apache-2.0."
ALIBABA_ATTRIBUTION = "Jobs: Alibaba cluster-trace-gpu-v2023 (Weng et al., USENIX ATC'23), Apache-2.0."
AZURE_ATTRIBUTION = "Inference load: Azure LLM inference trace 2023 (Patel et al., ISCA'24), CC-BY-4.0."


def comparisons(results: Sequence[RunResult]) -> list[Comparison]:
    """Every run against the first (uncapped)."""
    base = results[0]
    return [compare(r, base) for r in results]


def _pct(value: float | None, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value * 100:+.{digits}f}%"


def table(results: Sequence[RunResult]) -> str:
    """One line per run: totals and changes against uncapped."""
    header = (
        f"{'run':<20} {'energy kWh':>11} {'Δ':>7} {'carbon kg':>10} {'Δ':>7} {'JCT mean':>9} {'JCT p95':>8}"
        f" {'hi-prio work':>12} {'over budget s':>13} {'longest s':>9}"
    )
    priced = bool(results) and results[0].cost is not None
    if priced:
        header += f" {'cost ' + results[0].cost_currency:>11} {'Δ':>7}"
    lines = [header, "-" * len(header)]
    for r, c in zip(results, comparisons(results), strict=True):
        tput = "-" if c.high_priority_throughput is None else f"{c.high_priority_throughput:.3f}"
        cost = f" {r.cost or 0.0:>11.2f} {_pct(c.cost_change):>7}" if priced else ""
        lines.append(
            f"{r.name[:20]:<20} {r.energy_kwh:>11.1f} {_pct(c.energy_change):>7} {r.carbon_kg:>10.1f}"
            f" {_pct(c.carbon_change):>7} {_pct(c.mean_jct_change, 2):>9} {_pct(c.p95_jct_change):>8}"
            f" {tput:>12} {c.seconds_over_budget:>13.1f} {c.longest_over_budget_s:>9.1f}{cost}"
        )
    return "\n".join(lines)


def summary(results: Sequence[RunResult]) -> str:
    """A few sentences a person reads first."""
    base = results[0]
    out = [
        f"uncapped: {base.energy_kwh:.1f} kWh and {base.carbon_kg:.1f} kg CO2 for the jobs, each run to its end "
        f"({base.fleet_energy_kwh:.1f} kWh for the whole fleet within the run's duration, idle GPUs included)"
        + (f"; energy cost {base.cost:.2f} {base.cost_currency} (simulated)." if base.cost is not None else ".")
    ]
    for r, c in zip(results[1:], comparisons(results)[1:], strict=True):
        saved_kwh = base.energy_kwh - r.energy_kwh
        saved_kg = base.carbon_kg - r.carbon_kg
        jct = "" if c.mean_jct_change is None else f", mean job completion time {_pct(c.mean_jct_change, 2)}"
        budget = ""
        if r.scopes:
            budget = f", {c.seconds_over_budget:.0f} s over budget (longest {c.longest_over_budget_s:.1f} s)"
        cost = ""
        if r.cost is not None and base.cost is not None:
            change = "" if c.cost_change is None else f" ({-c.cost_change:.1%})"
            cost = f", {base.cost - r.cost:.2f} {r.cost_currency} of energy cost saved{change}"
        out.append(
            f"{r.name}: {saved_kwh:.1f} kWh saved ({-c.energy_change:.1%}), {saved_kg:.2f} kg CO2 avoided"
            f" ({-c.carbon_change:.1%}){cost}{jct}{budget}."
        )
    out += [line for r in results if (line := serving_line(r, base)) is not None]
    return "\n".join(out)


def serving_line(run: RunResult, base: RunResult) -> str | None:
    """One sentence on a run's LLM services (``None`` without any)."""
    jpt = run.serving_joules_per_token
    if not run.serving or jpt is None:
        return None
    base_jpt = base.serving_joules_per_token
    change = f" ({_pct(jpt / base_jpt - 1.0)} vs uncapped)" if base_jpt and run is not base else ""
    tpot, ttft = run.serving_slo_s
    minutes = run.serving_minutes
    share = run.slo_minutes / minutes if minutes > 0 else 0.0
    return (
        f"{run.name} LLM serving (modelled): {len(run.serving)} services, {run.output_tokens / 1e6:.1f} M output "
        f"tokens, {jpt:.3f} J/token{change}, {run.slo_minutes:.1f} of {minutes:.0f} service-minutes above "
        f"p90 TPOT {tpot * 1000:.0f} ms / TTFT {ttft:g} s ({share:.2%})."
    )


def to_json(
    scenario: Mapping[str, Any],
    results: Sequence[RunResult],
    attribution: Sequence[str],
    *,
    receipts: bool = True,
) -> dict[str, Any]:
    """The whole comparison as JSON-ready data (see the module docstring)."""
    runs = []
    for r, c in zip(results, comparisons(results), strict=True):
        vs = asdict(c)
        vs.pop("name")
        priced = r.cost is not None  # the cost keys appear only in runs with a price trace (stable keys otherwise)
        if not priced:
            vs.pop("cost_change")
        if not r.serving:  # the serving keys appear only with LLM services (stable keys otherwise)
            vs.pop("joules_per_token_change")
            vs.pop("slo_minutes_change")
        runs.append(
            {
                "name": r.name,
                "energy_kwh": _round(r.energy_kwh),
                "carbon_kg": _round(r.carbon_kg),
                "fleet_energy_kwh": _round(r.fleet_energy_kwh),
                "fleet_carbon_kg": _round(r.fleet_carbon_kg),
                "idle_energy_kwh": _round(r.idle_energy_kwh),
                "end_s": _round(r.end_s),
                "unfinished_jobs": r.unfinished_jobs,
                "queued_jobs": r.queued_jobs,
                "unstarted_services": r.unstarted_services,
                "plan_rounds": r.plan_rounds,
                "agent_ticks": r.agent_ticks,
                "events": r.events,
                "vs_uncapped": {k: _round(v) for k, v in vs.items()},
                "budgets": [{k: _round(v) for k, v in asdict(s).items()} for s in r.scopes],
                "notes": list(r.notes),
                "jobs": [_receipt(j, priced=priced) for j in r.receipts] if receipts else [],
            }
        )
        if priced:
            runs[-1].update(cost=_round(r.cost), cost_currency=r.cost_currency)
        if r.serving:
            runs[-1]["serving"] = {
                "modelled": True,
                "slo_tpot_p90_s": r.serving_slo_s[0],
                "slo_ttft_p90_s": r.serving_slo_s[1],
                "output_tokens": _round(r.output_tokens),
                "energy_kwh": _round(math.fsum(s.energy_kwh for s in r.serving)),
                "joules_per_token": _round(r.serving_joules_per_token),
                "slo_minutes": _round(r.slo_minutes),
                "service_minutes": _round(r.serving_minutes),
                "services": [{k: _round(v) for k, v in asdict(s).items()} for s in r.serving],
            }
    return {
        "schema": SCHEMA,
        "scenario": dict(scenario),
        "runs": runs,
        "attribution": list(attribution),
        "timing": {
            r.name: {
                "wall_s": round(r.wall_s, 3),
                "simulated_s": round(r.end_s, 3),
                "speedup": round(r.end_s / r.wall_s, 1) if r.wall_s > 0 else None,
            }
            for r in results
        },
    }


def _receipt(receipt: JobReceipt, *, priced: bool) -> dict[str, Any]:
    out = {k: _round(v) for k, v in asdict(receipt).items()}
    if not priced:
        out.pop("cost")
    return out


def _round(value: Any) -> Any:
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return float(f"{value:.9g}")
    return value
