"""``wattplane explain pod`` and ``wattplane status``: rendering from the objects the cluster holds.

The fetch is a thin layer over the API; these tests feed the renderers the same objects (as the API
returns them) and read the text a user reads.
"""

from __future__ import annotations

from typing import Any

from wattplane.api.v1alpha1 import gpunode
from wattplane.api.v1alpha1.gpunode import GpuNode
from wattplane.cli.fleetview import UNSETTLED_NOTE, measured_by_policy, policy_from_api, render_explain, render_status

INFERENCE = {"wattplane.io/workload": "inference"}


def pod(annotations: dict[str, str] | None = None, phase: str = "Running") -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ml", "name": "llm-0", "labels": dict(INFERENCE), "annotations": annotations or {}},
        "spec": {"nodeName": "node-a"},
        "status": {"phase": phase},
    }


def ep(name: str, spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "generation": 1}, "spec": spec, "status": status or {}}


def gpu_status(
    uuid: str = "GPU-0", *, limit: float = 300.0, power: float = 280.0, pod_name: str = "llm-0"
) -> dict[str, Any]:
    return {
        "index": int(uuid.rsplit("-", 1)[1]),
        "uuid": uuid,
        "model": "A40",
        "powerLimitWatts": limit,
        "constraints": {"minWatts": 100.0, "maxWatts": 300.0, "defaultWatts": 300.0},
        "powerWatts": power,
        "pods": [{"namespace": "ml", "name": pod_name}],
    }


def node(targets: list[dict[str, Any]], gpus: list[dict[str, Any]], *, plan: int = 3, observed: int = 3) -> GpuNode:
    return GpuNode.model_validate(
        {
            "metadata": {"name": "node-a"},
            "spec": {"planGeneration": plan, "gpus": targets},
            "status": {"observedPlanGeneration": observed, "gpuCount": len(gpus), "gpus": gpus},
        }
    )


SELECT_INFERENCE = {"podSelector": {"matchLabels": INFERENCE}}
POLICIES = [
    ep("serving-fast", {"selector": SELECT_INFERENCE, "priority": 10, "limits": {"maxWatts": 250}}),
    ep("inference-cap", {"selector": SELECT_INFERENCE, "priority": -5, "limits": {"maxWatts": 150}}),
    ep("watch", {"dryRun": True}),
    ep("broken", {}),  # stored before the API server refused it
    ep("rack", {"budget": {"watts": 900, "nodeSelector": {"matchLabels": {"rack": "r1"}}}}),
    ep("other-team", {"selector": {"podSelector": {"matchLabels": {"team": "cv"}}}, "limits": {"maxWatts": 100}}),
]


def test_explain_tells_who_governs_who_is_shadowed_what_binds_and_what_would_change_it() -> None:
    target = {
        "uuid": "GPU-0",
        "powerLimitWatts": 250,
        "policy": "serving-fast",
        "job": "ml/llm-0",
        "reason": "EnergyPolicy serving-fast: maxWatts 250 W",
        "section": "limits",
    }
    text = render_explain(
        pod({"wattplane.io/priority": "urgent"}),
        node([target], [gpu_status(limit=250, power=240)]),
        POLICIES,
        namespace_labels={},
        node_labels={"rack": "r1"},
    )
    lines = text.splitlines()
    assert lines[0] == "pod ml/llm-0 on node node-a"
    assert any(line.startswith("annotation problem: wattplane.io/priority='urgent' is invalid") for line in lines)
    assert "governed by EnergyPolicy serving-fast (priority 10; limits): its selector matches" in lines
    shadowed = next(line for line in lines if line.startswith("also selected by"))
    assert "inference-cap (priority -5; limits)" in shadowed and "other-team" not in shadowed
    assert "observed by (dry run, no section): watch" in lines
    assert "node covered by the budget of EnergyPolicy rack (900 W)" in lines
    assert any("invalid spec" in line and "broken" in line for line in lines)
    assert "  target 250 W from policy serving-fast, job ml/llm-0" in lines
    assert "  binding section: limits" in lines
    assert any(line.startswith("  what would change it: the policy's limits") for line in lines)


def test_explain_says_an_opted_out_pod_opted_out() -> None:
    text = render_explain(pod({"wattplane.io/opt-out": "true"}), node([], [gpu_status()]), POLICIES, {}, {})
    assert "opted out (wattplane.io/opt-out: true)" in text
    assert "no target: the pod opted out" in text
    assert "no policy governs this GPU" not in text
    assert "governed by" not in text and "also selected by" not in text


