"""The ``kubectl -l`` selector syntax: what each form means, and readable refusals of bad strings.

The control-plane test ``tests/controlplane/test_sharded_operators.py`` also checks the parsed
selectors against the API server's own ``labelSelector`` filtering of real Nodes.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wattplane.api.selectors import LabelSelector
from wattplane.api.selectorsyntax import SelectorSyntaxError, format_selector, parse_selector


def _wire(text: str) -> dict[str, object]:
    return parse_selector(text).model_dump(by_alias=True, exclude_defaults=True)


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        ("", {}),
        ("   ", {}),
        ("pool=a", {"matchLabels": {"pool": "a"}}),
        ("pool==a", {"matchLabels": {"pool": "a"}}),
        (" pool = a ", {"matchLabels": {"pool": "a"}}),
        ("pool=", {"matchLabels": {"pool": ""}}),
        ("example.com/pool=a-1.b_2", {"matchLabels": {"example.com/pool": "a-1.b_2"}}),
        ("pool!=a", {"matchExpressions": [{"key": "pool", "operator": "NotIn", "values": ["a"]}]}),
        ("pool in (a,b)", {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a", "b"]}]}),
        ("pool in(a, b )", {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a", "b"]}]}),
        ("pool notin (c)", {"matchExpressions": [{"key": "pool", "operator": "NotIn", "values": ["c"]}]}),
        ("gpu-pool", {"matchExpressions": [{"key": "gpu-pool", "operator": "Exists"}]}),
        ("!gpu-pool", {"matchExpressions": [{"key": "gpu-pool", "operator": "DoesNotExist"}]}),
        ("in=notin", {"matchLabels": {"in": "notin"}}),  # keywords only where an operator goes
        (
            "pool=a,tier in (train,serve),!spot",
            {
                "matchLabels": {"pool": "a"},
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["train", "serve"]},
                    {"key": "spot", "operator": "DoesNotExist"},
                ],
            },
        ),
        ("a=x,a=y", {"matchLabels": {"a": "x"}, "matchExpressions": [{"key": "a", "operator": "In", "values": ["y"]}]}),
    ],
)
def test_each_form_becomes_the_label_selector_it_means(text: str, wire: dict[str, object]) -> None:
    assert _wire(text) == wire


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("pool=a", {"pool": "a"}, True),
        ("pool=a", {"pool": "b"}, False),
        ("pool=a", {}, False),
        ("pool!=a", {}, True),  # as on the API server: a missing key is "not a"
        ("pool!=a", {"pool": "a"}, False),
        ("pool notin (a,b)", {}, True),
        ("pool in (a,b)", {"pool": "b"}, True),
        ("pool in (a,b)", {}, False),
        ("gpu-pool", {"gpu-pool": ""}, True),
        ("!gpu-pool", {"gpu-pool": ""}, False),
        ("pool=", {"pool": ""}, True),
        ("pool=", {}, False),
        ("a=x,a=y", {"a": "x"}, False),
        ("pool=a,!spot", {"pool": "a", "spot": "true"}, False),
        ("", {"anything": "x"}, True),
    ],
)
def test_matching_follows_the_api_server(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_selector(text).matches(labels) is expected


@pytest.mark.parametrize(
    ("text", "position", "words"),
    [
        ("pool in ()", 9, "need at least one value"),
        ("pool notin ()", 12, "need at least one value"),
        ("pool in (a", 10, "expected ',' or ')'"),
        ("pool in a", 8, "expected '('"),
        ("pool>3", 4, "compares numbers"),
        ("pool < 3", 5, "compares numbers"),
        ("=a", 0, "expected a label key, found '='"),
        ("pool=a b", 7, "expected ',' between requirements"),
        ("pool=a,", 7, "a requirement must follow ','"),
        (",pool=a", 0, "expected a label key"),
        ("pool !a", 5, "expected an operator"),
        ("pool=-a", 5, "value '-a'"),
        ("pool=" + "x" * 64, 5, "1 to 63 characters"),
        ("Example.com/pool=a", 0, "prefix before '/' must be a DNS subdomain"),
        ("/pool=a", 0, "prefix before '/'"),
        ("-pool=a", 0, "key '-pool'"),
        ("!", 1, "expected a label key, found the end"),
        ("pool in (a,b", 12, "expected ',' or ')'"),
    ],
)
def test_bad_strings_are_refused_with_where_and_why(text: str, position: int, words: str) -> None:
    with pytest.raises(SelectorSyntaxError) as caught:
        parse_selector(text)
    message = str(caught.value)
    assert message.startswith(f"label selector {text!r}, at position {position}: "), message
    assert words in message
    assert isinstance(caught.value, ValueError)  # settings validation turns it into a settings error


_names = st.from_regex(r"\A[a-z0-9]([-a-z0-9_.]{0,8}[a-z0-9])?\Z")
_requirement = st.one_of(
    st.tuples(_names, st.just("="), _names.map(lambda v: [v])),
    st.tuples(_names, st.sampled_from(["In", "NotIn"]), st.lists(_names, min_size=1, max_size=3)),
    st.tuples(_names, st.sampled_from(["Exists", "DoesNotExist"]), st.just([])),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_requirement, max_size=5), st.dictionaries(_names, _names, max_size=4))
def test_format_reads_back_to_the_same_selector(reqs: list[tuple[str, str, list[str]]], labels: dict[str, str]) -> None:
    match_labels = {k: v[0] for k, op, v in reqs if op == "="}
    expressions = [{"key": k, "operator": op, "values": v} for k, op, v in reqs if op != "="]
    selector = LabelSelector.model_validate({"matchLabels": match_labels, "matchExpressions": expressions})
    again = parse_selector(format_selector(selector))
    assert again == selector
    assert again.matches(labels) == selector.matches(labels)
