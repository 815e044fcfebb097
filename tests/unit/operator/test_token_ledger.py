"""Joining serving pods' token counters with their GPU energy: only complete intervals, never a wrong number."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st
from wattplane.api.v1alpha1.energypolicy import EnergyPolicySpec, EnergyPolicyStatus, ServingEnergy
from wattplane.operator.decisions import policy_status, status_material
from wattplane.operator.progress import ScrapeError
from wattplane.operator.serving import Histogram, ServingSample, detect_engine, read_serving
from wattplane.operator.state import FleetState
from wattplane.operator.tokens import WINDOW, TokenLedger, pod_energy_for
from wattplane.operator.views import PolicyParse, pod_energy_of
from wattplane.planner.reports import PolicyReport
from wattplane.planner.snapshot import PolicyView

T0 = datetime(2026, 5, 1, tzinfo=UTC)
KEY = ("serve", "llm-0")


def sample(tokens: float, prompt: float | None = 0.0, engine: str = "vllm") -> ServingSample:
    return ServingSample(
        engine=engine,  # type: ignore[arg-type]
        output_tokens=tokens,
        prompt_tokens=prompt,
        ttft=Histogram(1.0, 10.0),
        itl=None,
        queue=2.0,
        url="http://x/metrics",
    )


def test_an_interval_counts_only_when_both_sides_were_read_at_both_ends() -> None:
    ledger = TokenLedger()
    assert ledger.update(KEY, "u1", sample(100.0), 1_000.0, T0) is None  # baselines
    assert ledger.update(KEY, "u1", sample(300.0), 1_400.0, T0 + timedelta(seconds=10)) == (10.0, 200.0, 400.0)
    pod = ledger.pods[KEY]
    assert pod.joules_per_output_token == 2.0 and pod.ttft_mean_s == 0.1 and pod.queue == 2.0
    # Energy unknown this round: no interval; the baselines stay, so the next one spans both rounds.
    assert ledger.update(KEY, "u1", sample(400.0), None, T0 + timedelta(seconds=20)) is None
    assert "no GPU energy" in (pod.problem or "")
    assert ledger.update(KEY, "u1", sample(500.0), 1_600.0, T0 + timedelta(seconds=30)) == (20.0, 200.0, 200.0)
    assert pod.problem is None and pod.output_tokens == 400.0 and pod.energy_joules == 600.0


def test_counter_resets_and_a_recreated_pod_drop_the_interval_and_keep_totals_monotonic() -> None:
    ledger = TokenLedger()
    ledger.update(KEY, "u1", sample(100.0), 1_000.0, T0)
    ledger.update(KEY, "u1", sample(200.0), 1_100.0, T0 + timedelta(seconds=10))
    assert ledger.update(KEY, "u1", sample(5.0), 1_200.0, T0 + timedelta(seconds=20)) is None
    assert "output-token counter went backwards" in (ledger.pods[KEY].problem or "")
    assert ledger.update(KEY, "u1", sample(50.0), 10.0, T0 + timedelta(seconds=30)) is None
    assert "GPU energy went backwards" in (ledger.pods[KEY].problem or "")
    # Same name, new pod: totals continue (the exported counters stay monotonic), baselines restart.
    assert ledger.update(KEY, "u2", sample(7.0), 3.0, T0 + timedelta(seconds=40)) is None
    assert "re-created" in (ledger.pods[KEY].problem or "")
    assert ledger.pods[KEY].output_tokens == 100.0 and ledger.pods[KEY].energy_joules == 100.0
    assert ledger.update(KEY, "u2", sample(17.0), 23.0, T0 + timedelta(seconds=50)) == (10.0, 10.0, 20.0)
    assert ledger.pods[KEY].output_tokens == 110.0 and ledger.pods[KEY].energy_joules == 120.0


def test_scrape_errors_are_reasons_and_an_idle_window_has_no_figure() -> None:
    ledger = TokenLedger()
    ledger.update(KEY, "u1", ScrapeError("timeout", "GET x: no answer within 2 s"), 5.0, T0)
    assert ledger.pods[KEY].problem == "serving metrics: GET x: no answer within 2 s"
    ledger.update(KEY, "u1", sample(10.0), 5.0, T0 + timedelta(seconds=10))
    ledger.update(KEY, "u1", sample(10.0), 905.0, T0 + timedelta(seconds=20))  # idle: 900 J, no token
    pod = ledger.pods[KEY]
    assert pod.energy_joules == 900.0 and pod.joules_per_output_token is None
    assert pod.window_joules_per_output_token is None
    ledger.update(KEY, "u1", sample(110.0), 1_005.0, T0 + timedelta(seconds=30))
    assert pod.window_joules_per_output_token == 10.0  # the idle draw is part of serving those tokens
    # Intervals leave the window after WINDOW.
    ledger.update(KEY, "u1", sample(110.0), 1_005.0, T0 + WINDOW + timedelta(seconds=31))
    assert pod.window_joules_per_output_token is None and pod.joules_per_output_token == 10.0
    ledger.retain([])
    assert ledger.pods == {}


_read = st.one_of(
    st.none(),
    st.tuples(
        st.floats(min_value=0, max_value=1e9, allow_nan=False),
        st.one_of(st.none(), st.floats(min_value=0, max_value=1e9, allow_nan=False)),
        st.sampled_from(["u1", "u1", "u1", "u2"]),
    ),
)


@given(st.lists(_read, max_size=30))
def test_totals_never_decrease_never_go_negative_and_are_sums_of_real_increases(reads: list) -> None:
    ledger = TokenLedger()
    before = (0.0, 0.0)
    counted_tokens = counted_joules = 0.0
    for i, read in enumerate(reads):
        at = T0 + timedelta(seconds=15 * i)
        if read is None:
            ledger.update(KEY, "u1", ScrapeError("connection", "refused"), None, at)
        else:
            tokens, joules, uid = read
            interval = ledger.update(KEY, uid, sample(tokens), joules, at)
            if interval is not None:
                assert interval[0] > 0 and interval[1] >= 0 and interval[2] >= 0
                counted_tokens += interval[1]
                counted_joules += interval[2]
        pod = ledger.pods[KEY]
        now = (pod.output_tokens, pod.energy_joules)
        assert all(math.isfinite(v) and v >= 0 for v in now)
        assert now[0] >= before[0] and now[1] >= before[1]
        before = now
    if reads:
        assert math.isclose(before[0], counted_tokens, abs_tol=1e-3) and math.isclose(
            before[1], counted_joules, abs_tol=1e-3
        )


def test_pod_energy_is_read_per_uid_and_garbage_entries_are_skipped() -> None:
    body = {
        "status": {
            "podEnergy": [
                {"namespace": "serve", "name": "llm-0", "uid": "u1", "container": "a", "energyJoules": 10.0},
                {"namespace": "serve", "name": "llm-0", "uid": "u1", "container": "b", "energyJoules": 5.5},
                {"namespace": "serve", "name": "llm-0", "uid": "u0", "energyJoules": 99.0},
                {"namespace": "serve", "name": "bad", "uid": "u3", "energyJoules": float("nan")},
                {"namespace": "serve", "name": "bad", "uid": "u3", "energyJoules": -1},
                {"namespace": "serve", "name": "bad", "uid": "u3", "energyJoules": True},
                "garbage",
            ]
        }
    }
    energy = pod_energy_of(body)
    assert energy == {KEY: {"u1": 15.5, "u0": 99.0}}
    assert pod_energy_for(energy[KEY], "u1") == 15.5
    assert pod_energy_for(energy[KEY], "u9") is None  # two other pods of that name: no guess
    assert pod_energy_for({"": 4.0}, "u1") == 4.0  # an agent that could not read uids
    assert pod_energy_for({}, "u1") is None


def test_read_serving_reads_only_its_series_and_refuses_garbage_in_them() -> None:
    page = (
        "# HELP vllm:generation_tokens_total Number of generation tokens processed.\n"
        "# TYPE vllm:generation_tokens_total counter\n"
        'vllm:generation_tokens_total{model_name="a{b}\\"c",engine="0"} 10.0 1714000000000\n'
        'vllm:generation_tokens_total{model_name="m",engine="1"} 5e1\n'
        'vllm:generation_tokens_totalx{model_name="m"} 99\n'
        'vllm:time_to_first_token_seconds_bucket{le="0.1"} 3.0\n'
        "vllm:time_to_first_token_seconds_sum NaN\n"
        "vllm:time_to_first_token_seconds_count 3.0\n"
        "vllm:num_requests_waiting 4\n"
        'some_other_series{x="unterminated\n'
    )
    got = read_serving(page, "u")
    assert isinstance(got, ServingSample) and got.output_tokens == 60.0 and got.queue == 4.0
    assert got.ttft is None and got.prompt_tokens is None  # a NaN histogram reads as absent, not as a number
    bad = read_serving("sglang:generation_tokens_total -1\n", "u")
    assert isinstance(bad, ScrapeError) and bad.kind == "invalid"
    for line in (
        "vllm:generation_tokens_total 1_000",
        "vllm:generation_tokens_total 1 2 3",
        "vllm:generation_tokens_total{x=1} 3",
    ):
        broken = read_serving(line + "\n", "u")
        assert isinstance(broken, ScrapeError) and broken.kind == "parse", line
    assert detect_engine("# TYPE tgi_queue_size gauge\ntgi_queue_size 0\n") == "tgi"
    assert detect_engine("# vllm: only in a comment\nup 1\n") is None


def test_families_sharing_a_stem_and_interleaved_histograms_are_read_right() -> None:
    page = (
        "# TYPE vllm:prompt_tokens_cached_total counter\n"
        'vllm:prompt_tokens_cached_total{engine="0"} 777\n'
        "# TYPE vllm:prompt_tokens_total counter\n"
        'vllm:prompt_tokens_total{engine="0"} 40\n'
        'vllm:prompt_tokens_created{engine="0"} 1.7e9\n'
        'vllm:prompt_tokens_total{engine="1"} 2\n'
        "# TYPE vllm:generation_tokens_total counter\n"
        'vllm:generation_tokens_total{engine="0"} 7\n'
        "# TYPE vllm:inter_token_latency_seconds histogram\n"
        'vllm:inter_token_latency_seconds_bucket{engine="0",le="+Inf"} 10\n'
        'vllm:inter_token_latency_seconds_count{engine="0"} 10\n'
        'vllm:inter_token_latency_seconds_sum{engine="0"} 1.0\n'
        'vllm:inter_token_latency_seconds_bucket{engine="1",le="+Inf"} 30\n'
        'vllm:inter_token_latency_seconds_count{engine="1"} 30\n'
        'vllm:inter_token_latency_seconds_sum{engine="1"} 1.0\n'
        "# TYPE vllm:generation_tokens_total_extra counter\n"
        "vllm:generation_tokens_total_extra 5\n"
    )
    got = read_serving(page, "u")
    assert isinstance(got, ServingSample)
    assert (got.output_tokens, got.prompt_tokens) == (7.0, 42.0)
    assert got.itl == Histogram(2.0, 40.0)


def test_policy_status_carries_serving_figures_and_keeps_them_when_none_are_given() -> None:
    view = PolicyView(name="p", spec=EnergyPolicySpec.model_validate({"limits": {"maxWatts": 300}}), generation=1)
    serving = ServingEnergy(pods=2, measured_pods=2, output_tokens=1000, energy_joules=2000, joules_per_output_token=2)
    parsed = PolicyParse("p", 1, view, None, {})
    status = policy_status(parsed, PolicyReport(name="p", generation=1), now=T0, serving=serving)
    wire = status.to_wire()
    assert wire["serving"]["joulesPerOutputToken"] == 2.0 and wire["serving"]["outputTokens"] == 1000
    assert "serving" not in status_material(wire)  # measurements are written at the refresh pace
    again = policy_status(PolicyParse("p", 1, view, None, wire), PolicyReport(name="p", generation=1), now=T0)
    assert again.serving == serving
    assert EnergyPolicyStatus.model_validate(wire).serving == serving


def test_fleet_state_keeps_each_nodes_pod_energy_and_forgets_a_deleted_node() -> None:
    state = FleetState()

    def gpunode(name: str, joules: float) -> dict[str, object]:
        entry = {"namespace": "serve", "name": "llm-0", "uid": "u1", "container": "c", "energyJoules": joules}
        return {"metadata": {"name": name}, "status": {"podEnergy": [entry]}}

    state.put_gpunode(gpunode("node-a", 10.0))
    state.put_gpunode(gpunode("node-b", 2.5))  # a pod spanning nodes (or a stale report): summed per uid
    assert state.pod_energy() == {KEY: {"u1": 12.5}}
    state.put_gpunode(gpunode("node-a", 20.0))
    assert state.pod_energy() == {KEY: {"u1": 22.5}}
    state.put_gpunode(gpunode("node-b", 0.0), deleted=True)
    assert state.pod_energy() == {KEY: {"u1": 20.0}}
