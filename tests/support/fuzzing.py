"""Bad input at scale: hypothesis strategies for EnergyPolicies and pod annotations, and the checks they go through.

A generated policy is *near-valid* JSON: every field the API knows, each drawn from a mixture of good
values, boundary values just inside and outside the schema's limits, wrong types and junk, plus the odd
unknown key. Each one then goes where a real one goes:

* the **real API server** (server-side dry run, strict field validation: ``kubectl apply``), which
  either rejects it with a message or accepts it;
* the **models** (:class:`EnergyPolicySpec`), i.e. what the operator does with an accepted object;
* for a spec the models accept, the **planner** on a small mixed fleet (two GPU models, pods with
  annotations, fresh and stale carbon signals), and the **agent's engine** on simulated GPUs with the
  planned targets. Nothing may raise, and no limit may leave the device's constraints.

Used by ``tests/reliability/test_bad_input_at_scale.py`` (CI-sized) and ``bench/policy_fuzz.py`` (full).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from pydantic import ValidationError
from wattplane.agent.engine import NodeEngine
from wattplane.agent.gpu.simulated import SimulatedBackend
from wattplane.agent.journal import Journal
from wattplane.api.annotations import KNOWN, parse_pod_annotations
from wattplane.api.v1alpha1.energypolicy import EnergyPolicySpec
from wattplane.api.v1alpha1.gpunode import GpuNodeSpec
from wattplane.planner.context import CarbonInput, PlanContext
from wattplane.planner.plan import Plan, plan
from wattplane.planner.snapshot import FleetSnapshot, GpuView, PodView, PolicyView

# -- strategies -------------------------------------------------------------------------------------

_JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=6),
    st.lists(st.integers(-3, 3), max_size=2),
    st.dictionaries(st.sampled_from(["a", "x", "watts"]), st.integers(-2, 2), max_size=1),
)
_BOUNDARY = st.sampled_from([0, -1, 1, 0.5, 1.0, 1.0000001, 1.5, 9.99, 10, 59, 60, 100, 500, 501, 1000, 1001,
                             5000, 5001, 10000, 10001, 86400, 86401, 1e9, 1.1e9, 1e-9, -0.0])  # fmt: skip
_NUMBER = st.one_of(
    _BOUNDARY,
    st.integers(-(10**6), 10**10),
    st.floats(min_value=-1e10, max_value=1e10, allow_nan=False, allow_infinity=False),
)


def _often(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any], bad_percent: int) -> st.SearchStrategy[Any]:
    """``bad`` about ``bad_percent`` % of the time (``st.one_of`` would pick each branch about equally)."""
    return st.integers(0, 99).flatmap(lambda k: bad if k < bad_percent else good)


def _field(good: st.SearchStrategy[Any], *, numeric: bool = True) -> st.SearchStrategy[Any]:
    """Mostly ``good``; about 1 in 20 a number from anywhere or junk of the wrong type.

    With a dozen fields per policy this makes roughly half the policies invalid somewhere, and the
    other half valid in many different ways.
    """
    return _often(good, st.one_of(_NUMBER, _JUNK) if numeric else _JUNK, 5)


def _section(required: Mapping[str, st.SearchStrategy[Any]], optional: Mapping[str, st.SearchStrategy[Any]]) -> Any:
    base = st.fixed_dictionaries(dict(required), optional=dict(optional))
    unknown = st.dictionaries(st.sampled_from(["maxWats", "extra", "Watts", "min_watts"]), _JUNK, max_size=1)
    return _often(base, st.tuples(base, unknown).map(lambda pair: {**pair[0], **pair[1]}), 3)


_LABEL_VALUE = st.sampled_from(["a", "b", "train", "ml", "", "a", "b", "train", "ml", "x" * 64, "bad value!"])
_SELECTOR = _section(
    {},
    {
        "matchLabels": _field(st.dictionaries(st.sampled_from(["app", "team", "bad key!"]), _LABEL_VALUE, max_size=2)),
        "matchExpressions": _field(
            st.lists(
                _section(
                    {"key": _field(st.sampled_from(["app", "team", ""]), numeric=False)},
                    {
                        "operator": _field(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist", "Near"])),
                        "values": _field(st.lists(_LABEL_VALUE, max_size=3)),
                    },
                ),
                max_size=2,
            )
        ),
    },
)
_WATTS = _field(st.floats(min_value=1, max_value=1200, allow_nan=False).map(lambda w: round(w, 1)))
_FRACTION = _field(st.floats(min_value=0.05, max_value=1.0, allow_nan=False).map(lambda f: round(f, 3)))
_CLOCKS = _section(
    {"minMHz": _field(st.integers(0, 2500)), "maxMHz": _field(st.integers(0, 2500))},
    {},
)
_LIMITS = _section(
    {},
    {
        "maxWatts": _WATTS,
        "maxFractionOfDefault": _FRACTION,
        "minWatts": _WATTS,
        "minFractionOfDefault": _FRACTION,
        "lockedSmClockMHz": _field(_CLOCKS),
    },
)
_EFFICIENCY = _section(
    {},
    {
        "eta": _field(st.floats(0, 1)),
        "maxSlowdown": _field(st.floats(0.01, 10)),
        "stepWatts": _field(st.integers(1, 500)),
        "warmupSeconds": _field(st.integers(0, 3600)),
        "windowSeconds": _field(st.integers(1, 3600)),
        "earlyStopFraction": _field(st.floats(0.01, 1)),
        "reprofileAfterSeconds": _field(st.integers(60, 10**7)),
    },
)
_PROVIDERS = ["electricitymaps", "watttime", "ukcarbon", "carbon-aware-sdk", "trace", "coal"]
_CURVE_POINT = _section({"x": _field(st.integers(0, 5000)), "weight": _field(st.floats(0, 1))}, {})
_CARBON = _section(
    {
        "source": _section(
            {
                "provider": _field(st.sampled_from(_PROVIDERS), numeric=False),
                "zone": _field(st.sampled_from(["DE", "CAISO_NORTH", "national", "", "z" * 200]), numeric=False),
            },
            {
                "signal": _field(st.sampled_from(["average", "marginal", "worst"]), numeric=False),
                "baseUrl": _field(st.sampled_from(["http://127.0.0.1:9", "not a url", "https://api.example"])),
                "refreshIntervalSeconds": _field(st.integers(10, 86400)),
                "tracePath": _field(st.sampled_from(["/nonexistent.csv", ""]), numeric=False),
                "credentialsSecretRef": _field(_section({"name": _field(st.sampled_from(["s", ""]))}, {})),
            },
        ),
    },
    {
        "curve": _section(
            {"points": _field(st.lists(_CURVE_POINT, max_size=4))},
            {"basis": _field(st.sampled_from(["Absolute", "ForecastPercentile", "Relative"]), numeric=False)},
        ),
        "lookaheadHours": _field(st.floats(0.5, 72)),
        "efficientFractionOfDefault": _FRACTION,
        "maxStalenessSeconds": _field(st.integers(60, 7 * 86400)),
        "fallback": _field(st.sampled_from(["LastGood", "Fixed", "Efficient", "Max", "Panic"]), numeric=False),
        "fallbackIntensity": _field(st.floats(0, 5000)),
    },
)
_BUDGET = _section(
    {"watts": _field(st.floats(50, 5000).map(lambda w: round(w, 1)))},
    {
        "nodeSelector": _field(_section({}, {"matchLabels": _field(st.just({"wattplane.io/rack": "r1"}))})),
        "hysteresisFraction": _field(st.floats(0, 0.5)),
    },
)
_STRAGGLERS = _section({}, {"tolerance": _field(st.floats(0.01, 1)), "stepWatts": _field(st.integers(1, 500))})

#: EnergyPolicy ``spec`` objects, near-valid.
policy_specs: st.SearchStrategy[dict[str, Any]] = _section(
    {},
    {
        "selector": _field(_section({}, {"podSelector": _field(_SELECTOR), "namespaceSelector": _field(_SELECTOR)})),
        "priority": _field(st.integers(-1000, 1000)),
        "limits": _field(_LIMITS),
        "efficiency": _field(_EFFICIENCY),
        "carbon": _field(_CARBON),
        "budget": _field(_BUDGET),
        "stragglers": _field(_STRAGGLERS),
        "dryRun": _field(st.booleans(), numeric=False),
    },
)

_ANNOTATION_WORDS = [
    *("low", "normal", "high", "HIGH", "0", "1000", "1001", "-1", "500.5", "training", "inference", "true", "false"),
    *("yes", "150", "-5", "nan", "inf", "1e309", "0.1", "10", "abc", "", " ", ":#"),
    *("9090:/metrics#samples_total", "http://127.0.0.1:9/metrics#x", 'metrics#x{a="1"}'),
]
_ANNOTATION_VALUE = st.one_of(st.sampled_from(_ANNOTATION_WORDS), st.text(max_size=20))
#: Pod annotation maps: wattplane's own keys with good and garbage values, plus unknown wattplane keys.
annotation_maps: st.SearchStrategy[dict[str, str]] = st.dictionaries(
    st.one_of(st.sampled_from(sorted(KNOWN)), st.sampled_from(["wattplane.io/colour", "wattplane.io/", "other/x"])),
    _ANNOTATION_VALUE,
    max_size=5,
)

_PAYLOAD_KEYS = st.sampled_from(
    ["zone", "carbonIntensity", "datetime", "forecast", "data", "intensity", "from", "to", "actual", "index",
     "point_time", "value", "meta", "units", "region", "signal_type", "data_point_period_seconds", "location",
     "time", "timestamp", "rating", "duration", "forecastData", "history", "isEstimated", "token", "regions"]
)  # fmt: skip
_PAYLOAD_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(width=32),  # NaN and infinities included: json.dumps writes them, aiohttp reads them back
    st.sampled_from(["2025-06-01T12:00Z", "2025-06-01T12:00:00+00:00", "2025-06-01T12:00:00.000Z", "yesterday", "",
                     "DE", "national", "CAISO_NORTH", "eastus", "lbs_co2_per_mwh", "percent", "PT5M", "very high"]),
    st.text(max_size=8),
)  # fmt: skip
#: JSON bodies built from the carbon APIs' own vocabulary: near-valid shapes with wrong values, and junk.
carbon_payloads: st.SearchStrategy[Any] = st.recursive(
    _PAYLOAD_SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_PAYLOAD_KEYS, inner, max_size=6)),
    max_leaves=30,
)


def draw(strategy: st.SearchStrategy[Any], count: int, *, derandomize: bool = True) -> list[Any]:
    """``count`` examples of ``strategy`` (for async consumers that ``@given`` cannot drive)."""
    from hypothesis import HealthCheck, Phase, given, settings

    out: list[Any] = []

    # derandomize: CI sees the same cases every run (a failure is reproducible, never a flake);
    # bench/policy_fuzz.py explores new ones.
    @settings(max_examples=count, deadline=None, database=None, phases=[Phase.generate], derandomize=derandomize,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(strategy)
    def collect(example: Any) -> None:
        out.append(example)

    collect()
    return out


# -- the fleet the planner and the engine see ---------------------------------------------------------

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
ENGINE_NODE = "fz-n1"
_A40_UUIDS = [d.identity.uuid for d in SimulatedBackend(node_name=ENGINE_NODE, gpu_count=4).devices()]


def fleet_snapshot(annotations: Sequence[Mapping[str, str]] = ()) -> FleetSnapshot:
    """Four A40s (100-300 W) on one node, two H100s (200-700 W) on another, three pods."""
    extra = list(annotations) + [{}] * 3
    pods = {
        ("ml", "p0"): PodView("ml", "p0", "u0", ENGINE_NODE, {"app": "a"}, dict(extra[0]), owner="Job/j0"),
        ("ml", "p1"): PodView("ml", "p1", "u1", ENGINE_NODE, {"app": "b", "team": "ml"}, dict(extra[1])),
        ("web", "p2"): PodView("web", "p2", "u2", "fz-n2", {"app": "train"}, dict(extra[2])),
    }
    gpus = [
        GpuView(ENGINE_NODE, uuid, i, "A40", 100.0, 300.0, 300.0, power_watts=250.0, energy_joules=1e6,
                limit_watts=300.0, pods=((("ml", "p0"),) if i < 2 else (("ml", "p1"),)))
        for i, uuid in enumerate(_A40_UUIDS)
    ] + [
        GpuView("fz-n2", f"GPU-h100-{i}", i, "H100", 200.0, 700.0, 700.0, power_watts=600.0, energy_joules=2e6,
                limit_watts=700.0, pods=(("web", "p2"),))
        for i in range(2)
    ]  # fmt: skip
    return FleetSnapshot(
        gpus=tuple(gpus),
        pods=pods,
        namespace_labels={"ml": {"team": "ml"}, "web": {"team": "web"}},
        nodes=(ENGINE_NODE, "fz-n2"),
        node_labels={ENGINE_NODE: {"wattplane.io/rack": "r1"}, "fz-n2": {"wattplane.io/rack": "r2"}},
    )


def carbon_inputs(names: Sequence[str]) -> dict[str, CarbonInput]:
    """A fresh signal, a stale one and none, in turn, per policy name."""
    forecast = tuple((NOW + timedelta(hours=h), 200.0 + 20 * h) for h in range(1, 24))
    fresh = CarbonInput(intensity=350.0, time=NOW, forecast=forecast, source="fz/DE")
    stale = CarbonInput(intensity=500.0, time=NOW - timedelta(days=3), stale=True, source="fz/DE", message="old")
    choices = [fresh, stale, None]
    return {n: c for i, n in enumerate(sorted(names)) if (c := choices[i % 3]) is not None}


# -- checks -------------------------------------------------------------------------------------------


def model_verdict(spec: object) -> tuple[EnergyPolicySpec | None, str]:
    """The operator's view of a spec: the model, or the validation message it would put in status."""
    try:
        return EnergyPolicySpec.model_validate(spec), ""
    except ValidationError as exc:
        return None, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])


