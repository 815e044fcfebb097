"""Retries: which errors are retried, how long the waits are, Retry-After handling."""

from __future__ import annotations

import random

import pytest
from wattplane.carbon import RetryPolicy
from wattplane.carbon.errors import (
    CarbonAuthError,
    CarbonError,
    CarbonRateLimitedError,
    CarbonServerError,
    CarbonTimeoutError,
)
from wattplane.carbon.retry import call_with_retries
from wattplane.carbon.testing import InstantSleep


def failing(*errors: CarbonError) -> tuple[list[int], object]:
    calls: list[int] = []

    async def fn() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "ok"

    return calls, fn


async def test_transient_errors_are_retried_with_growing_jittered_delays() -> None:
    sleep = InstantSleep()
    calls, fn = failing(CarbonTimeoutError("t"), CarbonServerError("s", status=502), CarbonServerError("s", status=500))
    policy = RetryPolicy(attempts=4, base_delay_s=1.0, max_delay_s=3.0)
    assert await call_with_retries(fn, policy, what="x", sleep=sleep, rng=random.Random(1)) == "ok"  # type: ignore[arg-type]
    assert len(calls) == 4
    nominal = [1.0, 2.0, 3.0]  # doubling, capped at max_delay_s
    for delay, n in zip(sleep.delays, nominal, strict=True):
        assert n / 2 <= delay <= n


async def test_permanent_errors_are_not_retried() -> None:
    sleep = InstantSleep()
    calls, fn = failing(CarbonAuthError("no", status=401))
    with pytest.raises(CarbonAuthError):
        await call_with_retries(fn, RetryPolicy(), what="x", sleep=sleep)  # type: ignore[arg-type]
    assert len(calls) == 1 and sleep.delays == []


async def test_attempts_run_out() -> None:
    calls, fn = failing(*[CarbonServerError("s", status=500)] * 5)
    with pytest.raises(CarbonServerError):
        await call_with_retries(fn, RetryPolicy(attempts=2), what="x", sleep=InstantSleep())  # type: ignore[arg-type]
    assert len(calls) == 2


async def test_retry_after_is_waited_exactly_or_gives_up_when_too_long() -> None:
    sleep = InstantSleep()
    _, fn = failing(CarbonRateLimitedError("429", retry_after_s=12.0))
    assert await call_with_retries(fn, RetryPolicy(max_retry_after_s=20), what="x", sleep=sleep) == "ok"  # type: ignore[arg-type]
    assert sleep.delays == [12.0]
    calls, fn = failing(CarbonRateLimitedError("429", retry_after_s=600.0))
    with pytest.raises(CarbonRateLimitedError):
        await call_with_retries(fn, RetryPolicy(max_retry_after_s=20), what="x", sleep=sleep)  # type: ignore[arg-type]
    assert len(calls) == 1


def test_backoff_bounds() -> None:
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=4.0)
    rng = random.Random(0)
    for retry, nominal in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (10, 4.0)]:
        for _ in range(20):
            assert nominal / 2 <= policy.backoff(retry, rng) <= nominal
