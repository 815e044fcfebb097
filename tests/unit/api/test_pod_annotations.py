"""Pod annotations are user input: every value is read or defaulted, and nothing ever raises."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wattplane.api import annotations as ann
from wattplane.api.annotations import DEFAULT_PRIORITY, PodIntent, parse_pod_annotations


def test_no_annotations_give_the_defaults_and_no_problems() -> None:
    intent = parse_pod_annotations({})
    assert intent == PodIntent()
    assert intent.priority == 500
    assert intent.opt_out is False
    assert intent.problems == ()


def test_foreign_annotations_are_ignored_silently() -> None:
    intent = parse_pod_annotations({"example.com/priority": "high", "kubectl.kubernetes.io/x": "y"})
    assert intent == PodIntent()


def test_every_known_annotation_is_read() -> None:
    intent = parse_pod_annotations(
        {
            ann.JOB: " llama-pretrain ",
            ann.PRIORITY: "high",
            ann.WORKLOAD: "inference",
            ann.POLICY: "cap-70",
            ann.OPT_OUT: "false",
            ann.MIN_POWER_WATTS: "150.5",
            ann.MAX_SLOWDOWN: "1.1",
            ann.PROGRESS_METRIC: "train_steps_total",
        }
    )
    assert intent.job == "llama-pretrain"
    assert intent.priority == 1000
    assert intent.workload == "inference"
    assert intent.policy == "cap-70"
    assert intent.opt_out is False
    assert intent.min_power_watts == 150.5
    assert intent.max_slowdown == 1.1
    assert intent.progress_metric == "train_steps_total"
    assert intent.problems == ()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("low", 0), ("normal", 500), ("HIGH", 1000), (" 42 ", 42), ("0", 0), ("1000", 1000)],
)
def test_priority_names_and_integers(raw: str, expected: int) -> None:
    intent = parse_pod_annotations({ann.PRIORITY: raw})
    assert intent.priority == expected
    assert intent.problems == ()


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("Yes", True), ("1", True), ("no", False), ("", False)])
def test_opt_out_accepts_the_usual_spellings(raw: str, expected: bool) -> None:
    intent = parse_pod_annotations({ann.OPT_OUT: raw})
    assert intent.opt_out is expected
    assert intent.problems == ()


@pytest.mark.parametrize(
    ("key", "raw", "field"),
    [
        (ann.PRIORITY, "urgent", "priority"),
        (ann.PRIORITY, "1001", "priority"),
        (ann.PRIORITY, "-1", "priority"),
        (ann.PRIORITY, "2.5", "priority"),
        (ann.WORKLOAD, "batch", "workload"),
        (ann.OPT_OUT, "maybe", "opt_out"),
        (ann.MIN_POWER_WATTS, "lots", "min_power_watts"),
        (ann.MIN_POWER_WATTS, "0", "min_power_watts"),
        (ann.MIN_POWER_WATTS, "-100", "min_power_watts"),
        (ann.MIN_POWER_WATTS, "nan", "min_power_watts"),
        (ann.MIN_POWER_WATTS, "inf", "min_power_watts"),
        (ann.MIN_POWER_WATTS, "1e400", "min_power_watts"),
        (ann.MAX_SLOWDOWN, "10.5", "max_slowdown"),
        (ann.MAX_SLOWDOWN, "0", "max_slowdown"),
    ],
)
def test_garbage_value_uses_the_default_and_names_the_annotation(key: str, raw: str, field: str) -> None:
    intent = parse_pod_annotations({key: raw, ann.JOB: "j"})
    assert getattr(intent, field) == getattr(PodIntent(), field)
    assert len(intent.problems) == 1
    assert key in intent.problems[0]
    assert "default" in intent.problems[0]
    # The other annotations are still read.
    assert intent.job == "j"


def test_unknown_wattplane_annotation_is_reported() -> None:
    intent = parse_pod_annotations({"wattplane.io/prioritee": "high"})
    assert intent.priority == DEFAULT_PRIORITY
    assert intent.problems == ("unknown annotation 'wattplane.io/prioritee' ignored",)


def test_blank_names_are_absent_not_empty() -> None:
    intent = parse_pod_annotations({ann.JOB: "  ", ann.POLICY: "", ann.PROGRESS_METRIC: " "})
    assert intent.job is None
    assert intent.policy is None
    assert intent.progress_metric is None
    assert intent.problems == ()


@pytest.mark.parametrize("key", sorted(ann.KNOWN - {ann.JOB, ann.POLICY, ann.PROGRESS_METRIC, ann.SERVING_METRICS}))
def test_a_huge_garbage_value_is_quoted_shortly_in_the_problem(key: str) -> None:
    # The problem becomes a Kubernetes event message: it must stay short whatever the value.
    intent = parse_pod_annotations({key: "x" * 100_000})
    assert len(intent.problems) == 1
    assert len(intent.problems[0]) < 300


_KEYS = st.sampled_from([*sorted(ann.KNOWN), "wattplane.io/bogus", "other.io/priority", "wattplane.io/"])


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.one_of(_KEYS, st.text(max_size=30)), st.text(max_size=40), max_size=10))
def test_arbitrary_annotations_never_raise_and_always_give_usable_values(annotations: dict[str, str]) -> None:
    intent = parse_pod_annotations(annotations)
    assert 0 <= intent.priority <= 1000
    assert intent.workload in (None, "training", "inference")
    assert isinstance(intent.opt_out, bool)
    if intent.min_power_watts is not None:
        assert math.isfinite(intent.min_power_watts) and intent.min_power_watts > 0
    if intent.max_slowdown is not None:
        assert 0 < intent.max_slowdown <= 10
    for name in (intent.job, intent.policy, intent.progress_metric):
        assert name is None or (name and name == name.strip())
    ours = [k for k in annotations if k.startswith(ann.PREFIX)]
    assert len(intent.problems) <= len(ours)
    assert all(len(problem) <= 1024 for problem in intent.problems)  # event message limit


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=20))
def test_a_value_is_either_read_or_reported_never_silently_dropped(raw: str) -> None:
    intent = parse_pod_annotations({ann.MIN_POWER_WATTS: raw})
    assert (intent.min_power_watts is None) == (len(intent.problems) == 1)
