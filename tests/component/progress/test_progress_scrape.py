"""The progress scraper against a real HTTP server on 127.0.0.1 serving Prometheus text."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from wattplane.operator import progress
from wattplane.operator.progress import (
    ProgressSample,
    ProgressTarget,
    ScrapeError,
    job_progress,
    parse_progress_metric,
    scrape,
)

Serve = Callable[[web.Application], Awaitable[TestServer]]

PAGE = """\
# HELP train_samples Samples processed.
# TYPE train_samples counter
train_samples_total{rank="0",split="train"} 1200
train_samples_total{rank="1",split="train"} 1180.5
train_samples_total{rank="0",split="eval"} 64
train_samples_created{rank="0",split="train"} 1.7e9
# TYPE step_seconds histogram
step_seconds_count 37
step_seconds_sum 12.5
loss 0.25
"""


def app_with(handler: object, path: str = "/metrics") -> web.Application:
    app = web.Application()
    app.router.add_get(path, handler)  # type: ignore[arg-type]
    return app


def text(body: str, status: int = 200, content_type: str = "text/plain") -> object:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=body, status=status, content_type=content_type)

    return handler


async def scrape_pod(
    serve: Serve, session: aiohttp.ClientSession, annotation: str, handler: object, timeout_s: float = 2.0
) -> ProgressSample | ScrapeError:
    server = await serve(app_with(handler))
    target = parse_progress_metric(annotation.replace("PORT", str(server.port)))
    return await scrape(session, target, "127.0.0.1", timeout_s)


async def test_sums_every_series_of_the_counter(serve: Serve, session: aiohttp.ClientSession) -> None:
    result = await scrape_pod(serve, session, "PORT:/metrics#train_samples_total", text(PAGE))
    assert isinstance(result, ProgressSample), result
    assert result.value == pytest.approx(1200 + 1180.5 + 64)
    assert result.series == 3
    assert result.url.startswith("http://127.0.0.1:") and result.url.endswith("/metrics")


async def test_counter_name_without_total_suffix(serve: Serve, session: aiohttp.ClientSession) -> None:
    result = await scrape_pod(serve, session, "PORT:/metrics#train_samples", text(PAGE))
    assert isinstance(result, ProgressSample), result
    assert result.value == pytest.approx(2444.5)


async def test_exact_name_wins_over_the_total_suffix(serve: Serve, session: aiohttp.ClientSession) -> None:
    result = await scrape_pod(serve, session, "PORT:/metrics#step_seconds_count", text(PAGE))
    assert isinstance(result, ProgressSample) and result.value == 37


async def test_label_matchers_select_series(serve: Serve, session: aiohttp.ClientSession) -> None:
    result = await scrape_pod(serve, session, 'PORT:/metrics#train_samples_total{split="train"}', text(PAGE))
    assert isinstance(result, ProgressSample), result
    assert result.value == pytest.approx(2380.5)
    assert result.series == 2
    one = await scrape_pod(serve, session, 'PORT:/metrics#train_samples{ split = "train", rank="1" }', text(PAGE))
    assert isinstance(one, ProgressSample) and one.value == 1180.5


async def test_full_url_form(serve: Serve, session: aiohttp.ClientSession) -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.query_string)
        return web.Response(text=PAGE)

    server = await serve(app_with(handler, "/custom/path"))
    target = parse_progress_metric(f"http://127.0.0.1:{server.port}/custom/path?job=a#loss")
    result = await scrape(session, target, None, 2.0)  # no pod IP needed
    assert isinstance(result, ProgressSample) and result.value == 0.25
    assert seen == ["job=a"]


@pytest.mark.parametrize("status", [404, 500, 503])
async def test_http_errors(serve: Serve, session: aiohttp.ClientSession, status: int) -> None:
    result = await scrape_pod(serve, session, "PORT:/metrics#train_samples", text("nope", status=status))
    assert isinstance(result, ScrapeError)
    assert result.kind == "http"
    assert f"HTTP {status}" in result.message


async def test_wrong_path_is_a_404(serve: Serve, session: aiohttp.ClientSession) -> None:
    result = await scrape_pod(serve, session, "PORT:/other#train_samples", text(PAGE))
    assert isinstance(result, ScrapeError) and "HTTP 404" in result.message


async def test_redirects_are_not_followed(serve: Serve, session: aiohttp.ClientSession) -> None:
    async def handler(request: web.Request) -> web.Response:
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data")

    result = await scrape_pod(serve, session, "PORT:/metrics#x", handler)
    assert isinstance(result, ScrapeError) and result.kind == "http" and "HTTP 302" in result.message


async def test_timeout(serve: Serve, session: aiohttp.ClientSession, release: asyncio.Event) -> None:
    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text=PAGE)

    started = time.monotonic()
    result = await scrape_pod(serve, session, "PORT:/metrics#train_samples", hang, timeout_s=0.2)
    assert isinstance(result, ScrapeError)
    assert result.kind == "timeout"
    assert time.monotonic() - started < 5
    assert "0.2 s" in result.message


@pytest.mark.parametrize(
    "body",
    [
        "<html><body>secret-token-123 login page</body></html>\n",
        'train_samples_total{rank="0" 12\n',
        "train_samples_total twelve\n",
    ],
)
async def test_malformed_text_is_a_parse_error_that_does_not_quote_the_body(
    serve: Serve, session: aiohttp.ClientSession, body: str
) -> None:
    result = await scrape_pod(serve, session, "PORT:/metrics#train_samples", text(body))
    assert isinstance(result, ScrapeError)
    assert result.kind == "parse"
    assert "secret-token" not in result.message and "twelve" not in result.message


async def test_missing_metric(serve: Serve, session: aiohttp.ClientSession) -> None:
    result = await scrape_pod(serve, session, "PORT:/metrics#tokens", text(PAGE))
    assert isinstance(result, ScrapeError)
    assert result.kind == "missing"
    assert "tokens or tokens_total" in result.message
    filtered = await scrape_pod(serve, session, 'PORT:/metrics#train_samples{split="test"}', text(PAGE))
    assert isinstance(filtered, ScrapeError) and filtered.kind == "missing"
    assert 'train_samples{split="test"}' in filtered.message


@pytest.mark.parametrize("value", ["NaN", "-3", "+Inf"])
async def test_nan_negative_or_infinite_values_are_rejected(
    serve: Serve, session: aiohttp.ClientSession, value: str
) -> None:
    page = f'train_samples_total{{rank="0"}} 10\ntrain_samples_total{{rank="1"}} {value}\n'
    result = await scrape_pod(serve, session, "PORT:/metrics#train_samples_total", text(page))
    assert isinstance(result, ScrapeError)
    assert result.kind == "invalid"


async def test_connection_refused(session: aiohttp.ClientSession) -> None:
    with socket.socket() as sock:  # a port nothing listens on any more
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await scrape(session, parse_progress_metric(f"{port}:/metrics#x"), "127.0.0.1", 2.0)
    assert isinstance(result, ScrapeError)
    assert result.kind == "connection"
    assert str(port) in result.message


async def test_pod_without_ip(session: aiohttp.ClientSession) -> None:
    result = await scrape(session, parse_progress_metric("9090:/metrics#x"), None, 2.0)
    assert isinstance(result, ScrapeError) and result.kind == "no-ip"


async def test_oversized_page_is_refused(
    serve: Serve, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress, "MAX_BODY_BYTES", 1024)
    big = "".join(f'train_samples_total{{rank="{i}"}} {i}\n' for i in range(200))
    result = await scrape_pod(serve, session, "PORT:/metrics#train_samples", text(big))
    assert isinstance(result, ScrapeError) and result.kind == "too-large"


async def test_openmetrics_when_the_server_insists(serve: Serve, session: aiohttp.ClientSession) -> None:
    page = "# TYPE train_samples counter\ntrain_samples_total 42\n# EOF\n"

    async def handler(request: web.Request) -> web.Response:
        response = web.Response(body=page.encode())
        response.headers["Content-Type"] = "application/openmetrics-text; version=1.0.0; charset=utf-8"
        return response

    result = await scrape_pod(serve, session, "PORT:/metrics#train_samples", handler)
    assert isinstance(result, ProgressSample) and result.value == 42


async def test_closed_session_is_an_error_value() -> None:
    client = aiohttp.ClientSession()
    await client.close()
    result = await scrape(client, parse_progress_metric("9090:/metrics#x"), "127.0.0.1", 1.0)
    assert isinstance(result, ScrapeError) and result.kind == "connection"


def test_job_progress_needs_every_pod() -> None:
    ok = [ProgressSample(10, 1, "u"), ProgressSample(5.5, 2, "v")]
    assert job_progress(ok) == 15.5
    assert job_progress([*ok, ScrapeError("timeout", "t")]) is None
    assert job_progress([]) is None


# --- annotation parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("9090:/metrics#train_samples_total", ProgressTarget("train_samples_total", (), 9090, "/metrics")),
        (" 8000:/#steps ", ProgressTarget("steps", (), 8000, "/")),
        ("9090:/m?x=1#a:b_c", ProgressTarget("a:b_c", (), 9090, "/m?x=1")),
        (
            'http://exporter.ns.svc:9400/metrics#samples{pod="p-0", job="a\\"b"}',
            ProgressTarget(
                "samples",
                (("job", 'a"b'), ("pod", "p-0")),
                None,
                "/metrics",
                "http://exporter.ns.svc:9400/metrics",
            ),
        ),
        ("https://h/m#x{}", ProgressTarget("x", (), None, "/m", "https://h/m")),
    ],
)
def test_parse_valid(value: str, expected: ProgressTarget) -> None:
    assert parse_progress_metric(value) == expected


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("", "empty"),
        ("9090:/metrics", "no '#<metric>'"),
        ("9090:/metrics#", "no '#<metric>'"),
        ("/metrics#x", "expected '<port>:<path>#<metric>'"),
        ("9090:metrics#x", "expected"),
        ("70000:/metrics#x", "not in 1..65535"),
        ("0:/metrics#x", "not in 1..65535"),
        ("9090:/metrics#2fast", "not a metric name"),
        ("9090:/metrics#x y", "not a metric name"),
        ('9090:/metrics#x{a=~"b"}', "only exact label matchers"),
        ('9090:/metrics#x{a!="b"}', "only exact label matchers"),
        ("9090:/metrics#x{a=b}", "unreadable label matchers"),
        ('9090:/metrics#x{a="1",a="2"}', "matched twice"),
        ("ftp://h/m#x", "only http and https"),
        ("http://#x", "no host"),
        ("http://user:pw@h/m#x", "credentials"),
        ("9090:/" + "a" * 2000 + "#x", "longer than"),
    ],
)
def test_parse_garbage_says_what_is_wrong(value: str, complaint: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_progress_metric(value)
    assert complaint in str(info.value)


def test_ipv6_pod_address_is_bracketed() -> None:
    assert parse_progress_metric("9090:/metrics#x").url_for("fd00::1") == "http://[fd00::1]:9090/metrics"
