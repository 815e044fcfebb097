"""A scenario (fleet, curves, jobs, carbon trace, options) and the runs compared on it.

Every run of a scenario sees the same jobs with the same workloads and the same carbon trace; only the
controller differs. ``uncapped`` always runs first: every figure is a ratio against it.

Baselines (``--baseline``):

==============  ===================================================================================
uncapped        nothing is capped (always run)
static-cap      policy ``static-cap``: training GPUs at 70 % of default (real planner)
zeus            policy ``zeus``: online Zeus profiling of every training job, eta 0.5 (real planner)
zeus-oracle     each training job at its best static limit in hindsight (same eta, same floor)
chase           policy ``chase``: carbon-aware limits with a 24 h forecast (real planner)
carbon-budget   policy ``carbon-budget``: each job's power schedule within its slowdown budget (real planner)
carbon-oracle   each training job on its minimum-carbon schedule within the slowdown budget
price-budget    policy ``price-budget``: ``carbon-budget`` spending the budgets on the price (needs a price trace)
price-oracle    each training job on its minimum-cost schedule within the slowdown budget (needs a price trace)
energy-oracle   the same with the trace ignored: minimum energy within the same slowdown budget
polca           policy ``polca``: a budget of ``budget_fraction`` × nameplate over all nodes (real planner)
serving         policy ``serving``: SLO-guarded clock locks / caps of LLM inference pods (real planner
                and the operator's serving controller; LLM services on H100s, modelled)
==============  ===================================================================================
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from importlib import resources
from pathlib import Path

import yaml
from wattplane.api.v1alpha1.energypolicy import EnergyPolicy
from wattplane.planner.snapshot import PolicyView
from wattplane.sim.carbon import CarbonTrack
from wattplane.sim.catalog import Catalog
from wattplane.sim.controllers import CarbonOracleController, NullController, ZeusOracleController
from wattplane.sim.engine import BudgetScope, Controller, SimOptions, Simulation, pick_workload
from wattplane.sim.fleet import SimNode
from wattplane.sim.jobs import JobSpec
from wattplane.sim.llm import is_llm_workload, serves_on
from wattplane.sim.planning import PolicyController
from wattplane.sim.price import PricedCarbonTrack, PriceMeter, PriceTrack
from wattplane.sim.results import RunResult, collect

BASELINES = (
    "uncapped",
    "static-cap",
    "zeus",
    "zeus-oracle",
    "chase",
    "carbon-budget",
    "carbon-oracle",
    "energy-oracle",
    "price-budget",
    "price-oracle",
    "polca",
    "serving",
)
_SHIPPED = {
    "static-cap": "static-cap.yaml",
    "zeus": "zeus.yaml",
    "chase": "chase.yaml",
    "carbon-budget": "carbon-budget.yaml",
    "price-budget": "price-budget.yaml",
    "polca": "polca.yaml",
    "serving": "serving.yaml",
}


def load_policies(text: str, source: str = "") -> tuple[PolicyView, ...]:
    """EnergyPolicy objects from YAML (several documents allowed), as the planner sees them.

    Raises:
        ValueError: Not EnergyPolicy YAML, or invalid (pydantic's message, with the source).
    """
    views = []
    for doc in yaml.safe_load_all(text):
        if doc is None:
            continue
        if not isinstance(doc, dict) or doc.get("kind") != "EnergyPolicy":
            raise ValueError(f"{source}: every document must be an EnergyPolicy")
        try:
            policy = EnergyPolicy.model_validate(doc)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
        if not policy.name:
            raise ValueError(f"{source}: an EnergyPolicy needs metadata.name")
        views.append(PolicyView(name=policy.name, spec=policy.spec, generation=max(1, policy.generation)))
    if not views:
        raise ValueError(f"{source}: no EnergyPolicy found")
    return tuple(views)


def shipped_policy(name: str) -> tuple[PolicyView, ...]:
    """A baseline's policy file from the package data."""
    text = resources.files("wattplane.sim").joinpath("data", "policies", _SHIPPED[name]).read_text(encoding="utf-8")
    return load_policies(text, _SHIPPED[name])


@dataclass(frozen=True)
class Scenario:
    """Everything every run of a comparison shares."""

    nodes: tuple[SimNode, ...]
    catalog: Catalog
    jobs: tuple[JobSpec, ...]
    carbon: CarbonTrack
    options: SimOptions
    seed: int = 0
    budget_fraction: float = 0.7
    oracle_slowdown: float = 0.025
    #: Electricity price: the signal of policies with a ``carbon.price`` section, and the runs' bill.
    price: PriceTrack | None = None

    @property
    def gpu_count(self) -> int:
        """GPUs in the fleet."""
        return sum(n.gpus for n in self.nodes)

    @property
    def nameplate_watts(self) -> float:
        """Sum of the boards' maximum limits."""
        return sum(n.gpus * self.catalog.model(n.model).max_watts for n in self.nodes)


def resolve_workloads(jobs: Iterable[JobSpec], catalog: Catalog, nodes: Sequence[SimNode]) -> tuple[JobSpec, ...]:
    """Give every job without a workload one measured on every GPU model of the fleet (by job id).

    Raises:
        ValueError: A named workload that no GPU model of the fleet has.
    """
    models = sorted({n.model for n in nodes})
    common = sorted(set.intersection(*(set(catalog.families(m)) for m in models)))
    out = []
    for job in jobs:
        if not job.workload:
            out.append(replace(job, workload=pick_workload(job.id, common)))
            continue
        if not any(_measured(catalog, m, job.workload) for m in models):
            raise ValueError(f"job {job.id}: workload {job.workload!r} is not measured on {', '.join(models)}")
        out.append(job)
    return tuple(out)


def _measured(catalog: Catalog, model: str, workload: str) -> bool:
    if is_llm_workload(workload):
        return serves_on(model)
    try:
        catalog.workload(model, workload)
    except KeyError:
        return False
    return True


def _with_field(views: Sequence[PolicyView], section: str, field: str, value: object) -> tuple[PolicyView, ...]:
    """``views`` with ``field`` of every ``section`` they have set to ``value``."""
    out = []
    for v in views:
        part = getattr(v.spec, section)
        if part is not None:
            part = part.model_copy(update={field: value})
            v = replace(v, spec=v.spec.model_copy(update={section: part}))
        out.append(v)
    return tuple(out)


def with_budget(views: Sequence[PolicyView], watts: float) -> tuple[PolicyView, ...]:
    """The policies with every budget section set to ``watts``."""
    return _with_field(views, "budget", "watts", watts)


def with_slowdown(views: Sequence[PolicyView], slowdown: float) -> tuple[PolicyView, ...]:
    """``views`` with every carbon section's per-job slowdown budget set to ``slowdown``."""
    return _with_field(views, "carbon", "max_slowdown", slowdown)


def with_price_weight(specs: Sequence[RunSpec], weight: float) -> list[RunSpec]:
    """``specs`` with the weight of every ``carbon.price`` section set to ``weight`` (0 … 1).

    Raises:
        ValueError: A weight outside [0, 1].
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"price weight {weight:g} is outside 0 … 1")
    out = []
    for spec in specs:
        views = []
        for v in spec.policies:
            carbon = v.spec.carbon
            if carbon is not None and carbon.price is not None:
                carbon = carbon.model_copy(update={"price": carbon.price.model_copy(update={"weight": weight})})
                v = replace(v, spec=v.spec.model_copy(update={"carbon": carbon}))
            views.append(v)
        out.append(replace(spec, policies=tuple(views)))
    return out


def budget_scopes(nodes: Sequence[SimNode], policy_sets: Iterable[Sequence[PolicyView]]) -> tuple[BudgetScope, ...]:
    """One scope per distinct budget section across the runs (measured in every run, uncapped included)."""
    # A schedule's windows are not scopes here: how long a ramp takes depends on the draw when it
    # starts, so a window's scope is for the caller to place (``bench/demand_response.py``).
    scopes: dict[tuple[str, float, tuple[int, ...]], BudgetScope] = {}
    for views in policy_sets:
        for v in views:
            budget = v.spec.budget
            if budget is None:
                continue
            covered = tuple(
                i
                for i, n in enumerate(nodes)
                if budget.node_selector is None or budget.node_selector.matches(dict(n.labels))
            )
            if budget.watts is not None:
                key = (v.name, budget.watts, covered)
                scopes.setdefault(key, BudgetScope(v.name, budget.watts, covered))
    return tuple(scopes.values())


@dataclass(frozen=True)
class RunSpec:
    """One run to make: a name and how to build its controller."""

    name: str
    policies: tuple[PolicyView, ...] = ()
    baseline: str | None = None


def run_specs(
    scenario: Scenario, baselines: Sequence[str], policy_files: Mapping[str, tuple[PolicyView, ...]]
) -> list[RunSpec]:
    """Uncapped first, then the baselines asked for, then one run per policy file."""
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {', '.join(unknown)}; known: {', '.join(BASELINES)}")
    priced = [b for b in baselines if b in ("price-budget", "price-oracle")]
    priced += [n for n, views in policy_files.items() if any(v.spec.carbon and v.spec.carbon.price for v in views)]
    if priced and scenario.price is None:
        raise ValueError(f"{', '.join(priced)} need(s) a price trace (--price-trace)")
    specs = [RunSpec("uncapped", baseline="uncapped")]
    for b in dict.fromkeys(baselines):
        if b == "uncapped":
            continue
        if b in _SHIPPED:
            views = shipped_policy(b)
            if b == "polca":
                views = with_budget(views, scenario.budget_fraction * scenario.nameplate_watts)
            if b in ("carbon-budget", "price-budget"):
                views = with_slowdown(views, scenario.oracle_slowdown)
            specs.append(RunSpec(b, views, baseline=b))
        else:
            specs.append(RunSpec(b, baseline=b))
    for name, views in policy_files.items():
        specs.append(RunSpec(name, views))
    return specs


def controller_for(spec: RunSpec, scenario: Scenario, all_specs: Sequence[RunSpec]) -> Controller:
    """Build the controller of one run; oracles borrow eta and floors from the matching policy if any."""
    if spec.baseline == "uncapped":
        return NullController()
    if spec.baseline == "zeus-oracle":
        view = _first_with(all_specs, "efficiency")
        if view is None or view.spec.efficiency is None:
            return ZeusOracleController()
        floor = view.spec.limits.min_fraction_of_default if view.spec.limits else None
        section = view.spec.efficiency
        return ZeusOracleController(eta=section.eta, step_watts=section.step_watts, floor_fraction=floor)
    if spec.baseline in ("carbon-oracle", "energy-oracle"):
        carbon = _first_with(all_specs, "carbon")
        floor = None
        if carbon is not None and carbon.spec.limits is not None:
            floor = carbon.spec.limits.min_fraction_of_default
        return CarbonOracleController(
            slowdown=scenario.oracle_slowdown, floor_fraction=floor, flat=spec.baseline == "energy-oracle"
        )
    if spec.baseline == "price-oracle":
        if scenario.price is None:
            raise ValueError("the price-oracle needs a price trace")
        carbon = _first_with(all_specs, "carbon")
        floor = carbon.spec.limits.min_fraction_of_default if carbon is not None and carbon.spec.limits else None
        series = (scenario.price.at, scenario.price.next_change)
        return CarbonOracleController(
            slowdown=scenario.oracle_slowdown, floor_fraction=floor, series=series, name="price-oracle"
        )
    return PolicyController(
        spec.name,
        spec.policies,
        plan_interval_s=scenario.options.plan_interval_s,
        price=scenario.price,
        serving_interval_s=scenario.options.serving_interval_s,
    )


def _first_with(specs: Sequence[RunSpec], section: str) -> PolicyView | None:
    """The first policy (in run order) that has ``section``: oracles take its parameters."""
    for s in specs:
        for v in s.policies:
            if getattr(v.spec, section) is not None:
                return v
    return None


@dataclass
class Run:
    """One simulation of a comparison, ready to run (or to step in lockstep with the others)."""

    spec: RunSpec
    controller: Controller
    sim: Simulation

    def result(self, scenario: Scenario, wall_s: float = 0.0) -> RunResult:
        """The finished run's numbers (releases the controller)."""
        close = getattr(self.controller, "close", None)
        if callable(close):
            close()
        return collect(self.sim, self.spec.name, wall_s=wall_s, notes=_notes(self.spec, self.controller, scenario))


def prepare(
    scenario: Scenario, specs: Sequence[RunSpec], *, on_progress: Callable[[str, Simulation], None] | None = None
) -> list[Run]:
    """One :class:`Run` per spec, all measuring the same budget scopes."""
    scopes = budget_scopes(scenario.nodes, [s.policies for s in specs])
    runs = []
    for spec in specs:
        controller = controller_for(spec, scenario, specs)
        progress = partial(on_progress, spec.name) if on_progress is not None else None
        runs.append(Run(spec, controller, simulation(scenario, controller, scopes, on_progress=progress)))
    return runs


def simulation(
    scenario: Scenario,
    controller: Controller,
    scopes: tuple[BudgetScope, ...] = (),
    *,
    on_progress: Callable[[Simulation], None] | None = None,
) -> Simulation:
    """The scenario's simulation under ``controller``, measuring ``scopes``."""
    carbon = scenario.carbon
    if scenario.price is not None:
        carbon = PricedCarbonTrack.of(carbon, scenario.price)
        controller = PriceMeter(controller, scenario.price)
    return Simulation(
        nodes=scenario.nodes,
        catalog=scenario.catalog,
        jobs=scenario.jobs,
        carbon=carbon,
        controller=controller,
        options=scenario.options,
        scopes=scopes,
        on_progress=on_progress,
    )


def run_all(
    scenario: Scenario,
    specs: Sequence[RunSpec],
    *,
    on_progress: Callable[[str, Simulation], None] | None = None,
    on_result: Callable[[RunResult], None] | None = None,
) -> list[RunResult]:
    """Run every spec on the scenario, one after the other; deterministic for the scenario."""
    results = []
    for run in prepare(scenario, specs, on_progress=on_progress):
        started = time.perf_counter()
        run.sim.run()
        result = run.result(scenario, wall_s=time.perf_counter() - started)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def _notes(spec: RunSpec, controller: Controller, scenario: Scenario) -> tuple[str, ...]:
    if isinstance(controller, ZeusOracleController):
        return (f"zeus-oracle: eta {controller.eta:g}, step {controller.step_watts:g} W",)
    if isinstance(controller, CarbonOracleController):
        knows = "intensity ignored" if controller.flat else "perfect knowledge of the trace"
        if controller.series is not None:
            knows = "perfect knowledge of the price trace"
        return (f"{controller.name}: slowdown budget {controller.slowdown:.1%} per job, {knows}",)
    if spec.baseline == "polca":
        return (f"polca: budget {scenario.budget_fraction:.0%} of nameplate ({scenario.nameplate_watts:.0f} W)",)
    return ()


def policy_file_runs(paths: Sequence[Path]) -> dict[str, tuple[PolicyView, ...]]:
    """One run per policy file, named after the policies it holds."""
    runs: dict[str, tuple[PolicyView, ...]] = {}
    for path in paths:
        views = load_policies(path.read_text(encoding="utf-8"), path.name)
        name = "+".join(v.name for v in views)
        if name in runs or name in BASELINES:
            name = f"{name} ({path.name})"
        runs[name] = views
    return runs
