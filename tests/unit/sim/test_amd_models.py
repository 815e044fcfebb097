"""AMD Instinct boards in the simulator's catalogue: published limits, curves modelled from the A40, CLI runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from wattplane.agent.gpu import simmodels
from wattplane.cli.main import main
from wattplane.sim.catalog import Catalog


@pytest.mark.parametrize(("model", "max_watts"), [("MI300X", 750.0), ("MI250X", 560.0)])
def test_amd_boards_use_their_published_peak_board_power_as_default_and_top_limit(model: str, max_watts: float) -> None:
    spec = Catalog.builtin().model(model)
    assert (spec.max_watts, spec.default_watts) == (max_watts, max_watts)
    assert 0 < spec.idle_watts < spec.min_watts < spec.max_watts
    assert model in simmodels.MODELLED_MODELS


@pytest.mark.parametrize("model", ["MI300X", "MI250X"])
def test_amd_curves_are_the_a40_shape_scaled_and_say_they_are_modelled(model: str) -> None:
    catalog = Catalog.builtin()
    amd = catalog.workload(model, "imagenet/resnet50")
    a40 = catalog.workload("A40", "imagenet/resnet50")
    assert amd.source.startswith("modelled")
    assert "no measurement" in amd.source
    ratio = catalog.model(model).default_watts / catalog.model("A40").default_watts
    assert amd.curve.limits == pytest.approx([x * ratio for x in a40.curve.limits])
    # Same relative slowdown at the same fraction of the limit range: the shape is borrowed, not invented.
    amd_slowdown = [t / amd.curve.uncapped_seconds_per_unit for t in amd.curve.seconds_per_unit]
    a40_slowdown = [t / a40.curve.uncapped_seconds_per_unit for t in a40.curve.seconds_per_unit]
    assert amd_slowdown == pytest.approx(a40_slowdown)
    assert amd_slowdown[0] > 1.0  # capping at the bottom of the range does cost time
    # Faster than the A40 when nothing binds (higher published peak BF16).
    assert amd.uncapped_seconds_per_epoch < a40.uncapped_seconds_per_epoch


def test_simulate_runs_a_fleet_of_mi300x(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    args = ["--fleet", "2x8xMI300X", "--duration", "2h", "--baseline", "static-cap", "--quiet", "--json", str(out)]
    code = main(["simulate", *args])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["scenario"]["gpus"] == 16
    assert report["scenario"]["nameplate_watts"] == pytest.approx(16 * 750.0)
    runs = {run["name"]: run for run in report["runs"]}
    assert runs["uncapped"]["energy_kwh"] > 0
    assert runs["static-cap"]["energy_kwh"] < runs["uncapped"]["energy_kwh"]
