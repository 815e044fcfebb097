"""The agent loop keeps power control alive through bad ticks, bad plans and a corrupt journal.

The loop runs against an in-memory stand-in for its GpuNode (no API server); everything else (engine,
journal, simulated GPUs, status building) is the real code.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from pydantic import ValidationError
from wattplane.agent.engine import NodeEngine
from wattplane.agent.gpu.simulated import SimulatedBackend
from wattplane.agent.journal import Journal
from wattplane.agent.kube import NodeObjects
from wattplane.agent.loop import AgentLoop, budget_params
from wattplane.agent.settings import AgentSettings
from wattplane.api.conditions import get_condition
from wattplane.api.v1alpha1.gpunode import GpuNodeStatus


class FakeNodeObjects:
    """The loop's view of its GpuNode, in memory."""

    def __init__(self, spec: dict[str, Any] | None = None) -> None:
        self.obj: dict[str, Any] = {"metadata": {"name": "node-t"}, "spec": spec or {}, "status": {}}
        self.patches: list[dict[str, Any]] = []

    async def ensure_gpunode(self) -> dict[str, Any]:
        return self.obj

    async def patch_status(self, status: dict[str, Any]) -> None:
        self.patches.append(status)

    async def list_pods(self) -> list[dict[str, Any]]:
        return []

    async def watch_gpunode(self) -> AsyncIterator[dict[str, Any]]:
        await asyncio.Event().wait()  # no plan changes while the test runs
        yield {}

    def last_status(self) -> GpuNodeStatus:
        return GpuNodeStatus.model_validate(self.patches[-1])


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def settings(**extra: Any) -> AgentSettings:
    base: dict[str, Any] = {"node_name": "node-t", "backend": "sim", "pod_mapper": "sim", "tick_s": 0.1}
    return AgentSettings(**{**base, **extra})


def make_loop(
    tmp_path: Path, objects: FakeNodeObjects, clock: FakeClock | None = None, **extra: Any
) -> tuple[AgentLoop, SimulatedBackend]:
    conf = settings(journal_path=tmp_path / "journal.json", **extra)
    backend = SimulatedBackend(node_name="node-t", gpu_count=4)
    engine = NodeEngine(backend, Journal(conf.journal_path), budget_params=budget_params(conf))
    loop = AgentLoop(conf, engine, cast(NodeObjects, objects), clock=clock or FakeClock())
    return loop, backend


def plan_for(backend: SimulatedBackend, watts_above_min: float = 50.0, **spec: Any) -> dict[str, Any]:
    gpus = [
        {"uuid": d.identity.uuid, "powerLimitWatts": d.constraints().min_watts + watts_above_min, "priority": i}
        for i, d in enumerate(backend.devices())
    ]
    return {"planGeneration": 1, "gpus": gpus, **spec}


def test_tick_interval_defaults_to_one_second_and_goes_down_to_100_ms() -> None:
    assert AgentSettings().tick_s == 1.0
    assert AgentSettings(tick_s=0.1).tick_s == 0.1
    for bad in (0.05, 0.0, -1.0, math.nan, 61.0):
        with pytest.raises(ValidationError):
            AgentSettings(tick_s=bad)


