"""Workload curves: parsing Zeus and ML.ENERGY tables, interpolation, and the extrapolation rules R1-R4.

Expected values come from the packaged CSV files read with the csv module, never from the parser under
test, so a parsing mistake cannot agree with itself.
"""

from __future__ import annotations

import csv
import math
import random
from collections import Counter
from importlib import resources
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wattplane.agent.gpu.simmodels import builtin_catalog
from wattplane.agent.gpu.workloads import (
    ZEUS_COLUMNS,
    InferenceConfig,
    InferenceWorkload,
    LimitCurve,
    LoadPoints,
    ProfileError,
    WorkloadKey,
    family_defaults,
    parse_mlenergy_llm_csv,
    parse_zeus_csv,
    power_fraction_shape,
    transfer_training,
)

DATA = resources.files("wattplane.agent.gpu").joinpath("data")
ZEUS = {
    "A40": "zeus_summary_power_a40.csv",
    "V100": "zeus_summary_power_v100.csv",
    "P100": "zeus_summary_power_p100.csv",
}
HEADER = ",".join(ZEUS_COLUMNS)


def rows(name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(DATA.joinpath(name).read_text(encoding="utf-8").splitlines()))


def key_of(row: dict[str, str]) -> WorkloadKey:
    return WorkloadKey(row["dataset"], row["network"], int(row["batch_size"]), row["optimizer"])


# --- packaged data ------------------------------------------------------------------------------------


def test_packaged_files_load_from_the_installed_package_and_have_the_documented_rows() -> None:
    counts = {name: len(rows(name)) for name in (*ZEUS.values(), "zeus_jit_profile_power_limit_windows_a40_v100.csv")}
    assert counts == {
        "zeus_summary_power_a40.csv": 453,
        "zeus_summary_power_v100.csv": 476,
        "zeus_summary_power_p100.csv": 270,
        "zeus_jit_profile_power_limit_windows_a40_v100.csv": 96,
    }
    llm = Counter(r["gpu_model"] for r in rows("mlenergy_v3_llm_inference_h100_b200.csv"))
    assert llm == {"H100": 405, "B200": 433}


def test_every_packaged_file_is_covered_by_the_notice() -> None:
    notice = DATA.joinpath("NOTICE.md").read_text(encoding="utf-8")
    csvs = sorted(entry.name for entry in DATA.iterdir() if entry.name.endswith(".csv"))
    assert len(csvs) == 5
    for name in csvs:
        assert f"`{name}`" in notice
    for required in ("Apache License 2.0", "75a8b9398034eb9baf74ca0a830c2c31bcce52cd", "NSDI 2023", "NeurIPS 2025"):
        assert required in notice


@pytest.mark.parametrize(("model", "curves"), [("A40", 53), ("V100", 68), ("P100", 45)])
def test_each_configuration_is_one_curve_exact_at_every_measured_limit(model: str, curves: int) -> None:
    parsed = parse_zeus_csv(DATA.joinpath(ZEUS[model]).read_text(encoding="utf-8"), ZEUS[model])
    assert len(parsed) == curves
    table = rows(ZEUS[model])
    assert sum(len(c.limits) for c in parsed.values()) == len(table)
    for row in table:
        curve = parsed[key_of(row)]
        limit = float(row["power_limit"])
        assert curve.time_per_epoch(limit) == float(row["time_per_epoch"])
        assert curve.power(limit) == float(row["average_power"])


def test_rows_differing_only_in_the_optimizer_are_separate_curves() -> None:
    parsed = parse_zeus_csv(DATA.joinpath(ZEUS["V100"]).read_text(encoding="utf-8"), "v100")
    adam = parsed[WorkloadKey("cifar100", "shufflenetv2", 1024, "adam")]
    adadelta = parsed[WorkloadKey("cifar100", "shufflenetv2", 1024, "adadelta")]
    assert adam.limits == adadelta.limits
    assert adam.seconds_per_unit != adadelta.seconds_per_unit


