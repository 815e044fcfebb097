"""The agent's /metrics, /healthz and /readyz over real HTTP, parsed by prometheus-client's parser.

Every value is compared with the readings the agent's own tick took from the simulated GPUs, so the
test holds whatever power curve the simulator uses.
"""

from __future__ import annotations

import math

import pytest
from agenthttp import NODE, RunningAgent
from prometheus_client.samples import Sample
from wattplane.agent.gpu.base import GpuReading
from wattplane.agent.gpu.errors import ERROR_REASONS, GpuLostError, GpuNoPermissionError
from wattplane.agent.status import THROTTLE_BITS, throttle_names
from wattplane.api.v1alpha1.gpunode import GpuTarget

GPU_METRICS = {
    "wattplane_gpu_power_watts": "gauge",
    "wattplane_gpu_energy_joules": "counter",
    "wattplane_gpu_power_limit_watts": "gauge",
    "wattplane_gpu_power_limit_target_watts": "gauge",
    "wattplane_gpu_power_limit_budget_watts": "gauge",
    "wattplane_gpu_sm_clock_hertz": "gauge",
    "wattplane_gpu_utilization_ratio": "gauge",
    "wattplane_gpu_temperature_celsius": "gauge",
    "wattplane_gpu_throttle_active": "gauge",
    "wattplane_gpu_state": "gauge",
    "wattplane_pod_gpu_energy_joules": "counter",
    "wattplane_node_power_budget_watts": "gauge",
    "wattplane_node_power_budget_set": "gauge",
    "wattplane_node_power_budget_in_force_watts": "gauge",
    "wattplane_node_gpu_power_watts": "gauge",
    "wattplane_node_budget_limited_gpus": "gauge",
    "wattplane_node_budget_feasible": "gauge",
    "wattplane_node_budget_cuts": "counter",
    "wattplane_agent_device_writes": "counter",
    "wattplane_agent_apply_errors": "counter",
    "wattplane_agent_restores": "counter",
    "wattplane_agent_apply_duration_seconds": "histogram",
    "wattplane_agent_ticks": "counter",
    "wattplane_agent_tick_errors": "counter",
    "wattplane_agent_tick_duration_seconds": "histogram",
}


def of_gpu(samples: list[Sample], uuid: str, **labels: str) -> list[Sample]:
    return [s for s in samples if s.labels.get("uuid") == uuid and all(s.labels.get(k) == v for k, v in labels.items())]


def one(samples: list[Sample], uuid: str, **labels: str) -> float:
    found = of_gpu(samples, uuid, **labels)
    assert len(found) == 1, (uuid, labels, found)
    return found[0].value


def readings(agent: RunningAgent) -> dict[str, GpuReading]:
    out = {}
    for uuid, reading in agent.loop.engine.readings.items():
        assert isinstance(reading, GpuReading)
        out[uuid] = reading
    return out


async def test_probes_before_and_after_the_first_tick(agent: RunningAgent) -> None:
    assert await agent.get("/healthz") == (200, "ok: starting: no tick yet\n")
    status, body = await agent.get("/readyz")
    assert status == 503 and "no status written yet" in body
    samples = await agent.scrape()  # serves before any tick, with nothing to report per GPU
    assert "wattplane_gpu_power_watts" not in samples
    # ...but the series alerts need are there from this first scrape: every GPU x reason at 0, the
    # budget as NaN with budget_set 0.
    errors = samples["wattplane_agent_apply_errors_total"]
    assert {(s.labels["uuid"], s.labels["reason"]) for s in errors} == {
        (d.identity.uuid, reason) for d in agent.backend.devices() for reason in ERROR_REASONS
    }
    assert all(s.value == 0 for s in errors)
    assert samples["wattplane_node_power_budget_set"][0].value == 0

    await agent.tick()
    assert (await agent.get("/readyz"))[0] == 200
    assert (await agent.get("/healthz"))[0] == 200

    agent.loop_clock.now += 60  # the loop stops turning: liveness fails, so does readiness
    status, body = await agent.get("/healthz")
    assert status == 503 and "no control tick for 60" in body
    assert (await agent.get("/readyz"))[0] == 503
    await agent.tick()
    assert (await agent.get("/healthz"))[0] == 200


