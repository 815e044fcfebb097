"""The serving controller's loop in the operator: scrape window → SLO-guarded knob per inference pod.

Each time the operator reads a serving pod's engine metrics (:mod:`.serving`), the window since the
previous read (:mod:`.servingwindow`) goes to :func:`wattplane.planner.servingcap.decide_serving_cap`
with the pod's objectives (its policy's ``serving`` section, overridden by its ``wattplane.io/slo-*``
annotations). The knob it returns is handed to the planner as a :class:`~wattplane.planner.context.ServingKnob`
(``PlanContext.serving_knobs``), where it composes with the policy's other sections like a Perseus cap.

The controller state lives here, in memory, like the observer's other per-pod state: an operator restart
starts every pod from its default knob again and probes down afresh, which is the safe direction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from wattplane.api.annotations import PodIntent
from wattplane.api.v1alpha1.energypolicy import ServingSpec
from wattplane.operator.serving import ServingSample
from wattplane.operator.servingwindow import serving_window
from wattplane.planner.context import ServingKnob
from wattplane.planner.servingcap import (
    H100_CLOCK,
    KnobKind,
    KnobRange,
    ServingCapSettings,
    ServingCapState,
    ServingSlo,
    decide_serving_cap,
)
from wattplane.planner.snapshot import PodKey

logger = logging.getLogger(__name__)

#: GPU models whose SM clock range the controller knows (H100 and H200 share the GH100 clocks).
_CLOCKED_MODELS = ("H100", "H200")
#: Power-cap probe step, watts.
CAP_STEP_WATTS = 25.0


@dataclass(frozen=True)
class ServingGpu:
    """The GPU a serving pod runs on, as far as its knob ranges go."""

    model: str
    min_watts: float
    max_watts: float


def objectives(spec: ServingSpec, intent: PodIntent) -> ServingSlo:
    """The pod's objectives: its annotations where set, else its policy's."""
    return ServingSlo(
        tpot_p90_s=(intent.slo_tpot_p90_ms or spec.tpot_p90_ms) / 1000.0,
        ttft_p90_s=(intent.slo_ttft_p90_ms or spec.ttft_p90_ms) / 1000.0,
        speed_floor_tps=intent.slo_speed_floor
        if intent.slo_speed_floor is not None
        else spec.speed_floor_tokens_per_second,
        queue_bound=intent.slo_queue_bound if intent.slo_queue_bound is not None else spec.queue_bound,
    )


def settings_for(spec: ServingSpec, gpu: ServingGpu) -> ServingCapSettings:
    """The controller's ranges and pace for a pod on ``gpu`` under ``spec``."""
    clocked = any(name in gpu.model.upper() for name in _CLOCKED_MODELS)
    fixed: KnobKind | None = None if spec.knob == "Auto" else ("clock" if spec.knob == "Clock" else "cap")
    if not clocked:
        fixed = "cap"
    return ServingCapSettings(
        settle_s=spec.settle_seconds,
        backoff_s=spec.backoff_seconds,
        backoff_max_s=max(3600.0, spec.backoff_seconds),
        clock=H100_CLOCK,
        cap=KnobRange("cap", gpu.min_watts, gpu.max_watts, CAP_STEP_WATTS),
        fixed=fixed,
    )


@dataclass
class _Pod:
    uid: str
    state: ServingCapState
    sample: ServingSample | None = None
    sampled_at: datetime | None = None
    joules: float | None = None


class ServingController:
    """Per serving pod: the last read, the controller's state, and the knob handed to the planner."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._pods: dict[PodKey, _Pod] = {}
        #: The knob of every pod the controller holds below its default (the planner's input).
        self.knobs: dict[PodKey, ServingKnob] = {}
        #: The last decision's reason per pod (status and ``wattplane explain``).
        self.reasons: dict[PodKey, str] = {}

    def update(
        self,
        key: PodKey,
        uid: str,
        spec: ServingSpec,
        intent: PodIntent,
        gpu: ServingGpu,
        sample: ServingSample | None,
        joules: float | None,
        now: datetime,
    ) -> bool:
        """Feed one read of a pod (``None``: the read failed); whether its knob changed."""
        settings = settings_for(spec, gpu)
        pod = self._pods.get(key)
        if pod is None or (uid and pod.uid and uid != pod.uid):
            pod = self._pods[key] = _Pod(uid=uid, state=ServingCapState.initial(settings))
        window = None
        if sample is not None and pod.sample is not None and pod.sampled_at is not None:
            seconds = (now - pod.sampled_at).total_seconds()
            if seconds > 0:
                spent = joules - pod.joules if joules is not None and pod.joules is not None else None
                window = serving_window(
                    pod.sample,
                    sample,
                    seconds=seconds,
                    prefill_s_per_token=spec.prefill_seconds_per_token,
                    joules=spent if spent is not None and spent >= 0 else None,
                )
        if sample is not None:
            pod.sample, pod.sampled_at, pod.joules = sample, now, joules
        decision = decide_serving_cap(pod.state, window, objectives(spec, intent), settings, self._clock())
        pod.state = decision.state
        self.reasons[key] = decision.reason
        before = self.knobs.get(key)
        after = None if decision.value is None else ServingKnob(decision.kind, decision.value, decision.reason)
        changed = (before.kind, before.value) != (after.kind, after.value) if before and after else before != after
        if after is None:
            self.knobs.pop(key, None)
        elif changed:
            self.knobs[key] = after
        if changed:
            logger.info("serving pod %s/%s: %s (%s)", key[0], key[1], _describe(after), decision.reason)
        return changed

    def retain(self, live: Iterable[PodKey]) -> None:
        """Forget pods no longer served under a ``serving`` section (their knobs go with them)."""
        keep = set(live)
        for key in [k for k in self._pods if k not in keep]:
            del self._pods[key]
            self.knobs.pop(key, None)
            self.reasons.pop(key, None)

    def knob_of(self, key: PodKey) -> ServingKnob | None:
        """The knob in force for a pod (``None``: its default)."""
        return self.knobs.get(key)

    def snapshot(self) -> Mapping[PodKey, ServingKnob]:
        """The knobs, for a planning round (a copy: the planner keeps its inputs)."""
        return dict(self.knobs)


def _describe(knob: ServingKnob | None) -> str:
    if knob is None:
        return "knob released"
    return f"SM clock at most {knob.value:.0f} MHz" if knob.kind == "clock" else f"power cap {knob.value:.0f} W"
