"""``wattplane demo`` as a user runs it: the console script, no cluster, no GPU, files at the end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_quick_demo_runs_every_shipped_policy_and_writes_its_report(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "wattplane.cli.main", "demo", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = done.stdout
    for name in ("uncapped", "static-cap", "zeus", "chase", "carbon-oracle", "polca"):
        assert f"\n{name} " in text
    assert "kWh saved" in text and "Contains data from Electricity Maps" in text
    data = json.loads((out / "results.json").read_text())
    runs = {r["name"]: r for r in data["runs"]}
    assert runs["carbon-oracle"]["carbon_kg"] < runs["uncapped"]["carbon_kg"]
    assert runs["static-cap"]["energy_kwh"] < runs["uncapped"]["energy_kwh"]
    assert data["scenario"]["carbon_zone"] == "US-CAL-CISO"
    for name in ("fleet_power.png", "carbon_vs_cap.png", "savings.png"):
        assert (out / name).stat().st_size > 10_000


def test_the_german_grid_and_no_plots(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "wattplane.cli.main",
            "demo",
            "--quick",
            "--zone",
            "DE-LU",
            "--no-plots",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "results.json").read_text())["scenario"]["carbon_zone"] == "DE"
    assert not list(tmp_path.glob("*.png"))
