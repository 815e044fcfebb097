"""Scrape training-progress counters from pods, for Zeus profiling and straggler control.

A pod says where its progress counter lives with the ``wattplane.io/progress-metric`` annotation:

* ``"<port>:<path>#<metric>"``, scraped at the pod's IP, e.g. ``9090:/metrics#train_samples_total``;
* ``"http://host:port/path#metric"`` (or ``https``), a full URL, e.g. for a sidecar or exporter
  Service;
* either form may filter series with exact label matchers, summing what matches:
  ``9090:/metrics#train_samples_total{split="train"}``.

The page is Prometheus text format (OpenMetrics is accepted when the server insists). A counter is
exposed as ``<name>_total``; asking for ``train_samples`` or ``train_samples_total`` both work: the
exact name is tried first, then ``<name>_total``.

Nothing here raises into the operator's loop: :func:`parse_progress_metric` raises ``ValueError``
with a message meant for a pod event, and :func:`scrape` returns a :class:`ScrapeError` value for every
failure. Error messages never quote the scraped body: the URL may point anywhere a pod's author
chose, and what it returns must not leak into events.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

import aiohttp
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus
from yarl import URL

#: Largest metrics page read; a bigger one is an error, not a memory problem.
MAX_BODY_BYTES: Final = 8 * 1024 * 1024
#: Longest annotation value accepted.
MAX_VALUE_CHARS: Final = 1024

_USAGE: Final = (
    "expected '<port>:<path>#<metric>' (e.g. 9090:/metrics#train_samples_total) "
    "or 'http://host:port/path#<metric>', optionally with label matchers: <metric>{label=\"value\"}"
)
_METRIC_RE: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_SELECTOR_RE: Final = re.compile(r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(?P<labels>.*)\})?", re.DOTALL)
_MATCHER_RE: Final = re.compile(
    r'\s*(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)\s*(?P<op>=~|!~|!=|=)\s*"(?P<value>(?:[^"\\]|\\.)*)"\s*(?:,|$)', re.DOTALL
)
_POD_LOCATION_RE: Final = re.compile(r"(?P<port>\d{1,5}):(?P<path>/\S*)")
_ACCEPT: Final = "text/plain;version=0.0.4;q=1.0,application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.1"


@dataclass(frozen=True)
class ProgressTarget:
    """Where a pod's progress counter is and which series to sum.

    Attributes:
        metric: Metric (sample) name as written in the annotation.
        labels: Exact label matchers, sorted by label name.
        port: Port on the pod's IP (pod form), ``None`` for a full URL.
        path: Path (and query) on the pod (pod form).
        url: The full URL (URL form), ``None`` for the pod form.
    """

    metric: str
    labels: tuple[tuple[str, str], ...] = ()
    port: int | None = None
    path: str = "/metrics"
    url: str | None = None

    def url_for(self, pod_ip: str | None) -> str | None:
        """The URL to scrape for a pod with ``pod_ip``; ``None`` when the pod form has no IP yet."""
        if self.url is not None:
            return self.url
        if not pod_ip:
            return None
        host = f"[{pod_ip}]" if ":" in pod_ip and not pod_ip.startswith("[") else pod_ip
        return f"http://{host}:{self.port}{self.path}"

    def describe(self) -> str:
        """The series selector, Prometheus style: ``name{label="value"}``."""
        if not self.labels:
            return self.metric
        inner = ",".join(f'{k}="{_escape(v)}"' for k, v in self.labels)
        return f"{self.metric}{{{inner}}}"


@dataclass(frozen=True)
class ProgressSample:
    """A successful scrape: the sum of the matching series."""

    value: float
    series: int
    url: str


ScrapeErrorKind = Literal["no-ip", "timeout", "connection", "http", "too-large", "parse", "missing", "invalid"]


@dataclass(frozen=True)
class ScrapeError:
    """Why a scrape produced no value (a value, never raised).

    Attributes:
        kind: Machine-readable class of failure.
        message: One line for logs and pod events (never contains the scraped body).
        url: What was scraped, when known.
    """

    kind: ScrapeErrorKind
    message: str
    url: str | None = None


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _parse_labels(text: str) -> tuple[tuple[str, str], ...]:
    matchers: dict[str, str] = {}
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _MATCHER_RE.match(text, pos)
        if match is None:
            raise ValueError(f"unreadable label matchers {{{text[:60]}}}: {_USAGE}")
        if match.group("op") != "=":
            raise ValueError(f'only exact label matchers (label="value") are supported, not {match.group("op")!r}')
        label = match.group("label")
        if label in matchers:
            raise ValueError(f"label {label!r} is matched twice")
        matchers[label] = _unescape(match.group("value"))
        pos = match.end()
    return tuple(sorted(matchers.items()))


def _parse_location(location: str) -> tuple[int | None, str, str | None]:
    """``(port, path, url)`` of the part before ``#``."""
    lowered = location.lower()
    if lowered.startswith(("http://", "https://")):
        try:
            url = URL(location)
        except (ValueError, TypeError):
            raise ValueError(f"unreadable URL: {_USAGE}") from None
        if not url.host:
            raise ValueError(f"the URL has no host: {_USAGE}")
        if url.user is not None or url.password is not None:
            raise ValueError("credentials in the URL are not supported")
        try:
            port = url.port
        except ValueError:
            raise ValueError("the URL's port is not a number") from None
        if port is not None and not 0 < port < 65536:
            raise ValueError("the URL's port must be in 1..65535")
        return None, url.path_qs or "/", str(url)
    if "://" in location:
        raise ValueError(f"only http and https URLs are supported: {_USAGE}")
    match = _POD_LOCATION_RE.fullmatch(location)
    if match is None:
        raise ValueError(_USAGE)
    port = int(match.group("port"))
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is not in 1..65535")
    return port, match.group("path"), None


