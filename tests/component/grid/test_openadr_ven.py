"""The operator's VEN against a real openleadr VTN on loopback (unsigned OpenADR 2.0b over HTTP).

Events published by the VTN arrive, are answered optIn only after they are saved, and become budget
windows with the right times, targets and ramps; the VTN receives the GPUs' measured power as
TELEMETRY_USAGE reports; a cancellation takes the window away; a restarted VEN finds its windows in the
store before it reaches the VTN; credentials never reach the logs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubeapi import eventually
from openadrvtn import Vtn, running_vtn
from openleadr import objects
from wattplane.api.v1alpha1.energypolicy import DemandResponseSpec
from wattplane.grid import EventBook, EventStore, MemoryBackend, Ven, VenCredentials

pytestmark = pytest.mark.timeout(60)
POLICY = "rack-a"


def dr_spec(vtn_url: str, **extra: Any) -> DemandResponseSpec:
    return DemandResponseSpec.model_validate(
        {"openadr": {"vtnUrl": vtn_url, "venName": "wattplane-rack-a", "pollIntervalSeconds": 1}, **extra}
    )


def make_ven(
    vtn_url: str, backend: MemoryBackend, *, measured: float | None = 1234.5, **extra: Any
) -> tuple[Ven, list[int]]:
    changes: list[int] = []
    ven = Ven(
        POLICY,
        dr_spec(vtn_url, **extra.pop("spec", {})),
        store=EventStore(backend, POLICY),
        standing_watts=10_000.0,
        measured_watts=lambda: measured,
        on_change=lambda: changes.append(1),
        retry_s=0.2,
        report_min_period=timedelta(seconds=1),
        **extra,
    )
    return ven, changes


@pytest.fixture
async def vtn() -> AsyncIterator[Vtn]:
    async with running_vtn() as server:
        yield server


async def started(ven: Ven) -> Ven:
    await ven.start()
    await asyncio.wait_for(ven.registered.wait(), timeout=10)
    return ven


def soon() -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=2)


async def answer(vtn: Vtn, event_id: str) -> str:
    opt, _ = await eventually(lambda: _opt(vtn, event_id), within_s=10, interval=0.05, what=f"answer to {event_id}")
    return opt


async def _opt(vtn: Vtn, event_id: str) -> str | None:
    return vtn.opts.get(event_id)


async def test_a_simple_event_is_saved_then_opted_into_and_becomes_a_ramped_window(vtn: Vtn) -> None:
    backend = MemoryBackend()
    saved_when_answered: list[bool] = []
    vtn.on_opt.append(
        lambda event_id, _opt: saved_when_answered.append(
            event_id in EventBook.from_json(backend.texts.get(POLICY, '{"version":1}')).records
        )
    )
    ven, changes = make_ven(vtn.url, backend)
    await started(ven)
    try:
        start = soon()
        vtn.publish(
            event_id="peak-1",
            signal_name="SIMPLE",
            signal_type="level",
            payloads=[2],
            start=start,
            interval=timedelta(minutes=30),
            ramp_up=timedelta(seconds=60),
        )
        assert await answer(vtn, "peak-1") == "optIn"
        assert saved_when_answered == [True]  # the book was in the store before the VTN had the answer
        (window,) = ven.windows()
        assert window.name == "peak-1/0"
        assert window.start == start - timedelta(seconds=60)  # OpenADR's ramp-up precedes the active period
        assert window.end == start + timedelta(minutes=30)
        assert (window.fraction, window.watts) == (0.75, None)
        assert window.ramp_watts_per_second == pytest.approx(10_000 * 0.25 / 60)
        assert changes
    finally:
        await ven.stop()


async def test_a_load_dispatch_target_in_kw_becomes_watts_with_the_default_ramp(vtn: Vtn) -> None:
    ven, _ = make_ven(vtn.url, MemoryBackend(), spec={"rampWattsPerSecond": 25})
    await started(ven)
    try:
        start = soon()
        vtn.publish(
            event_id="dispatch-1",
            signal_name="LOAD_DISPATCH",
            signal_type="setpoint",
            payloads=[2.5],
            start=start,
            interval=timedelta(minutes=15),
            measurement=objects.Measurement(
                name="powerReal",
                description="RealPower",
                unit="W",
                scale="k",
                power_attributes=objects.PowerAttributes(hertz=50, voltage=230, ac=True),
            ),
        )
        assert await answer(vtn, "dispatch-1") == "optIn"
        (window,) = ven.windows()
        assert (window.start, window.end) == (start, start + timedelta(minutes=15))
        assert window.watts == pytest.approx(2500.0)
        assert window.ramp_watts_per_second == 25
    finally:
        await ven.stop()


async def test_the_vtn_receives_the_measured_power_as_telemetry(vtn: Vtn) -> None:
    ven, _ = make_ven(vtn.url, MemoryBackend(), measured=1234.5)
    await started(ven)
    try:
        await eventually(lambda: _reports(vtn), within_s=10, interval=0.1, what="a telemetry report")
        assert vtn.report_offers[0]["measurement"] == "RealPower" and vtn.report_offers[0]["unit"] == "W"
        assert {value for _, value in vtn.reports} == {1234.5}
        assert all(abs((datetime.now(UTC) - at).total_seconds()) < 30 for at, _ in vtn.reports)
    finally:
        await ven.stop()


async def _reports(vtn: Vtn) -> bool:
    return bool(vtn.reports)


async def test_a_cancelled_event_loses_its_window_and_later_events_still_arrive(vtn: Vtn) -> None:
    backend = MemoryBackend()
    ven, _ = make_ven(vtn.url, backend)
    await started(ven)
    try:
        peak_2 = vtn.publish(
            event_id="peak-2",
            signal_name="SIMPLE",
            signal_type="level",
            payloads=[3],
            start=soon(),
            interval=timedelta(minutes=10),
        )
        assert await answer(vtn, "peak-2") == "optIn"
        assert [w.fraction for w in ven.windows()] == [0.5]
        vtn.cancel("peak-2")
        await eventually(lambda: _no_windows(ven), within_s=10, interval=0.05, what="the window to go")
        assert EventBook.from_json(backend.texts[POLICY]).records["peak-2"].modification_number == 1
        # A VTN that keeps sending the cancelled event beside a new one: openleadr forgot its answer to
        # the cancelled one, and without the VEN's fallback would opt out of both.
        vtn.resend(peak_2)
        vtn.publish(
            event_id="peak-3",
            signal_name="SIMPLE",
            signal_type="level",
            payloads=[1],
            start=soon(),
            interval=timedelta(minutes=10),
        )
        assert await answer(vtn, "peak-3") == "optIn"
        assert [(w.name, w.fraction) for w in ven.windows()] == [("peak-3/0", 0.9)]
    finally:
        await ven.stop()


async def _no_windows(ven: Ven) -> bool:
    return ven.windows() == ()


async def test_a_restarted_ven_has_its_windows_before_it_reaches_the_vtn(vtn: Vtn) -> None:
    backend = MemoryBackend()
    first, _ = make_ven(vtn.url, backend)
    await started(first)
    start = soon()
    try:
        vtn.publish(
            event_id="peak-4",
            signal_name="SIMPLE",
            signal_type="level",
            payloads=[2],
            start=start,
            interval=timedelta(minutes=20),
        )
        assert await answer(vtn, "peak-4") == "optIn"
        before = first.windows()
    finally:
        await first.stop()
    unreachable, _ = make_ven("http://127.0.0.1:9/OpenADR2/Simple/2.0b", backend)
    await unreachable.start()  # nothing listens there: windows come from the store alone
    try:
        assert unreachable.windows() == before and before[0].start == start
        await asyncio.sleep(0.5)
        assert not unreachable.registered.is_set() and unreachable.windows() == before
    finally:
        await unreachable.stop()
    again, _ = make_ven(vtn.url, backend)
    await started(again)
    try:
        await asyncio.sleep(1.5)  # the VTN re-delivers the event on registration; the answer stays
        assert again.windows() == before and vtn.opts["peak-4"] == "optIn"
    finally:
        await again.stop()


async def test_opt_in_never_answers_opt_out_and_enforces_nothing(vtn: Vtn) -> None:
    ven, _ = make_ven(vtn.url, MemoryBackend(), spec={"optIn": "Never"})
    await started(ven)
    try:
        vtn.publish(
            event_id="peak-5",
            signal_name="SIMPLE",
            signal_type="level",
            payloads=[3],
            start=soon(),
            interval=timedelta(minutes=10),
        )
        assert await answer(vtn, "peak-5") == "optOut"
        assert ven.windows() == ()
    finally:
        await ven.stop()


def _self_signed() -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wattplane-ven.test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    passphrase = b"pass-SECRET-0042"
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    ).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


async def test_credentials_never_reach_the_logs(vtn: Vtn, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="openleadr")
    cert, key = _self_signed()
    credentials = VenCredentials(ven_id="ven-SECRET-4711", cert=cert, key=key, key_passphrase="pass-SECRET-0042")
    ven, _ = make_ven(vtn.url, MemoryBackend(), credentials=credentials)
    await started(ven)
    try:
        assert vtn.registrations[-1]["ven_id"] == "ven-SECRET-4711"  # the VTN did get the venID (signed)
        vtn.ven_id = "ven-SECRET-4711"
        vtn.publish(
            event_id="peak-6",
            signal_name="SIMPLE",
            signal_type="level",
            payloads=[1],
            start=soon(),
            interval=timedelta(minutes=10),
        )
        assert await answer(vtn, "peak-6") == "optIn"
        await eventually(lambda: _reports(vtn), within_s=10, interval=0.1, what="a telemetry report")
    finally:
        await ven.stop()
    text = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert "registered" in text  # openleadr did log its registration (with the venID redacted)
    secrets = ["ven-SECRET-4711", "pass-SECRET-0042", *[line for line in key.splitlines() if "-----" not in line]]
    leaked = [s for s in secrets if s in text]
    assert leaked == [], [line[:300] for line in text.splitlines() if any(s in line for s in leaked)][:3]
    assert "ven-SECRET-4711" not in repr(credentials)