@settings(max_examples=30, deadline=None)
@given(st.randoms(use_true_random=False))
def test_parsing_does_not_depend_on_row_order(rng: random.Random) -> None:
    lines = DATA.joinpath(ZEUS["P100"]).read_text(encoding="utf-8").splitlines()
    body = lines[1:]
    rng.shuffle(body)
    original = parse_zeus_csv("\n".join(lines), "p100")
    shuffled = parse_zeus_csv("\n".join([lines[0], *body]), "p100")
    assert list(original) == list(shuffled)
    for key, curve in original.items():
        other = shuffled[key]
        assert (curve.limits, curve.seconds_per_unit, curve.watts) == (
            other.limits,
            other.seconds_per_unit,
            other.watts,
        )


def test_a_repeated_measurement_is_averaged() -> None:
    text = f"{HEADER}\nd,n,8,sgd,100,10,90\nd,n,8,sgd,200,6,150\nd,n,8,sgd,100,14,96\n"
    curve = parse_zeus_csv(text, "x.csv")[WorkloadKey("d", "n", 8, "sgd")]
    assert curve.limits == (100.0, 200.0)
    assert (curve.time_per_epoch(100), curve.power(100)) == (12.0, 93.0)


@pytest.mark.parametrize(
    ("body", "where", "what"),
    [
        ("d,n,8,sgd,100,10,abc\n", "x.csv:2:", "average_power is not a number"),
        ("d,n,8,sgd,100,10,90\nd,n,8,sgd,-5,10,90\n", "x.csv:3:", "power_limit must be a positive"),
        ("d,n,8,sgd,100,0,90\n", "x.csv:2:", "time_per_epoch must be a positive"),
        ("d,n,8,sgd,100,nan,90\n", "x.csv:2:", "time_per_epoch must be a positive"),
        ("d,n,8.5,sgd,100,10,90\n", "x.csv:2:", "batch_size must be a whole number"),
        ("d,n,8,sgd,100,10\n", "x.csv:2:", "expected 7 fields"),
        ("d,n,8,sgd,100,10,90,1\n", "x.csv:2:", "expected 7 fields"),
        (",n,8,sgd,100,10,90\n", "x.csv:2:", "must not be empty"),
        ("d/e,n,8,sgd,100,10,90\n", "x.csv:2:", "must not contain"),
        ("", "x.csv:2:", "no data rows"),
    ],
)
def test_bad_rows_are_reported_with_file_and_line(body: str, where: str, what: str) -> None:
    with pytest.raises(ProfileError) as caught:
        parse_zeus_csv(f"{HEADER}\n{body}", "x.csv")
    assert str(caught.value).startswith(where)
    assert what in str(caught.value)


def test_a_missing_column_is_reported_on_the_header_line() -> None:
    with pytest.raises(ProfileError, match=r"^x\.csv:1: missing column\(s\) average_power"):
        parse_zeus_csv("dataset,network,batch_size,optimizer,power_limit,time_per_epoch\nd,n,8,s,1,1\n", "x.csv")


def test_family_defaults_follow_the_zeus_artifact_and_cap_at_the_largest_batch() -> None:
    a40 = parse_zeus_csv(DATA.joinpath(ZEUS["A40"]).read_text(encoding="utf-8"), "a40")
    p100 = parse_zeus_csv(DATA.joinpath(ZEUS["P100"]).read_text(encoding="utf-8"), "p100")
    assert str(family_defaults(a40)["imagenet/resnet50"]) == "imagenet/resnet50@256:adadelta"
    assert str(family_defaults(a40)["librispeech/deepspeech2"]) == "librispeech/deepspeech2@192:adamw"  # 256 > max
    assert str(family_defaults(p100)["imagenet/resnet50"]) == "imagenet/resnet50@128:adadelta"
    assert str(family_defaults(p100)["squad/bert_base_uncased"]) == "squad/bert_base_uncased@24:adamw"


