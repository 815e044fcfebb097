"""Read an LLM serving engine's own Prometheus metrics: output tokens, prompt tokens, latency, queue.

Pods annotated ``wattplane.io/workload: inference`` are scraped for their engine's metrics page; the
output-token counter is then joined with the GPU energy the agents attribute to the pod
(:mod:`wattplane.operator.tokens`) to give joules per output token.

Where the page is: ``wattplane.io/serving-metrics`` (``"8000"``, ``"8000:/metrics"`` or a full URL),
else the location part of ``wattplane.io/progress-metric`` if the pod has one. Which engine: the
``wattplane.io/serving-engine`` annotation (``vllm``, ``sglang``, ``tgi``) or, without it, the metric
names on the page (``vllm:`` and ``sglang:`` prefixes, ``tgi_`` names).

Metric names and types, as the engines expose them:

* vLLM (V1 engine): counters ``vllm:generation_tokens_total`` and ``vllm:prompt_tokens_total``;
  histograms ``vllm:time_to_first_token_seconds`` and ``vllm:inter_token_latency_seconds`` (older
  releases: ``vllm:time_per_output_token_seconds``, read when the former is absent); per finished
  request, histograms ``vllm:e2e_request_latency_seconds`` and ``vllm:request_generation_tokens``; gauge
  ``vllm:num_requests_waiting``. Labels ``model_name`` and, with several engines, ``engine``.
  Sources: vLLM docs "Production Metrics" (docs/usage/metrics.md in vllm-project/vllm,
  docs.vllm.ai/en/stable/usage/metrics/) and the V1 metrics design document
  (docs/source/design/v1/metrics.md, later docs/design/metrics.md).
* SGLang (``--enable-metrics``): counters ``sglang:generation_tokens_total`` and
  ``sglang:prompt_tokens_total``; histograms ``sglang:time_to_first_token_seconds`` and
  ``sglang:inter_token_latency_seconds`` (older: ``sglang:time_per_output_token_seconds``),
  ``sglang:e2e_request_latency_seconds`` and, with ``--collect-tokens-histogram``,
  ``sglang:generation_tokens_histogram`` (output tokens per finished request); gauge
  ``sglang:num_queue_reqs``. Source: SGLang docs "Production Metrics"
  (docs.sglang.io/references/production_metrics.html).
* Text Generation Inference: histogram ``tgi_request_generated_tokens`` (tokens per finished request:
  its ``_sum`` is the output-token total, counted when a request ends, so short windows are lumpy),
  ``tgi_request_input_length`` (prompt tokens), ``tgi_request_mean_time_per_token_duration`` (seconds
  per output token, one observation per request: the request's mean, not each token's gap),
  ``tgi_request_duration`` (end-to-end request latency), gauge ``tgi_queue_size``.
  TGI has no time-to-first-token metric. Source: TGI docs "Metrics"
  (huggingface.co/docs/text-generation-inference/reference/metrics).

Series are summed over their labels (several models or engines in one server count together). A
counter that is NaN, infinite or negative is refused with a reason, never turned into a number. Only
the lines of the series used are read (:func:`read_serving`); a full parse of an engine's page, mostly
histogram buckets, costs several times the HTTP fetch (``bench/token_scrape.py``). Of the buckets, only
the two latency histograms' are read: their increases over a window give the p90 latencies the serving
controller holds (:mod:`wattplane.operator.servingwindow`). Those figures, and the per-request
histograms, are optional: a bad line among them drops that figure, not the page.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Final, Literal

import aiohttp
from wattplane.api.annotations import PROGRESS_METRIC, SERVING_METRICS, ServingEngine, parse_pod_annotations
from wattplane.operator.progress import (
    ProgressTarget,
    ScrapeError,
    fetch_page,
    parse_location,
    parse_progress_metric,
)

Engine = ServingEngine


@dataclass(frozen=True)
class _Names:
    """Where an engine keeps each figure (histograms by base name; alternatives in order)."""

    output: str
    prompt: str
    ttft: tuple[str, ...]
    itl: tuple[str, ...]
    queue: str
    #: Output and prompt tokens are histogram ``_sum`` series (TGI), not counters.
    token_histograms: bool = False
    #: End-to-end request latency (seconds) and output tokens per finished request: both observed once
    #: per finished request, so their window increases give the requests' token delivery speed.
    e2e: tuple[str, ...] = ()
    request_output: tuple[str, ...] = ()


_NAMES: Final[Mapping[Engine, _Names]] = {
    "vllm": _Names(
        output="vllm:generation_tokens_total",
        prompt="vllm:prompt_tokens_total",
        ttft=("vllm:time_to_first_token_seconds",),
        itl=("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
        queue="vllm:num_requests_waiting",
        e2e=("vllm:e2e_request_latency_seconds",),
        request_output=("vllm:request_generation_tokens",),
    ),
    "sglang": _Names(
        output="sglang:generation_tokens_total",
        prompt="sglang:prompt_tokens_total",
        ttft=("sglang:time_to_first_token_seconds",),
        itl=("sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds"),
        queue="sglang:num_queue_reqs",
        e2e=("sglang:e2e_request_latency_seconds",),
        request_output=("sglang:generation_tokens_histogram",),
    ),
    "tgi": _Names(
        output="tgi_request_generated_tokens_sum",
        prompt="tgi_request_input_length_sum",
        ttft=(),
        itl=("tgi_request_mean_time_per_token_duration",),
        queue="tgi_queue_size",
        token_histograms=True,
        e2e=("tgi_request_duration",),
        request_output=("tgi_request_generated_tokens",),
    ),
}


@dataclass(frozen=True)
class Histogram:
    """A latency histogram's running sum and count (seconds, observations)."""

    sum: float
    count: float

    @property
    def mean(self) -> float | None:
        """Mean since the engine started, seconds; ``None`` before the first observation."""
        return self.sum / self.count if self.count > 0 else None


