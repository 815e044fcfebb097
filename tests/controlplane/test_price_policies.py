"""The price part of a budgeted carbon section on the real API server: accepted as written, nonsense refused.

The CRD's schema and CEL rules (generated from the models) must say the same as the models: a price
section only under ``mode: Budgeted``, a trace source with its path, an HTTP source with its URL, a weight
in [0, 1] and a unit like ``EUR/MWh``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from controlplane import ControlPlane
from kubeapi import apply_policy, connect, delete_cluster_object
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(120)]


@pytest.fixture
async def api(control_plane: ControlPlane) -> AsyncIterator[client.ApiClient]:
    async with await connect(control_plane.kubeconfig) as api_client:
        yield api_client


def carbon(price: dict[str, Any], mode: str = "Budgeted") -> dict[str, Any]:
    return {"carbon": {"mode": mode, "source": {"provider": "electricitymaps", "zone": "DE"}, "price": price}}


HTTP = {"provider": "http", "url": "https://prices.example/de-lu.json", "credentialsSecretRef": {"name": "prices"}}


async def test_a_price_section_is_stored_as_written(api: client.ApiClient) -> None:
    spec = carbon({"weight": 0.5, "unit": "EUR/MWh", "source": HTTP})
    try:
        stored = await apply_policy(api, "price-ok", spec)
        price = stored["spec"]["carbon"]["price"]
        assert price["weight"] == 0.5 and price["source"]["url"] == HTTP["url"]
        trace = carbon({"source": {"provider": "trace", "tracePath": "/data/prices.csv"}})
        assert (await apply_policy(api, "price-ok", trace))["spec"]["carbon"]["price"]["source"]["provider"] == "trace"
    finally:
        await delete_cluster_object(api, "energypolicies", "price-ok")


@pytest.mark.parametrize(
    ("spec", "message_part"),
    [
        (carbon({"source": HTTP}, mode="Curve"), "price needs mode Budgeted"),
        (carbon({"source": {"provider": "http"}}), "http needs url"),
        (carbon({"source": {"provider": "trace"}}), "trace needs tracePath"),
        (carbon({"weight": 1.5, "source": HTTP}), "weight"),
        (carbon({"unit": "EUR", "source": HTTP}), "unit"),
        (carbon({"source": {**HTTP, "url": "ftp://prices.example/x"}}), "url"),
    ],
)
async def test_nonsense_price_sections_are_refused(
    api: client.ApiClient, spec: dict[str, Any], message_part: str
) -> None:
    with pytest.raises(ApiException) as caught:
        await apply_policy(api, "price-bad", spec)
    assert caught.value.status in (400, 422), caught.value.body
    assert message_part in str(caught.value.body)
