"""Turn two scrapes of a serving engine into the window the serving controller decides on.

:func:`wattplane.planner.servingcap.decide_serving_cap` reacts to the last scrape interval, so every
figure here is over the window between two scrapes (:class:`~wattplane.operator.serving.ServingSample`),
never since the engine started: a p90 over hours of history would hide the minute in which a lower
clock started to hurt, and would keep hurting after the knob was released.

* **p90 latencies**: from the increase of each cumulative bucket over the window, interpolated
  linearly inside the bucket that holds the 90th percentile, as PromQL's ``histogram_quantile`` does
  (:func:`bucket_quantile`), so the figure matches what an operator's dashboard shows for the same
  window.
* **speed**: output tokens over end-to-end latency of the requests that finished in the window (both
  histograms are observed once per finished request, so their increases cover the same requests).
* **load**: prompt plus output tokens per second: the work offered, in a unit that does not move with
  the knob (requests per second would, since a capped pod finishes fewer of them).
* **prefill share**: prompt tokens per second times the GPU's prefill seconds per token at default
  clocks: it chooses the knob, so it must not depend on the knob in force.
* **joules per output token**: the energy the agents attributed to the pod over the same window.

A counter that went backwards (the engine restarted), a different engine, page or histogram between
the two scrapes voids every figure derived from increases: a difference across a restart is a wrong
number, and the controller keeps its knob when a figure is missing. The waiting-queue gauge is read
from the current scrape alone and stays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

from wattplane.operator.serving import Buckets, Histogram, ServingSample
from wattplane.planner.servingcap import ServingWindow

#: The quantile the serving objectives are written for.
P90 = 0.9


def bucket_quantile(q: float, counts: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of cumulative buckets ``(le, count)`` (ascending, last ``+Inf``), PromQL style.

    Follows ``histogram_quantile``: the rank ``q × total`` falls in the first bucket whose count
    reaches it and is placed by linear interpolation between that bucket's bounds (the first
    bucket starts at 0); a rank in the ``+Inf`` bucket gives the highest finite bound, the only
    bound known. ``None`` (where PromQL says NaN) with fewer than two buckets, no ``+Inf`` bucket,
    no observation, decreasing counts or ``q`` outside [0, 1].
    """
    if not 0.0 <= q <= 1.0 or len(counts) < 2 or counts[-1][0] != math.inf:
        return None
    if any(b[0] <= a[0] or b[1] < a[1] for a, b in pairwise(counts)) or counts[0][1] < 0:
        return None
    total = counts[-1][1]
    if not total > 0 or not math.isfinite(total):
        return None
    rank = q * total
    b = next(i for i, (_, count) in enumerate(counts) if count >= rank or i == len(counts) - 1)
    if b == len(counts) - 1:
        return counts[-2][0]
    end, count = counts[b]
    if b == 0:
        if end <= 0:
            return end
        start, below = 0.0, 0.0
    else:
        start, below = counts[b - 1]
    return start + (end - start) * ((rank - below) / (count - below))


def window_counts(previous: Buckets | None, current: Buckets | None) -> tuple[tuple[float, float], ...] | None:
    """The observations each cumulative bucket gained between two scrapes; ``None`` if not comparable.

    Comparable means the same histogram with the same bounds (a restart with other buckets, or a
    switch from one metric name to its older alternative, is not) and no count that went down.
    """
    if previous is None or current is None or previous.name != current.name:
        return None
    if [le for le, _ in previous.counts] != [le for le, _ in current.counts]:
        return None
    gained = tuple((le, now - before) for (le, before), (_, now) in zip(previous.counts, current.counts, strict=True))
    if any(delta < 0 for _, delta in gained):
        return None
    return gained


def window_p90(previous: Buckets | None, current: Buckets | None) -> float | None:
    """p90 of the observations made between two scrapes; ``None`` if none were, or they cannot be compared."""
    gained = window_counts(previous, current)
    return None if gained is None else bucket_quantile(P90, gained)


def _gained(previous: float | None, current: float | None) -> float | None:
    """``current - previous`` for a counter read at both ends; ``None`` if either is missing."""
    if previous is None or current is None:
        return None
    return current - previous


def _restarted(previous: ServingSample, current: ServingSample) -> bool:
    """Whether the two scrapes cannot be differenced: another engine or page, or any counter went down.

    Every counter is checked, not only the one a figure uses: after a restart a busy counter may
    already be above its old value while a quiet one shows the reset, and every difference across
    the restart is wrong.
    """
    if previous.engine != current.engine or previous.url != current.url:
        return True
    pairs: list[tuple[float | None, float | None]] = [
        (previous.output_tokens, current.output_tokens),
        (previous.prompt_tokens, current.prompt_tokens),
    ]
    histograms: list[tuple[Histogram | None, Histogram | None]] = [
        (previous.ttft, current.ttft),
        (previous.itl, current.itl),
        (previous.e2e, current.e2e),
        (previous.request_output, current.request_output),
    ]
    pairs += [(a.count, b.count) for a, b in histograms if a is not None and b is not None]
    pairs += [(a.sum, b.sum) for a, b in histograms if a is not None and b is not None]
    return any(a is not None and b is not None and b < a for a, b in pairs)


def serving_window(
    previous: ServingSample,
    current: ServingSample,
    *,
    seconds: float,
    prefill_s_per_token: float | None,
    joules: float | None,
) -> ServingWindow:
    """The controller's view of one serving pod over the ``seconds`` between two scrapes.

    Args:
        previous: The earlier scrape.
        current: The later scrape, of the same pod.
        seconds: Time between the two scrapes (rates need it; the p90s and speed do not).
        prefill_s_per_token: GPU seconds per prompt token at default clocks, for the prefill share;
            ``None`` leaves the share unknown (the controller then keeps its regime).
        joules: GPU energy attributed to the pod over the same window; ``None`` when not known.

    Returns:
        A :class:`ServingWindow` whose figures are ``None`` where the engine does not expose what
        they need, nothing was observed in the window, or the scrapes cannot be differenced.
    """
    queue = current.queue
    if _restarted(previous, current):
        return ServingWindow(tpot_p90_s=None, ttft_p90_s=None, speed_tps=None, queue=queue)
    rated = math.isfinite(seconds) and seconds > 0
    output = current.output_tokens - previous.output_tokens
    prompt = _gained(previous.prompt_tokens, current.prompt_tokens)

    speed = None
    e2e = (previous.e2e, current.e2e)
    finished_tokens = (previous.request_output, current.request_output)
    if e2e[0] is not None and e2e[1] is not None and finished_tokens[0] is not None and finished_tokens[1] is not None:
        latency = e2e[1].sum - e2e[0].sum
        tokens = finished_tokens[1].sum - finished_tokens[0].sum
        finished = min(e2e[1].count - e2e[0].count, finished_tokens[1].count - finished_tokens[0].count)
        if finished > 0 and latency > 0:
            speed = tokens / latency

    load = (prompt + output) / seconds if rated and prompt is not None else None
    share = None
    if rated and prompt is not None and prefill_s_per_token is not None and math.isfinite(prefill_s_per_token):
        share = min(1.0, max(0.0, prompt / seconds * prefill_s_per_token))
    per_token = None
    if joules is not None and math.isfinite(joules) and joules >= 0 and output > 0:
        per_token = joules / output

    return ServingWindow(
        tpot_p90_s=window_p90(previous.itl_buckets, current.itl_buckets),
        ttft_p90_s=window_p90(previous.ttft_buckets, current.ttft_buckets),
        speed_tps=speed,
        queue=queue,
        prefill_share=share,
        joules_per_token=per_token,
        load=load,
    )
