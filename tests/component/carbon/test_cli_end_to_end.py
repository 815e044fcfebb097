"""``wattplane carbon now|forecast`` end to end: argparse → service → loopback server → output."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from repodata import SIM_DATA
from wattplane.carbon.cli import register

Serve = Callable[[web.Application], Awaitable[str]]
TOKEN = "cli-token-5e5e5e"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wattplane")
    register(p.add_subparsers(dest="command", required=True))
    return p


async def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    # func calls asyncio.run itself; run it in a thread so the server keeps serving on this loop
    code = await asyncio.to_thread(args.func, args)
    assert isinstance(code, int)
    return code


@pytest.fixture
async def em(serve: Serve) -> str:
    async def latest(request: web.Request) -> web.Response:
        if request.headers.get("auth-token") != TOKEN:
            return web.json_response({"error": "Invalid token"}, status=401)
        zone = request.query["zone"]
        if zone != "DE":
            return web.json_response({"error": f'Zone "{zone}" does not exist.'}, status=404)
        return web.json_response(
            {"zone": "DE", "carbonIntensity": 287, "datetime": "2024-12-01T05:00:00.000Z", "isEstimated": True}
        )

    async def forecast(request: web.Request) -> web.Response:
        if request.headers.get("auth-token") != TOKEN:
            return web.json_response({"error": "Invalid token"}, status=401)
        points = [{"carbonIntensity": 200 + h, "datetime": f"2024-12-01T{6 + h:02d}:00:00.000Z"} for h in range(5)]
        return web.json_response({"zone": "DE", "forecast": points, "updatedAt": "2024-12-01T05:00:00.000Z"})

    app = web.Application()
    app.router.add_get("/v3/carbon-intensity/latest", latest)
    app.router.add_get("/v3/carbon-intensity/forecast", forecast)
    return await serve(app)


async def test_now_json(em: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WATTPLANE_ELECTRICITYMAPS_TOKEN", TOKEN)
    code = await run(["carbon", "now", "--source", "electricitymaps", "--zone", "DE", "--base-url", em, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["intensity_g_per_kwh"] == 287.0 and out["unit"] == "gCO2eq/kWh"
    assert out["zone"] == "DE" and out["estimated"] is True and out["fresh"] is True and out["error"] is None
    assert out["timestamp"] == "2024-12-01T05:00:00+00:00"


async def test_now_table(em: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WATTPLANE_ELECTRICITYMAPS_TOKEN", TOKEN)
    code = await run(["carbon", "now", "--source", "electricitymaps", "--zone", "DE", "--base-url", em])
    out = capsys.readouterr().out
    assert code == 0
    rows = dict(line.split(None, 1) for line in out.splitlines()[1:])
    assert rows["intensity_g_per_kwh"] == "287.0" and rows["fresh"] == "True"


async def test_forecast_json(em: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WATTPLANE_ELECTRICITYMAPS_TOKEN", TOKEN)
    code = await run(
        [
            "carbon",
            "forecast",
            "--source",
            "electricitymaps",
            "--zone",
            "DE",
            "--base-url",
            em,
            "--hours",
            "3",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [p["intensity_g_per_kwh"] for p in out["forecast"]] == [200, 201, 202]
    assert out["forecast"][0]["duration_s"] == 3600


async def test_bad_zone_exits_1_and_says_why(
    em: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WATTPLANE_ELECTRICITYMAPS_TOKEN", TOKEN)
    code = await run(["carbon", "now", "--source", "electricitymaps", "--zone", "XX", "--base-url", em])
    out = capsys.readouterr().out
    assert code == 1
    assert "UnknownZone" in out and "does not exist" in out


async def test_wrong_token_exits_1_without_printing_it(
    em: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WATTPLANE_ELECTRICITYMAPS_TOKEN", "leaky-token-777")
    code = await run(["carbon", "now", "--source", "electricitymaps", "--zone", "DE", "--base-url", em, "--json"])
    captured = capsys.readouterr()
    assert code == 1 and json.loads(captured.out)["error"] == "Unauthorized"
    assert "leaky-token-777" not in captured.out + captured.err


async def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert await run(["carbon", "now", "--zone", "DE"]) == 2
    assert await run(["carbon", "now", "--source", "electricitymaps"]) == 2
    assert "--zone" in capsys.readouterr().err


async def test_trace_file_now_and_forecast(capsys: pytest.CaptureFixture[str]) -> None:
    trace = SIM_DATA / "sgip_moer_with_forecasts_CAISO_PGE_2020-08_5min.csv.gz"
    code = await run(["carbon", "now", "--trace", str(trace), "--json"])
    now = json.loads(capsys.readouterr().out)
    assert code == 0
    assert now["source"] == "trace" and now["kind"] == "marginal"
    assert now["intensity_g_per_kwh"] == pytest.approx(310.070570749436)  # first row, kg → g
    code = await run(["carbon", "forecast", "--trace", str(trace), "--hours", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[0].startswith("trace ") and "marginal" in lines[0]
    assert len(lines) == 2 + 12  # title, header, 12 five-minute points
    assert lines[3].split()[2] == "371.9"  # f1 of the first row
