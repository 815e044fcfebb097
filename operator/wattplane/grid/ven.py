"""One policy's OpenADR 2.0b VEN: registers with the VTN, answers events, reports the GPUs' power.

:class:`Ven` wraps :class:`openleadr.OpenADRClient` (simple HTTP pull). For every event it maps the
signals to budget windows (:mod:`wattplane.grid.events`), decides optIn/optOut under the policy's rule,
**saves the event book before answering** (:mod:`wattplane.grid.store`), and only then lets openleadr
send the answer. Windows are kept in memory for the planner and reloaded from the store at start, so
they hold while the VTN is unreachable. A ``TELEMETRY_USAGE`` report offers the covered GPUs' measured
power (W) through a callable the operator passes in; the VTN asks for it at the rate it wants.

Credentials (:class:`VenCredentials`) arrive as data from the policy's Secret. They are never logged:
the client certificate and key are written to a private temporary folder only because openleadr reads
them from files, and a log filter on openleadr's (and signxml's) logger replaces the secret values (the venID, the key
and its passphrase) in anything openleadr prints, since it logs the venID and whole messages.

Two openleadr quirks are handled here: it forgets the answer to a cancelled event yet looks it up when
the VTN sends that event again (a ``KeyError`` that would opt out of every event in the message), so
the answer table falls back to the event book; and a registration that fails leaves a client that
cannot be restarted, so each attempt builds a fresh client.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import certifi
import openleadr
from wattplane.api.v1alpha1.energypolicy import BudgetWindow, DemandResponseSpec
from wattplane.grid.events import EventBook, Opt, PriceInterval, decide, map_event
from wattplane.grid.store import EventStore, StoreError

logger = logging.getLogger(__name__)

#: Reads the covered GPUs' measured power in watts (None while unknown).
MeasuredPower = Callable[[], float | None]

_REDACTED = "[redacted]"
#: Loggers that print whole OpenADR messages (and so the venID): openleadr's, and signxml's at DEBUG.
_CHATTY_LOGGERS = ("openleadr", "signxml.processor")
_SECRET_KEYS = {
    "venId": "ven_id",
    "cert": "cert",
    "key": "key",
    "keyPassphrase": "key_passphrase",
    "caCert": "ca_cert",
    "vtnFingerprint": "vtn_fingerprint",
}


@dataclass(frozen=True)
class VenCredentials:
    """The VEN's identity and keys (all optional; values never appear in ``repr`` or logs)."""

    ven_id: str | None = field(default=None, repr=False)
    cert: str | None = field(default=None, repr=False)
    key: str | None = field(default=None, repr=False)
    key_passphrase: str | None = field(default=None, repr=False)
    ca_cert: str | None = field(default=None, repr=False)
    vtn_fingerprint: str | None = field(default=None, repr=False)

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str], *, encoded: bool = True) -> VenCredentials:
        """From a Secret's ``data`` (base64, ``encoded``) or ``stringData``; unknown keys are ignored."""
        values: dict[str, str] = {}
        for key, attr in _SECRET_KEYS.items():
            raw = data.get(key)
            if raw is None:
                continue
            try:
                text = base64.b64decode(raw, validate=True).decode() if encoded else raw
            except (binascii.Error, UnicodeDecodeError):
                raise ValueError(f"Secret key {key} is not valid base64 text") from None
            if text.strip():
                values[attr] = text.strip() if attr not in ("cert", "key", "ca_cert") else text
        return cls(**values)

    def secret_values(self) -> tuple[str, ...]:
        """Strings that must never be printed: the venID, the key (and each of its lines), the passphrase."""
        found = [v for v in (self.ven_id, self.key_passphrase, self.key) if v]
        if self.key:
            found.extend(line for line in self.key.splitlines() if len(line) >= 16 and not line.startswith("-----"))
        return tuple(found)