@pytest.mark.parametrize(
    "bad",
    [
        {"budget_hysteresis_ratio": -0.1},
        {"budget_hysteresis_ratio": 0.9},
        {"budget_restore_after_ticks": 0},
        {"budget_restore_step_ratio": 0.0},
        {"budget_restore_step_ratio": 1.5},
    ],
)
def test_budget_tuning_is_validated(bad: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        AgentSettings(**bad)


def test_tick_interval_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATTPLANE_AGENT_TICK_S", "0.25")
    assert AgentSettings().tick_s == 0.25
    monkeypatch.setenv("WATTPLANE_AGENT_TICK_S", "0.01")
    with pytest.raises(ValidationError):
        AgentSettings()


async def test_a_tick_that_raises_is_reported_and_the_loop_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = FakeNodeObjects()
    loop, backend = make_loop(tmp_path, objects)
    loop._adopt({"spec": plan_for(backend)})
    await loop.safe_tick()
    assert loop.readiness()[0]

    real = loop.engine.reconcile
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("driver returned garbage")
        return real(*args, **kwargs)

    monkeypatch.setattr(loop.engine, "reconcile", flaky)
    await loop.safe_tick()  # must not raise
    assert loop.stats.tick_errors == 1
    ready, why = loop.readiness()
    assert not ready and "driver returned garbage" in why
    reported = get_condition(objects.last_status().conditions, "Ready")
    assert reported is not None and reported.status == "False"
    assert "control tick failed: RuntimeError" in reported.message

    await loop.safe_tick()
    assert loop.readiness()[0]
    assert loop.stats.ticks == 3 and loop.stats.tick_errors == 1
    assert loop.stats.tick_latency.count == 3


async def test_liveness_fails_only_when_ticks_stop(tmp_path: Path) -> None:
    clock = FakeClock()
    loop, _ = make_loop(tmp_path, FakeNodeObjects(), clock, tick_s=1.0)
    assert loop.health() == (True, "starting: no tick yet")
    await loop.safe_tick()
    assert loop.health()[0]
    clock.now += 9.0
    assert loop.health()[0]
    clock.now += 2.0  # more than 10 ticks (and 10 s) without one
    healthy, why = loop.health()
    assert not healthy and "no control tick" in why
    assert not loop.readiness()[0]


async def test_a_nonsense_plan_is_refused_and_the_previous_one_kept(tmp_path: Path) -> None:
    objects = FakeNodeObjects()
    loop, backend = make_loop(tmp_path, objects)
    good = plan_for(backend)
    loop._adopt({"spec": good})
    before = loop.spec
    for nonsense in (
        {**good, "nodeBudgetWatts": math.nan},
        {**good, "nodeBudgetWatts": -5},
        {**good, "gpus": [{**good["gpus"][0], "powerLimitWatts": -100}]},
        {**good, "gpus": [{**good["gpus"][0], "powerLimitWatts": math.nan}]},
        {**good, "gpus": "all of them"},
    ):
        loop._adopt({"spec": nonsense})
        assert loop.spec == before
        assert loop.spec_problem is not None and "keeping the previous plan" in loop.spec_problem
    await loop.safe_tick()
    ready = get_condition(objects.last_status().conditions, "Ready")
    assert ready is not None and (ready.status, ready.reason) == ("False", "AgentProblem")
    assert "GpuNode spec rejected" in ready.message
    assert [g.state for g in objects.last_status().gpus] == ["Applied"] * 4  # the previous plan still runs
    loop._adopt({"spec": good})
    assert loop.spec_problem is None


async def test_targets_above_the_device_maximum_are_clamped_and_reported(tmp_path: Path) -> None:
    objects = FakeNodeObjects()
    loop, backend = make_loop(tmp_path, objects)
    device = backend.devices()[0]
    loop._adopt({"spec": {"gpus": [{"uuid": device.identity.uuid, "powerLimitWatts": 9999}]}})
    await loop.safe_tick()
    gpu = objects.last_status().gpus[0]
    top = device.constraints().max_watts
    assert (gpu.state, gpu.reason, gpu.target_watts, gpu.power_limit_watts) == ("Applied", "Clamped", top, top)
    assert f"clamped to {top:g} W" in gpu.message


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


async def test_a_corrupt_journal_is_set_aside_reported_and_the_agent_keeps_working(tmp_path: Path) -> None:
    (tmp_path / "journal.json").write_text('{"gpus": {"GPU-x": {"power_limit_watts": "lots"}}}')
    objects = FakeNodeObjects()
    loop, backend = make_loop(tmp_path, objects)
    aside = [name for name in files_in(tmp_path) if name.startswith("journal.json.corrupt-")]
    assert len(aside) == 1 and "journal.json" not in files_in(tmp_path)

    loop._adopt({"spec": plan_for(backend)})
    await loop.safe_tick()
    status = objects.last_status()
    assert [g.state for g in status.gpus] == ["Applied"] * 4
    ready = get_condition(status.conditions, "Ready")
    assert ready is not None and ready.reason == "AgentProblem" and aside[0] in ready.message
    # The fresh journal records prior states again, so the GPUs can be given back exactly.
    assert len(Journal(tmp_path / "journal.json").uuids()) == 4


async def test_the_node_budget_is_enforced_and_reported_by_the_loop(tmp_path: Path) -> None:
    objects = FakeNodeObjects()
    loop, backend = make_loop(tmp_path, objects)
    for d in backend.devices():
        d.set_load(1.0)
    spec = plan_for(backend, watts_above_min=5000)  # targets far above max: clamped to max
    loop._adopt({"spec": spec})
    loop._drive_simulated_load = lambda: None  # type: ignore[method-assign]  # keep the load set above
    await loop.safe_tick()
    drawn = objects.last_status().node_power_watts
    loop._adopt({"spec": {**spec, "planGeneration": 2, "nodeBudgetWatts": 0.75 * drawn}})
    await loop.safe_tick()
    status = objects.last_status()
    met = get_condition(status.conditions, "BudgetMet")
    assert met is not None and met.reason in ("Limiting", "OverBudget")
    assert any(g.budget_limit_watts is not None for g in status.gpus)
    assert status.gpus[3].budget_limit_watts is None  # the highest priority keeps its target
    snapshot = loop.snapshot()
    assert snapshot.budget is not None and snapshot.budget.budget_watts == pytest.approx(0.75 * drawn)


async def test_the_budget_loops_own_moves_wait_for_the_periodic_status_write(tmp_path: Path) -> None:
    """Cuts and step-by-step restores move limits every few ticks; only a plan change is written at once."""
    objects = FakeNodeObjects()
    clock = FakeClock()  # standing still: no periodic write falls due
    loop, backend = make_loop(tmp_path, objects, clock)
    for d in backend.devices():
        d.set_load(1.0)
    loop._drive_simulated_load = lambda: None  # type: ignore[method-assign]  # keep the load set above
    spec = plan_for(backend, watts_above_min=5000)
    loop._adopt({"spec": spec})
    await loop.safe_tick()
    drawn = objects.last_status().node_power_watts
    loop._adopt({"spec": {**spec, "planGeneration": 2, "nodeBudgetWatts": 0.75 * drawn}})
    for _ in range(10):  # over budget: cut, BudgetMet=False; once power follows, True (both written at once)
        await loop.safe_tick()
        met = get_condition(objects.last_status().conditions, "BudgetMet")
        if met is not None and met.status == "True":
            break
    assert met is not None and met.status == "True", met
    assert any(g.budget_limit_watts is not None for g in objects.last_status().gpus)
    written = len(objects.patches)
    # The share grows (same plan): the loop gives the watts back over many ticks, in steps.
    loop._adopt({"spec": {**spec, "planGeneration": 2, "nodeBudgetWatts": 2 * drawn}})
    limits: set[tuple[float, ...]] = set()
    for _ in range(40):
        await loop.safe_tick()
        limits.add(tuple(d.state.power_limit_watts for d in backend.devices()))
    assert len(limits) > 2 and loop.engine.budget is not None and not loop.engine.budget.limits
    assert len(objects.patches) == written  # every step waited for the periodic write
    clock.now += loop.settings.status_interval_s
    await loop.safe_tick()
    assert len(objects.patches) == written + 1
    assert all(g.budget_limit_watts is None for g in objects.last_status().gpus)
    loop._adopt({"spec": {**spec, "planGeneration": 3, "nodeBudgetWatts": 2 * drawn}})
    await loop.safe_tick()
    assert len(objects.patches) == written + 2  # a new plan is reported at once


@pytest.mark.parametrize("restore", [True, False])
async def test_stopping_restores_prior_settings_only_when_configured(tmp_path: Path, restore: bool) -> None:
    backend_limits: list[float] = []
    objects = FakeNodeObjects()
    loop, backend = make_loop(tmp_path, objects, restore_on_exit=restore)
    backend_limits = [d.read().power_limit_watts for d in backend.devices()]
    objects.obj["spec"] = plan_for(backend)
    stop = asyncio.Event()
    runner = asyncio.create_task(loop.run(stop))
    for _ in range(100):
        await asyncio.sleep(0.02)
        if objects.patches and all(g["state"] == "Applied" for g in objects.patches[-1]["gpus"]):
            break
    capped = [d.read().power_limit_watts for d in backend.devices()]
    assert capped != backend_limits
    stop.set()
    await asyncio.wait_for(runner, timeout=10)
    after = [d.read().power_limit_watts for d in backend.devices()]
    assert after == (backend_limits if restore else capped)
    if restore:
        assert Journal(tmp_path / "journal.json").uuids() == set()
        assert {g["state"] for g in objects.patches[-1]["gpus"]} == {"Default"}