def parse_location(value: str) -> ProgressTarget:
    """Read a metrics page location alone: ``"<port>"``, ``"<port>:<path>"`` or a full http(s) URL.

    The same forms as the part of ``wattplane.io/progress-metric`` before ``#``; a bare port means
    ``/metrics`` on the pod's IP. The returned target has no metric name.

    Raises:
        ValueError: The value is unusable (the message is meant for a pod event).
    """
    text = value.strip()
    if not text:
        raise ValueError("the value is empty: expected '<port>', '<port>:<path>' or 'http://host:port/path'")
    if len(text) > MAX_VALUE_CHARS:
        raise ValueError(f"the value is longer than {MAX_VALUE_CHARS} characters")
    if text.isdigit():
        text = f"{text}:/metrics"
    port, path, url = _parse_location(text)
    return ProgressTarget(metric="", port=port, path=path, url=url)


def parse_progress_metric(value: str) -> ProgressTarget:
    """Read a ``wattplane.io/progress-metric`` annotation value.

    Raises:
        ValueError: The value is unusable; the message says what is wrong and what is expected, and
            is meant to be posted as a pod event.
    """
    text = value.strip()
    if not text:
        raise ValueError(f"the value is empty: {_USAGE}")
    if len(text) > MAX_VALUE_CHARS:
        raise ValueError(f"the value is longer than {MAX_VALUE_CHARS} characters")
    location, sep, selector = text.partition("#")
    if not sep or not selector.strip():
        raise ValueError(f"no '#<metric>' part: {_USAGE}")
    port, path, url = _parse_location(location.strip())
    match = _SELECTOR_RE.fullmatch(selector.strip())
    if match is None:
        raise ValueError(f"{selector.strip()[:60]!r} is not a metric name (letters, digits, '_' and ':'): {_USAGE}")
    labels = _parse_labels(match.group("labels")) if match.group("labels") is not None else ()
    return ProgressTarget(metric=match.group("name"), labels=labels, port=port, path=path, url=url)


async def _read_capped(response: aiohttp.ClientResponse) -> bytes | None:
    """The body, or ``None`` when it exceeds :data:`MAX_BODY_BYTES`."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


_Sample = tuple[str, dict[str, str], float]


def _matching(samples: list[_Sample], target: ProgressTarget) -> list[_Sample]:
    """Series named exactly as asked, else the counter's ``_total`` series; label matchers applied."""
    wanted = dict(target.labels)

    def selected(name: str) -> list[_Sample]:
        return [s for s in samples if s[0] == name and all(s[1].get(k) == v for k, v in wanted.items())]

    exact = selected(target.metric)
    if exact or target.metric.endswith("_total"):
        return exact
    return selected(target.metric + "_total")