def plan_violations(result: Plan, snapshot: FleetSnapshot) -> list[str]:
    """Targets outside their GPU's constraints, not finite, or rejected by the GpuNode model (wire form)."""
    by_uuid = {g.uuid: g for g in snapshot.gpus}
    problems = []
    for node, targets in result.nodes.items():
        for t in targets:
            gpu = by_uuid[t.uuid]
            watts = t.power_limit_watts
            if not math.isfinite(watts) or not gpu.min_watts <= watts <= gpu.max_watts:
                problems.append(f"{node}/{t.uuid}: {watts} W outside [{gpu.min_watts}, {gpu.max_watts}]")
        GpuNodeSpec(gpus=list(targets)).to_wire()  # what the operator PATCHes must serialise
    return problems


def engine_violations(result: Plan) -> list[str]:
    """Apply the node's planned targets with the agent's engine on simulated A40s; report bad writes."""
    return run_engine(result)[0]


def run_engine(result: Plan) -> tuple[list[str], list[str]]:
    """Apply the node's planned targets with the engine: (bad writes and refusals, clock clamps reported)."""
    backend = SimulatedBackend(node_name=ENGINE_NODE, gpu_count=4, clock=lambda: 1000.0)
    writes: list[tuple[str, float]] = []
    for device in backend.devices():
        setter = device.set_power_limit_watts

        def record(watts: float, setter: Any = setter, uuid: str = device.identity.uuid) -> None:
            writes.append((uuid, watts))
            setter(watts)

        device.set_power_limit_watts = record  # type: ignore[method-assign]
    engine = NodeEngine(backend, Journal(None))
    outcomes = engine.reconcile(
        result.nodes.get(ENGINE_NODE, []), node_budget_watts=result.node_budgets.get(ENGINE_NODE)
    )
    problems = [f"write of {w} W to {u}" for u, w in writes if not 100.0 <= w <= 300.0]
    problems += [
        f"{u}: {o.error_reason} {o.message}" for u, o in outcomes.items() if o.error_reason == "InvalidArgument"
    ]
    for device in backend.devices():
        lock = device.state.locked_clocks_mhz
        if lock is not None and not 210 <= lock[0] <= lock[1] <= 1740:
            problems.append(f"clock lock {lock} on {device.identity.uuid} outside the A40's 210-1740 MHz")
    clamps = [f"{u}: {o.message}" for u, o in outcomes.items() if o.reason == "Clamped" and "clock lock" in o.message]
    return problems, clamps