async def test_every_metric_has_its_name_type_and_snake_case_labels(agent: RunningAgent) -> None:
    devices = agent.backend.devices()
    plan = [GpuTarget(uuid=d.identity.uuid, power_limit_watts=d.constraints().max_watts) for d in devices]
    agent.loop._adopt({"spec": {"gpus": [t.to_wire() for t in plan], "nodeBudgetWatts": 1.0}})
    await agent.tick()
    await agent.tick()
    families = await agent.families()
    for name, kind in GPU_METRICS.items():
        assert families.get(name) == kind, name
    samples = await agent.scrape()
    assert "wattplane_gpu_energy_joules_total" in samples  # counters are exposed with _total
    assert "wattplane_pod_gpu_energy_joules_total" in samples
    for sample in samples["wattplane_gpu_power_watts"]:
        assert set(sample.labels) == {"gpu", "uuid", "model_name", "hostname"}
        assert sample.labels["hostname"] == NODE
    for sample in samples["wattplane_pod_gpu_energy_joules_total"]:
        assert set(sample.labels) == {"namespace", "pod", "container", "hostname"}
    # Histograms come with buckets, count and sum.
    buckets = samples["wattplane_agent_apply_duration_seconds_bucket"]
    assert buckets[-1].labels["le"] == "+Inf"
    assert buckets[-1].value == samples["wattplane_agent_apply_duration_seconds_count"][0].value > 0


async def test_gpu_values_match_the_readings_of_the_tick(agent: RunningAgent) -> None:
    devices = agent.backend.devices()
    capped = devices[0]
    target = capped.constraints().min_watts + 40
    agent.loop._adopt({"spec": {"gpus": [{"uuid": capped.identity.uuid, "powerLimitWatts": target}]}})
    await agent.tick()
    await agent.tick(seconds=10)
    now = readings(agent)
    samples = await agent.scrape()
    for device in devices:
        uuid, reading = device.identity.uuid, now[device.identity.uuid]
        labels = {"gpu": str(device.identity.index), "model_name": device.identity.model, "hostname": NODE}
        assert one(samples["wattplane_gpu_power_watts"], uuid, **labels) == pytest.approx(reading.power_watts, abs=1e-3)
        assert one(samples["wattplane_gpu_energy_joules_total"], uuid) == pytest.approx(reading.energy_joules, abs=1e-3)
        assert one(samples["wattplane_gpu_power_limit_watts"], uuid) == pytest.approx(reading.power_limit_watts)
        assert reading.sm_clock_mhz is not None
        assert one(samples["wattplane_gpu_sm_clock_hertz"], uuid) == reading.sm_clock_mhz * 1e6
        assert one(samples["wattplane_gpu_utilization_ratio"], uuid) == reading.utilization_ratio
        assert one(samples["wattplane_gpu_temperature_celsius"], uuid) == reading.temperature_celsius
        active = set(throttle_names(reading.throttle_reasons))
        for reason in THROTTLE_BITS.values():
            value = one(samples["wattplane_gpu_throttle_active"], uuid, reason=reason)
            assert value == (1.0 if reason in active else 0.0), reason
        assert one(samples["wattplane_gpu_state"], uuid, state="Applied" if device is capped else "Default") == 1.0
    assert one(samples["wattplane_gpu_power_limit_target_watts"], capped.identity.uuid) == target
    assert of_gpu(samples["wattplane_gpu_power_limit_target_watts"], devices[1].identity.uuid) == []
    node_power = samples["wattplane_node_gpu_power_watts"][0]
    assert node_power.value == pytest.approx(sum(r.power_watts for r in now.values()), abs=1e-2)
    # No budget: the series exist from the start, NaN (so "power > budget" is never true) and set=0.
    assert math.isnan(samples["wattplane_node_power_budget_watts"][0].value)
    assert samples["wattplane_node_power_budget_set"][0].value == 0
    assert samples["wattplane_node_budget_limited_gpus"][0].value == 0
    assert samples["wattplane_node_budget_feasible"][0].value == 1


