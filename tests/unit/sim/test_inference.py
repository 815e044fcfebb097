"""The serving model against the measurements it is calibrated on and the physics it claims.

Measured: the shipped ML.ENERGY v3 slice (Llama-3.1-8B on one H100, decode step time and draw against
batch) and MLPerf Inference Llama-2-70B Offline throughput at 450 W / 700 W. Modelled: everything under a
cap or a clock lock; these tests pin the properties the controller and the benches rely on.
"""

from __future__ import annotations

import csv
import io
import itertools

import pytest
from wattplane.sim.inference import (
    MLENERGY_FILE,
    Knob,
    Load,
    ServiceSlo,
    azure_windows,
    checks,
    clock_knobs,
    h100_llama8b,
    operate,
    pareto_front,
    read_shipped,
    saturation_ratio,
    sweep,
)

MODEL = h100_llama8b()
HOUR = azure_windows()
MIX = HOUR[10].load


def at(rate: float) -> Load:
    return MIX.scaled(rate / MIX.rate)


def test_the_decode_step_and_draw_follow_the_measured_table() -> None:
    rows = list(csv.DictReader(io.StringIO(read_shipped(MLENERGY_FILE))))
    assert len(rows) == 11 and {r["gpu_model"] for r in rows} == {"H100"}
    for row in rows:
        batch = float(row["avg_batch_size"])
        assert MODEL.decode_draw(batch) == pytest.approx(float(row["avg_power_watts"]), rel=1e-9)
        if batch <= 256:  # the fitted range of the step-time line
            assert MODEL.step_s(batch, 1.0) == pytest.approx(float(row["median_itl_ms"]) / 1000, rel=0.12)


def test_the_azure_hour_is_cut_into_complete_minutes() -> None:
    assert len(HOUR) == 58
    text = read_shipped("azure_llm_inference_trace_2023_conv.csv")
    requests = sum(1 for _ in csv.DictReader(io.StringIO(text)))
    counted = sum(w.load.rate * 60 for w in HOUR)
    assert 0.95 * requests < counted <= requests  # only the cut-off last minute is left out
    assert all(500 < w.load.prompt_mean < 2000 and 100 < w.load.output_mean < 400 for w in HOUR)


def test_a_cap_above_the_decode_draw_does_not_bind_in_decode() -> None:
    light = operate(MODEL, at(1.0), Knob.cap(600.0))
    free = operate(MODEL, at(1.0), Knob())
    assert light.decode_clock_mhz == MODEL.gpu.max_clock_mhz  # decode draws ~500 W here
    assert light.prefill_clock_mhz < free.prefill_clock_mhz  # prefill (700 W uncapped) is throttled
    assert light.joules_per_token > 0.95 * free.joules_per_token  # and little energy is saved


def test_a_clock_lock_saves_decode_energy_for_little_latency() -> None:
    free = operate(MODEL, at(1.0), Knob())
    locked = operate(MODEL, at(1.0), Knob.clock(1560.0))
    assert locked.joules_per_token < 0.85 * free.joules_per_token
    assert locked.tpot_p90_s < 1.06 * free.tpot_p90_s


@pytest.mark.parametrize("rate", [0.5, 2.0, 4.0])
def test_lower_clocks_never_shorten_latency(rate: float) -> None:
    ops = [operate(MODEL, at(rate), k) for k in clock_knobs()]
    for faster, slower in itertools.pairwise(ops):
        assert slower.tpot_p90_s >= faster.tpot_p90_s - 1e-12
        assert slower.ttft_p90_s >= faster.ttft_p90_s - 1e-12


def test_beyond_capacity_the_replica_serves_its_capacity_and_says_so() -> None:
    over = operate(MODEL, at(40.0), Knob())
    assert over.overloaded and over.capacity_rps < 40.0
    assert over.tokens_per_s == pytest.approx(over.capacity_rps * MIX.output_mean)
    assert not ServiceSlo().met(over)
    assert not operate(MODEL, at(1.0), Knob()).overloaded


def test_saturated_throughput_under_a_cap_matches_mlperf_within_five_points() -> None:
    # Measured: Llama-2-70B Offline on H100 keeps 0.805 of its throughput at 450 W (MLPerf v4.0, NVIDIA).
    assert saturation_ratio(MODEL, MIX, Knob.cap(450.0)) == pytest.approx(0.805, abs=0.05)
    named = {c.name: c for c in checks(MODEL, MIX)}
    assert any("450 W" in name and abs(c.modelled - c.measured) < 0.05 for name, c in named.items())


def test_the_pareto_front_is_sorted_and_undominated() -> None:
    points = sweep(MODEL, at(2.0), [Knob(), *clock_knobs(), Knob.cap(500.0), Knob.cap(300.0)])
    front = pareto_front(points)
    assert front[0].op.tpot_p90_s == min(p.op.tpot_p90_s for p in points)
    for a, b in itertools.pairwise(front):
        assert b.op.tpot_p90_s >= a.op.tpot_p90_s and b.op.joules_per_token < a.op.joules_per_token
    for p in points:
        assert (
            not any(q.op.tpot_p90_s < p.op.tpot_p90_s and q.op.joules_per_token < p.op.joules_per_token for q in front)
            or p not in front
        )