def _parse_page(text: str, content_type: str, url: str) -> list[_Sample] | ScrapeError:
    """Every sample of a metrics page as ``(name, labels, value)``, or a ``parse`` error.

    OpenMetrics when the server says so, else the Prometheus text format.
    """
    openmetrics = content_type.startswith("application/openmetrics-text")
    parser = parse_openmetrics if openmetrics else parse_prometheus
    try:
        return [(s.name, dict(s.labels), float(s.value)) for f in parser(text) for s in f.samples]
    except Exception as exc:  # the parsers raise assorted types on garbage; all mean "unreadable"
        fmt = "OpenMetrics" if openmetrics else "Prometheus text format"
        return ScrapeError("parse", f"GET {url}: the page is not {fmt} ({type(exc).__name__})", url)


def _extract(text: str, content_type: str, target: ProgressTarget, url: str) -> ProgressSample | ScrapeError:
    samples = _parse_page(text, content_type, url)
    if isinstance(samples, ScrapeError):
        return samples
    matches = _matching(samples, target)
    if not matches:
        also = "" if target.metric.endswith("_total") else f" or {target.metric}_total"
        return ScrapeError(
            "missing",
            f"GET {url}: no series {target.describe()}{also} among {len(samples)} sample(s)",
            url,
        )
    values = [value for _, _, value in matches]
    if any(not math.isfinite(v) or v < 0 for v in values):
        return ScrapeError("invalid", f"GET {url}: {target.describe()} is NaN, infinite or negative", url)
    return ProgressSample(value=math.fsum(values), series=len(values), url=url)


async def fetch_page(session: aiohttp.ClientSession, url: str, timeout_s: float) -> tuple[str, str] | ScrapeError:
    """GET a metrics page: ``(text, content type)``, or the failure as a value (never raises).

    Redirects are not followed, and a page over :data:`MAX_BODY_BYTES` is refused.
    """
    seconds = timeout_s if math.isfinite(timeout_s) and timeout_s > 0 else 5.0
    try:
        async with session.get(
            url,
            timeout=aiohttp.ClientTimeout(total=seconds),
            allow_redirects=False,
            headers={"Accept": _ACCEPT},
        ) as response:
            if response.status != 200:
                return ScrapeError("http", f"GET {url}: HTTP {response.status} {response.reason or ''}".rstrip(), url)
            body = await _read_capped(response)
            content_type = response.headers.get("Content-Type", "").lower()
            charset = response.charset or "utf-8"
    except TimeoutError:
        return ScrapeError("timeout", f"GET {url}: no answer within {seconds:g} s", url)
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return ScrapeError("connection", f"GET {url}: {type(exc).__name__}: {exc}", url)
    except Exception as exc:  # the contract is "errors are values" (e.g. a closed session)
        return ScrapeError("connection", f"GET {url}: {type(exc).__name__}", url)
    if body is None:
        return ScrapeError("too-large", f"GET {url}: page larger than {MAX_BODY_BYTES} bytes", url)
    try:
        text = body.decode(charset, errors="replace")
    except LookupError:  # an unknown charset name
        text = body.decode("utf-8", errors="replace")
    return text, content_type


async def scrape(
    session: aiohttp.ClientSession,
    target: ProgressTarget,
    pod_ip: str | None,
    timeout_s: float,
) -> ProgressSample | ScrapeError:
    """Fetch ``target`` (at ``pod_ip`` for the pod form) and sum the selected counter's series.

    Never raises (cancellation aside): every failure comes back as a :class:`ScrapeError`. Redirects
    are not followed, and a page over :data:`MAX_BODY_BYTES` is refused.
    """
    url = target.url_for(pod_ip)
    if url is None:
        return ScrapeError("no-ip", "the pod has no IP address yet")
    page = await fetch_page(session, url, timeout_s)
    if isinstance(page, ScrapeError):
        return page
    return _extract(page[0], page[1], target, url)


def job_progress(results: Iterable[ProgressSample | ScrapeError]) -> float | None:
    """The job's progress: the pods' values summed, or ``None`` unless every pod was read.

    A partial sum would look like a counter going backwards (or a sudden jump when the pod comes back)
    and spoil the measurement window; no value is the honest answer.
    """
    total: list[float] = []
    for result in results:
        if not isinstance(result, ProgressSample):
            return None
        total.append(result.value)
    return math.fsum(total) if total else None
