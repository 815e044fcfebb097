"""The operator's grid service: one VEN per policy with budget.demandResponse, kept in step with the specs."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from kubeapi import eventually
from openadrvtn import running_vtn
from wattplane.api.v1alpha1.energypolicy import EnergyPolicySpec
from wattplane.grid import GridService, MemoryBackend, Ven

pytestmark = pytest.mark.timeout(60)


def policy(url: str, *, watts: float | None = 6000, secret: str | None = None, **dr: Any) -> EnergyPolicySpec:
    openadr: dict[str, Any] = {"vtnUrl": url, "venName": "rack-d", "pollIntervalSeconds": 1}
    if secret is not None:
        openadr["credentialsSecretRef"] = {"name": secret}
    budget: dict[str, Any] = {"demandResponse": {"openadr": openadr, **dr}}
    if watts is not None:
        budget["watts"] = watts
    return EnergyPolicySpec.model_validate({"budget": budget})


class Secrets:
    """Secrets by (namespace, name), base64 like a Secret's ``data``; a missing one raises LookupError."""

    def __init__(self, secrets: Mapping[tuple[str, str], Mapping[str, str]]) -> None:
        self.secrets = secrets
        self.reads: list[tuple[str, str]] = []

    async def read(self, namespace: str, name: str) -> Mapping[str, str]:
        self.reads.append((namespace, name))
        if (namespace, name) not in self.secrets:
            raise LookupError("not found")
        return {k: base64.b64encode(v.encode()).decode() for k, v in self.secrets[(namespace, name)].items()}


async def test_the_service_runs_one_ven_per_policy_and_follows_spec_changes() -> None:
    secrets = Secrets({("wattplane-system", "ven-creds"): {"venId": "ven-rack-d"}})
    changes: list[int] = []
    service = GridService(
        backend=MemoryBackend(),
        read_secret=secrets.read,
        default_namespace="wattplane-system",
        measured_watts=lambda name: {"dr": 4321.0}.get(name),
        on_change=lambda: changes.append(1),
        ven_factory=partial(Ven, retry_s=0.2, report_min_period=timedelta(seconds=1)),
    )
    async with running_vtn() as vtn:
        try:
            await service.sync(
                {
                    "dr": policy(vtn.url, secret="ven-creds"),
                    "plain": EnergyPolicySpec.model_validate({"limits": {"maxWatts": 300}}),
                }
            )
            ven = service.ven("dr")
            assert ven is not None and service.ven("plain") is None
            await asyncio.wait_for(ven.registered.wait(), timeout=10)
            assert vtn.registrations[-1]["ven_id"] == "ven-rack-d"  # from the Secret
            vtn.ven_id = "ven-rack-d"
            start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=3)
            vtn.publish(
                event_id="e1",
                signal_name="SIMPLE",
                signal_type="level",
                payloads=[1],
                start=start,
                interval=timedelta(minutes=30),
            )

            async def window() -> tuple[Any, ...]:
                return service.windows("dr")

            (found,), _ = await eventually(window, within_s=10, interval=0.05, what="the event's window")
            assert (found.start, found.fraction) == (start, 0.9)
            assert service.all_windows() == {"dr": (found,)} and service.windows("plain") == ()
            assert changes
            await eventually(partial(_reported, vtn), within_s=10, interval=0.1, what="a report")
            assert {v for _, v in vtn.reports} == {4321.0}

            # A new opt rule applies to later events without registering again.
            await service.sync({"dr": policy(vtn.url, secret="ven-creds", optIn="Never", floorFraction=0.5)})
            assert service.ven("dr") is ven and ven.spec.opt_in == "Never" and len(vtn.registrations) == 1
            # A new VEN name is a new registration (same store: the window comes back).
            renamed = policy(vtn.url, secret="ven-creds")
            assert renamed.budget is not None and renamed.budget.demand_response is not None
            renamed.budget.demand_response.openadr.ven_name = "rack-d2"
            await service.sync({"dr": renamed})
            assert service.ven("dr") is not ven and service.windows("dr") == (found,)
            # Gone from the specs: stopped.
            await service.sync({})
            assert service.ven("dr") is None and service.windows("dr") == ()
        finally:
            await service.close()


async def _reported(vtn: Any) -> bool:
    return bool(vtn.reports)


async def test_a_missing_secret_is_reported_and_retried_later() -> None:
    secrets = Secrets({})
    service = GridService(backend=MemoryBackend(), read_secret=secrets.read, default_namespace="ns", secret_retry_s=0.3)
    spec = policy("http://127.0.0.1:9/OpenADR2/Simple/2.0b", secret="absent")
    await service.sync({"dr": spec})
    assert service.ven("dr") is None and service.errors == {"dr": "Secret ns/absent: not found"}
    assert service.problem("dr") == "demand response not started: Secret ns/absent: not found"
    assert service.problem("other") is None
    await service.sync({"dr": spec})
    assert secrets.reads == [("ns", "absent")]  # not hammered every round
    await asyncio.sleep(0.35)
    await service.sync({"dr": spec})
    assert len(secrets.reads) == 2
    await service.sync({})
    assert service.errors == {}
    await service.close()


async def test_a_vtn_that_does_not_answer_is_a_problem_the_policy_can_show() -> None:
    service = GridService(
        backend=MemoryBackend(),
        read_secret=Secrets({}).read,
        default_namespace="ns",
        ven_factory=partial(Ven, retry_s=0.2, report_min_period=timedelta(seconds=1)),
    )
    # Port 9 (discard) on loopback: nothing listens, the registration fails at once.
    await service.sync({"dr": policy("http://127.0.0.1:9/OpenADR2/Simple/2.0b")})
    try:

        async def failing() -> str | None:
            return service.problem("dr")

        problem, _ = await eventually(failing, within_s=20, what="the VEN's registration failure")
        assert problem.startswith("VEN rack-d: ")
    finally:
        await service.close()