def test_an_unknown_family_defaults_to_the_best_covered_batch_then_the_larger() -> None:
    lines = [HEADER]
    lines += [f"toy,mlp,{b},sgd,{x},{1000 / x},{x * 0.9}" for b in (16, 32, 64) for x in (100, 200)]
    lines += ["toy,mlp,8,sgd,100,5,80", "toy,mlp,8,sgd,150,4.5,100", "toy,mlp,8,sgd,200,4,120"]
    lines += ["toy,mlp,8,adam,100,5,80"]
    lines += [f"toy,cnn,{b},sgd,{x},{1000 / x},{x * 0.9}" for b in (16, 32) for x in (100, 200)]
    defaults = family_defaults(parse_zeus_csv("\n".join(lines), "toy.csv"))
    assert str(defaults["toy/mlp"]) == "toy/mlp@8:sgd"  # sgd has more rows; batch 8 has three limits
    assert str(defaults["toy/cnn"]) == "toy/cnn@32:sgd"  # a tie goes to the larger batch


# --- interpolation and the out-of-range rules (R1, R2) -----------------------------------------------


@st.composite
def curves(draw: st.DrawFn) -> LimitCurve:
    n = draw(st.integers(1, 8))
    limits = sorted(draw(st.sets(st.integers(50, 1000), min_size=n, max_size=n)))
    times = draw(st.lists(st.floats(0.1, 1e4), min_size=n, max_size=n))
    watts = draw(st.lists(st.floats(10, 1200), min_size=n, max_size=n))
    return LimitCurve(tuple(float(x) for x in limits), tuple(times), tuple(watts))


@settings(max_examples=300, deadline=None)
@given(curves(), st.floats(1, 1500))
def test_a_curve_is_exact_at_its_knots_and_bounded_by_its_neighbours(curve: LimitCurve, limit: float) -> None:
    for x, t, p in zip(curve.limits, curve.seconds_per_unit, curve.watts, strict=True):
        assert (curve.time_per_unit(x), curve.power(x)) == (t, p)
    if curve.bottom_limit <= limit <= curve.top_limit:
        i = max(i for i, x in enumerate(curve.limits) if x <= limit)
        j = min(i + 1, len(curve.limits) - 1)
        for values, value in ((curve.watts, curve.power(limit)), (curve.seconds_per_unit, curve.time_per_unit(limit))):
            assert min(values[i], values[j]) - 1e-9 <= value <= max(values[i], values[j]) + 1e-9
        assert curve.energy_per_unit(limit) == pytest.approx(curve.power(limit) * curve.time_per_unit(limit))
        assert curve.rate(limit) == pytest.approx(1 / curve.time_per_unit(limit))


@settings(max_examples=300, deadline=None)
@given(curves(), st.floats(1, 1500))
def test_r1_flat_above_the_top_and_r2_proportional_below_the_bottom(curve: LimitCurve, limit: float) -> None:
    if limit >= curve.top_limit:
        assert curve.power(limit) == curve.uncapped_watts
        assert curve.time_per_unit(limit) == curve.uncapped_seconds_per_unit
    if limit <= curve.bottom_limit:
        share = limit / curve.bottom_limit
        assert curve.power(limit) == pytest.approx(curve.watts[0] * share)
        assert curve.rate(limit) == pytest.approx(share / curve.seconds_per_unit[0])
        # R2 keeps energy per unit of work at its bottom value.
        assert curve.energy_per_unit(limit) == pytest.approx(curve.watts[0] * curve.seconds_per_unit[0])


def builtin_curves() -> list[tuple[str, LimitCurve]]:
    found = []
    for model in ZEUS:
        for name, workload in builtin_catalog().workloads[model].workloads.items():
            found.append((f"{model} {name}", workload.operating_point(1.0)[0]))
    return found


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(builtin_curves()), st.floats(0, 1))
def test_measured_curves_respect_the_limit_wherever_the_trace_does(named: tuple[str, LimitCurve], at: float) -> None:
    _, curve = named
    limit = curve.bottom_limit + at * (curve.top_limit - curve.bottom_limit)
    i = max(i for i, x in enumerate(curve.limits) if x <= limit)
    j = min(i + 1, len(curve.limits) - 1)
    ratios = (curve.watts[i] / curve.limits[i], curve.watts[j] / curve.limits[j])
    # Between two measured limits the draw-to-limit ratio never exceeds the larger of theirs; in
    # particular, where the trace stayed under the limit at both, so does the curve.
    assert curve.power(limit) <= limit * max(ratios) * (1 + 1e-12)
    if max(ratios) <= 1:
        assert curve.power(limit) <= limit * (1 + 1e-12)


