"""Trace loading on real files, plus the replay clock.

The Electricity Maps and SGIP-with-forecasts traces are the ones the simulator ships
(``operator/wattplane/sim/data``); the plain SGIP MOER year and the API sample are represented by
the small files in ``tests/data`` (see the NOTICE.md in each folder).
"""

from __future__ import annotations

import gzip
import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from repodata import SIM_DATA, TEST_DATA
from wattplane.carbon import SignalKind, TraceReplay, load_trace
from wattplane.carbon.errors import CarbonResponseError, CarbonValueError
from wattplane.carbon.testing import ManualClock
from wattplane.carbon.trace import detect_format

SGIP_FORECASTS = SIM_DATA / "sgip_moer_with_forecasts_CAISO_PGE_2020-08_5min.csv.gz"


@pytest.mark.parametrize(
    ("name", "zone", "mean_direct", "estimated"),
    [
        ("electricitymaps_US-CAL-CISO_2022_hourly.csv", "US-CAL-CISO", 196, 8),
        ("electricitymaps_DE-LU_2023_hourly.csv", "DE", 308, 30),
        ("electricitymaps_ZA_2023_hourly.csv", "ZA", 645, 153),
        ("electricitymaps_CA-ON_2023_hourly.csv", "CA-ON", 47, 13),
    ],
)
def test_electricitymaps_csv_matches_the_data_readme(name: str, zone: str, mean_direct: int, estimated: int) -> None:
    series = load_trace(SIM_DATA / name)
    assert series.format == "electricitymaps-csv" and series.kind is SignalKind.AVERAGE
    assert series.zone == zone and len(series) == 8760 and series.step == timedelta(hours=1)
    assert round(statistics.fmean(series.values)) == mean_direct
    assert series.estimated is not None and sum(series.estimated) == estimated
    assert series.times[0].tzinfo is not None and series.times[0].hour == 0


def test_lca_column_is_higher_than_direct() -> None:
    direct = load_trace(SIM_DATA / "electricitymaps_DE-LU_2022_hourly.csv")
    lca = load_trace(SIM_DATA / "electricitymaps_DE-LU_2022_hourly.csv", column="lca")
    assert direct.values[0] == 163.46 and lca.values[0] == 213.79
    assert round(statistics.fmean(lca.values)) == 478


def test_sgip_moer_is_converted_from_kg_to_g() -> None:
    # The first eight days of the 2020 file: its first row and the year's maximum (0.66375 kg/kWh).
    series = load_trace(TEST_DATA / "sgip_moer_CAISO_PGE_2020-01-01_to_08_5min.csv")
    assert series.format == "sgip-moer" and series.kind is SignalKind.MARGINAL
    assert len(series) == 8 * 288 and series.step == timedelta(minutes=5)
    assert series.values[0] == pytest.approx(220.925923834555)
    assert series.times[0] == datetime(2020, 1, 1, tzinfo=UTC)
    assert series.times[-1] == datetime(2020, 1, 8, 23, 55, tzinfo=UTC)
    assert max(series.values) == pytest.approx(663.75) and min(series.values) == 0
    assert series.times[series.values.index(max(series.values))] == datetime(2020, 1, 8, 15, 10, tzinfo=UTC)


def test_sgip_with_forecasts_from_gzip() -> None:
    series = load_trace(SGIP_FORECASTS)
    assert series.format == "sgip-moer-forecasts" and len(series) == 9504
    assert series.forecasts is not None and all(len(f) == 36 for f in series.forecasts[:10])
    assert series.forecasts[0][0] == pytest.approx(371.9006767037296)
    assert series.times[0] == datetime(2020, 7, 31, tzinfo=UTC)


def test_api_history_json_sample() -> None:
    series = load_trace(TEST_DATA / "electricitymaps_api_history_sample_US-MIDW-MISO.json")
    assert series.zone == "US-MIDW-MISO" and len(series) == 24 and series.values[0] == 501
    assert series.estimated is not None and series.estimated[0] is True


def test_detect_format_reads_only_the_header() -> None:
    assert detect_format(SGIP_FORECASTS) == "sgip-moer-forecasts"
    assert detect_format(SIM_DATA / "electricitymaps_ZA_2023_hourly.csv") == "electricitymaps-csv"


