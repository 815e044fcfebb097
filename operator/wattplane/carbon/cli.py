"""``wattplane carbon now|forecast``: look at a carbon signal from the command line.

The main CLI (``wattplane.cli``) calls :func:`register`. Credentials come from the
``WATTPLANE_*`` environment variables (see :mod:`wattplane.carbon.credentials`). Exit codes:
0 a usable, fresh signal; 1 the source failed or had no usable value (details printed);
2 invalid arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO, get_args

from pydantic import ValidationError
from wattplane.carbon.config import ProviderName, SourceConfig, TraceOptions
from wattplane.carbon.errors import CarbonError
from wattplane.carbon.model import CarbonSignal, ForecastPoint, SignalKind
from wattplane.carbon.retry import RetryPolicy
from wattplane.carbon.service import CarbonService
from wattplane.carbon.trace import detect_format, format_kind

EXIT_OK = 0
EXIT_SIGNAL_ERROR = 1
EXIT_USAGE = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``carbon`` command (sub-commands ``now`` and ``forecast``) to the main CLI."""
    carbon = subparsers.add_parser("carbon", help="show grid carbon intensity from an API or a trace file")
    sub = carbon.add_subparsers(dest="carbon_command", required=True, metavar="{now,forecast}")
    now = sub.add_parser("now", help="current intensity")
    _common(now)
    now.set_defaults(func=cmd_now)
    forecast = sub.add_parser("forecast", help="forecast series")
    _common(forecast)
    forecast.add_argument("--hours", type=int, default=24, help="forecast horizon in hours (1-72)")
    forecast.set_defaults(func=cmd_forecast)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", choices=get_args(ProviderName), help="provider (implied 'trace' with --trace)")
    p.add_argument("--zone", help="zone / region / location in the provider's vocabulary")
    p.add_argument("--base-url", help="override the provider's base URL")
    p.add_argument("--trace", type=Path, metavar="FILE", help="replay a trace file instead of calling an API")
    p.add_argument("--kind", choices=[k.value for k in SignalKind], help="average or marginal")
    p.add_argument("--column", choices=["direct", "lca"], default="direct", help="Electricity Maps CSV column")
    p.add_argument("--start-offset", type=float, default=0.0, metavar="SECONDS", help="trace position to show")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="per-request timeout")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _config(args: argparse.Namespace, *, forecast: bool) -> SourceConfig:
    """Build the source configuration from the flags (raises ValueError on bad combinations)."""
    source = args.source
    trace = None
    kind = SignalKind(args.kind) if args.kind else None
    if args.trace is not None:
        if source not in (None, "trace"):
            raise ValueError("--trace replays a file; drop --source or use --source trace")
        source = "trace"
        detected = format_kind(detect_format(args.trace))
        if kind is None:
            kind = detected
        trace = TraceOptions(
            path=args.trace,
            column=args.column,
            start_offset_s=args.start_offset,
            forecast_horizon_s=getattr(args, "hours", 24) * 3600.0,
        )
    if source is None:
        raise ValueError("give --source (or --trace FILE)")
    if args.zone is None and source != "trace":
        raise ValueError("--zone is required for API sources")
    return SourceConfig(
        provider=source,
        zone=args.zone or (args.trace.stem if args.trace else "trace"),
        base_url=args.base_url,
        kind=kind or SignalKind.AVERAGE,
        include_forecast=forecast,
        forecast_horizon_h=getattr(args, "hours", 24),
        timeout_s=args.timeout,
        trace=trace,
    )


async def _fetch(config: SourceConfig) -> CarbonSignal:
    async with CarbonService(retry=RetryPolicy(attempts=2, base_delay_s=0.2, max_retry_after_s=5.0)) as service:
        return await service.refresh(config)


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def _point_dict(p: ForecastPoint) -> dict[str, Any]:
    return {
        "timestamp": _iso(p.timestamp),
        "intensity_g_per_kwh": p.intensity_g_per_kwh,
        "duration_s": p.duration.total_seconds() if p.duration is not None else None,
    }


def signal_to_dict(signal: CarbonSignal, *, with_forecast: bool) -> dict[str, Any]:
    """JSON-ready form of a signal (the ``--json`` output)."""
    reading = signal.reading
    out: dict[str, Any] = {
        "source": signal.source,
        "zone": signal.zone,
        "kind": signal.kind.value,
        "intensity_g_per_kwh": signal.intensity_g_per_kwh,
        "unit": "gCO2eq/kWh",
        "timestamp": _iso(reading.timestamp) if reading else None,
        "estimated": reading.estimated if reading else None,
        "percentile": signal.percentile,
        "fresh": signal.fresh,
        "age_seconds": signal.age_seconds,
        "fallback": signal.fallback.value if signal.fallback else None,
        "error": signal.error,
        "error_message": signal.error_message,
    }
    if with_forecast:
        out["forecast"] = [_point_dict(p) for p in signal.forecast]
    return out


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n")


def _fmt_value(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _print_now(signal: CarbonSignal, out: TextIO) -> None:
    d = signal_to_dict(signal, with_forecast=False)
    rows = [["field", "value"]]
    for key in ("source", "zone", "kind", "intensity_g_per_kwh", "timestamp", "estimated", "percentile"):
        value = d[key]
        rows.append([key, _fmt_value(value) if isinstance(value, float) else str(value if value is not None else "-")])
    rows.append(["fresh", str(signal.fresh)])
    if signal.fallback is not None:
        rows.append(["fallback", signal.fallback.value])
    if signal.error is not None:
        rows.append(["error", f"{signal.error}: {signal.error_message}"])
    _table(rows, out)


def _print_forecast(signal: CarbonSignal, out: TextIO) -> None:
    out.write(f"{signal.source} {signal.zone} ({signal.kind.value}), gCO2eq/kWh\n")
    if signal.error is not None:
        out.write(f"error: {signal.error}: {signal.error_message}\n")
    rows = [["start (UTC)", "g/kWh", "minutes"]]
    for p in signal.forecast:
        minutes = f"{p.duration.total_seconds() / 60:g}" if p.duration is not None else "-"
        rows.append([p.timestamp.strftime("%Y-%m-%d %H:%M:%S"), _fmt_value(p.intensity_g_per_kwh), minutes])
    if len(rows) > 1:
        _table(rows, out)


def _run(args: argparse.Namespace, *, forecast: bool, printer: Callable[[CarbonSignal, TextIO], None]) -> int:
    out: TextIO = sys.stdout
    try:
        config = _config(args, forecast=forecast)
    except (ValueError, ValidationError, CarbonError, OSError) as exc:
        sys.stderr.write(f"wattplane carbon: {exc}\n")
        return EXIT_USAGE
    signal = asyncio.run(_fetch(config))
    if args.json:
        json.dump(signal_to_dict(signal, with_forecast=forecast), out, indent=2)
        out.write("\n")
    else:
        printer(signal, out)
    ok = signal.error is None and signal.fresh and (signal.usable or signal.percentile is not None)
    if forecast:
        ok = ok and bool(signal.forecast)
    return EXIT_OK if ok else EXIT_SIGNAL_ERROR


def cmd_now(args: argparse.Namespace) -> int:
    """``wattplane carbon now``: print the current signal."""
    return _run(args, forecast=False, printer=_print_now)


def cmd_forecast(args: argparse.Namespace) -> int:
    """``wattplane carbon forecast``: print the forecast series."""
    if not 1 <= args.hours <= 72:
        sys.stderr.write("wattplane carbon: --hours must be within 1-72\n")
        return EXIT_USAGE
    return _run(args, forecast=True, printer=_print_forecast)
