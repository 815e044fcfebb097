"""Every simulator input format, parsed from real files (shipped traces and slices of the public ones)."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from wattplane.carbon.trace import load_trace
from wattplane.sim.carbon import CarbonTrack
from wattplane.sim.catalog import Catalog
from wattplane.sim.fleet import RACK_LABEL, expand, nameplate_watts, parse_fleet
from wattplane.sim.jobs import Demand, parse_size, read_simple_csv, synthetic_training
from wattplane.sim.traces import azure_demand, detect_jobs_format, read_alibaba, read_jobs

DATA = Path(__file__).parent / "data"
SHIPPED = Path(__file__).resolve().parents[3] / "operator" / "wattplane" / "sim" / "data"
CISO = SHIPPED / "electricitymaps_US-CAL-CISO_2023_hourly.csv"
ZEUS_A40 = (
    Path(__file__).resolve().parents[3]
    / "agent"
    / "wattplane"
    / "agent"
    / "gpu"
    / "data"
    / "zeus_summary_power_a40.csv"
)


def test_short_fleet_forms_expand_to_named_racked_nodes() -> None:
    nodes = expand(parse_fleet("10x8xA40+2x4xV100"))
    assert [n.gpus for n in nodes] == [8] * 10 + [4] * 2
    assert nodes[0].name == "a40-000" and nodes[-1].name == "v100-001"
    assert len({n.name for n in nodes}) == 12
    assert nodes[7].labels[RACK_LABEL] == "rack-0" and nodes[8].labels[RACK_LABEL] == "rack-1"
    assert nodes[10].labels[RACK_LABEL] != nodes[9].labels[RACK_LABEL]  # a new group starts a new rack
    assert nameplate_watts(nodes, {"A40": 300.0, "V100": 250.0}) == 80 * 300 + 8 * 250


def test_yaml_fleet_with_labels(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(
        "- {nodes: 2, gpusPerNode: 8, model: A40, namePrefix: east, labels: {zone: a}}\n"
        "- {nodes: 1, gpusPerNode: 2, model: V100, nodesPerRack: 1}\n"
    )
    nodes = expand(parse_fleet(str(path)))
    assert [n.name for n in nodes] == ["east-000", "east-001", "v100-000"]
    assert nodes[0].labels["zone"] == "a" and nodes[2].model == "V100"


@pytest.mark.parametrize("text", ["", "64x8", "0x8xA40", "8x0xA40", "64 by 8"])
def test_bad_fleets_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_fleet(text)


def test_simple_csv_sizes_kinds_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "jobs.csv"
    path.write_text(
        "submit_time,gpus,workload,duration_or_epochs,priority,kind,load\n"
        "0,1,imagenet/resnet50,3h,normal,training,\n"
        "600,4,,12,high,training,\n"
        "0,1,squad/bert_base_uncased,,high,inference,0.25\n"
    )
    jobs = read_simple_csv(path)
    assert [j.duration_s for j in jobs] == [10800.0, None, None]
    assert jobs[1].epochs == 12 and jobs[1].gpus == 4 and jobs[1].workload == ""
    assert jobs[2].kind == "inference" and jobs[2].demand == Demand.constant(0.25)
    assert parse_size("45m") == (None, 2700.0) and parse_size("2.5") == (2.5, None)
    path.write_text("submit_time,gpus,workload,duration_or_epochs,priority,kind\n0,1,x,3h,urgent,training\n")
    with pytest.raises(ValueError, match=r"jobs.csv:2: priority"):
        read_simple_csv(path)


def test_alibaba_slice_is_replayed_in_order_at_the_requested_load() -> None:
    path = DATA / "alibaba_pods_slice.csv"
    assert detect_jobs_format(path) == "alibaba"
    jobs = read_alibaba(path, duration_s=3600.0, fleet_gpus=16, offset_s=10_368_000.0, utilisation=0.5)
    assert jobs and jobs[0].submit_s == 0.0
    assert all(a.submit_s <= b.submit_s for a, b in itertools.pairwise(jobs))
    assert all(0 <= j.submit_s <= 3600.0 for j in jobs)
    offered = sum(j.gpus * min(j.duration_s or 0.0, 3600.0) for j in jobs)
    last = jobs[-1].gpus * min(jobs[-1].duration_s or 0.0, 3600.0)
    assert offered - last < 0.5 * 16 * 3600.0 <= offered  # stops at the first pod reaching the load
    kinds = {(j.kind, j.priority) for j in jobs}
    assert kinds <= {("inference", "high"), ("training", "low"), ("training", "normal")}
    assert jobs == read_alibaba(path, duration_s=3600.0, fleet_gpus=16, offset_s=10_368_000.0, utilisation=0.5)


def test_azure_slice_becomes_a_bounded_demand_profile() -> None:
    path = DATA / "azure_llm_conv_slice.csv"
    assert detect_jobs_format(path) == "azure"
    demand = azure_demand(path, step_s=10.0, peak_load=0.8)
    assert max(demand.values) == pytest.approx(0.8) and min(demand.values) >= 0.0
    assert demand.at(0.0) == demand.values[0] and demand.at(10.0 * len(demand.values)) == demand.values[0]
    services = read_jobs(path, duration_s=3600.0, fleet_gpus=16, inference_gpus=3)
    assert [s.id for s in services] == ["azure-000", "azure-001", "azure-002"]
    assert all(s.kind == "inference" and s.priority == "high" for s in services)


def test_synthetic_mix_is_deterministic_and_sized_to_the_fleet() -> None:
    families = Catalog.builtin().families("A40")
    a = synthetic_training(seed=3, duration_s=86400.0, fleet_gpus=64, workloads=families, utilisation=0.6)
    assert a == synthetic_training(seed=3, duration_s=86400.0, fleet_gpus=64, workloads=families, utilisation=0.6)
    assert a != synthetic_training(seed=4, duration_s=86400.0, fleet_gpus=64, workloads=families, utilisation=0.6)
    offered = sum(j.gpus * (j.duration_s or 0.0) for j in a) / (64 * 86400.0)
    assert 0.3 < offered < 1.2


def test_carbon_track_follows_the_shipped_electricity_maps_file() -> None:
    series = load_trace(CISO)
    start = datetime(2023, 6, 1, 12, 30, tzinfo=UTC)
    track = CarbonTrack.load(CISO, start)
    row = series.index_at(start)
    assert row is not None
    assert track.at(0.0) == series.values[row]
    assert track.next_change(0.0) == pytest.approx(1800.0)  # 13:00 UTC
    assert track.at(1800.0) == series.values[row + 1]
    signal = track.input_at(0.0, lookahead_h=24.0, history_h=6.0)
    assert signal.intensity == series.values[row] and signal.time == start.replace(minute=0)
    assert len(signal.forecast) == 24 and signal.forecast[0] == (
        start.replace(minute=0) + timedelta(hours=1),
        series.values[row + 1],
    )
    assert [v for _, v in signal.history] == list(series.values[row - 6 : row])
    assert track.forecast_kind == "perfect foresight" and "ODbL" in track.attribution
    end = CarbonTrack.load(CISO, datetime(2023, 12, 31, 23, tzinfo=UTC))
    assert end.at(3600.0) == series.values[0]  # wraps around past the end


def test_carbon_track_hands_over_recorded_sgip_forecasts() -> None:
    track = CarbonTrack.load(DATA / "sgip_moer_forecasts_slice.csv")
    series = track.series
    signal = track.input_at(0.0, lookahead_h=1.0)
    assert series.forecasts is not None
    assert [v for _, v in signal.forecast] == list(series.forecasts[0][:12])
    assert signal.forecast[0][1] != series.values[1]  # a real forecast, not the trace's future
    assert track.forecast_kind == "recorded" and math.isclose(track.next_change(0.0), 300.0)


def test_gpu_profiles_add_models_and_override_families(tmp_path: Path) -> None:
    builtin = Catalog.builtin()
    assert {"A40", "V100", "P100"} <= set(builtin.models)
    assert builtin.workload("A40", "imagenet/resnet50").name == "imagenet/resnet50@256:adadelta"
    assert len(builtin.families("A40")) == 6
    header, *rows = ZEUS_A40.read_text().splitlines()
    halved_rows = []
    for row in rows:
        cells = row.split(",")
        if cells[:3] == ["imagenet", "resnet50", "256"]:
            cells[5] = str(float(cells[5]) / 2)  # time_per_epoch: a board twice as fast
            halved_rows.append(",".join(cells))
    mine = tmp_path / "mine.csv"
    mine.write_text("\n".join([header, *halved_rows]) + "\n")
    custom = builtin.with_profiles([f"A40={mine}"])
    assert custom.families("A40") == builtin.families("A40")
    fast = custom.workload("A40", "imagenet/resnet50").curve
    slow = builtin.workload("A40", "imagenet/resnet50").curve
    assert fast.time_per_unit(250.0) == pytest.approx(slow.time_per_unit(250.0) / 2)
    assert "mine.csv" in custom.workload("A40", "imagenet/resnet50").source
    l4_file = tmp_path / "sweep_l4.csv"
    l4_file.write_text(mine.read_text())
    l4 = builtin.with_profiles([l4_file])
    assert l4.model("L4").max_watts == 300.0 and l4.families("L4") == ("imagenet/resnet50",)
    with pytest.raises(KeyError, match="unknown workload"):
        builtin.workload("A40", "mnist/lenet")