@dataclass
class CaseResult:
    """One spec's journey."""

    spec: Any
    model_ok: bool
    model_message: str = ""
    server_status: int | None = None
    server_message: str = ""
    violations: list[str] = field(default_factory=list)
    clock_refusals: list[str] = field(default_factory=list)
    #: Clock locks the engine clamped into the device's range (reported in the GPU's status message).
    clamped_clocks: list[str] = field(default_factory=list)


def check_offline(spec: Any, *, name: str = "fz") -> CaseResult:
    """Models, planner and engine for one spec (raises on any unhandled exception)."""
    model, message = model_verdict(spec)
    result = CaseResult(spec=spec, model_ok=model is not None, model_message=message)
    if model is None:
        return result
    snapshot = fleet_snapshot()
    views = [PolicyView(name=name, spec=model, generation=1)]
    planned = plan(snapshot, views, PlanContext(now=NOW, carbon=carbon_inputs([name])))
    result.violations = plan_violations(planned, snapshot)
    problems, result.clamped_clocks = run_engine(planned)
    for problem in problems:
        (result.clock_refusals if "clock range" in problem else result.violations).append(problem)
    return result


def check_annotations(annotations: Mapping[str, str], spec: EnergyPolicySpec) -> list[str]:
    """Parse and plan a pod with fuzzed annotations under ``spec``; return violations (raises if anything does)."""
    intent = parse_pod_annotations(annotations)
    assert all(isinstance(p, str) and p for p in intent.problems)
    snapshot = fleet_snapshot([annotations, annotations])
    views = [PolicyView(name="fz", spec=spec, generation=1)]
    planned = plan(snapshot, views, PlanContext(now=NOW, carbon=carbon_inputs(["fz"])))
    return plan_violations(planned, snapshot) + engine_violations(planned)


