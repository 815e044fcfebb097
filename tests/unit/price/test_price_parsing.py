"""Price series: the shipped CSV traces, the HTTP JSON document, units, and every kind of nonsense."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from repodata import SIM_DATA
from wattplane.price.http import parse_price_document
from wattplane.price.series import PriceError, PriceSeries, convert
from wattplane.price.trace import PriceReplay, load_price_trace

DELU = SIM_DATA / "energycharts_dayahead_DE-LU_2023_hourly.csv"
ERCOT = SIM_DATA / "ercot_dam_HB_NORTH_2022_hourly.csv"
T0 = datetime(2023, 7, 2, 12, tzinfo=UTC)


def test_the_shipped_de_lu_trace_is_a_full_hourly_year_with_its_negative_prices() -> None:
    series = load_price_trace(DELU)
    assert series.unit == "EUR/MWh"
    assert len(series) == 8760
    assert series.intervals[0].start == datetime(2022, 12, 31, 23, tzinfo=UTC)
    assert all(b.start == a.end for a, b in zip(series.intervals, series.intervals[1:], strict=False))
    assert series.at(T0) == -500.0  # the 2023 minimum, 2 July 12:00 UTC
    assert series.at(datetime(2023, 9, 11, 17, 30, tzinfo=UTC)) == 524.27
    assert sum(1 for i in series.intervals if i.price < 0) == 301


def test_the_shipped_ercot_trace_reads_as_usd_and_a_euro_policy_refuses_it() -> None:
    series = load_price_trace(ERCOT, unit="USD/MWh")
    assert len(series) == 8760 and series.unit == "USD/MWh"
    with pytest.raises(PriceError, match="USD cannot be used by a policy priced in EUR"):
        load_price_trace(ERCOT, unit="EUR/MWh")


def test_a_kwh_trace_is_converted_to_the_policys_mwh(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("time,price_eur_per_kwh\n2023-01-01T00:00Z,0.25\n2023-01-01T01:00Z,-0.01\n")
    series = load_price_trace(path, unit="EUR/MWh")
    assert [i.price for i in series.intervals] == [250.0, -10.0]
    assert series.intervals[-1].end == datetime(2023, 1, 1, 2, tzinfo=UTC)  # the last row lasts one step
    assert convert(250.0, "EUR/MWh", "EUR/kWh") == 0.25


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("time,price\n2023-01-01T00:00Z,nan\n", "not finite"),
        ("time,price\n2023-01-01T00:00Z,1e9\n", "beyond ±100,000 per MWh"),
        ("time,price\n2023-01-01T00:00Z,cheap\n", "row 2: price 'cheap' is not a number"),
        ("time,price\nyesterday,1\n", "row 2: unreadable timestamp"),
        ("time,price\n2023-01-01T00:00Z,1\n2023-01-01T00:00Z,2\n", "two prices for"),
        ("time\n", "no price rows"),
    ],
)
def test_a_broken_trace_is_an_error_naming_the_row(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(PriceError, match=message):
        load_price_trace(path)


def test_the_json_document_takes_end_or_duration_and_its_own_unit() -> None:
    doc = {
        "unit": "EUR/kWh",
        "prices": [
            {"start": "2023-07-02T12:00:00Z", "end": "2023-07-02T13:00:00Z", "price": -0.5},
            {"start": "2023-07-02T13:00:00Z", "durationSeconds": 900, "price": 0.02},
        ],
    }
    series = parse_price_document(json.loads(json.dumps(doc)), unit="EUR/MWh")
    assert [(i.start, i.end, i.price) for i in series.intervals] == [
        (T0, T0 + timedelta(hours=1), -500.0),
        (T0 + timedelta(hours=1), T0 + timedelta(hours=1, minutes=15), 20.0),
    ]
    assert series.at(T0 + timedelta(hours=1, minutes=20)) is None  # a gap is no price, not the last one


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "expected a JSON object"),
        ({"unit": "EUR/MWh"}, "missing field 'prices'"),
        ({"prices": [{"start": "2023-07-02T12:00Z", "price": 1}]}, r"prices\[0\]: needs end or durationSeconds"),
        ({"prices": [{"start": "2023-07-02T12:00Z", "durationSeconds": 60, "price": "1"}]}, "not a number"),
        ({"prices": [{"start": "2023-07-02T12:00Z", "durationSeconds": 60, "price": math.nan}]}, "not finite"),
        ({"prices": [{"start": "2023-07-02T12:00Z", "durationSeconds": 60, "price": -2e6}]}, "beyond"),
        ({"prices": [{"start": "2023-07-02T12:00Z", "durationSeconds": -60, "price": 1}]}, "between 0 and 31 days"),
        ({"prices": [{"start": "2023-07-02T12:00Z", "end": "2023-07-02T11:00Z", "price": 1}]}, "not after"),
        ({"unit": "EUR per MWh", "prices": []}, "unknown price unit"),
        ({"unit": "USD/MWh", "prices": [{"start": "2023-07-02T12:00Z", "durationSeconds": 60, "price": 1}]}, "USD"),
        (
            {
                "prices": [
                    {"start": "2023-07-02T12:00Z", "durationSeconds": 3600, "price": 1},
                    {"start": "2023-07-02T12:30Z", "durationSeconds": 3600, "price": 2},
                ]
            },
            "overlap",
        ),
    ],
)
def test_a_nonsense_document_is_an_error_that_says_where(doc: object, message: str) -> None:
    with pytest.raises(PriceError, match=message):
        parse_price_document(doc, unit="EUR/MWh")


def test_openadr_style_intervals_build_a_series_directly() -> None:
    series = PriceSeries.from_intervals(
        [(T0 + timedelta(hours=1), T0 + timedelta(hours=2), 30.0), (T0, T0 + timedelta(hours=1), 10)],
        unit="EUR/MWh",
    )
    assert [i.price for i in series.intervals] == [10.0, 30.0]  # sorted by start
    newer = PriceSeries.from_intervals([(T0 + timedelta(hours=1), T0 + timedelta(hours=3), 99.0)], unit="EUR/MWh")
    merged = series.merged(newer, keep_after=T0 - timedelta(hours=1))
    assert [(i.start.hour, i.price) for i in merged.intervals] == [(12, 10.0), (13, 99.0)]


def test_a_replay_maps_the_trace_onto_the_clock_and_loops() -> None:
    rows = [(T0 + timedelta(hours=k), T0 + timedelta(hours=k + 1), float(k)) for k in range(3)]
    replay = PriceReplay(PriceSeries.from_intervals(rows, unit="EUR/MWh"), speedup=60.0, started_at=T0)
    window = replay.window(T0 + timedelta(minutes=1), back=timedelta(0), ahead=timedelta(minutes=4))
    # one trace hour per wall minute; the 3-hour trace wraps after 3 minutes
    assert [(i.start - T0, i.price) for i in window.intervals] == [
        (timedelta(minutes=1), 1.0),
        (timedelta(minutes=2), 2.0),
        (timedelta(minutes=3), 0.0),
        (timedelta(minutes=4), 1.0),
    ]
