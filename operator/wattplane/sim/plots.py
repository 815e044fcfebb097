"""PNG plots of a comparison (matplotlib, headless Agg backend).

* ``fleet_power.png``: fleet GPU power per run over time (bin means, and bin peaks dotted for runs with
  a budget), with the budgets as horizontal lines;
* ``carbon_vs_cap.png``: the grid's carbon intensity and, per run, the mean power limit of busy GPUs;
* ``savings.png``: energy, carbon and mean JCT change of every run against uncapped.

Every figure carries the data attribution in its footer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wattplane.sim.report import comparisons
from wattplane.sim.results import RunResult


def _pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only backend; ``RuntimeError`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - matplotlib is a dependency; a stripped image may lack it
        raise RuntimeError("plots need matplotlib (pip install matplotlib)") from exc
    return plt


def write_plots(results: Sequence[RunResult], folder: Path, *, attribution: Sequence[str] = ()) -> list[Path]:
    """Write the three figures into ``folder``; return their paths.

    Raises:
        RuntimeError: matplotlib is not installed.
    """
    plt = _pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    footer = "  ".join(attribution)
    paths = []

    fig, ax = plt.subplots(figsize=(11, 4.5))
    for r in results:
        hours = [(i + 0.5) * r.timeline_step_s / 3600 for i in range(len(r.timeline_power_w))]
        (line,) = ax.plot(hours, [p / 1000 for p in r.timeline_power_w], label=r.name, linewidth=1.2)
        if r.scopes:
            ax.plot(hours, [p / 1000 for p in r.timeline_max_w], ":", color=line.get_color(), linewidth=0.8)
    drawn = set()
    for r in results:
        for s in r.scopes:
            if (s.name, s.watts) not in drawn:
                drawn.add((s.name, s.watts))
                ax.axhline(s.watts / 1000, color="black", linestyle="--", linewidth=1, label=f"budget {s.name}")
    ax.set_xlabel("simulated hours")
    ax.set_ylabel("fleet GPU power, kW")
    ax.set_title("Fleet power (bin mean; dotted: bin peak)")
    ax.legend(fontsize=8, ncol=2)
    paths.append(_save(fig, folder / "fleet_power.png", footer))

    fig, ax = plt.subplots(figsize=(11, 4.5))
    base = results[0]
    hours = [(i + 0.5) * base.timeline_step_s / 3600 for i in range(len(base.timeline_intensity))]
    ax.plot(hours, base.timeline_intensity, color="tab:gray", label="carbon intensity")
    ax.set_xlabel("simulated hours")
    ax.set_ylabel("g CO2/kWh")
    twin = ax.twinx()
    for r in results:
        xs = [(i + 0.5) * r.timeline_step_s / 3600 for i, v in enumerate(r.timeline_mean_limit_w) if v is not None]
        ys = [v for v in r.timeline_mean_limit_w if v is not None]
        twin.plot(xs, ys, label=r.name, linewidth=1.1)
    twin.set_ylabel("mean power limit of busy GPUs, W")
    ax.set_title("Carbon intensity and mean cap")
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, ncol=2, loc="lower left")
    paths.append(_save(fig, folder / "carbon_vs_cap.png", footer))

    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(results)), 4.5))
    comps = comparisons(results)[1:]
    names = [c.name for c in comps]
    width = 0.27
    xs = list(range(len(comps)))
    series = (
        ("energy", [-100 * c.energy_change for c in comps]),
        ("carbon", [-100 * c.carbon_change for c in comps]),
        ("mean JCT increase", [100 * (c.mean_jct_change or 0.0) for c in comps]),
    )
    for k, (label, values) in enumerate(series):
        ax.bar([x + (k - 1) * width for x in xs], values, width, label=label)
    ax.set_xticks(xs, names, rotation=20, ha="right")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("% vs uncapped (savings up, slowdown up)")
    ax.set_title("Savings and slowdown against uncapped")
    ax.legend(fontsize=8)
    paths.append(_save(fig, folder / "savings.png", footer))
    return paths


def _save(fig: object, path: Path, footer: str) -> Path:
    import matplotlib.pyplot as plt

    fig.text(0.01, 0.005, footer, fontsize=6, color="dimgray", wrap=True)  # type: ignore[attr-defined]
    fig.tight_layout(rect=(0, 0.04, 1, 1))  # type: ignore[attr-defined]
    fig.savefig(path, dpi=110)  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    return path


def write_serving_pareto(
    series: Sequence[tuple[str, Sequence[tuple[float, float, str]]]],
    path: Path,
    *,
    title: str,
    slo_ms: float | None = None,
    attribution: Sequence[str] = (),
) -> Path:
    """Energy per output token against p90 TPOT, one line of labelled points per knob kind.

    ``series`` is ``(name, [(tpot_ms, joules_per_token, label), ...])``; labels are drawn next to points.
    With ``slo_ms`` the objective is drawn and the axis stops at three times it (points past it are
    off the chart: far outside any objective).

    Raises:
        RuntimeError: matplotlib is not installed.
    """
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, points in series:
        (line,) = ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", linewidth=1.2, label=name)
        for x, y, label in points:
            ax.annotate(label, (x, y), fontsize=6, color=line.get_color(), xytext=(3, 3), textcoords="offset points")
    if slo_ms is not None:
        ax.axvline(slo_ms, color="black", linestyle="--", linewidth=1, label=f"p90 TPOT objective {slo_ms:g} ms")
        ax.set_xlim(0, 3 * slo_ms)
        shown = [p[1] for _, points in series for p in points if p[0] <= 3 * slo_ms]
        if shown:
            ax.set_ylim(0.95 * min(shown), 1.03 * max(shown))
    ax.set_xlabel("p90 time per output token, ms (modelled)")
    ax.set_ylabel("GPU energy per output token, J (modelled)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path, "  ".join(attribution))
