"""Pod annotations users set to steer wattplane, and their parsing.

Annotations are user input: a garbage value must never break planning. :func:`parse_pod_annotations`
therefore always returns a usable :class:`PodIntent`, falling back to the default for every value
it cannot read and listing each problem in ``problems`` so the operator can post an event on the pod.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

PREFIX: Final = "wattplane.io/"
JOB: Final = PREFIX + "job"
PRIORITY: Final = PREFIX + "priority"
WORKLOAD: Final = PREFIX + "workload"
POLICY: Final = PREFIX + "policy"
OPT_OUT: Final = PREFIX + "opt-out"
MIN_POWER_WATTS: Final = PREFIX + "min-power-watts"
MAX_SLOWDOWN: Final = PREFIX + "max-slowdown"
PROGRESS_METRIC: Final = PREFIX + "progress-metric"
#: Where an inference pod's serving engine exposes its metrics (read by the operator's token scrape).
SERVING_METRICS: Final = PREFIX + "serving-metrics"
#: Which serving engine (``vllm``, ``sglang``, ``tgi``); detected from the metric names when absent.
SERVING_ENGINE: Final = PREFIX + "serving-engine"
#: A serving pod's own objectives, overriding its policy's ``serving`` section.
SLO_TPOT_P90_MS: Final = PREFIX + "slo-tpot-p90-ms"
SLO_TTFT_P90_MS: Final = PREFIX + "slo-ttft-p90-ms"
#: Reading speed the token stream must not fall below, tokens per second.
SLO_SPEED_FLOOR: Final = PREFIX + "slo-speed-floor"
#: Requests waiting beyond which the pod is never capped.
SLO_QUEUE_BOUND: Final = PREFIX + "slo-queue-bound"

KNOWN: Final = frozenset(
    {
        JOB,
        PRIORITY,
        WORKLOAD,
        POLICY,
        OPT_OUT,
        MIN_POWER_WATTS,
        MAX_SLOWDOWN,
        PROGRESS_METRIC,
        SERVING_METRICS,
        SERVING_ENGINE,
        SLO_TPOT_P90_MS,
        SLO_TTFT_P90_MS,
        SLO_SPEED_FLOOR,
        SLO_QUEUE_BOUND,
    }
)

#: Named priorities; integers 0-1000 are accepted too. Higher is cut later under a budget.
PRIORITY_NAMES: Final = {"low": 0, "normal": 500, "high": 1000}
DEFAULT_PRIORITY: Final = PRIORITY_NAMES["normal"]

Workload = Literal["training", "inference"]
ServingEngine = Literal["vllm", "sglang", "tgi"]


@dataclass(frozen=True)
class PodIntent:
    """What a pod's annotations ask for, with defaults where they were absent or unreadable."""

    job: str | None = None
    priority: int = DEFAULT_PRIORITY
    workload: Workload | None = None
    policy: str | None = None
    opt_out: bool = False
    min_power_watts: float | None = None
    max_slowdown: float | None = None
    progress_metric: str | None = None
    #: Where the serving engine's metrics page is (checked where it is scraped, like ``progress_metric``).
    serving_metrics: str | None = None
    serving_engine: ServingEngine | None = None
    #: Per-pod serving objectives (``None``: the policy's).
    slo_tpot_p90_ms: float | None = None
    slo_ttft_p90_ms: float | None = None
    slo_speed_floor: float | None = None
    slo_queue_bound: float | None = None
    problems: tuple[str, ...] = field(default=())


def _parse_priority(raw: str) -> int:
    text = raw.strip().lower()
    if text in PRIORITY_NAMES:
        return PRIORITY_NAMES[text]
    expected = "must be low, normal, high or an integer in 0..1000"
    try:
        value = int(text)
    except ValueError:
        raise ValueError(expected) from None  # int()'s message would quote the whole value
    if not 0 <= value <= 1000:
        raise ValueError(expected)
    return value


def _parse_positive_float(raw: str, *, upper: float | None = None) -> float:
    bound = f" and at most {upper:g}" if upper is not None else ""
    expected = f"must be a finite number above 0{bound}"
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(expected) from None  # float()'s message would quote the whole value
    if not math.isfinite(value) or value <= 0 or (upper is not None and value > upper):
        raise ValueError(expected)
    return value


def _parse_bool(raw: str) -> bool:
    text = raw.strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0", ""):
        return False
    raise ValueError('must be "true" or "false"')


def parse_pod_annotations(annotations: Mapping[str, str]) -> PodIntent:  # noqa: C901 - flat table
    """Read every ``wattplane.io/`` annotation; never raises."""
    values: dict[str, object] = {}
    problems: list[str] = []
    for key, raw in sorted(annotations.items()):
        if not key.startswith(PREFIX):
            continue
        if key not in KNOWN:
            problems.append(f"unknown annotation {key!r} ignored")
            continue
        try:
            if key == JOB:
                if raw.strip():
                    values["job"] = raw.strip()
            elif key == PRIORITY:
                values["priority"] = _parse_priority(raw)
            elif key == WORKLOAD:
                if raw.strip() not in ("training", "inference"):
                    raise ValueError('must be "training" or "inference"')
                values["workload"] = raw.strip()
            elif key == POLICY:
                if raw.strip():
                    values["policy"] = raw.strip()
            elif key == OPT_OUT:
                values["opt_out"] = _parse_bool(raw)
            elif key == MIN_POWER_WATTS:
                values["min_power_watts"] = _parse_positive_float(raw)
            elif key == MAX_SLOWDOWN:
                values["max_slowdown"] = _parse_positive_float(raw, upper=10.0)
            elif key == PROGRESS_METRIC and raw.strip():
                values["progress_metric"] = raw.strip()
            elif key == SERVING_METRICS and raw.strip():
                values["serving_metrics"] = raw.strip()
            elif key == SERVING_ENGINE:
                if raw.strip().lower() not in ("vllm", "sglang", "tgi"):
                    raise ValueError('must be "vllm", "sglang" or "tgi"')
                values["serving_engine"] = raw.strip().lower()
            elif key == SLO_TPOT_P90_MS:
                values["slo_tpot_p90_ms"] = _parse_positive_float(raw, upper=60_000.0)
            elif key == SLO_TTFT_P90_MS:
                values["slo_ttft_p90_ms"] = _parse_positive_float(raw, upper=600_000.0)
            elif key == SLO_SPEED_FLOOR:
                values["slo_speed_floor"] = _parse_positive_float(raw, upper=10_000.0)
            elif key == SLO_QUEUE_BOUND:
                values["slo_queue_bound"] = _parse_positive_float(raw, upper=1e6)
        except ValueError as exc:
            problems.append(f"{key}={raw[:64]!r} is invalid ({exc}); using the default")
    return PodIntent(problems=tuple(problems), **values)  # type: ignore[arg-type]
