"""Deterministic stand-ins for time, for tests and simulations that drive the service by hand.

Like ``kopf.testing``, this ships with the package so that other packages' tests (operator,
simulator) can reuse it without reaching into this package's test folder.
"""

from __future__ import annotations

from datetime import datetime, timedelta


class ManualClock:
    """A clock that moves only when told to (returns aware UTC datetimes).

    Pass it as ``clock=`` to :class:`~wattplane.carbon.service.CarbonService` or
    :class:`~wattplane.carbon.trace.TraceReplay`.
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self.now = start

    def __call__(self) -> datetime:
        """The current (manual) time."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        self.now += timedelta(seconds=seconds)


class InstantSleep:
    """An awaitable sleep that returns at once and records each requested delay (in seconds)."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        """Record ``delay`` and return without waiting."""
        self.delays.append(delay)