@dataclass(frozen=True)
class Buckets:
    """A histogram's cumulative buckets, summed over its label sets.

    Kept apart from :class:`Histogram` because only the latency histograms need them, and they are
    only useful as differences between two scrapes (a quantile since the engine started says little
    about the last minute).

    Attributes:
        name: The histogram read (its base name): two scrapes are comparable only if it is the same.
        counts: ``(le, observations <= le)`` in ascending ``le``, the last one ``+Inf``; never decreasing.
    """

    name: str
    counts: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class ServingSample:
    """One scrape of a serving engine.

    Attributes:
        engine: Which engine the page came from.
        output_tokens: Output (generated) tokens since the engine started (a counter).
        prompt_tokens: Prompt tokens since the engine started; ``None`` when not exposed.
        ttft: Time-to-first-token histogram, when exposed.
        itl: Inter-token latency (time per output token) histogram, when exposed.
        queue: Requests waiting now, when exposed.
        url: What was scraped.
        ttft_buckets: Buckets of the histogram ``ttft`` was read from, when exposed and readable.
        itl_buckets: Buckets of the histogram ``itl`` was read from, when exposed and readable.
        e2e: End-to-end latency of finished requests (seconds), when exposed.
        request_output: Output tokens of finished requests (the same requests as ``e2e``), when exposed.
    """

    engine: Engine
    output_tokens: float
    prompt_tokens: float | None
    ttft: Histogram | None
    itl: Histogram | None
    queue: float | None
    url: str
    ttft_buckets: Buckets | None = None
    itl_buckets: Buckets | None = None
    e2e: Histogram | None = None
    request_output: Histogram | None = None


@dataclass(frozen=True)
class ServingTarget:
    """Where a serving pod's metrics page is, and the engine if the pod names it."""

    location: ProgressTarget
    engine: Engine | None = None


