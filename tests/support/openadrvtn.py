"""A real OpenADR 2.0b VTN (openleadr's server) on loopback, recording what the VEN tells it.

openleadr's ``add_event`` recomputes an event's active period from its intervals and so drops the
ramp-up period; :meth:`Vtn.publish` sets it back on the queued event, the way a VTN sends it on the wire.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aiohttp.web_exceptions import NotAppKeyWarning
from loopback import serving
from openleadr import OpenADRServer, objects, utils

PREFIX = "/OpenADR2/Simple/2.0b"


@dataclass
class Vtn:
    """The server plus what it saw: registrations, answers per event, report values."""

    server: OpenADRServer
    url: str = ""
    ven_id: str = "ven-under-test"
    registrations: list[dict[str, Any]] = field(default_factory=list)
    opts: dict[str, str] = field(default_factory=dict)
    reports: list[tuple[datetime, float]] = field(default_factory=list)
    report_offers: list[dict[str, Any]] = field(default_factory=list)
    on_opt: list[Any] = field(default_factory=list)

    def register(self, payload: dict[str, Any]) -> tuple[str, str]:
        self.registrations.append(payload)
        return payload.get("ven_id") or self.ven_id, "registration-1"

    async def register_report(
        self,
        ven_id: str,
        resource_id: str,
        measurement: str,
        unit: str,
        scale: str,
        min_sampling_interval: timedelta,
        max_sampling_interval: timedelta,
    ) -> tuple[Any, timedelta]:
        self.report_offers.append(
            {"resource_id": resource_id, "measurement": measurement, "unit": unit, "min": min_sampling_interval}
        )
        return self.receive_report, max(min_sampling_interval, timedelta(seconds=1))

    def receive_report(self, data: list[tuple[datetime, float]]) -> None:
        self.reports.extend(data)

    def answered(self, ven_id: str, event_id: str, opt_type: str) -> None:
        self.opts[event_id] = opt_type
        for hook in self.on_opt:
            hook(event_id, opt_type)

    def publish(
        self,
        *,
        event_id: str,
        signal_name: str,
        signal_type: str,
        payloads: list[float],
        start: datetime,
        interval: timedelta,
        measurement: objects.Measurement | None = None,
        ramp_up: timedelta | None = None,
        ven_id: str | None = None,
    ) -> objects.Event:
        """Queue an event for the VEN (delivered on its next poll); returns the queued event."""
        target = ven_id or self.ven_id
        intervals = [
            objects.Interval(dtstart=start + i * interval, duration=interval, signal_payload=p, uid=i)
            for i, p in enumerate(payloads)
        ]
        event = objects.Event(
            event_descriptor=objects.EventDescriptor(
                event_id=event_id, modification_number=0, market_context="oadr://wattplane.test", event_status="far"
            ),
            active_period=objects.ActivePeriod(dtstart=start, duration=interval * len(payloads)),
            event_signals=[
                objects.EventSignal(
                    intervals=intervals,
                    signal_name=signal_name,
                    signal_type=signal_type,
                    signal_id=f"{event_id}-signal",
                    measurement=measurement,
                )
            ],
            targets=[objects.Target(ven_id=target)],
        )
        self.server.add_raw_event(ven_id=target, event=event, callback=self.answered)
        if ramp_up is not None:
            queued = utils.find_by(self.server.events[target], "event_descriptor.event_id", event_id)
            utils.setmember(
                queued,
                "active_period",
                objects.ActivePeriod(dtstart=start, duration=interval * len(payloads), ramp_up_period=ramp_up),
            )
        return event

    def cancel(self, event_id: str, ven_id: str | None = None) -> None:
        self.server.cancel_event(ven_id or self.ven_id, event_id)

    def resend(self, event: objects.Event, ven_id: str | None = None) -> None:
        """Queue an event again as it stands.

        openleadr's VTN drops a cancelled event once answered; other VTNs keep sending it until it would
        have ended.
        """
        self.server.add_raw_event(ven_id=ven_id or self.ven_id, event=event, callback=self.answered)


@contextlib.asynccontextmanager
async def running_vtn(*, poll_s: int = 1) -> AsyncIterator[Vtn]:
    """A VTN on a free loopback port asking VENs to poll every ``poll_s`` seconds."""
    with warnings.catch_warnings():  # openleadr's server stores itself under a plain string app key
        warnings.simplefilter("ignore", NotAppKeyWarning)
        server = OpenADRServer(
            vtn_id="WATTPLANE_TEST_VTN",
            show_fingerprint=False,
            requested_poll_freq=timedelta(seconds=poll_s),
            http_path_prefix=PREFIX,
        )
    vtn = Vtn(server)
    server.add_handler("on_create_party_registration", vtn.register)
    server.add_handler("on_register_report", vtn.register_report)
    async with serving(server.app) as base:
        vtn.url = base + PREFIX
        yield vtn