def test_explain_names_a_governing_policy_that_set_nothing_and_a_budget_cut() -> None:
    zeus = [ep("zeus", {"selector": SELECT_INFERENCE, "efficiency": {}})]
    text = render_explain(pod(), node([], [gpu_status()]), zeus, {}, {})
    assert "governed by EnergyPolicy zeus (priority 0; efficiency)" in text
    assert "no target: policy zeus governs the pod but set no limit here" in text
    # The agent holds the GPU below its 250 W target for the node budget: status, not the plan, says so.
    target = {"uuid": "GPU-0", "powerLimitWatts": 250, "policy": "serving-fast", "section": "limits"}
    held = {**gpu_status(limit=180, power=175), "budgetLimitWatts": 180}
    text = render_explain(pod(), node([target], [held]), POLICIES, {}, {"rack": "r1"})
    assert "  binding section: limits" in text
    assert "  held at 180 W by the node budget (the agent's cut, below the target)" in text.splitlines()
    assert "raise budget.watts" in text and "wattplane.io/priority: high" in text
    text = render_explain(pod(), node([target], [gpu_status(limit=250, power=240)]), POLICIES, {}, {"rack": "r1"})
    assert "held at" not in text and "raise budget.watts" not in text


def test_explain_names_a_missing_opt_in_policy_and_no_policy_at_all() -> None:
    text = render_explain(pod({"wattplane.io/policy": "typo-cap"}), node([], [gpu_status()]), [], {}, None)
    assert "wattplane.io/policy names 'typo-cap', but no such EnergyPolicy exists" in text
    assert "no policy that sets limits selects this pod" in text
    assert "no target: no policy governs this GPU" in text


def test_status_measures_from_the_agents_and_stars_measurements_older_than_the_plan() -> None:
    """Right after an apply: allocated 150 W, the agent still reports the old 300 W limit and draw."""
    policies = [
        policy_from_api(ep("inference-cap", POLICIES[1]["spec"], {"allocatedWatts": 150, "measuredWatts": 290}))
    ]
    target = {"uuid": "GPU-0", "powerLimitWatts": 150, "policy": "inference-cap"}
    before = node([target], [gpu_status(limit=300, power=290)], plan=4, observed=3)
    text = render_status([before], policies)
    row = next(line for line in text.splitlines() if line.startswith("inference-cap"))
    assert row.split()[5:7] == ["150", "290*"], row
    assert text.endswith(UNSETTLED_NOTE)
    # Plan confirmed, limit taken, but the draw is still the old average: still starred.
    assert measured_by_policy([node([target], [gpu_status(limit=150, power=290)])])["inference-cap"].unsettled
    # Settled: the fresh measurement replaces the policy's status value (written at most every 30 s).
    after = node([target], [gpu_status(limit=150, power=148)])
    text = render_status([after], policies)
    row = next(line for line in text.splitlines() if line.startswith("inference-cap"))
    assert row.split()[5:7] == ["150", "148"], row
    assert UNSETTLED_NOTE not in text


def test_status_lists_a_stored_policy_the_models_refuse() -> None:
    broken = policy_from_api(
        ep("broken", {}, {"conditions": [{"type": "Ready", "status": "False", "reason": "InvalidSpec"}]})
    )
    text = render_status([], [broken])
    assert "broken" in text and "False (InvalidSpec)" in text


def test_explain_shows_the_jobs_carbon_budget_account_and_plan() -> None:
    carbon = {"mode": "Budgeted", "maxSlowdown": 0.03, "source": {"provider": "trace", "zone": "sim"}}
    account = {
        "job": "ml/train",
        "gpuModel": "A40",
        "maxSlowdown": 0.03,
        "usedSeconds": 41.6,
        "allowedSeconds": 95.0,
        "curve": "profile",
        "planned": [{"start": "2024-03-01T12:00:00Z", "watts": 225}, {"start": "2024-03-01T13:00:00Z", "watts": 300}],
        "message": "carbon budget: used 42 s of 95 s; 310 g/kWh now → 225 W",
    }
    policies = [ep("green", {"selector": SELECT_INFERENCE, "carbon": carbon}, {"carbonBudgets": [account]})]
    target = {
        "uuid": "GPU-0",
        "powerLimitWatts": 225,
        "policy": "green",
        "job": "ml/train",
        "reason": "EnergyPolicy green: carbon budget: used 42 s of 95 s",
        "section": "carbon",
    }
    text = render_explain(pod({"wattplane.io/job": "train"}), node([target], [gpu_status(limit=225)]), policies, {}, {})
    assert "carbon budget of job ml/train: used 42 s of 95 s earned (3.0% of its uncapped run time), 53 s left" in text
    assert "planned limits (UTC): 12:00 225 W, 13:00 300 W" in text
    other = render_explain(
        pod({"wattplane.io/job": "other"}), node([target], [gpu_status(limit=225)]), policies, {}, {}
    )
    assert "carbon budget of job" not in other


