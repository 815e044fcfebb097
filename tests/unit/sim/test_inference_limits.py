"""The serving model's helpers for live knobs: the Azure request mix and a cap and a clock lock together."""

from __future__ import annotations

import dataclasses

import pytest
from wattplane.sim.inference import Knob, azure_mix, azure_windows, h100_llama8b, operate, operate_limits


def test_the_azure_mix_is_the_whole_trace_at_the_rate_asked() -> None:
    mix = azure_mix(4.0)
    assert mix.rate == 4.0
    assert 1000 < mix.prompt_mean < 1300 and 150 < mix.output_mean < 260  # conversation: long prompts, short answers
    assert mix.prompt_p90 > mix.prompt_mean and mix.output_p90 > mix.output_mean
    quiet = [w.load for w in azure_windows() if w.load.rate == 0.0]  # windows without requests take the whole trace
    assert all(dataclasses.replace(load, rate=4.0) == mix for load in quiet)
    with pytest.raises(ValueError, match="no requests"):
        azure_mix(text="TIMESTAMP,ContextTokens,GeneratedTokens\n")


def test_the_tighter_of_a_cap_and_a_clock_lock_governs() -> None:
    model, load = h100_llama8b(), azure_mix(5.0)
    assert operate_limits(model, load) == (Knob(), operate(model, load, Knob()))
    loose_cap, tight_clock = 650.0, 600.0
    knob, op = operate_limits(model, load, cap_w=loose_cap, clock_mhz=tight_clock)
    assert knob == Knob.clock(tight_clock) and op == operate(model, load, knob)
    knob, op = operate_limits(model, load, cap_w=200.0, clock_mhz=1900.0)
    assert knob == Knob.cap(200.0)
    assert op.tpot_p90_s > operate(model, load, Knob.clock(1900.0)).tpot_p90_s