def serving_target(annotations: Mapping[str, str]) -> ServingTarget | str:
    """The pod's serving-metrics target, or a one-line reason why it has none (for status and logs).

    An unreadable ``wattplane.io/serving-engine`` is an annotation problem the planner already posts
    as a pod event; the engine is then detected from the page.
    """
    intent = parse_pod_annotations(annotations)
    try:
        if intent.serving_metrics is not None:
            return ServingTarget(parse_location(intent.serving_metrics), intent.serving_engine)
        if intent.progress_metric is not None:
            return ServingTarget(parse_progress_metric(intent.progress_metric), intent.serving_engine)
    except ValueError as exc:
        return f"{SERVING_METRICS if intent.serving_metrics is not None else PROGRESS_METRIC}: {exc}"
    return f'no {SERVING_METRICS} annotation (e.g. "8000" for /metrics on port 8000)'


#: A label set: braces around name="value" pairs, values quoted with backslash escapes. The value's
#: loop is unrolled (runs of plain characters, then one escape) so that it costs one step per run, not
#: per character: bucket lines, read for every latency bound, are mostly label text.
_LABELS_RE: Final = re.compile(
    r'\{[ \t]*(?:[a-zA-Z_][a-zA-Z0-9_]*[ \t]*=[ \t]*"[^"\\\n]*(?:\\.[^"\\\n]*)*"[ \t]*,?[ \t]*)*\}'
)
_PREFIXES: Final[tuple[tuple[str, Engine], ...]] = (("\nvllm:", "vllm"), ("\nsglang:", "sglang"), ("\ntgi_", "tgi"))


def detect_engine(text: str) -> Engine | None:
    """The engine whose metrics the page carries (vLLM, then SGLang, then TGI names at a line start), or ``None``."""
    padded = "\n" + text
    return next((engine for prefix, engine in _PREFIXES if padded.find(prefix) >= 0), None)


