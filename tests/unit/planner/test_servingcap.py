"""SLO-guarded serving caps: the rules one by one, the invariants under any metrics, and the loop on the model.

The invariants (hypothesis, any sequence of windows and settings): the knob stays inside its range; a
window that breaks an objective is answered in the same call by a less aggressive knob (or the knob
released); while the queue is beyond its bound nothing is capped. The closed loop drives
:func:`decide_serving_cap` with the simulator's serving model (Llama-3.1-8B on an H100, calibrated on
ML.ENERGY v3) at a steady load and checks it settles on a knob that meets the objectives and saves energy.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wattplane.planner.servingcap import (
    H100_CAP,
    H100_CLOCK,
    KnobRange,
    ServingCapDecision,
    ServingCapSettings,
    ServingCapState,
    ServingSlo,
    ServingWindow,
    decide_serving_cap,
    regime,
)
from wattplane.sim.inference import Knob, azure_windows, h100_llama8b, operate

SLO = ServingSlo(tpot_p90_s=0.050, ttft_p90_s=1.0, speed_floor_tps=10.0, queue_bound=8.0)
SET = ServingCapSettings()
CALM = ServingWindow(tpot_p90_s=0.010, ttft_p90_s=0.100, speed_tps=100.0, queue=0.0, prefill_share=0.1, load=1000.0)


def step(state: ServingCapState, window: ServingWindow | None, now: float) -> ServingCapDecision:
    return decide_serving_cap(state, window, SLO, SET, now)


def test_a_calm_pod_is_probed_one_step_per_settled_window() -> None:
    state = ServingCapState.initial(SET)
    first = step(state, CALM, 60.0)
    assert (first.action, first.kind, first.value) == ("probe", "clock", H100_CLOCK.maximum - H100_CLOCK.step)
    settling = step(first.state, CALM, 90.0)  # half a window later: the new knob is not judged yet
    assert settling.action == "settle" and settling.value == first.value
    second = step(settling.state, CALM, 120.0)
    assert first.value is not None
    assert second.action == "probe" and second.value == first.value - H100_CLOCK.step
    assert second.state.last_good == first.value


def test_a_threat_backs_off_to_the_last_good_knob_at_once_and_holds_probes_off_doubling() -> None:
    state = ServingCapState(kind="clock", value=1560.0, last_good=1665.0, changed_at=0.0, backoff_s=300.0)
    hot = replace(CALM, tpot_p90_s=0.047)  # 94 % of the objective: threatened, not yet broken
    out = step(state, hot, 600.0)
    assert (out.action, out.value) == ("backoff", 1665.0)
    assert out.state.hold_until == 900.0 and out.state.backoff_s == 600.0
    # Calm again within the hold-off: the knob is good, but no probe until the hold-off ends.
    held = step(out.state, CALM, 720.0)
    assert held.action == "hold" and held.value == 1665.0
    later = step(held.state, CALM, 960.0)
    assert later.action == "probe" and later.value == 1560.0
    # The lower knob proving good resets the hold-off length.
    good = step(later.state, CALM, 1020.0)
    assert good.state.backoff_s == SET.backoff_s


def test_a_threat_at_a_known_good_knob_releases_it() -> None:
    state = ServingCapState(kind="clock", value=1560.0, last_good=1560.0, changed_at=0.0)
    out = step(state, replace(CALM, ttft_p90_s=0.95), 600.0)
    assert out.action == "backoff" and out.value is None and out.state.last_good is None


def test_a_queue_beyond_its_bound_releases_everything_and_nothing_is_probed_while_it_lasts() -> None:
    state = ServingCapState(kind="clock", value=1140.0, last_good=1245.0, changed_at=0.0)
    queued = replace(CALM, queue=12.0)
    out = step(state, queued, 600.0)
    assert out.action == "release" and out.value is None
    for t in (660.0, 1200.0, 5000.0):  # however long it lasts and however calm the latencies are
        out = step(out.state, queued, t)
        assert out.value is None


def test_missing_figures_keep_the_knob() -> None:
    state = ServingCapState(kind="clock", value=1560.0, last_good=1665.0, changed_at=0.0)
    assert step(state, None, 600.0).value == 1560.0
    partial = replace(CALM, tpot_p90_s=None)
    out = step(state, partial, 600.0)
    assert out.action == "unknown" and out.value == 1560.0


def test_close_to_an_objective_steps_back_up_to_a_knob_seen_to_take_the_load() -> None:
    safe = (math.inf, *[9000.0] * 7, 900.0)  # 1,875 … 1,245 MHz took 9,000; 1,140 MHz only 900
    state = ServingCapState(kind="clock", value=1140.0, last_good=1140.0, changed_at=0.0, safe=safe)
    near = replace(CALM, tpot_p90_s=0.040)  # 80 %: past raise_margin, below threat
    out = step(state, near, 600.0)
    assert out.action == "raise" and out.value == 1245.0
    # Nothing known to take this load: released.
    out = step(replace(state, safe=()), near, 600.0)
    assert out.action == "raise" and out.value is None


def test_a_steep_probe_step_is_undone() -> None:
    state = ServingCapState(kind="clock", value=1560.0, last_good=1665.0, changed_at=0.0, probe_from=(0.012, 0.3))
    steep = replace(CALM, tpot_p90_s=0.026, ttft_p90_s=0.3, load=None)  # p90 TPOT doubled, to 52 % of its SLO
    out = step(state, steep, 600.0)
    assert out.action == "knee" and out.value == 1665.0 and out.state.hold_until > 600.0


def test_a_knob_seen_to_take_more_load_is_used_directly() -> None:
    # 1,245 MHz took 2,000 (tokens/s) with margin before; at 1,000 now (headroom 30 %) it is safe: jump there.
    grid_safe = (math.inf, 2000.0, 2000.0, 2000.0, 2000.0, 2000.0, 2000.0, 2000.0)
    state = ServingCapState(kind="clock", value=1980.0, changed_at=0.0, safe=grid_safe)
    out = step(state, CALM, 600.0)
    assert out.action == "lower" and out.value == 1245.0


def test_load_beyond_what_the_knob_took_raises_it_before_an_objective_breaks() -> None:
    safe = (math.inf, 5000.0, 5000.0, 1000.0)
    state = ServingCapState(kind="clock", value=1665.0, last_good=1665.0, changed_at=0.0, safe=safe)
    busy = replace(CALM, tpot_p90_s=0.030, load=1800.0)  # 60 %: no margin to probe, not near the objective
    out = step(state, busy, 600.0)
    assert out.action == "raise" and out.value == 1770.0  # the lowest knob seen to take 1.3 x 1,800


def test_regime_picks_the_cap_for_prefill_heavy_pods_with_hysteresis() -> None:
    assert regime(0.6, "clock", SET) == "cap"
    assert regime(0.5, "cap", SET) == "cap"  # inside the band: no flapping
    assert regime(0.4, "cap", SET) == "clock"
    assert regime(None, "cap", SET) == "cap"
    state = ServingCapState(kind="clock", value=1140.0, last_good=1140.0, changed_at=0.0)
    out = step(state, replace(CALM, prefill_share=0.7), 600.0)
    assert out.action == "switch" and out.kind == "cap" and out.value is None


def test_ranges_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        KnobRange("cap", 500.0, 400.0, 25.0)
    with pytest.raises(ValueError):
        ServingCapSettings(probe_margin=0.9, threat_margin=0.8)


# --- invariants --------------------------------------------------------------------------------------------

latency = st.one_of(st.none(), st.floats(min_value=0.0, max_value=5.0, allow_nan=False))
windows = st.one_of(
    st.none(),
    st.builds(
        ServingWindow,
        tpot_p90_s=latency,
        ttft_p90_s=latency,
        speed_tps=st.one_of(st.none(), st.floats(min_value=0.0, max_value=500.0)),
        queue=st.one_of(st.none(), st.floats(min_value=0.0, max_value=40.0)),
        prefill_share=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0)),
        load=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1e5)),
    ),
)
knob_settings = st.builds(
    ServingCapSettings,
    probe_margin=st.floats(min_value=0.3, max_value=0.6),
    raise_margin=st.floats(min_value=0.6, max_value=0.8),
    threat_margin=st.floats(min_value=0.8, max_value=1.0),
    settle_s=st.sampled_from([0.0, 30.0, 60.0]),
    clock=st.sampled_from([H100_CLOCK, KnobRange("clock", 800.0, 1755.0, 100.0)]),
    cap=st.sampled_from([H100_CAP, KnobRange("cap", 330.0, 700.0, 40.0)]),
)


def breaks(window: ServingWindow) -> bool:
    return (
        (window.tpot_p90_s is not None and window.tpot_p90_s > SLO.tpot_p90_s)
        or (window.ttft_p90_s is not None and window.ttft_p90_s > SLO.ttft_p90_s)
        or (window.speed_tps is not None and window.speed_tps < SLO.speed_floor_tps)
    )


@settings(max_examples=150, deadline=None)
@given(
    conf=knob_settings,
    kind=st.sampled_from(["clock", "cap"]),
    seq=st.lists(st.tuples(windows, st.floats(min_value=0.0, max_value=400.0)), min_size=1, max_size=40),
)
def test_any_metrics_keep_the_knob_in_range_back_off_at_once_and_never_cap_a_queue(
    conf: ServingCapSettings, kind: str, seq: list[tuple[ServingWindow | None, float]]
) -> None:
    state = ServingCapState.initial(conf, "clock" if kind == "clock" else "cap")
    now = 0.0
    for window, gap in seq:
        now += gap
        before = state
        out = decide_serving_cap(state, window, SLO, conf, now)
        span = conf.knob_range(out.kind)
        if out.value is not None:
            assert span.minimum <= out.value <= span.maximum
        assert span.minimum <= out.state.value <= span.maximum
        assert (out.value is None) == (out.state.value >= span.maximum)
        if window is not None and window.queue is not None and window.queue > SLO.queue_bound:
            assert out.value is None, "capped while queueing beyond the bound"
        if window is not None and breaks(window) and not before.released(conf) and out.kind == before.kind:
            assert out.value is None or out.value > before.value, "an SLO breach was not backed off in one call"
        state = out.state


# --- the loop on the serving model ---------------------------------------------------------------------------


def test_the_loop_on_the_model_settles_within_the_slos_and_saves_energy() -> None:
    model = h100_llama8b()
    hour = azure_windows()
    load = hour[10].load.scaled(2.5 / hour[10].load.rate)  # 2.5 requests/s on one replica
    baseline = operate(model, load, Knob())
    state = ServingCapState.initial(SET)
    knob = Knob()
    seen = []
    for minute in range(40):
        op = operate(model, load, knob)
        seen.append(op)
        window = ServingWindow(
            op.tpot_p90_s,
            op.ttft_p90_s,
            op.speed_tps,
            op.waiting,
            load.rate * load.prompt_mean * model.prefill_s_per_token,
            op.joules_per_token,
            load.rate * (load.prompt_mean + load.output_mean),
        )
        out = decide_serving_cap(state, window, SLO, SET, 60.0 * (minute + 1))
        state = out.state
        knob = Knob() if out.value is None else Knob.clock(out.value)
    final = seen[-1]
    assert knob.kind == "clock" and knob.value < 1500.0
    assert all(op.tpot_p90_s <= SLO.tpot_p90_s and op.ttft_p90_s <= SLO.ttft_p90_s for op in seen)
    assert final.joules_per_token < 0.75 * baseline.joules_per_token
