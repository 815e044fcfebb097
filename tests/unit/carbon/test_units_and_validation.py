"""Unit conversions, plausibility checks and HTTP header helpers."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr, ValidationError
from wattplane.carbon import Credentials, SourceConfig
from wattplane.carbon.errors import CarbonResponseError, CarbonValueError
from wattplane.carbon.http import parse_retry_after, redact
from wattplane.carbon.units import (
    check_intensity,
    check_percentile,
    kg_per_kwh_to_g_per_kwh,
    lbs_per_mwh_to_g_per_kwh,
    number,
)


def test_lbs_per_mwh_to_g_per_kwh() -> None:
    assert lbs_per_mwh_to_g_per_kwh(1000.0) == pytest.approx(453.59237)
    assert lbs_per_mwh_to_g_per_kwh(0.0) == 0.0


def test_kg_per_kwh_to_g_per_kwh() -> None:
    assert kg_per_kwh_to_g_per_kwh(0.245) == pytest.approx(245.0)


@pytest.mark.parametrize("value", [0.0, 1.5, 5000.0])
def test_plausible_intensities_pass(value: float) -> None:
    assert check_intensity(value) == value


@pytest.mark.parametrize(
    ("value", "fragment"),
    [(-0.1, "negative"), (math.nan, "not finite"), (math.inf, "not finite"), (5000.01, "implausibly high")],
)
def test_nonsense_intensities_are_rejected(value: float, fragment: str) -> None:
    with pytest.raises(CarbonValueError, match=fragment):
        check_intensity(value, what="latest")


@pytest.mark.parametrize("value", [-1.0, 100.5, math.nan])
def test_percentile_bounds(value: float) -> None:
    with pytest.raises(CarbonValueError):
        check_percentile(value)
    assert check_percentile(0.0) == 0.0 and check_percentile(100.0) == 100.0


@pytest.mark.parametrize("value", [True, "300", None, [300]])
def test_number_refuses_non_numbers(value: object) -> None:
    with pytest.raises(CarbonResponseError):
        number(value, what="x")
    assert number(3, what="x") == 3.0


def test_retry_after_forms() -> None:
    now = datetime(2024, 12, 1, 5, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Sun, 01 Dec 2024 05:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Sun, 01 Dec 2024 04:00:00 GMT", now=now) == 0.0  # past dates mean "now"
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("-5") == 0.0


def test_redact() -> None:
    assert redact("bad token abc123 (abc123)", ["abc123", ""]) == "bad token *** (***)"


def test_credentials_never_show_secrets() -> None:
    creds = Credentials(electricitymaps_token=SecretStr("tok-123"), watttime_password=SecretStr("pw-456"))
    text = repr(creds) + str(creds) + creds.model_dump_json()
    assert "tok-123" not in text and "pw-456" not in text


def test_credentials_from_env() -> None:
    creds = Credentials.from_env(
        {
            "WATTPLANE_ELECTRICITYMAPS_TOKEN": "t",
            "WATTPLANE_WATTTIME_USERNAME": "u",
            "WATTPLANE_WATTTIME_PASSWORD": "",
        }
    )
    assert creds.electricitymaps_token is not None and creds.electricitymaps_token.get_secret_value() == "t"
    assert creds.watttime_username is not None and creds.watttime_password is None  # empty means unset


def test_source_config_rules() -> None:
    with pytest.raises(ValidationError, match="fallback_intensity"):
        SourceConfig(provider="ukcarbon", zone="national", fallback="fixed")
    with pytest.raises(ValidationError, match="trace"):
        SourceConfig(provider="trace", zone="x")
    with pytest.raises(ValidationError):
        SourceConfig(provider="ukcarbon", zone="national", refresh_interval_s=0)
    with pytest.raises(ValidationError):
        SourceConfig(provider="nope", zone="x")  # type: ignore[arg-type]
    a = SourceConfig(provider="watttime", zone="CAISO_NORTH", kind="marginal")
    b = SourceConfig(provider="watttime", zone="CAISO_NORTH", kind="marginal", staleness_bound_s=10)
    c = SourceConfig(provider="watttime", zone="CAISO_NORTH", kind="average")
    assert a.cache_key == b.cache_key != c.cache_key
    assert a.effective_base_url == "https://api.watttime.org"
    assert SourceConfig(provider="ukcarbon", zone="n", base_url="http://127.0.0.1:1/").effective_base_url == (
        "http://127.0.0.1:1"
    )
