"""Demand-response events kept in a ConfigMap on the real API server, and the API that configures them.

A VEN answering a real openleadr VTN writes its events to ``wattplane-grid-<policy>`` before it answers;
a second VEN (a restarted operator) built on a fresh API client reads the same windows back before it
reaches any VTN. The CRD takes a budget with only ``demandResponse`` and refuses nonsense in it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from controlplane import ControlPlane
from kubeapi import apply_policy, connect, delete_cluster_object, eventually
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from openadrvtn import running_vtn
from wattplane.api.v1alpha1.energypolicy import DemandResponseSpec, EnergyPolicySpec
from wattplane.grid import ConfigMapBackend, EventBook, EventStore, Ven, configmap_name

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(90)]
NAMESPACE = "wattplane-grid-test"


@pytest.fixture
async def api(control_plane: ControlPlane) -> AsyncIterator[client.ApiClient]:
    async with await connect(control_plane.kubeconfig) as api_client:
        with contextlib.suppress(ApiException):  # shared control plane: another test may have made it
            await client.CoreV1Api(api_client).create_namespace({"metadata": {"name": NAMESPACE}})
        yield api_client


def dr(url: str) -> DemandResponseSpec:
    return DemandResponseSpec.model_validate(
        {"openadr": {"vtnUrl": url, "venName": "rack-b", "pollIntervalSeconds": 1}}
    )


async def test_events_survive_in_a_configmap_across_ven_restarts(
    api: client.ApiClient, control_plane: ControlPlane
) -> None:
    policy = "rack-b-dr"
    async with running_vtn() as vtn:
        ven = Ven(
            policy,
            dr(vtn.url),
            store=EventStore(ConfigMapBackend(api, NAMESPACE), policy),
            standing_watts=8000.0,
            retry_s=0.2,
            report_min_period=timedelta(seconds=1),
        )
        await ven.start()
        try:
            await asyncio.wait_for(ven.registered.wait(), timeout=10)
            start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5)
            vtn.publish(
                event_id="evening-peak",
                signal_name="SIMPLE",
                signal_type="level",
                payloads=[3],
                start=start,
                interval=timedelta(hours=1),
                ramp_up=timedelta(minutes=2),
            )

            async def opted() -> str | None:
                return vtn.opts.get("evening-peak")

            answer, _ = await eventually(opted, within_s=15, interval=0.05, what="the VEN's answer")
            assert answer == "optIn"
            windows = ven.windows()
        finally:
            await ven.stop()

    cm = await client.CoreV1Api(api).read_namespaced_config_map(configmap_name(policy), NAMESPACE)
    assert cm.metadata.labels["app.kubernetes.io/managed-by"] == "wattplane"
    assert cm.metadata.annotations["wattplane.io/policy"] == policy
    book = EventBook.from_json(cm.data["events.json"])
    assert book.records["evening-peak"].opt == "optIn"
    (window,) = book.windows()
    assert (window.start, window.end, window.fraction) == (
        start - timedelta(minutes=2),
        start + timedelta(hours=1),
        0.5,
    )
    assert window.ramp_watts_per_second == pytest.approx(8000 * 0.5 / 120)

    # A restarted operator: a new client, a VTN that is gone. The windows are there at once.
    async with await connect(control_plane.kubeconfig) as fresh:
        again = Ven(
            policy,
            dr("http://127.0.0.1:9/OpenADR2/Simple/2.0b"),
            store=EventStore(ConfigMapBackend(fresh, NAMESPACE), policy),
            retry_s=0.2,
        )
        await again.start()
        try:
            assert again.windows() == windows == (window,)
        finally:
            await again.stop()


async def test_the_store_creates_then_patches_and_shortens_long_names(api: client.ApiClient) -> None:
    long_policy = "p" * 250
    name = configmap_name(long_policy)
    assert len(name) <= 253 and name.startswith("wattplane-grid-ppp")
    store = EventStore(ConfigMapBackend(api, NAMESPACE), long_policy)
    assert (await store.load()).records == {}
    book = EventBook.from_json('{"version":1,"events":[{"eventId":"a","modificationNumber":0,"opt":"optOut"}]}')
    await store.save(book)
    book.records["a"].modification_number = 4
    await store.save(book)
    assert (await store.load()).records["a"].modification_number == 4
    await client.CoreV1Api(api).delete_namespaced_config_map(name, NAMESPACE)


async def test_the_crd_takes_a_demand_response_budget_and_refuses_nonsense(api: client.ApiClient) -> None:
    openadr = {"vtnUrl": "https://vtn.example/OpenADR2/Simple/2.0b", "venName": "rack-c"}
    created: dict[str, Any] = await apply_policy(
        api,
        "dr-only",
        {"budget": {"demandResponse": {"openadr": {**openadr, "credentialsSecretRef": {"name": "ven-creds"}}}}},
    )
    try:
        dr_spec = created["spec"]["budget"]["demandResponse"]
        assert dr_spec["optIn"] == "Always"
        parsed = EnergyPolicySpec.model_validate(created["spec"]).budget
        assert parsed is not None and parsed.watts is None and parsed.demand_response is not None
        assert parsed.demand_response.level_fractions.level3 == 0.5
        for bad, part in [
            (
                {"openadr": openadr, "levelFractions": {"level1": 0.5, "level3": 0.9}},
                "higher level must not allow more power",
            ),
            ({"openadr": {**openadr, "vtnUrl": "ftp://vtn"}}, "vtnUrl"),
            ({"openadr": {**openadr, "pollIntervalSeconds": 0}}, "pollIntervalSeconds"),
            ({"openadr": openadr, "optIn": "Sometimes"}, "optIn"),
        ]:
            with pytest.raises(ApiException) as caught:
                await apply_policy(api, "dr-bad", {"budget": {"demandResponse": bad}})
            assert caught.value.status in (400, 422) and part in caught.value.body, caught.value.body
    finally:
        await delete_cluster_object(api, "energypolicies", "dr-only")