def test_explain_names_the_vendor_and_backend_of_each_gpu() -> None:
    amd = {**gpu_status("GPU-1"), "uuid": "74a1ff00-0000-1000-8000-5e3c1d9a0000", "model": "AMD Instinct MI300X"}
    mixed = node([], [{**gpu_status("GPU-0"), "vendor": "nvidia"}, {**amd, "vendor": "amd"}])
    mixed.status.backend = "nvml+amdsmi"
    lines = render_explain(pod(), mixed, POLICIES, {}, {}).splitlines()
    assert any(line.startswith("GPU 0 GPU-0 (A40; NVIDIA, via NVML): limit 300 W") for line in lines), lines
    assert any(line.startswith(f"GPU 1 {amd['uuid']} (AMD Instinct MI300X; AMD, via AMD SMI):") for line in lines)


def test_explain_takes_the_vendor_from_a_single_backend_node_when_the_gpu_does_not_say() -> None:
    older = node([], [gpu_status()])  # written by an agent that predates the field
    older.status.backend = "nvml"
    assert "GPU 0 GPU-0 (A40; NVIDIA, via NVML): limit" in render_explain(pod(), older, POLICIES, {}, {})
    older.status.backend = "nvml+amdsmi"  # which of the two drives it cannot be told
    assert "GPU 0 GPU-0 (A40): limit" in render_explain(pod(), older, POLICIES, {}, {})


def test_explain_gives_an_inference_pods_energy_per_token_and_why_it_is_not_measured() -> None:
    serving = {
        "pods": 2,
        "measuredPods": 1,
        "outputTokens": 120000,
        "energyJoules": 360000.0,
        "joulesPerOutputToken": 3.0,
        "windowSeconds": 300.0,
        "windowOutputTokens": 1000,
        "windowEnergyJoules": 2500.0,
        "windowJoulesPerOutputToken": 2.5,
        "problemPods": 1,
        "problems": ["ml/llm-0: the output-token counter went backwards (engine restarted?): interval dropped"],
    }
    policies = [ep("serving-fast", {"selector": SELECT_INFERENCE, "limits": {"maxWatts": 250}}, {"serving": serving})]
    gpu_node = node([], [gpu_status()])
    gpu_node.status.pod_energy = [
        gpunode.PodEnergy(namespace="ml", name="llm-0", container="vllm", energy_joules=7_200_000.0)
    ]
    annotations = INFERENCE | {"wattplane.io/serving-metrics": "8000", "wattplane.io/serving-engine": "vllm"}
    text = render_explain(pod(annotations), gpu_node, policies, {}, {})
    assert "serving metrics: port 8000, path /metrics (vllm)" in text
    assert "GPU energy the agent attributes to the pod: 2.000 kWh (7200000 J)" in text
    assert "policy serving-fast: 3 J per output token over 120000 tokens; recent 300 s: 2.5 J/token" in text
    assert "not measured: the output-token counter went backwards" in text
    bare_policy = [ep("serving-fast", {"selector": SELECT_INFERENCE, "limits": {}})]
    bare = render_explain(pod(dict(INFERENCE)), gpu_node, bare_policy, {}, {})
    assert "serving metrics: not read: no wattplane.io/serving-metrics annotation" in bare
    assert "policy serving-fast reports no joules per token yet" in bare
    training = render_explain(pod({"wattplane.io/workload": "training"}), gpu_node, policies, {}, {})
    assert "serving metrics" not in training and "J per output token" not in training


def test_status_shows_a_budgets_window_and_a_quotas_use() -> None:
    grid = policy_from_api(
        ep(
            "grid",
            {
                "budget": {
                    "schedule": [
                        {
                            "name": "peak",
                            "start": "2026-07-01T17:00:00Z",
                            "end": "2026-07-01T18:00:00Z",
                            "fraction": 0.7,
                        }
                    ]
                }
            },
            {"budget": {"watts": 2100.0, "window": "peak", "measuredWatts": 2300.0}},
        )
    )
    team = policy_from_api(
        ep("team-a", {"quota": {"watts": 1400}}, {"quota": {"watts": 1400.0, "measuredWatts": 1320.0, "gpus": 8}})
    )
    idle = policy_from_api(
        ep(
            "standby",
            {
                "budget": {
                    "schedule": [
                        {"name": "later", "start": "2026-07-02T17:00:00Z", "end": "2026-07-02T18:00:00Z", "watts": 900}
                    ]
                }
            },
            {"budget": {"watts": 0.0}},
        )
    )
    text = render_status([], [grid, team, idle])
    lines = {line.split()[0]: line for line in text.splitlines() if line.split()}
    assert "budget 2100 (peak)" in lines["grid"]
    assert "quota 1400 (uses 1320)" in lines["team-a"]
    assert "budget none" in lines["standby"]