# -- the real API server ------------------------------------------------------------------------------


async def through_api_server(
    kubeconfig: Path, specs: Sequence[Any], *, concurrency: int = 32, prefix: str = "fz"
) -> tuple[list[tuple[int, Any]], float]:
    """Server-side dry-run creates (strict field validation) of every spec, and the seconds they took.

    Each answer is ``(201, the spec as the server would store it)`` (defaults applied, nulls pruned:
    what the operator would read) or ``(HTTP status, the server's message)``.
    """
    from kubeapi import GROUP, VERSION, connect
    from kubernetes_asyncio import client

    gate = asyncio.Semaphore(concurrency)
    out: list[tuple[int, Any]] = [(0, "")] * len(specs)
    started = time.monotonic()
    async with await connect(kubeconfig) as api:
        api.configuration.connection_pool_maxsize = concurrency
        custom = client.CustomObjectsApi(api)

        async def one(i: int, spec: Any) -> None:
            body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "EnergyPolicy",
                    "metadata": {"name": f"{prefix}-{i}"}, "spec": spec}  # fmt: skip
            async with gate:
                try:
                    stored = await custom.create_cluster_custom_object(
                        GROUP, VERSION, "energypolicies", body, dry_run="All", field_validation="Strict"
                    )
                    out[i] = (201, stored.get("spec", {}))
                except client.exceptions.ApiException as exc:
                    out[i] = (int(exc.status), _status_message(exc.body))
                except ValueError as exc:  # NaN/inf cannot even be encoded as JSON by the client
                    out[i] = (-1, str(exc))

        await asyncio.gather(*(one(i, s) for i, s in enumerate(specs)))
    return out, time.monotonic() - started


def _status_message(body: object) -> str:
    try:
        return str(json.loads(body)["message"])  # type: ignore[arg-type]
    except (ValueError, TypeError, KeyError):
        return str(body)
