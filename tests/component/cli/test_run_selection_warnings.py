"""``wattplane run`` says when a policy would govern none of the local GPUs, and which flags would fix it."""

from __future__ import annotations

from typing import Any

from wattplane.api.v1alpha1.energypolicy import EnergyPolicySpec
from wattplane.cli.run import selection_warnings
from wattplane.planner.snapshot import PolicyView


def policy(name: str, **spec: Any) -> PolicyView:
    return PolicyView(name=name, spec=EnergyPolicySpec.model_validate(spec), generation=1)


CAP = {"limits": {"maxWatts": 200}}


def test_match_labels_and_expressions_give_the_labels_to_add() -> None:
    selector = {
        "podSelector": {
            "matchLabels": {"team": "nlp"},
            "matchExpressions": [
                {"key": "wattplane.io/workload", "operator": "In", "values": ["training", "batch"]},
                {"key": "gpu", "operator": "Exists"},
            ],
        }
    }
    (warning,) = selection_warnings([policy("nlp", selector=selector, **CAP)], {"team": "cv"}, {})
    assert "policy nlp selects none of the local GPUs (they carry team=cv)" in warning
    assert "--label gpu=<any value> --label team=nlp --label wattplane.io/workload=training" in warning
    assert selection_warnings([policy("nlp", selector=selector, **CAP)], {
        "team": "nlp", "wattplane.io/workload": "batch", "gpu": "a40"}, {}) == []  # fmt: skip


def test_a_label_that_excludes_the_gpus_is_named_for_removal() -> None:
    selector = {"podSelector": {"matchExpressions": [{"key": "interactive", "operator": "DoesNotExist"}]}}
    (warning,) = selection_warnings([policy("batch", selector=selector, **CAP)], {"interactive": "yes"}, {})
    assert "no --label interactive=..." in warning


def test_unmatchable_selectors_point_to_the_policy_annotation() -> None:
    ns = {"namespaceSelector": {"matchLabels": {"team": "nlp"}}}
    (warning,) = selection_warnings([policy("ns-only", selector=ns, **CAP)], {}, {})
    assert "namespaceSelector can never match here" in warning
    assert "--annotation wattplane.io/policy=ns-only" in warning
    assert selection_warnings([policy("ns-only", selector=ns, **CAP)], {}, {"wattplane.io/policy": "ns-only"}) == []
    clash = {
        "podSelector": {
            "matchLabels": {"a": "x"},
            "matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["x"]}],
        }
    }
    (never,) = selection_warnings([policy("clash", selector=clash, **CAP)], {}, {})
    assert "no set of --label flags matches its podSelector" in never


def test_opt_out_bad_annotations_and_a_budget_for_other_nodes_are_reported() -> None:
    (out,) = selection_warnings([policy("cap", **CAP)], {}, {"wattplane.io/opt-out": "true"})
    assert "opted out" in out
    bad = selection_warnings([policy("cap", **CAP)], {}, {"wattplane.io/priority": "urgent"})
    assert len(bad) == 1 and "wattplane.io/priority" in bad[0] and "urgent" in bad[0]
    rack = policy("rack", budget={"watts": 900, "nodeSelector": {"matchLabels": {"rack": "r1"}}})
    (budget,) = selection_warnings([rack], {}, {})
    assert "budget.nodeSelector matches no node here" in budget
    assert selection_warnings([policy("all", **CAP), policy("rack", budget={"watts": 900})], {}, {}) == []