def _families(names: _Names) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``(stem, sample names)`` per family read: every line of a family starts with its stem.

    A family needed twice (TGI's generated-tokens histogram gives both the output total and the
    per-request figures) is listed once, with the union of its names.
    """
    suffix = "_sum" if names.token_histograms else "_total"
    out: dict[str, list[str]] = {}
    for stem, needed in (
        *[(n.removesuffix(suffix), (n,)) for n in (names.output, names.prompt)],
        (names.queue, (names.queue,)),
        *[(h, (f"{h}_bucket", f"{h}_sum", f"{h}_count")) for h in (*names.ttft, *names.itl)],
        *[(h, (f"{h}_sum", f"{h}_count")) for h in (*names.e2e, *names.request_output)],
    ):
        listed = out.setdefault(stem, [])
        listed += [n for n in needed if n not in listed]
    return tuple((stem, tuple(listed)) for stem, listed in out.items())


def _strict(names: _Names) -> frozenset[str]:
    """The series whose unreadable line makes the whole page unreadable (the token counters and means).

    The others (latency buckets, per-request histograms) feed optional figures: a bad line among them
    drops that figure only.
    """
    latency = [f"{h}{s}" for h in (*names.ttft, *names.itl) for s in ("_sum", "_count")]
    return frozenset((names.output, names.prompt, names.queue, *latency))


_FAMILIES: Final[Mapping[Engine, tuple[tuple[str, tuple[str, ...]], ...]]] = {
    engine: _families(names) for engine, names in _NAMES.items()
}
_STRICT: Final[Mapping[Engine, frozenset[str]]] = {engine: _strict(names) for engine, names in _NAMES.items()}
#: An older histogram's buckets are read only when the newer one's were not found (pages in the middle
#: of a rename carry both, and the buckets are most of the reading's cost).
_FALLBACK_BUCKETS: Final[Mapping[Engine, Mapping[str, str]]] = {
    engine: {f"{old}_bucket": f"{names.itl[0]}_bucket" for old in names.itl[1:]} for engine, names in _NAMES.items()
}
#: The ``le`` label inside a label set already matched by ``_LABELS_RE``.
_LE_RE: Final = re.compile(r'[{,][ \t]*le[ \t]*=[ \t]*"([^"\\\n]*)"')
#: The rest of a ``_bucket`` line: its label set, then the value and an optional timestamp.
_BUCKET_RE: Final = re.compile(f"({_LABELS_RE.pattern})" + r"[ \t]*(\S+)(?:[ \t]+\S+)?[ \t\r]*(?=\n|\Z)")


def _sample_line(padded: str, pos: int) -> float | None:
    """The value of the sample line whose labels (or value) start at ``pos``; ``None`` if unreadable."""
    if padded.startswith("{", pos):
        labels = _LABELS_RE.match(padded, pos)
        if labels is None:
            return None
        pos = labels.end()
    eol = padded.find("\n", pos)
    parts = padded[pos : eol if eol >= 0 else len(padded)].split()
    if not 1 <= len(parts) <= 2 or "_" in parts[0]:  # float() would take "1_000"; Prometheus does not
        return None
    try:
        return float(parts[0])
    except ValueError:
        return None


def _bucket_line(padded: str, pos: int) -> tuple[float, float] | None:
    """``(le, value)`` of the ``_bucket`` sample line whose labels start at ``pos``; ``None`` if unreadable."""
    line = _BUCKET_RE.match(padded, pos)
    le = None if line is None else _LE_RE.search(padded, pos, line.end(1))
    if line is None or le is None or "_" in le.group(1) or "_" in line.group(2):  # float() takes "1_0"
        return None
    try:
        bound, value = float(le.group(1)), float(line.group(2))
    except ValueError:
        return None
    return None if math.isnan(bound) else (bound, value)


@dataclass(frozen=True)
class _Read:
    """The values read, by series name; for ``_bucket`` series, each value's ``le`` alongside, in order.

    An unreadable line of an optional series is kept as NaN, which makes its figure absent downstream.
    """

    values: dict[str, list[float]]
    les: dict[str, list[float]]


def _series(text: str, engine: Engine) -> _Read | str:
    """The values of the series ``engine``'s figures need, by name; or the name of one whose line is unreadable.

    Only those series' lines are read, found with ``str.find``: a serving engine's page is mostly
    histogram buckets nobody here needs, and a full parse of it costs several times the HTTP fetch.
    The text format keeps a family's lines together, so reading stops at the first line past the
    family. A line of a token counter or latency mean that is not ``name{labels} value [timestamp]``
    makes the page unreadable rather than silently dropping a series from a sum; one of an optional
    series (buckets, per-request histograms) reads as NaN, so only its figure is dropped.
    """
    padded = "\n" + text
    found: dict[str, list[float]] = {}
    les: dict[str, list[float]] = {}
    strict, fallbacks = _STRICT[engine], _FALLBACK_BUCKETS[engine]
    for stem, names in _FAMILIES[engine]:
        at = -1
        for name in names:  # the family's first line of a needed series
            start = padded.find("\n" + name)
            while start >= 0 and padded[start + 1 + len(name) : start + 2 + len(name)] not in ("{", " ", "\t"):
                start = padded.find("\n" + name, start + 1)
            if start >= 0 and (at < 0 or start < at):
                at = start
        buckets = stem + "_bucket"
        wanted = buckets in names and fallbacks.get(buckets, "") not in les
        while at >= 0 and padded.startswith(stem, at + 1):
            line = at + 1
            if not wanted and padded.startswith(buckets, line):  # jump to the label set's _count or _sum
                after = [
                    p for p in (padded.find(f"\n{stem}_count", line), padded.find(f"\n{stem}_sum", line)) if p >= 0
                ]
                at = min(after, default=-1)
                continue
            for name in names:
                end = line + len(name)
                if padded.startswith(name, line) and padded[end : end + 1] in ("{", " ", "\t"):
                    value: float | None
                    if name.endswith("_bucket"):
                        bucket = _bucket_line(padded, end)
                        le, value = bucket if bucket is not None else (math.nan, math.nan)
                        les.setdefault(name, []).append(le)
                    else:
                        value = _sample_line(padded, end)
                    if value is None and name in strict:
                        return name
                    found.setdefault(name, []).append(math.nan if value is None else value)
            at = padded.find("\n", line)
    return _Read(found, les)


def _sum(by_name: Mapping[str, list[float]], name: str) -> float | Literal["invalid"] | None:
    values = by_name.get(name)
    if not values:
        return None
    if any(not math.isfinite(v) or v < 0 for v in values):
        return "invalid"
    return math.fsum(values)


def _histogram(by_name: Mapping[str, list[float]], names: tuple[str, ...]) -> Histogram | None:
    """The first of ``names`` exposed with usable ``_sum`` and ``_count``; garbage reads as absent."""
    for name in names:
        total, count = _sum(by_name, name + "_sum"), _sum(by_name, name + "_count")
        if isinstance(total, float) and isinstance(count, float):
            return Histogram(total, count)
    return None


def _buckets(read: _Read, names: tuple[str, ...]) -> Buckets | None:
    """The buckets of the histogram :func:`_histogram` picks from ``names``, summed per ``le`` over label sets.

    ``None`` unless every line was readable, every count finite and non-negative, every label set
    has the same bounds (each ``le`` seen as many times as ``+Inf``: summing sets with different
    bounds would mix counts of different intervals) and the sums never decrease along ``le``.
    """
    chosen = next((n for n in names if _histogram(read.values, (n,)) is not None), None)
    if chosen is None:
        return None
    values, bounds = read.values.get(chosen + "_bucket"), read.les.get(chosen + "_bucket")
    if not values or bounds is None or len(bounds) != len(values):
        return None
    sums: dict[float, list[float]] = {}
    for le, value in zip(bounds, values, strict=True):
        if not math.isfinite(value) or value < 0 or math.isnan(le):
            return None
        sums.setdefault(le, []).append(value)
    sets = len(sums.get(math.inf, ()))
    if sets == 0 or any(len(v) != sets for v in sums.values()):
        return None
    counts = tuple((le, math.fsum(sums[le])) for le in sorted(sums))
    if any(later[1] < earlier[1] for earlier, later in pairwise(counts)):
        return None
    return Buckets(chosen, counts)


def read_serving(text: str, url: str, engine: Engine | None = None) -> ServingSample | ScrapeError:
    """The figures of ``engine`` (detected from the names when ``None``) on a metrics page.

    Prometheus text format and OpenMetrics share the sample-line syntax read here; comments, other
    series and the buckets of histograms other than the two latency ones are skipped without being parsed.
    """
    found = engine or detect_engine(text)
    if found is None:
        return ScrapeError("missing", f"GET {url}: no vLLM, SGLang or TGI metrics on the page", url)
    names = _NAMES[found]
    read = _series(text, found)
    if isinstance(read, str):
        return ScrapeError("parse", f"GET {url}: unreadable sample line of {read} ({found})", url)
    by_name = read.values
    output = _sum(by_name, names.output)
    if output is None:
        return ScrapeError("missing", f"GET {url}: no {names.output} series ({found})", url)
    if output == "invalid":
        return ScrapeError("invalid", f"GET {url}: {names.output} is NaN, infinite or negative", url)
    prompt = _sum(by_name, names.prompt)
    queue = _sum(by_name, names.queue)
    return ServingSample(
        engine=found,
        output_tokens=output,
        prompt_tokens=prompt if isinstance(prompt, float) else None,
        ttft=_histogram(by_name, names.ttft),
        itl=_histogram(by_name, names.itl),
        queue=queue if isinstance(queue, float) else None,
        url=url,
        ttft_buckets=_buckets(read, names.ttft),
        itl_buckets=_buckets(read, names.itl),
        e2e=_histogram(by_name, names.e2e),
        request_output=_histogram(by_name, names.request_output),
    )


async def scrape_serving(
    session: aiohttp.ClientSession, target: ServingTarget, pod_ip: str | None, timeout_s: float
) -> ServingSample | ScrapeError:
    """Fetch and read a serving pod's metrics page; never raises (errors are values)."""
    url = target.location.url_for(pod_ip)
    if url is None:
        return ScrapeError("no-ip", "the pod has no IP address yet")
    page = await fetch_page(session, url, timeout_s)
    if isinstance(page, ScrapeError):
        return page
    return read_serving(page[0], url, target.engine)