def test_plain_csv_and_its_errors(tmp_path: Path) -> None:
    good = tmp_path / "plain.csv"
    good.write_text("timestamp,gco2_per_kwh\n2024-01-01T00:00:00Z,100\n2024-01-01T00:30:00Z,120.5\n\n")
    series = load_trace(good, plain_kind=SignalKind.MARGINAL)
    assert series.values == (100.0, 120.5) and series.kind is SignalKind.MARGINAL
    assert series.step == timedelta(minutes=30) and series.value_at(series.end) is None

    cases = {
        "timestamp,gco2_per_kwh\n2024-01-01T00:00:00Z,-4\n": (CarbonValueError, "plain.csv:2.*negative"),
        "timestamp,gco2_per_kwh\n2024-01-01T01:00:00Z,1\n2024-01-01T00:00:00Z,2\n": (
            CarbonResponseError,
            "strictly increasing",
        ),
        "timestamp,gco2_per_kwh\n2024-01-01T00:00:00Z,lots\n": (CarbonResponseError, "not a number"),
        "when,what\n1,2\n": (CarbonResponseError, "unrecognised"),
        "timestamp,gco2_per_kwh\n": (CarbonValueError, "no rows"),
        "": (CarbonValueError, "empty"),
    }
    for text, (error, pattern) in cases.items():
        good.write_text(text)
        with pytest.raises(error, match=pattern):
            load_trace(good)


def test_gzip_plain_csv(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("timestamp,gco2_per_kwh\n2024-01-01 00:00,7\n")
    assert load_trace(path).values == (7.0,)


def _plain(tmp_path: Path, values: list[float]) -> Path:
    path = tmp_path / "p.csv"
    rows = [f"2024-01-01T{h:02d}:00:00Z,{v}" for h, v in enumerate(values)]
    path.write_text("timestamp,gco2_per_kwh\n" + "\n".join(rows) + "\n")
    return path


def test_replay_speedup_offset_and_wall_clock_stamps(tmp_path: Path) -> None:
    series = load_trace(_plain(tmp_path, [10, 20, 30, 40]))
    clock = ManualClock(datetime(2030, 5, 5, 12, 0, tzinfo=UTC))
    replay = TraceReplay(series, speedup=3600, start_offset=timedelta(minutes=30), clock=clock)
    assert replay.value() == 10
    clock.advance(0.5)  # 0.5 s × 3600 = 30 trace minutes → 01:00
    assert replay.value() == 20
    reading = replay.reading(zone="z", include_forecast=True, horizon=timedelta(hours=2))
    assert reading.timestamp == clock.now and reading.intensity_g_per_kwh == 20
    assert [p.intensity_g_per_kwh for p in reading.forecast] == [20, 30]
    assert reading.forecast[1].timestamp == clock.now + timedelta(seconds=1)  # one trace hour = 1 s
    assert reading.forecast[1].duration == timedelta(seconds=1)
    clock.advance(2.9)  # → 03:54
    assert replay.trace_time() == datetime(2024, 1, 1, 3, 54, tzinfo=UTC) and replay.value() == 40


def test_replay_loops_or_holds_at_the_end(tmp_path: Path) -> None:
    series = load_trace(_plain(tmp_path, [10, 20, 30]))
    clock = ManualClock(datetime(2030, 1, 1, tzinfo=UTC))
    looping = TraceReplay(series, speedup=3600, clock=clock)
    holding = TraceReplay(series, speedup=3600, loop=False, clock=clock)
    clock.advance(3.5)  # 3.5 trace hours into a 3-hour trace
    assert looping.value() == 10 and holding.value() == 30
    forecast = looping.reading(zone="z", include_forecast=True, horizon=timedelta(hours=4)).forecast
    assert [p.intensity_g_per_kwh for p in forecast] == [10, 20, 30, 10]  # wraps around


def test_replay_rejects_bad_parameters(tmp_path: Path) -> None:
    series = load_trace(_plain(tmp_path, [1, 2]))
    with pytest.raises(ValueError):
        TraceReplay(series, speedup=0)
    with pytest.raises(ValueError):
        TraceReplay(series, start_offset=timedelta(seconds=-1))


def test_replay_of_recorded_sgip_forecast(tmp_path: Path) -> None:
    series = load_trace(SGIP_FORECASTS)
    clock = ManualClock(datetime(2030, 1, 1, tzinfo=UTC))
    replay = TraceReplay(series, speedup=60, start_offset=timedelta(minutes=5), clock=clock)
    reading = replay.reading(zone="SGIP_CAISO_PGE", include_forecast=True, horizon=timedelta(hours=3))
    assert reading.intensity_g_per_kwh == pytest.approx(314.314170362981)  # second row
    assert len(reading.forecast) == 36  # the row itself + f1..f35 (f36 reaches the 3 h horizon)
    assert reading.forecast[1].intensity_g_per_kwh == pytest.approx(338.3383500008286)  # its f1
    assert reading.forecast[1].timestamp - reading.forecast[0].timestamp == timedelta(seconds=5)