async def test_pod_energy_is_the_energy_its_gpu_counted(agent: RunningAgent) -> None:
    await agent.tick()
    first = readings(agent)
    await agent.tick(seconds=30)
    second = readings(agent)
    samples = await agent.scrape()
    by_pod = {s.labels["pod"]: s for s in samples["wattplane_pod_gpu_energy_joules_total"]}
    assert set(by_pod) == {"llama-ft-0", "chat-1"}
    for uuid, pods in agent.pods.items():
        pod = pods[0]
        sample = by_pod[pod.name]
        assert sample.labels == {
            "namespace": pod.namespace,
            "pod": pod.name,
            "container": pod.container,
            "hostname": NODE,
        }
        counted = (second[uuid].energy_joules or 0.0) - (first[uuid].energy_joules or 0.0)
        assert counted > 0
        assert sample.value == pytest.approx(counted, abs=2e-3)


async def test_budget_series_follow_the_budget_loop(agent: RunningAgent) -> None:
    devices = agent.backend.devices()
    plan = [
        {"uuid": d.identity.uuid, "powerLimitWatts": d.constraints().max_watts, "priority": p}
        for d, p in zip(devices, (0, 5, 9), strict=True)
    ]
    agent.loop._adopt({"spec": {"gpus": plan}})
    await agent.tick()
    drawn = sum(r.power_watts for r in readings(agent).values())
    budget = round(0.8 * drawn, 1)
    agent.loop._adopt({"spec": {"gpus": plan, "nodeBudgetWatts": budget}})
    await agent.tick()
    samples = await agent.scrape()
    assert samples["wattplane_node_power_budget_watts"][0].value == budget
    assert samples["wattplane_node_power_budget_set"][0].value == 1
    assert samples["wattplane_node_power_budget_in_force_watts"][0].value == budget  # no ramp: held at once
    assert samples["wattplane_node_budget_cuts_total"][0].value == 1
    assert samples["wattplane_node_budget_feasible"][0].value == 1
    limited = samples["wattplane_gpu_power_limit_budget_watts"]
    assert samples["wattplane_node_budget_limited_gpus"][0].value == len(limited) >= 1
    cut = devices[0].identity.uuid  # lowest priority: cut first
    in_force = one(samples["wattplane_gpu_power_limit_watts"], cut)
    assert one(limited, cut) == pytest.approx(in_force)
    assert in_force < devices[0].constraints().max_watts
    assert of_gpu(limited, devices[2].identity.uuid) == []


async def test_errors_are_counted_per_gpu_and_a_lost_gpu_exports_no_stale_values(agent: RunningAgent) -> None:
    devices = agent.backend.devices()
    plan = [{"uuid": d.identity.uuid, "powerLimitWatts": d.constraints().min_watts + 20} for d in devices]
    agent.loop._adopt({"spec": {"gpus": plan[:1]}})
    await agent.tick()  # every GPU answers once
    devices[1].inject_fault("set_power_limit", GpuNoPermissionError("needs CAP_SYS_ADMIN"))
    devices[2].inject_fault("read", GpuLostError("fell off the bus"))
    agent.loop._adopt({"spec": {"gpus": plan}})
    await agent.tick()
    await agent.tick()
    samples = await agent.scrape()
    errors = samples["wattplane_agent_apply_errors_total"]
    assert one(errors, devices[1].identity.uuid, reason="NoPermission") == 2
    assert one(errors, devices[2].identity.uuid, reason="GpuLost") == 2
    assert one(errors, devices[0].identity.uuid, reason="NoPermission") == 0  # a healthy GPU's zeros stay
    assert one(samples["wattplane_gpu_state"], devices[1].identity.uuid, state="Error") == 1
    lost = devices[2].identity.uuid
    assert one(samples["wattplane_gpu_state"], lost, state="Error") == 1
    assert of_gpu(samples["wattplane_gpu_power_watts"], lost) == []  # never a stale value as if fresh
    assert one(samples["wattplane_gpu_state"], devices[0].identity.uuid, state="Applied") == 1

    devices[1].inject_fault("set_power_limit", None)
    devices[2].inject_fault("read", None)
    await agent.tick()
    samples = await agent.scrape()
    for device in devices:
        assert one(samples["wattplane_gpu_state"], device.identity.uuid, state="Applied") == 1
    assert len(of_gpu(samples["wattplane_gpu_power_watts"], lost)) == 1
