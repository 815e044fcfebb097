"""Liveness probes stay out of the operator's INFO log; at DEBUG they are there.

kubelet probes kopf's liveness endpoint every few seconds; that endpoint is an aiohttp server whose
access log writes a line per request at INFO. The test runs kopf's own health endpoint on a loopback
port, probes it over HTTP, and reads what reached the log before and after the operator's logging
setup (:func:`wattplane.operator.__main__.configure_logging`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import urllib.request
from collections.abc import AsyncIterator, Iterator

import kopf
import pytest
from kopf._cogs.structs.ephemera import AnyMemo
from kopf._core.engines.probing import health_reporter
from wattplane.operator.__main__ import REQUEST_LOGGERS, configure_logging


@pytest.fixture(autouse=True)
def _restore_levels() -> Iterator[None]:
    """``configure_logging`` sets logger levels process-wide; put them back for the other tests."""
    saved = {name: logging.getLogger(name).level for name in REQUEST_LOGGERS}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
async def liveness() -> AsyncIterator[str]:
    """The liveness endpoint that ``kopf.operator(liveness_endpoint=...)`` starts."""
    url = f"http://127.0.0.1:{_free_port()}/healthz"
    ready = asyncio.Event()
    task = asyncio.create_task(
        health_reporter(
            url,
            memo=AnyMemo(kopf.Memo()),
            indices={},
            registry=kopf.OperatorRegistry(),
            settings=kopf.OperatorSettings(),
            ready_flag=ready,
        )
    )
    await asyncio.wait_for(ready.wait(), 10)
    yield url
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _probe(url: str) -> None:
    def get() -> int:
        with urllib.request.urlopen(url, timeout=5) as response:
            status: int = response.status
            return status

    assert await asyncio.to_thread(get) == 200
    await asyncio.sleep(0.05)  # aiohttp logs the access after the response went out


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name in REQUEST_LOGGERS]


async def test_probes_are_not_logged_at_info(liveness: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    await _probe(liveness)
    before = _access_lines(caplog)
    assert any("/healthz" in line for line in before), before  # what an INFO log held per probe
    caplog.clear()
    configure_logging("INFO")
    for _ in range(3):
        await _probe(liveness)
    logging.getLogger("wattplane.operator").info("plan generation 7 for node n1")
    assert _access_lines(caplog) == []
    assert [r.getMessage() for r in caplog.records] == ["plan generation 7 for node n1"]


async def test_probes_are_logged_at_debug(liveness: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    configure_logging("DEBUG")
    await _probe(liveness)
    assert any("GET /healthz" in line for line in _access_lines(caplog)), caplog.records


def test_a_higher_level_stays_higher() -> None:
    configure_logging("ERROR")
    assert all(logging.getLogger(name).getEffectiveLevel() == logging.ERROR for name in REQUEST_LOGGERS)
