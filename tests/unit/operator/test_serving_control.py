"""The operator's serving controller: scrapes → windows → knobs, objectives from the policy and the pod."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from wattplane.api.annotations import parse_pod_annotations
from wattplane.api.v1alpha1.energypolicy import ServingSpec
from wattplane.operator.serving import Buckets, Histogram, ServingSample
from wattplane.operator.servingcontrol import ServingController, ServingGpu, objectives, settings_for
from wattplane.planner.context import ServingKnob

T0 = datetime(2026, 7, 1, 12, tzinfo=UTC)
KEY = ("serve", "llm-0")
H100 = ServingGpu(model="NVIDIA H100 80GB HBM3", min_watts=200.0, max_watts=700.0)
BOUNDS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, float("inf"))


def _buckets(name: str, values: list[float]) -> Buckets:
    return Buckets(name, tuple((b, float(sum(1 for v in values if v <= b))) for b in BOUNDS))


class Engine:
    """Cumulative counters of a fake engine, advanced one window at a time."""

    def __init__(self) -> None:
        self.tpot: list[float] = []
        self.ttft: list[float] = []
        self.output = 0.0
        self.prompt = 0.0
        self.e2e = 0.0
        self.requests = 0.0

    def window(self, *, tpot_s: float, ttft_s: float, requests: int, queue: float = 0.0) -> ServingSample:
        for _ in range(requests):
            self.ttft.append(ttft_s)
            self.tpot.extend([tpot_s] * 200)
            self.output += 200
            self.prompt += 1000
            self.e2e += ttft_s + 200 * tpot_s
            self.requests += 1
        return ServingSample(
            engine="vllm",
            output_tokens=self.output,
            prompt_tokens=self.prompt,
            ttft=Histogram(sum(self.ttft), len(self.ttft)),
            itl=Histogram(sum(self.tpot), len(self.tpot)),
            queue=queue,
            url="http://pod/metrics",
            ttft_buckets=_buckets("vllm:time_to_first_token_seconds", self.ttft),
            itl_buckets=_buckets("vllm:inter_token_latency_seconds", self.tpot),
            e2e=Histogram(self.e2e, self.requests),
            request_output=Histogram(self.output, self.requests),
        )


def test_objectives_come_from_the_policy_unless_the_pod_sets_its_own() -> None:
    spec = ServingSpec(tpot_p90_ms=80.0, ttft_p90_ms=1500.0)
    plain = objectives(spec, parse_pod_annotations({}))
    assert (plain.tpot_p90_s, plain.ttft_p90_s, plain.speed_floor_tps, plain.queue_bound) == (0.08, 1.5, 5.0, 16.0)
    own = objectives(
        spec,
        parse_pod_annotations({"wattplane.io/slo-tpot-p90-ms": "50", "wattplane.io/slo-queue-bound": "4"}),
    )
    assert (own.tpot_p90_s, own.ttft_p90_s, own.queue_bound) == (0.05, 1.5, 4.0)


def test_gpus_without_known_clocks_use_the_cap_and_its_range_is_the_devices() -> None:
    a40 = settings_for(ServingSpec(), ServingGpu(model="NVIDIA A40", min_watts=100.0, max_watts=300.0))
    assert a40.fixed == "cap"
    assert (a40.cap.minimum, a40.cap.maximum) == (100.0, 300.0)
    assert settings_for(ServingSpec(), H100).fixed is None
    assert settings_for(ServingSpec(knob="Cap"), H100).fixed == "cap"


class ServedPod:
    """A pod under the controller, scraped every 15 s (virtual) from a fake engine."""

    def __init__(self, spec: ServingSpec) -> None:
        self.clock = 0.0
        self.controller = ServingController(clock=lambda: self.clock)
        self.spec = spec
        self.engine = Engine()
        self.now = T0
        self.joules = 0.0
        self.reads = 0

    def scrape(self, *, tpot_s: float = 0.02, ttft_s: float = 0.2, queue: float = 0.0, failed: bool = False) -> bool:
        """One read (the first at T0, then 15 s apart); whether the knob moved."""
        if self.reads:
            self.now += timedelta(seconds=15)
            self.clock += 15
            self.joules += 1000.0
        self.reads += 1
        sample = None if failed else self.engine.window(tpot_s=tpot_s, ttft_s=ttft_s, requests=5, queue=queue)
        joules = None if failed else self.joules
        return self.controller.update(
            KEY, "uid-1", self.spec, parse_pod_annotations({}), H100, sample, joules, self.now
        )

    def knob(self) -> ServingKnob | None:
        return self.controller.knob_of(KEY)


def test_a_comfortable_pod_is_probed_down_and_backs_off_within_one_scrape_when_latency_climbs() -> None:
    pod = ServedPod(ServingSpec(tpot_p90_ms=100.0, ttft_p90_ms=2000.0, settle_seconds=0.0, backoff_seconds=60.0))
    assert not pod.scrape()
    lowered = []
    for _ in range(5):
        pod.scrape()
        knob = pod.knob()
        lowered.append(knob.value if knob else None)
    assert lowered[-1] is not None and lowered[-1] < 1980.0  # probing went down, step by step
    assert all(a is None or b is None or b <= a for a, b in itertools.pairwise(lowered))
    # The next window's p90 TPOT is at 95 % of the objective: the knob goes up in this very update.
    before = pod.knob()
    moved = pod.scrape(tpot_s=0.095)
    after = pod.knob()
    assert moved
    assert before is not None and (after is None or after.value > before.value)


def test_a_queue_past_its_bound_releases_the_knob_and_a_gone_pod_is_forgotten() -> None:
    pod = ServedPod(ServingSpec(settle_seconds=0.0, queue_bound=8.0))
    for _ in range(4):
        pod.scrape()
    assert pod.knob() is not None
    assert pod.scrape(queue=20.0)
    assert pod.knob() is None  # released: the default, no lock, no cap
    pod.controller.retain([])
    assert pod.controller.snapshot() == {}


def test_a_failed_read_keeps_the_knob() -> None:
    pod = ServedPod(ServingSpec(settle_seconds=0.0))
    for _ in range(4):
        pod.scrape()
    knob = pod.knob()
    assert knob is not None
    assert not pod.scrape(failed=True)
    assert pod.knob() == knob