def falls_with_the_limit(curve: LimitCurve) -> bool:
    return all(later <= earlier for earlier, later in pairwise(curve.seconds_per_unit))


MONOTONE = [(name, curve) for name, curve in builtin_curves() if falls_with_the_limit(curve)]


def test_every_trace_has_curves_whose_time_falls_with_the_limit() -> None:
    """The property below is not vacuous: each GPU contributes curves to it."""
    assert {name.split()[0] for name, _ in MONOTONE} == set(ZEUS)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(MONOTONE), st.floats(0, 1), st.floats(0, 1))
def test_time_never_rises_with_the_limit_where_the_trace_does_not(
    named: tuple[str, LimitCurve], a: float, b: float
) -> None:
    _, curve = named
    span = curve.top_limit - curve.bottom_limit
    low, high = sorted((curve.bottom_limit + a * span, curve.bottom_limit + b * span))
    assert curve.time_per_epoch(high) <= curve.time_per_epoch(low)


def test_r1_is_grounded_every_swept_curve_is_unconstrained_at_its_top_and_measured_to_the_minimum() -> None:
    for model in ZEUS:
        spec = builtin_catalog().model(model)
        for _, curve in (c for c in builtin_curves() if c[0].startswith(f"{model} ")):
            assert curve.uncapped_watts <= 0.93 * curve.top_limit  # the cap no longer binds at the top
            assert curve.bottom_limit == spec.min_watts  # R2 is never needed inside the constraints


def test_assumed_idle_draw_is_below_every_draw_measured_while_working() -> None:
    for model in ZEUS:
        lowest = min(min(curve.watts) for name, curve in builtin_curves() if name.startswith(f"{model} "))
        assert builtin_catalog().model(model).idle_watts < lowest
    for model in ("H100", "B200"):
        lowest = min(
            float(r["avg_power_watts"]) / int(r["num_gpus"])
            for r in rows("mlenergy_v3_llm_inference_h100_b200.csv")
            if r["gpu_model"] == model
        )
        assert builtin_catalog().model(model).idle_watts < lowest


def test_bad_curves_are_refused() -> None:
    with pytest.raises(ValueError, match="increase"):
        LimitCurve((200.0, 100.0), (1.0, 2.0), (150.0, 90.0))
    with pytest.raises(ValueError, match="positive"):
        LimitCurve((100.0,), (0.0,), (90.0,))
    with pytest.raises(ValueError, match="same"):
        LimitCurve((100.0, 200.0), (1.0,), (90.0, 150.0))
    with pytest.raises(ValueError, match="positive"):
        LimitCurve((100.0,), (1.0,), (90.0,)).power(0.0)


# --- extrapolation across boards (R3, R4) ------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(curves(), st.floats(0.2, 5), st.floats(0.05, 5), st.floats(0, 1))
def test_r3_keeps_the_shape_in_units_of_the_board(curve: LimitCurve, watts: float, seconds: float, at: float) -> None:
    moved = transfer_training(curve, watts_ratio=watts, seconds_ratio=seconds)
    limit = curve.bottom_limit * 0.5 + at * (curve.top_limit * 1.5 - curve.bottom_limit * 0.5)
    assert moved.power(limit * watts) == pytest.approx(curve.power(limit) * watts)
    assert moved.time_per_unit(limit * watts) == pytest.approx(curve.time_per_unit(limit) * seconds)


