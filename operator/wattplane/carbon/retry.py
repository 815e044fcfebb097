"""Retries with exponential backoff and jitter, honouring HTTP 429 ``Retry-After``.

Kept apart from the providers so that every API gets the same discipline, and injectable
(``sleep``, ``rng``) so tests run in milliseconds and deterministically.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from wattplane.carbon.errors import CarbonError, CarbonRateLimitedError

log = logging.getLogger(__name__)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard one fetch tries before the service records a failure.

    Attributes:
        attempts: Total tries per fetch (1 = no retry).
        base_delay_s: Backoff before the 2nd try; doubles each time.
        max_delay_s: Cap on one backoff.
        max_retry_after_s: Longest ``Retry-After`` waited for inside one fetch; a longer one
            ends the fetch, and the service does not call the API again before it has passed.
    """

    attempts: int = 3
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_retry_after_s: float = 60.0

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Delay before retry number ``retry`` (0-based): "equal jitter" on a doubling base.

        Half the delay is fixed, half random, so that many clients that failed together do not
        come back together, while every client still waits at least half the nominal delay.
        """
        nominal = min(self.max_delay_s, self.base_delay_s * (2.0**retry))
        return nominal / 2 + rng.uniform(0.0, nominal / 2)


async def call_with_retries(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    what: str,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
) -> T:
    """Await ``fn()`` until it succeeds, fails permanently, or attempts run out.

    Args:
        fn: One attempt; raises :class:`CarbonError` on failure.
        policy: Attempts and delays.
        what: Names the fetch in log lines.
        sleep: Awaitable sleep (injected in tests).
        rng: Jitter source (injected in tests).

    Raises:
        CarbonError: The last error when not retryable, when attempts ran out, or on a
            ``Retry-After`` longer than ``policy.max_retry_after_s``.
    """
    rand = rng or random.Random()
    for attempt in range(policy.attempts):
        try:
            return await fn()
        except CarbonError as exc:
            last_try = attempt + 1 >= policy.attempts
            if not exc.retryable or last_try:
                raise
            delay = policy.backoff(attempt, rand)
            if isinstance(exc, CarbonRateLimitedError) and exc.retry_after_s is not None:
                if exc.retry_after_s > policy.max_retry_after_s:
                    raise
                delay = exc.retry_after_s
            log.info("%s failed (%s), retry %d/%d in %.2fs", what, exc.reason, attempt + 1, policy.attempts - 1, delay)
            await sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover
