"""Carbon against slowdown: the policies as points, the carbon-oracle as a frontier.

A carbon cut means little without the slowdown paid for it, and a mean slowdown hides the jobs that pay
most. Two views follow from that:

* :func:`oracle_frontier` runs the carbon-oracle (hindsight: every job's length, curve and the whole
  trace) at several per-job slowdown budgets: the best cut any carbon-aware capping could reach at each.
* :func:`fair_share` puts a policy next to the oracle *at the policy's own worst per-job slowdown*: a
  policy whose slowest job took 8 % longer is compared with the oracle allowed 8 % per job, not 2.5 %.

:func:`write_pareto` draws carbon change against mean JCT change for every run and the frontier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from wattplane.sim.controllers import CarbonOracleController
from wattplane.sim.results import Comparison, RunResult, collect, compare
from wattplane.sim.scenario import Scenario, simulation

#: Per-job slowdown budgets of the frontier (fractions).
FRONTIER_BUDGETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2)


@dataclass(frozen=True)
class FrontierPoint:
    """The carbon-oracle at one per-job budget, against uncapped."""

    budget: float
    carbon_change: float
    mean_jct_change: float


def run_oracle(scenario: Scenario, budget: float, *, floor_fraction: float | None) -> RunResult:
    """One carbon-oracle run of ``scenario`` at a per-job slowdown ``budget``."""
    sim = simulation(scenario, CarbonOracleController(slowdown=budget, floor_fraction=floor_fraction))
    sim.run()
    return collect(sim, f"carbon-oracle {budget:.1%}")


def oracle_frontier(
    scenario: Scenario,
    base: RunResult,
    budgets: Sequence[float] = FRONTIER_BUDGETS,
    *,
    floor_fraction: float | None = 0.5,
) -> list[FrontierPoint]:
    """The oracle's cut at each budget (sorted by budget)."""
    out = []
    for budget in sorted(budgets):
        c = compare(run_oracle(replace(scenario, oracle_slowdown=budget), budget, floor_fraction=floor_fraction), base)
        out.append(FrontierPoint(budget, c.carbon_change, c.mean_jct_change or 0.0))
    return out


def fair_share(
    scenario: Scenario, base: RunResult, run: Comparison, *, floor_fraction: float | None = 0.5
) -> tuple[float, Comparison] | None:
    """``(share of the oracle's cut, the oracle's comparison)`` at ``run``'s worst per-job slowdown.

    ``None`` when the run slowed no job (nothing to compare: the oracle needs some budget) or cut nothing.
    """
    budget = run.max_jct_change
    if budget is None or budget <= 1e-4:
        return None
    oracle = compare(run_oracle(scenario, budget, floor_fraction=floor_fraction), base)
    if oracle.carbon_change >= 0:
        return None
    return run.carbon_change / oracle.carbon_change, oracle


def write_pareto(
    runs: Sequence[Comparison],
    frontier: Sequence[FrontierPoint],
    path: Path,
    *,
    title: str = "Carbon against slowdown",
    attribution: Sequence[str] = (),
) -> Path:
    """Carbon cut against mean JCT increase: one marker per run, the oracle's frontier as a line.

    Raises:
        RuntimeError: matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - matplotlib is a dev/plots extra
        raise RuntimeError("plots need matplotlib (pip install matplotlib)") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    xs = [100 * p.mean_jct_change for p in frontier]
    ys = [-100 * p.carbon_change for p in frontier]
    ax.plot(xs, ys, "-", color="black", linewidth=1.2, label="carbon-oracle (per-job budget sweep)")
    for p, x, y in zip(frontier, xs, ys, strict=True):
        ax.annotate(f"{p.budget:.1%}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    families: dict[str, str] = {}
    markers = "osD^v<>Ph*X"
    for c in runs:
        family = c.name.split(" ")[0].split("@")[0]
        marker = families.setdefault(family, markers[len(families) % len(markers)])
        ax.plot(100 * (c.mean_jct_change or 0.0), -100 * c.carbon_change, marker, label=c.name, markersize=6)
    ax.set_xlabel("mean job completion time increase vs uncapped, %")
    ax.set_ylabel("carbon cut vs uncapped, %")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.text(0.01, 0.005, "  ".join(attribution), fontsize=6, color="dimgray", wrap=True)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