class _Redactor(logging.Filter):
    """Replaces secret values in records of the loggers it sits on (a filter on a logger misses its children)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = tuple(sorted({s for s in secrets if len(s) >= 3}, key=len, reverse=True))

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        try:
            text = record.getMessage()
        except Exception:  # a broken format string is openleadr's problem; let logging report it
            return True
        if any(secret in text for secret in self._secrets):
            for secret in self._secrets:
                text = text.replace(secret, _REDACTED)
            record.msg, record.args = text, None
        return True


class _Answers(dict[str, str]):
    """openleadr's ``responded_events``: a missing answer falls back to the event book (see module doc)."""

    def __init__(self, book: Callable[[], EventBook]) -> None:
        super().__init__()
        self._book = book

    def __missing__(self, event_id: str) -> str:
        record = self._book().records.get(event_id)
        return record.opt if record is not None else "optOut"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Ven:
    """The VEN of one EnergyPolicy's ``budget.demandResponse``."""

    def __init__(
        self,
        policy: str,
        spec: DemandResponseSpec,
        *,
        store: EventStore,
        credentials: VenCredentials | None = None,
        standing_watts: float | None = None,
        measured_watts: MeasuredPower | None = None,
        on_change: Callable[[], None] | None = None,
        clock: Callable[[], datetime] = _utcnow,
        retry_s: float = 10.0,
        report_min_period: timedelta = timedelta(seconds=10),
    ) -> None:
        self.policy = policy
        self.spec = spec
        self.standing_watts = standing_watts
        self._store = store
        self._credentials = credentials or VenCredentials()
        self._measured = measured_watts or (lambda: None)
        self._on_change = on_change
        self._clock = clock
        self._retry_s = retry_s
        self._report_min_period = report_min_period
        self._book = EventBook()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._client: Any = None
        self._files: Path | None = None
        self._redactor = _Redactor(self._credentials.secret_values())
        self.registered = asyncio.Event()
        self.last_error = ""

    # ----------------------------------------------------------------- what the planner reads

    def windows(self) -> tuple[BudgetWindow, ...]:
        """Budget windows of the events this VEN opted into (past ones until pruned)."""
        return self._book.windows()

    def prices(self) -> tuple[PriceInterval, ...]:
        """Price intervals the VTN sent."""
        return self._book.prices()

    @property
    def book(self) -> EventBook:
        """The event book (read-only use)."""
        return self._book

    # ----------------------------------------------------------------- life cycle

    async def start(self) -> None:
        """Reload the saved events, then register and poll in the background (retrying until stopped)."""
        for name in _CHATTY_LOGGERS:
            logging.getLogger(name).addFilter(self._redactor)
        try:
            self._book = await self._store.load()
        except StoreError as exc:
            self.last_error = str(exc)
            logger.error("policy %s: demand-response events could not be reloaded: %s", self.policy, exc)
        if self._book.records:
            logger.info("policy %s: %d demand-response events reloaded", self.policy, len(self._book.records))
            self._changed()
        self._task = asyncio.create_task(self._run(), name=f"ven-{self.policy}")

    async def stop(self) -> None:
        """Stop polling and reporting; the saved events stay for the next start."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._close_client()
        if self._files is not None:
            shutil.rmtree(self._files, ignore_errors=True)
            self._files = None
        self.registered.clear()
        for name in _CHATTY_LOGGERS:
            logging.getLogger(name).removeFilter(self._redactor)

    async def _run(self) -> None:
        while True:
            client: Any = None
            try:
                client = self._client = self._new_client()
                await client.run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            if client is not None and client.registration_id:
                self.last_error = ""
                self.registered.set()
                logger.info("policy %s: VEN %s registered with %s", self.policy, self.spec.openadr.ven_name, self._url)
                while True:  # openleadr polls on its own scheduler; watch that it still holds a registration
                    await asyncio.sleep(self._retry_s)
                    if not (client.registration_id and client.scheduler.running):
                        break
                logger.warning("policy %s: VEN lost its registration; registering again", self.policy)
            else:
                self.last_error = self.last_error or "no registration from the VTN"
                logger.warning(
                    "policy %s: VEN could not register with %s (%s); retrying in %.0f s",
                    self.policy,
                    self._url,
                    self.last_error,
                    self._retry_s,
                )
            self.registered.clear()
            await self._close_client()
            await asyncio.sleep(self._retry_s)

    @property
    def _url(self) -> str:
        return self.spec.openadr.vtn_url

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        if client.scheduler.running:
            client.scheduler.shutdown(wait=False)
        if client.report_queue_task is not None:
            client.report_queue_task.cancel()
        if client.client_session is not None:
            await client.client_session.close()

    def _new_client(self) -> Any:
        creds = self._credentials
        cert = key = ca = None
        if creds.cert and creds.key:
            cert, key, ca = self._write_key_files()
        elif creds.cert or creds.key:
            logger.warning("policy %s: the VEN Secret has only one of cert and key; talking unsigned", self.policy)
        client = openleadr.OpenADRClient(
            ven_name=self.spec.openadr.ven_name,
            vtn_url=self._url,
            ven_id=creds.ven_id,
            cert=cert,
            key=key,
            passphrase=creds.key_passphrase,
            ca_file=ca,
            vtn_fingerprint=creds.vtn_fingerprint,
            show_fingerprint=False,
            disable_signature=cert is None,
        )
        client.responded_events = _Answers(lambda: self._book)
        client.add_handler("on_event", self.on_event)
        client.add_handler("on_update_event", self.on_event)
        client.add_hook("after_parse_xml", self._after_parse)
        client.add_report(
            callback=self._report_value,
            resource_id=f"wattplane-{self.policy}"[:64],
            measurement="REAL_POWER",
            unit="W",
            report_specifier_id=f"wattplane-power-{self.policy}"[:128],
            r_id="gpu-power",
            sampling_rate=openleadr.objects.SamplingRate(
                min_period=self._report_min_period, max_period=timedelta(hours=1), on_change=False
            ),
            report_duration=timedelta(hours=1),
        )
        return client

    def _write_key_files(self) -> tuple[str, str, str]:
        """Write the PEMs to a private folder (openleadr reads files), removed on stop."""
        if self._files is None:
            self._files = Path(tempfile.mkdtemp(prefix="wattplane-ven-"))
        paths = []
        creds = self._credentials
        for name, text in (("cert.pem", creds.cert), ("key.pem", creds.key), ("ca.pem", creds.ca_cert)):
            path = self._files / name
            if text:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as out:
                    out.write(text)
            paths.append(str(path) if text else certifi.where())
        fingerprint = openleadr.utils.certificate_fingerprint(creds.cert)
        logger.info("policy %s: VEN certificate fingerprint %s", self.policy, fingerprint)
        return paths[0], paths[1], paths[2]

    def _after_parse(self, message_type: str, payload: dict[str, Any]) -> None:
        """Honour ``pollIntervalSeconds`` over the interval the VTN requests at registration."""
        seconds = self.spec.openadr.poll_interval_seconds
        if message_type == "oadrCreatedPartyRegistration" and seconds is not None:
            payload["requested_oadr_poll_freq"] = timedelta(seconds=seconds)

    def _report_value(self) -> list[tuple[datetime, float]]:
        watts = self._measured()
        return [] if watts is None else [(self._clock(), float(watts))]

    # ----------------------------------------------------------------- events

    async def on_event(self, event: dict[str, Any]) -> Opt:
        """Handle an event for openleadr: map, decide, save, then answer (never ahead of the store)."""
        async with self._lock:
            now = self._clock()
            plan = map_event(event, spec=self.spec, standing_watts=self.standing_watts, now=now)
            known = self._book.known(plan.event_id, plan.modification_number)
            if known is not None:
                return known.opt  # a re-delivery (after a restart, say): same answer as before
            opt, why = decide(plan, spec=self.spec, standing_watts=self.standing_watts)
            for message in plan.messages:
                logger.warning("policy %s: event %s: %s", self.policy, plan.event_id, message)
            previous = self._book.records.get(plan.event_id)
            self._book.apply(plan, opt, now)
            self._book.prune(now)
            try:
                await self._store.save(self._book)
            except StoreError as exc:
                # Not written down: do not promise. Undo, so the VTN's next delivery is decided afresh.
                if previous is None:
                    self._book.records.pop(plan.event_id, None)
                else:
                    self._book.records[plan.event_id] = previous
                self.last_error = str(exc)
                logger.error("policy %s: event %s not saved (%s): opting out", self.policy, plan.event_id, exc)
                return "optOut"
            logger.info(
                "policy %s: event %s (modification %d, %s): %s, %s",
                self.policy,
                plan.event_id,
                plan.modification_number,
                plan.status,
                opt,
                why,
            )
        self._changed()
        return opt

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()
