"""``wattplane simulate --price-trace``: the energy cost beside carbon, price baselines, the weight flag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from wattplane.cli.main import main

SHIPPED = Path(__file__).resolve().parents[3] / "operator" / "wattplane" / "sim" / "data"
BASE = [
    "simulate",
    "--fleet",
    "1x8xA40",
    "--duration",
    "12h",
    "--quiet",
    "--carbon-trace",
    str(SHIPPED / "electricitymaps_DE-LU_2023_hourly.csv"),
    "--start",
    "2023-07-04T00:00Z",
]


def test_the_cost_is_printed_and_written_beside_carbon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.json"
    price = SHIPPED / "energycharts_dayahead_DE-LU_2023_hourly.csv"
    args = [*BASE, "--price-trace", str(price), "--baseline", "price-budget", "--baseline", "price-oracle"]
    assert main([*args, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "cost EUR" in text and "of energy cost saved" in text
    assert "Bundesnetzagentur | SMARD.de, via Energy-Charts.info" in text  # the CC BY attribution
    data = json.loads(out.read_text())
    assert data["scenario"]["price_trace"] == price.name and data["scenario"]["price_unit"] == "EUR/MWh"
    runs = {r["name"]: r for r in data["runs"]}
    assert set(runs) == {"uncapped", "price-budget", "price-oracle"}
    assert all(r["cost_currency"] == "EUR" and "cost" in r["jobs"][0] for r in runs.values())
    assert runs["price-budget"]["cost"] < runs["uncapped"]["cost"]
    assert runs["price-budget"]["vs_uncapped"]["cost_change"] < 0
    assert sum(j["cost"] for j in runs["uncapped"]["jobs"]) == pytest.approx(runs["uncapped"]["cost"])


def test_price_runs_without_a_price_trace_and_bad_weights_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*BASE, "--baseline", "price-oracle"]) == 2
    assert "--price-trace" in capsys.readouterr().err
    price = SHIPPED / "energycharts_dayahead_DE-LU_2023_hourly.csv"
    assert main([*BASE, "--price-trace", str(price), "--baseline", "price-budget", "--price-weight", "1.5"]) == 2
    assert "outside 0 … 1" in capsys.readouterr().err
