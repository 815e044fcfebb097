"""LLM services in the fleet simulator: power and latency follow the serving model at the board's knob.

Every expectation is the serving model's (:mod:`wattplane.sim.inference`, modelled): the simulator must
reproduce what it says for the limit and the clock lock the real agent wrote to the simulated board,
count tokens, joules per token and minutes above the objectives exactly, and expose a metrics page
from which the operator's own window code reads the model's p90s back.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from wattplane.api.v1alpha1.gpunode import GpuTarget
from wattplane.operator.servingwindow import serving_window
from wattplane.sim.carbon import CarbonTrack
from wattplane.sim.catalog import Catalog
from wattplane.sim.controllers import NullController
from wattplane.sim.engine import SimOptions, Simulation
from wattplane.sim.fleet import expand, parse_fleet
from wattplane.sim.inference import Knob, azure_mix, operate
from wattplane.sim.jobs import Demand, JobSpec, read_simple_csv
from wattplane.sim.llm import (
    LLM_WORKLOAD,
    LlmDemand,
    LlmService,
    ServingSlo,
    azure_llm_demand,
    serving_model,
    slo_capacity,
)
from wattplane.sim.physics import RunningJob
from wattplane.sim.results import collect
from wattplane.sim.scenario import resolve_workloads

DATA = Path(__file__).resolve().parents[3] / "operator" / "wattplane" / "sim" / "data"
TRACK = CarbonTrack.load(DATA / "electricitymaps_US-CAL-CISO_2023_hourly.csv", datetime(2023, 6, 1, tzinfo=UTC))


def _service(rate_fraction: float = 0.6, duration_s: float = 600.0) -> JobSpec:
    mix = azure_mix(1.0)
    load = azure_mix(rate_fraction * slo_capacity(mix))
    return JobSpec(
        id="chat",
        submit_s=0.0,
        gpus=1,
        workload=LLM_WORKLOAD,
        priority="high",
        kind="inference",
        demand=Demand.constant(0.6),
        llm=LlmDemand.constant(load),
        duration_s=duration_s,
    )


class _Fixed:
    """Writes one target to node 0 at the start (the agent applies it), then does nothing."""

    name = "fixed"
    plan_interval_s = None

    def __init__(self, target: GpuTarget | None) -> None:
        self.target = target

    def attach(self, sim: Simulation) -> None:
        self.sim = sim

    def plan_round(self, sim: Simulation) -> None:
        """Never called (no planning interval)."""

    def job_started(self, sim: Simulation, job: RunningJob) -> None:
        if self.target is not None:
            uuid = sim.node_gpus[0][0].identity.uuid
            sim.apply(0, (self.target.model_copy(update={"uuid": uuid}),))

    def job_finished(self, sim: Simulation, job: RunningJob) -> None:
        """Nothing to release."""

    def wakeup(self, sim: Simulation, payload: object) -> None:
        """Never scheduled."""


DEFAULT_SLO = ServingSlo()


def _run(target: GpuTarget | None, spec: JobSpec | None = None, slo: ServingSlo = DEFAULT_SLO) -> Simulation:
    sim = Simulation(
        nodes=expand(parse_fleet("1x1xH100")),
        catalog=Catalog.builtin(),
        jobs=[spec or _service()],
        carbon=TRACK,
        controller=_Fixed(target) if target is not None else NullController(),
        options=SimOptions(duration_s=600.0, serving_slo=slo),
    )
    sim.run()
    return sim


def _target(**kw: object) -> GpuTarget:
    fields: dict[str, object] = {"uuid": "x", "power_limit_watts": 700.0, "reason": "test"} | kw
    return GpuTarget.model_validate(fields)


def test_an_uncapped_h100_service_draws_what_the_serving_model_says() -> None:
    spec = _service()
    assert spec.llm is not None
    sim = _run(None, spec)
    job = sim.finished["chat"]
    assert job.serving is not None
    expected = operate(serving_model(), spec.llm.at(0.0), Knob())
    assert job.energy_j == pytest.approx(expected.power_w * 600.0, rel=1e-9)
    assert job.serving.output_tokens == pytest.approx(expected.tokens_per_s * 600.0, rel=1e-9)
    result = collect(sim, "uncapped")
    (serving,) = result.serving
    assert serving.joules_per_token == pytest.approx(expected.joules_per_token, rel=1e-9)
    assert serving.slo_minutes == 0 and serving.minutes == 10
    assert result.serving_joules_per_token == pytest.approx(expected.joules_per_token, rel=1e-9)


@pytest.mark.parametrize(
    ("target", "knob"),
    [
        (_target(power_limit_watts=400.0), Knob.cap(400.0)),
        (_target(locked_clocks_mhz={"minMHz": 345, "maxMHz": 1140}), Knob.clock(1140.0)),
    ],
    ids=["cap-400W", "clock-1140MHz"],
)
def test_a_capped_or_locked_service_draws_less_and_its_p90_tpot_rises_as_the_model_says(
    target: GpuTarget, knob: Knob
) -> None:
    spec = _service()
    assert spec.llm is not None
    free = _run(None, spec).finished["chat"]
    slowed = _run(target, spec).finished["chat"]
    model_free = operate(serving_model(), spec.llm.at(0.0), Knob())
    model_slow = operate(serving_model(), spec.llm.at(0.0), knob)
    assert slowed.energy_j < free.energy_j
    assert slowed.energy_j == pytest.approx(model_slow.power_w * 600.0, rel=1e-6)
    assert slowed.serving is not None and free.serving is not None
    (op,) = slowed.serving.ops
    assert op.tpot_p90_s == pytest.approx(model_slow.tpot_p90_s, rel=1e-9)
    assert op.tpot_p90_s > model_free.tpot_p90_s * 1.05
    # The same tokens are served (the load fits), for fewer joules each.
    assert slowed.serving.output_tokens == pytest.approx(free.serving.output_tokens, rel=1e-9)
    assert slowed.energy_j / slowed.serving.output_tokens < free.energy_j / free.serving.output_tokens


def test_minutes_above_the_objective_are_counted_against_the_runs_slo() -> None:
    spec = _service()
    assert spec.llm is not None
    locked = _target(locked_clocks_mhz={"minMHz": 345, "maxMHz": 720})
    tpot = operate(serving_model(), spec.llm.at(0.0), Knob.clock(720.0)).tpot_p90_s
    strict = ServingSlo(tpot_p90_s=tpot * 0.9, ttft_p90_s=60.0)
    loose = ServingSlo(tpot_p90_s=tpot * 1.2, ttft_p90_s=60.0)
    over = collect(_run(locked, spec, strict), "strict").serving[0]
    under = collect(_run(locked, spec, loose), "loose").serving[0]
    assert over.minutes == under.minutes == 10
    assert over.slo_minutes == 10 and over.seconds_above_slo == pytest.approx(600.0)
    assert under.slo_minutes == 0 and under.seconds_above_slo == 0.0


def test_an_overloaded_replica_backlogs_and_every_minute_counts_above_the_slo() -> None:
    spec = _service(rate_fraction=3.0)
    sim = _run(None, spec)
    job = sim.finished["chat"]
    assert job.serving is not None and job.serving.backlog > 0
    assert job.serving.served_fraction() < 1.0
    assert collect(sim, "x").serving[0].slo_minutes == 10


def test_the_metrics_page_gives_back_the_models_p90s_through_the_operators_window_code() -> None:
    demand = azure_llm_demand()
    service = LlmService(demand, ServingSlo(), replicas=1)
    service.operate([(None, 1245.0)])
    before = service.sample("sim://a/b")
    service.flush(0.0, 60.0)
    after = service.sample("sim://a/b")
    window = serving_window(before, after, seconds=60.0, prefill_s_per_token=3.25e-5, joules=60.0 * 400.0)
    (op,) = service.ops
    # Buckets hold whole observations (as Prometheus counts them): a minute's few hundred requests
    # place the TTFT p90 within a few per cent; tens of thousands of tokens place the TPOT p90 closely.
    assert window.tpot_p90_s == pytest.approx(op.tpot_p90_s, rel=0.005)
    assert window.ttft_p90_s == pytest.approx(op.ttft_p90_s, rel=0.03)
    assert window.speed_tps == pytest.approx(op.speed_tps, rel=1e-6)
    assert window.joules_per_token == pytest.approx(400.0 / op.tokens_per_s, rel=0.01)
    assert window.queue == pytest.approx(op.waiting)


def test_azure_loads_put_the_busiest_minute_at_the_peak_share_of_one_replicas_capacity() -> None:
    demand = azure_llm_demand()
    busiest = max(demand.loads, key=lambda load: load.rate)
    assert busiest.rate == pytest.approx(0.8 * slo_capacity(busiest), rel=1e-6)
    assert demand.step_s == 60.0 and len(demand.loads) > 50
    assert demand.at(61.0) == demand.loads[1] and demand.next_change(61.0) == 120.0
    assert math.isinf(LlmDemand.constant(busiest).next_change(0.0))


def test_an_llm_service_on_an_a40_falls_back_to_the_training_curve() -> None:
    spec = _service()  # without the ``llm/`` workload name (as from an Azure trace) any GPU model runs it
    sim = Simulation(
        nodes=expand(parse_fleet("1x1xA40")),
        catalog=Catalog.builtin(),
        jobs=[replace(spec, workload="")],
        carbon=TRACK,
        controller=NullController(),
        options=SimOptions(duration_s=600.0),
    )
    sim.run()
    job = sim.finished["chat"]
    assert job.serving is None and job.energy_j > 0
    assert collect(sim, "x").serving == ()


def test_a_simple_csv_row_names_an_llm_service_and_only_h100_fleets_take_it(tmp_path: Path) -> None:
    path = tmp_path / "jobs.csv"
    path.write_text(
        "submit_time,gpus,workload,duration_or_epochs,priority,kind,load\n0,1,llm/llama3.1-8b,2h,high,inference,0.5\n"
    )
    (job,) = read_simple_csv(path)
    assert job.llm is not None
    load = job.llm.at(0.0)
    assert load.rate == pytest.approx(0.5 * slo_capacity(load), rel=1e-6)
    catalog = Catalog.builtin()
    assert resolve_workloads([job], catalog, expand(parse_fleet("1x8xH100")))[0].workload == LLM_WORKLOAD
    with pytest.raises(ValueError, match="not measured"):
        resolve_workloads([job], catalog, expand(parse_fleet("1x8xA40")))
