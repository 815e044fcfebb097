"""The chart's PrometheusRule, rendered by helm, checked and exercised by Prometheus' own ``promtool``.

``check rules`` parses every expression and field the way Prometheus will; ``test rules`` evaluates
the alerts over synthetic series shaped like the agents' pages (snake_case labels, the NaN budget
of a node without one, error counters that start at zero) and asserts exactly which alerts fire.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from helmtool import find
from promtool import check_rules, require_promtool
from promtool import test_rules as run_rule_tests

Render = Callable[..., list[dict[str, Any]]]
HOST_A, HOST_B = "gpu-a", "gpu-b"


def _groups(rendered: Render) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = find(rendered({"prometheusRule": {"enabled": True}}), "PrometheusRule")["spec"][
        "groups"
    ]
    return groups


def _rules_file(groups: list[dict[str, Any]], directory: Path) -> Path:
    path = directory / "wattplane-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def test_rendered_rules_pass_promtool_check(rendered: Render, tmp_path: Path) -> None:
    promtool = require_promtool()
    result = check_rules(promtool, _rules_file(_groups(rendered), tmp_path))
    assert result.returncode == 0, result.output
    assert "SUCCESS: 4 rules found" in result.output


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def _annotations(groups: list[dict[str, Any]], alert: str, labels: dict[str, str]) -> dict[str, str]:
    """The alert's annotations with ``{{ $labels.x }}`` filled in, as Prometheus renders them."""
    rule = next(r for r in groups[0]["rules"] if r.get("alert") == alert)
    out = {}
    for key, text in rule["annotations"].items():
        for name, value in labels.items():
            text = text.replace(f"{{{{ $labels.{name} }}}}", value)
        out[key] = text
    return out


def test_budget_alert_fires_only_where_a_budget_is_set_and_errors_alert_on_the_first_failure(
    rendered: Render, tmp_path: Path
) -> None:
    """Node A is 20 % over its budget; node B has none (NaN) and draws a lot; one GPU fails once."""
    promtool = require_promtool()
    groups = _groups(rendered)
    rules = _rules_file(groups, tmp_path)
    a, b = {"hostname": HOST_A}, {"hostname": HOST_B}
    failing = {"uuid": "GPU-1", "hostname": HOST_A, "reason": "NoPermission"}
    breach_labels = {"severity": "critical", **a}
    error_labels = {"severity": "warning", **failing}
    spec: dict[str, Any] = {
        "rule_files": [rules.name],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    _series("wattplane_node_gpu_power_watts", a, "1200x20"),
                    _series("wattplane_node_power_budget_watts", a, "1000x20"),
                    _series("wattplane_node_power_budget_set", a, "1x20"),
                    _series("wattplane_node_gpu_power_watts", b, "5000x20"),
                    _series("wattplane_node_power_budget_watts", b, " ".join(["NaN"] * 21)),
                    _series("wattplane_node_power_budget_set", b, "0x20"),
                    # Starts at 0 (as the agent exports it), so the very first failure is an increase.
                    _series("wattplane_agent_apply_errors_total", failing, "0 0 0 1x17"),
                    _series("wattplane_agent_apply_errors_total", {**failing, "reason": "GpuLost"}, "0x20"),
                ],
                "alert_rule_test": [
                    {"eval_time": "3m", "alertname": "WattplaneNodeBudgetBreached", "exp_alerts": []},  # pending
                    {
                        "eval_time": "10m",
                        "alertname": "WattplaneNodeBudgetBreached",
                        "exp_alerts": [
                            {
                                "exp_labels": breach_labels,
                                "exp_annotations": _annotations(groups, "WattplaneNodeBudgetBreached", a),
                            }
                        ],
                    },
                    {"eval_time": "2m", "alertname": "WattplaneApplyErrors", "exp_alerts": []},
                    {
                        "eval_time": "5m",
                        "alertname": "WattplaneApplyErrors",
                        "exp_alerts": [
                            {
                                "exp_labels": error_labels,
                                "exp_annotations": _annotations(groups, "WattplaneApplyErrors", failing),
                            }
                        ],
                    },
                ],
            }
        ],
    }
    test_file = tmp_path / "wattplane-rules-test.yaml"
    test_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = run_rule_tests(promtool, test_file)
    assert result.returncode == 0, result.output
    assert "SUCCESS" in result.output
