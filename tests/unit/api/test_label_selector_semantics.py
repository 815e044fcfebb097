"""LabelSelector matching and validation follow the Kubernetes API server's rules."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from wattplane.api.selectors import LabelSelector, LabelSelectorRequirement


def _sel(**wire: object) -> LabelSelector:
    return LabelSelector.model_validate(wire)


LABELS = {"team": "nlp", "tier": "gold"}


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({}, {}, True),
        ({}, LABELS, True),
        ({"matchLabels": {"team": "nlp"}}, LABELS, True),
        ({"matchLabels": {"team": "cv"}}, LABELS, False),
        ({"matchLabels": {"team": "nlp", "tier": "gold"}}, LABELS, True),
        ({"matchLabels": {"team": "nlp", "tier": "silver"}}, LABELS, False),
        ({"matchLabels": {"team": "nlp"}}, {}, False),
        ({"matchExpressions": [{"key": "team", "operator": "In", "values": ["cv", "nlp"]}]}, LABELS, True),
        ({"matchExpressions": [{"key": "team", "operator": "In", "values": ["cv"]}]}, LABELS, False),
        ({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}, LABELS, False),
        ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["cv"]}]}, LABELS, True),
        ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["nlp"]}]}, LABELS, False),
        # NotIn matches objects that lack the key altogether (as in Kubernetes).
        ({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}, LABELS, True),
        ({"matchExpressions": [{"key": "team", "operator": "Exists"}]}, LABELS, True),
        ({"matchExpressions": [{"key": "zone", "operator": "Exists"}]}, LABELS, False),
        ({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}, LABELS, True),
        ({"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}, LABELS, False),
        # An empty label value still "exists".
        ({"matchExpressions": [{"key": "team", "operator": "Exists"}]}, {"team": ""}, True),
        # matchLabels AND matchExpressions.
        (
            {"matchLabels": {"team": "nlp"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["x"]}]},
            LABELS,
            False,
        ),
        (
            {
                "matchLabels": {"team": "nlp"},
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["gold"]},
                    {"key": "zone", "operator": "DoesNotExist"},
                ],
            },
            LABELS,
            True,
        ),
    ],
)
def test_matching(selector: dict[str, object], labels: dict[str, str], expected: bool) -> None:
    assert _sel(**selector).matches(labels) is expected


@pytest.mark.parametrize(
    "requirement",
    [
        {"key": "a", "operator": "In"},
        {"key": "a", "operator": "In", "values": []},
        {"key": "a", "operator": "NotIn", "values": []},
        {"key": "a", "operator": "Exists", "values": ["x"]},
        {"key": "a", "operator": "DoesNotExist", "values": ["x"]},
        {"key": "a", "operator": "Gt", "values": ["1"]},
        {"key": "a", "operator": "in", "values": ["x"]},
        {"key": "", "operator": "Exists"},
        {"operator": "Exists"},
        {"key": "a", "operator": "Exists", "valuez": []},
    ],
)
def test_invalid_requirements_are_rejected(requirement: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        LabelSelectorRequirement.model_validate(requirement)


def test_unknown_selector_field_is_rejected() -> None:
    with pytest.raises(ValidationError):
        LabelSelector.model_validate({"matchLabel": {"a": "b"}})


def test_wire_round_trip_is_camel_case() -> None:
    wire = {"matchLabels": {"a": "b"}, "matchExpressions": [{"key": "k", "operator": "In", "values": ["v"]}]}
    assert LabelSelector.model_validate(wire).to_wire() == wire


_key = st.sampled_from(["a", "b", "c"])
_value = st.sampled_from(["x", "y", ""])
_labels = st.dictionaries(_key, _value, max_size=3)


@settings(max_examples=200, deadline=None)
@given(_labels, _key, st.lists(_value, min_size=1, max_size=3))
def test_in_and_notin_are_complements(labels: dict[str, str], key: str, values: list[str]) -> None:
    is_in = LabelSelectorRequirement(key=key, operator="In", values=values).matches(labels)
    not_in = LabelSelectorRequirement(key=key, operator="NotIn", values=values).matches(labels)
    assert is_in != not_in
    assert is_in == (key in labels and labels[key] in values)


@settings(max_examples=100, deadline=None)
@given(_labels, _key)
def test_exists_and_doesnotexist_are_complements(labels: dict[str, str], key: str) -> None:
    exists = LabelSelectorRequirement(key=key, operator="Exists").matches(labels)
    absent = LabelSelectorRequirement(key=key, operator="DoesNotExist").matches(labels)
    assert exists != absent
    assert exists == (key in labels)


@settings(max_examples=200, deadline=None)
@given(_labels, _labels)
def test_match_labels_is_subset_of_labels(wanted: dict[str, str], labels: dict[str, str]) -> None:
    matches = LabelSelector(match_labels=wanted).matches(labels)
    assert matches == (wanted.items() <= labels.items())
