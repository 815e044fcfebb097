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
  releases: ``vllm:time_per_output_token_seconds``, read when the former is absent); gauge
  ``vllm:num_requests_waiting``. Labels ``model_name`` and, with several engines, ``engine``.
  Sources: vLLM docs "Production Metrics" (docs/usage/metrics.md in vllm-project/vllm,
  docs.vllm.ai/en/stable/usage/metrics/) and the V1 metrics design document
  (docs/source/design/v1/metrics.md, later docs/design/metrics.md).
* SGLang (``--enable-metrics``): counters ``sglang:generation_tokens_total`` and
  ``sglang:prompt_tokens_total``; histograms ``sglang:time_to_first_token_seconds`` and
  ``sglang:inter_token_latency_seconds`` (older: ``sglang:time_per_output_token_seconds``); gauge
  ``sglang:num_queue_reqs``. Source: SGLang docs "Production Metrics"
  (docs.sglang.io/references/production_metrics.html).
* Text Generation Inference: histogram ``tgi_request_generated_tokens`` (tokens per finished request:
  its ``_sum`` is the output-token total, counted when a request ends, so short windows are lumpy),
  ``tgi_request_input_length`` (prompt tokens), ``tgi_request_mean_time_per_token_duration`` (seconds
  per output token), gauge ``tgi_queue_size``.
  TGI has no time-to-first-token metric. Source: TGI docs "Metrics"
  (huggingface.co/docs/text-generation-inference/reference/metrics).

Series are summed over their labels (several models or engines in one server count together). A
counter that is NaN, infinite or negative is refused with a reason, never turned into a number. Only
the lines of the series used are read (:func:`read_serving`); a full parse of an engine's page, mostly
histogram buckets, costs several times the HTTP fetch (``bench/token_scrape.py``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
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


_NAMES: Final[Mapping[Engine, _Names]] = {
    "vllm": _Names(
        output="vllm:generation_tokens_total",
        prompt="vllm:prompt_tokens_total",
        ttft=("vllm:time_to_first_token_seconds",),
        itl=("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
        queue="vllm:num_requests_waiting",
    ),
    "sglang": _Names(
        output="sglang:generation_tokens_total",
        prompt="sglang:prompt_tokens_total",
        ttft=("sglang:time_to_first_token_seconds",),
        itl=("sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds"),
        queue="sglang:num_queue_reqs",
    ),
    "tgi": _Names(
        output="tgi_request_generated_tokens_sum",
        prompt="tgi_request_input_length_sum",
        ttft=(),
        itl=("tgi_request_mean_time_per_token_duration",),
        queue="tgi_queue_size",
        token_histograms=True,
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
    """

    engine: Engine
    output_tokens: float
    prompt_tokens: float | None
    ttft: Histogram | None
    itl: Histogram | None
    queue: float | None
    url: str


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


#: A label set: braces around name="value" pairs, values quoted with backslash escapes.
_LABELS_RE: Final = re.compile(r'\{[ \t]*(?:[a-zA-Z_][a-zA-Z0-9_]*[ \t]*=[ \t]*"(?:[^"\\\n]|\\.)*"[ \t]*,?[ \t]*)*\}')
_PREFIXES: Final[tuple[tuple[str, Engine], ...]] = (("\nvllm:", "vllm"), ("\nsglang:", "sglang"), ("\ntgi_", "tgi"))


def detect_engine(text: str) -> Engine | None:
    """The engine whose metrics the page carries (vLLM, then SGLang, then TGI names at a line start), or ``None``."""
    padded = "\n" + text
    return next((engine for prefix, engine in _PREFIXES if padded.find(prefix) >= 0), None)


def _families(names: _Names) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``(stem, sample names)`` per family read: every line of a family starts with its stem."""
    suffix = "_sum" if names.token_histograms else "_total"
    out: list[tuple[str, tuple[str, ...]]] = [(n.removesuffix(suffix), (n,)) for n in (names.output, names.prompt)]
    out.append((names.queue, (names.queue,)))
    out += [(h, (f"{h}_sum", f"{h}_count")) for h in (*names.ttft, *names.itl)]
    return tuple(out)


_FAMILIES: Final[Mapping[Engine, tuple[tuple[str, tuple[str, ...]], ...]]] = {
    engine: _families(names) for engine, names in _NAMES.items()
}


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


def _series(text: str, engine: Engine) -> dict[str, list[float]] | str:
    """The values of the series ``engine``'s figures need, by name; or the name of one whose line is unreadable.

    Only those series' lines are read, found with ``str.find``: a serving engine's page is mostly
    histogram buckets nobody here needs, and a full parse of it costs several times the HTTP fetch.
    The text format keeps a family's lines together, so reading stops at the first line past the
    family. A line of a needed series that is not ``name{labels} value [timestamp]`` makes the page
    unreadable rather than silently dropping a series from a sum.
    """
    padded = "\n" + text
    found: dict[str, list[float]] = {}
    for stem, names in _FAMILIES[engine]:
        at = -1
        for name in names:  # the family's first line of a needed series
            start = padded.find("\n" + name)
            while start >= 0 and padded[start + 1 + len(name) : start + 2 + len(name)] not in ("{", " ", "\t"):
                start = padded.find("\n" + name, start + 1)
            if start >= 0 and (at < 0 or start < at):
                at = start
        while at >= 0 and padded.startswith(stem, at + 1):
            line = at + 1
            for name in names:
                end = line + len(name)
                if padded.startswith(name, line) and padded[end : end + 1] in ("{", " ", "\t"):
                    value = _sample_line(padded, end)
                    if value is None:
                        return name
                    found.setdefault(name, []).append(value)
            at = padded.find("\n", line)
    return found


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


def read_serving(text: str, url: str, engine: Engine | None = None) -> ServingSample | ScrapeError:
    """The figures of ``engine`` (detected from the names when ``None``) on a metrics page.

    Prometheus text format and OpenMetrics share the sample-line syntax read here; comments, other
    series and histogram buckets are skipped without being parsed.
    """
    found = engine or detect_engine(text)
    if found is None:
        return ScrapeError("missing", f"GET {url}: no vLLM, SGLang or TGI metrics on the page", url)
    names = _NAMES[found]
    by_name = _series(text, found)
    if isinstance(by_name, str):
        return ScrapeError("parse", f"GET {url}: unreadable sample line of {by_name} ({found})", url)
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
