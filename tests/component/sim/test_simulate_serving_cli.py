"""``wattplane simulate`` with LLM services: the Azure trace on H100s, uncapped against the serving policy.

The serving figures are modelled (:mod:`wattplane.sim.inference`); what is checked here is the whole
path: the CLI reads the trace into LLM services, the real planner, agent and the operator's serving
controller steer their GPUs, and the report carries joules per token and minutes above the SLO.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from wattplane.cli.main import main

SHIPPED = Path(__file__).resolve().parents[3] / "operator" / "wattplane" / "sim" / "data"
AZURE = SHIPPED / "azure_llm_inference_trace_2023_conv.csv"
POLICY = SHIPPED / "policies" / "serving.yaml"


def test_the_serving_policy_lowers_joules_per_token_within_the_slo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "serving.json"
    args = ["simulate", "--fleet", "1x8xH100", "--jobs", str(AZURE), "--inference-gpus", "8", "--duration", "2h"]
    assert main([*args, "--quiet", "--policy", str(POLICY), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.count("LLM serving (modelled): 8 services") == 2
    assert "above p90 TPOT 100 ms / TTFT 2 s" in text
    data = json.loads(out.read_text())
    assert data["scenario"]["serving_slo_ms"] == {"tpot_p90": 100.0, "ttft_p90": 2000.0}
    uncapped, policy = data["runs"]  # the policy file's run is named after it (its policy is "serving")
    assert uncapped["name"] == "uncapped" and policy["name"].startswith("serving")
    base, capped = uncapped["serving"], policy["serving"]
    assert base["modelled"] is True and len(capped["services"]) == 8
    assert base["output_tokens"] == pytest.approx(capped["output_tokens"], rel=1e-6)  # same requests served
    assert capped["joules_per_token"] < base["joules_per_token"] * 0.9
    assert policy["vs_uncapped"]["joules_per_token_change"] < -0.1
    minutes = base["service_minutes"]
    assert minutes == capped["service_minutes"] == 8 * 120
    assert capped["slo_minutes"] <= base["slo_minutes"] + 0.005 * minutes
    service = capped["services"][0]
    assert service["joules_per_token"] == pytest.approx(service["energy_kwh"] * 3.6e6 / service["output_tokens"])


def test_the_serving_baseline_and_the_slo_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "strict.json"
    args = ["simulate", "--fleet", "1x2xH100", "--jobs", str(AZURE), "--inference-gpus", "2", "--duration", "20m"]
    assert main([*args, "--quiet", "--baseline", "serving", "--slo-tpot-ms", "5", "--json", str(out)]) == 0
    assert "above p90 TPOT 5 ms / TTFT 2 s" in capsys.readouterr().out
    runs = {r["name"]: r for r in json.loads(out.read_text())["runs"]}
    # No replica decodes a token in 5 ms: every minute is above that objective, in both runs.
    assert runs["uncapped"]["serving"]["slo_minutes"] == runs["uncapped"]["serving"]["service_minutes"] == 40


def test_reports_without_llm_services_keep_their_keys(tmp_path: Path) -> None:
    out = tmp_path / "a40.json"
    args = ["simulate", "--fleet", "1x4xA40", "--jobs", str(AZURE), "--inference-gpus", "2", "--duration", "1h"]
    assert main([*args, "--quiet", "--baseline", "static-cap", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert "serving_slo_ms" not in data["scenario"]
    for run in data["runs"]:
        assert "serving" not in run
        assert "joules_per_token_change" not in run["vs_uncapped"]
