"""The HTTP price source: one JSON document, fetched with the carbon providers' GET helper.

The document (documented on :class:`~wattplane.api.v1alpha1.energypolicy.PriceSourceRef`)::

    {"unit": "EUR/MWh",
     "prices": [{"start": "2023-07-02T12:00:00Z", "end": "2023-07-02T13:00:00Z", "price": -500.0},
                {"start": "2023-07-02T13:00:00Z", "durationSeconds": 3600, "price": -20.5}]}

``unit`` is optional (the policy's unit then); every interval needs ``start``, ``price`` and either
``end`` or ``durationSeconds``. It is deliberately the shape an OpenADR 3 ``PRICE`` event's
intervals flatten to, so a gateway can serve one from the other. Credentials are optional: a
``token`` from the policy's Secret goes out as ``Authorization: Bearer``, and is redacted from every
error text.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from wattplane.carbon.errors import CarbonError
from wattplane.carbon.http import get_json
from wattplane.carbon.parsing import as_dict, as_list, field, parse_time
from wattplane.price.series import PriceError, PriceSeries

#: Most intervals one document may carry (15-minute prices for a year are 35,040).
MAX_INTERVALS = 40_000


def parse_price_document(body: Any, *, unit: str) -> PriceSeries:
    """The series a price document describes, in ``unit``.

    Raises:
        PriceError: Not the documented shape, or values that cannot be prices (the message says where).
    """
    try:
        doc = as_dict(body, what="price document")
        source_unit = doc.get("unit", unit)
        if not isinstance(source_unit, str):
            raise PriceError(f"price document: unit is not a string ({source_unit!r})")
        items = as_list(field(doc, "prices", what="price document"), what="price document: prices")
        if len(items) > MAX_INTERVALS:
            raise PriceError(f"price document: {len(items)} intervals, more than {MAX_INTERVALS}")
        triples = [_interval(item, k) for k, item in enumerate(items)]
    except CarbonError as exc:
        raise PriceError(str(exc)) from None
    return PriceSeries.from_intervals(triples, unit=unit, source_unit=source_unit)


def _interval(item: Any, k: int) -> tuple[datetime, datetime, float]:
    what = f"price document: prices[{k}]"
    obj = as_dict(item, what=what)
    start = parse_time(field(obj, "start", what=what), what=f"{what}.start")
    if "end" in obj:
        end = parse_time(obj["end"], what=f"{what}.end")
    elif "durationSeconds" in obj:
        seconds = obj["durationSeconds"]
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
            raise PriceError(f"{what}.durationSeconds: not a number ({seconds!r})")
        if not 0 < seconds <= 31 * 86400:
            raise PriceError(f"{what}.durationSeconds: {seconds!r} is not between 0 and 31 days")
        end = start + timedelta(seconds=float(seconds))
    else:
        raise PriceError(f"{what}: needs end or durationSeconds")
    price = field(obj, "price", what=what)
    if isinstance(price, bool) or not isinstance(price, int | float):
        raise PriceError(f"{what}.price: not a number ({price!r})")
    return start, end, price


async def fetch_prices(
    session: aiohttp.ClientSession,
    url: str,
    *,
    unit: str,
    token: str | None = None,
    timeout_s: float = 10.0,
) -> PriceSeries:
    """GET ``url`` and parse it.

    Raises:
        PriceError: Any failure (transport, HTTP status, not JSON, not a price document), with a
            message that never contains ``token``.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else None
    timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(timeout_s, 5.0))
    try:
        body = await get_json(session, url, client_timeout=timeout, headers=headers, secrets=[token or ""])
    except CarbonError as exc:
        raise PriceError(str(exc)) from None
    if body is None:
        raise PriceError(f"GET {url}: no content")
    return parse_price_document(body, unit=unit)


__all__ = ["MAX_INTERVALS", "fetch_prices", "parse_price_document"]