def test_r3_h100_training_is_the_a40_curve_scaled_to_700_w() -> None:
    a40 = builtin_catalog().workload("A40", "squad/bert_base_uncased").operating_point(1.0)[0]
    h100 = builtin_catalog().workload("H100", "squad/bert_base_uncased").operating_point(1.0)[0]
    assert h100.top_limit == pytest.approx(700.0)
    assert h100.power(700) == pytest.approx(a40.power(300) * 7 / 3)
    assert h100.power(350) / 350 == pytest.approx(a40.power(150) / 150)
    assert h100.time_per_epoch(350) / h100.time_per_epoch(700) == pytest.approx(
        a40.time_per_epoch(150) / a40.time_per_epoch(300)
    )


@settings(max_examples=200, deadline=None)
@given(st.floats(50, 1000), st.floats(0.01, 100), st.floats(10, 1200))
def test_r4_never_draws_above_the_limit_and_reproduces_the_uncapped_point(
    watts: float, seconds: float, limit: float
) -> None:
    shape = builtin_catalog().workload("A40", "squad/bert_base_uncased").operating_point(1.0)[0]
    curve = power_fraction_shape(shape, watts=watts, seconds_per_unit=seconds)
    assert curve.power(limit) <= limit * (1 + 1e-12)
    assert curve.power(max(limit, watts)) == pytest.approx(watts)
    assert curve.time_per_unit(max(limit, watts)) == pytest.approx(seconds)
    assert curve.time_per_unit(limit) >= seconds * (1 - 1e-12)


def test_r4_refuses_a_reference_whose_draw_falls_with_the_limit() -> None:
    with pytest.raises(ValueError, match="rise strictly"):
        power_fraction_shape(LimitCurve((100.0, 200.0), (2.0, 1.0), (120.0, 110.0)), watts=500, seconds_per_unit=1)


def test_inference_reproduces_ml_energy_at_the_default_limit() -> None:
    expected = {
        (float(r["max_num_seqs"]), float(r["avg_power_watts"]), float(r["output_throughput_tokens_per_sec"]))
        for r in rows("mlenergy_v3_llm_inference_h100_b200.csv")
        if (r["gpu_model"], r["model_id"], r["task"], r["num_gpus"])
        == ("H100", "meta-llama/Llama-3.1-8B-Instruct", "lm-arena-chat", "1")
    }
    workload = builtin_catalog().workload("H100", "llm-inference")
    assert isinstance(workload, InferenceWorkload)
    assert workload.kind == "inference" and workload.unit == "ktoken"
    points = workload.points
    assert len(points.batch) == len(expected)
    top = max(expected)  # the largest max_num_seqs is the largest batch here
    curve, duty = workload.operating_point(1.0)
    assert duty == 1.0
    assert curve.power(700) == pytest.approx(top[1])
    assert 1000 / curve.time_per_unit(700) == pytest.approx(top[2])


def test_multi_gpu_inference_is_reported_per_gpu() -> None:
    text = (
        "task,model_id,gpu_model,num_gpus,max_num_seqs,avg_batch_size,avg_power_watts,output_throughput_tokens_per_sec\n"
        "chat,m,H100,4,8,8,2000,400\nchat,m,H100,4,16,16,2400,700\nchat,m,H100,4,16,16,2600,900\n"
    )
    points = parse_mlenergy_llm_csv(text, "x.csv")["H100"][InferenceConfig("chat", "m", 4)]
    assert points.batch == (8.0, 16.0)
    assert points.watts == (500.0, 625.0)
    assert points.tokens_per_s == (100.0, 200.0)


def test_load_points_run_from_idle_to_the_largest_batch() -> None:
    points = LoadPoints((8.0, 64.0), (400.0, 600.0), (1000.0, 5000.0))
    assert points.at(0.0, 70.0) == (70.0, 0.0)
    assert points.at(1.0, 70.0) == (600.0, 5000.0)
    assert points.at(0.0625, 70.0) == (235.0, 500.0)  # batch 4: halfway from idle to the first point
    watts, tokens = points.at(0.5, 70.0)  # batch 32
    assert (watts, tokens) == (pytest.approx(400 + 200 * 24 / 56), pytest.approx(1000 + 4000 * 24 / 56))
    assert math.isclose(points.at(2.0, 70.0)[0], 600.0)  # clipped
