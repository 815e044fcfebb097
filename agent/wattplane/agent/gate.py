"""The ``wattplane.io/power-verified`` readiness gate: a pod is Ready only once its GPUs are capped.

A pod opts in with ``spec.readinessGates: [{conditionType: "wattplane.io/power-verified"}]``. The
kubelet then keeps it not Ready until that pod condition is ``True``, and only the agent on the pod's
node sets it: ``True`` once every GPU the pod holds is at the limit the plan asks for, read back from
the device in this tick (after the write, or by the tick's own read when nothing had to be written);
``False`` with a reason and a message while not. Pods without the gate are never patched.

The condition follows the devices, it is not latched: a GPU that fails later, a plan that expires, a
target that goes away (policy deleted or changed to stop selecting the pod) turns it ``False`` again, and
the pod unready with it. That is what the gate promises to whoever opts in: Ready means capped.

Reasons of ``False``, the worst across the pod's GPUs wins (in this order):

* ``GpuError``: a GPU could not be read or written (the message carries the device's error);
* ``PlanExpired``: the operator has not renewed the plan within its TTL, the agent restored the GPUs;
* ``DryRun``: the plan (or the whole agent) is a dry run. Nothing is written, so nothing is verified,
  and the pod stays not Ready: a dry-run policy over gated pods holds them back, by design of the gate;
* ``NoTarget``: no target for a GPU of the pod: no policy selects it, or the operator has not planned
  it yet (the usual state of a new pod for a planning interval);
* ``Pending``: the device's limit differs from the target (not written yet, or the write did not
  take);
* ``NoGpu``: no GPU on this node is attributed to the pod (yet).

``True`` has reason ``Verified``. Under a node budget the limit in force may be below the target:
that is the cap the agent applied, and it is what is verified.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from wattplane.agent.engine import GpuOutcome, PodAssignment
from wattplane.agent.gpu.base import GpuReading
from wattplane.agent.gpu.errors import GpuError
from wattplane.agent.kube import ApiError, NotFound, PodList

logger = logging.getLogger(__name__)

#: The pod condition type (and readiness gate) the agent owns.
CONDITION_TYPE = "wattplane.io/power-verified"
#: Watts a read-back limit may differ from the applied one and still count as verified (devices that
#: store whole watts, rounding of milliwatt units).
VERIFY_TOLERANCE_W = 0.5
#: Reasons of ``False``, worst first.
FALSE_REASONS = ("GpuError", "PlanExpired", "DryRun", "NoTarget", "Pending")
_MESSAGE_MAX = 1000
#: Seconds the gate waits after a failed list or write (a missing permission must not cost a 403 a tick).
RETRY_S = 30.0


@dataclass(frozen=True)
class Verdict:
    """The condition the agent wants on one pod."""

    status: str
    reason: str
    message: str


@dataclass(frozen=True)
class GpuFacts:
    """What one tick left about one GPU, copied so that a background write sees a consistent tick."""

    index: int
    outcome: GpuOutcome
    reading: GpuReading | GpuError | None


def has_gate(pod: Mapping[str, Any]) -> bool:
    """Whether the pod asked for the power-verified readiness gate."""
    gates = (pod.get("spec") or {}).get("readinessGates") or ()
    return any(isinstance(g, Mapping) and g.get("conditionType") == CONDITION_TYPE for g in gates)


def verdict(gpus: Sequence[GpuFacts], *, expired: bool) -> Verdict:
    """The condition for a pod holding ``gpus``."""
    if not gpus:
        return Verdict("False", "NoGpu", "no GPU on this node is attributed to the pod yet")
    problems: dict[str, list[str]] = {}
    verified: list[str] = []
    for gpu in sorted(gpus, key=lambda g: g.index):
        reason, text = _check(gpu, expired=expired)
        if reason:
            problems.setdefault(reason, []).append(text)
        else:
            verified.append(text)
    if not problems:
        return Verdict("True", "Verified", f"{', '.join(verified)}; read back from the device"[:_MESSAGE_MAX])
    worst = next(r for r in FALSE_REASONS if r in problems)
    ordered = [text for reason in FALSE_REASONS for text in problems.get(reason, ())]
    return Verdict("False", worst, "; ".join(ordered)[:_MESSAGE_MAX])


def _check(gpu: GpuFacts, *, expired: bool) -> tuple[str, str]:
    """``("", "GPU i at W")`` when verified, else ``(reason, message)``."""
    name, outcome, reading = f"GPU {gpu.index}", gpu.outcome, gpu.reading
    if isinstance(reading, GpuError) or reading is None or outcome.state == "Error":
        return "GpuError", f"{name}: {outcome.message or reading or 'no reading'}"
    if expired:
        return "PlanExpired", f"{name}: the plan expired (operator silent beyond ttlSeconds), prior limit restored"
    if outcome.state == "DryRun":
        return "DryRun", f"{name}: {outcome.message or 'dry run'}; nothing written, nothing verified"
    if outcome.target_watts is None or outcome.state != "Applied":
        return "NoTarget", f"{name}: no power target in the plan (no policy selects the pod, or not planned yet)"
    applied = outcome.target_watts
    if outcome.budget_limit_watts is not None:
        applied = min(applied, outcome.budget_limit_watts)
    actual = reading.power_limit_watts
    if abs(actual - applied) > VERIFY_TOLERANCE_W:
        return "Pending", f"{name}: limit {actual:g} W on the device, {applied:g} W wanted"
    held = " (node budget)" if applied < outcome.target_watts else ""
    return "", f"{name} at {actual:g} W{held}"


def pod_gpus(pod: Mapping[str, Any], assignment: PodAssignment) -> list[str]:
    """UUIDs of the GPUs a pod holds (matched by uid where the attribution knows it, else by name)."""
    meta = pod.get("metadata") or {}
    namespace, name, uid = meta.get("namespace", ""), meta.get("name", ""), meta.get("uid", "")
    return [
        uuid
        for uuid, refs in assignment.items()
        if any(r.namespace == namespace and r.name == name and (not r.uid or r.uid == uid) for r in refs)
    ]


class PodApi(Protocol):
    """What the gate needs of :class:`wattplane.agent.kube.NodeObjects`."""

    last_pod_list: PodList | None

    async def list_pods(self) -> list[dict[str, Any]]: ...

    async def patch_pod_condition(self, namespace: str, name: str, uid: str, condition: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True)
class _Sent:
    verdict: Verdict
    at: float


class PowerGate:
    """Writes the condition of the gated pods on this node, only where it differs from what they carry.

    ``list_every_s`` is the pod sync interval: the gate reads the node's pods from the list attribution
    makes at that pace (:attr:`NodeObjects.last_pod_list`) and lists them itself only when none is recent.
    """

    def __init__(
        self, api: PodApi, *, list_every_s: float, clock: Callable[[], float], retry_s: float = RETRY_S
    ) -> None:
        self._api = api
        self._list_every_s = list_every_s
        self._clock = clock
        self._retry_s = retry_s
        self._retry_at = -math.inf
        self._sent: dict[str, _Sent] = {}
        self._failing: str | None = None
        #: Patches written (for tests and metrics).
        self.patches = 0

    async def sync(self, facts: Mapping[str, GpuFacts], assignment: PodAssignment, *, expired: bool) -> None:
        """Bring every gated pod's condition in line with this tick's ``facts`` (never raises).

        After a failure the gate rests for ``retry_s``: a missing permission or an API server outage
        must not turn into a failed request every tick.
        """
        if self._clock() < self._retry_at:
            return
        try:
            await self._sync(facts, assignment, expired=expired)
        except Exception as exc:
            self._retry_at = self._clock() + self._retry_s
            text = f"{exc.__class__.__name__}: {exc}"
            if text != self._failing:
                logger.warning(
                    "readiness gate %s: cannot update pods (%s); retrying in %.0f s",
                    CONDITION_TYPE,
                    text,
                    self._retry_s,
                )
            self._failing = text
        else:
            if self._failing is not None:
                logger.info("readiness gate %s: pods are updated again", CONDITION_TYPE)
            self._failing = None

    async def _sync(self, facts: Mapping[str, GpuFacts], assignment: PodAssignment, *, expired: bool) -> None:
        listed = self._api.last_pod_list
        # Pod attribution lists the node's pods every ``list_every_s`` already; the gate lists them itself
        # only when that list is clearly not coming (twice as old), so the two never double the LISTs.
        if listed is None or self._clock_age(listed) > 2 * self._list_every_s:
            await self._api.list_pods()
            listed = self._api.last_pod_list
        if listed is None:
            return
        live: set[str] = set()
        for pod in listed.pods:
            meta = pod.get("metadata") or {}
            uid = str(meta.get("uid") or "")
            phase = (pod.get("status") or {}).get("phase")
            if not uid or not has_gate(pod) or meta.get("deletionTimestamp") or phase in ("Succeeded", "Failed"):
                continue
            live.add(uid)
            wanted = verdict([facts[u] for u in pod_gpus(pod, assignment) if u in facts], expired=expired)
            current = _condition_of(pod)
            if current is not None and (current.get("status"), current.get("reason"), current.get("message")) == (
                wanted.status,
                wanted.reason,
                wanted.message,
            ):
                continue
            sent = self._sent.get(uid)
            if sent is not None and sent.verdict == wanted and sent.at >= listed.started:
                continue  # written after this list was taken: the list is behind, not the pod
            await self._write(pod, wanted, current)
        self._sent = {uid: s for uid, s in self._sent.items() if uid in live}

    def _clock_age(self, listed: PodList) -> float:
        return self._clock() - listed.started

    async def _write(self, pod: Mapping[str, Any], wanted: Verdict, current: Mapping[str, Any] | None) -> None:
        meta = pod["metadata"]
        changed = current is None or current.get("status") != wanted.status
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        condition = {
            "type": CONDITION_TYPE,
            "status": wanted.status,
            "reason": wanted.reason,
            "message": wanted.message,
            "lastProbeTime": None,
            "lastTransitionTime": now if changed or current is None else current.get("lastTransitionTime") or now,
        }
        at = self._clock()
        try:
            await self._api.patch_pod_condition(meta["namespace"], meta["name"], meta["uid"], condition)
        except NotFound:
            return  # deleted meanwhile
        except ApiError as exc:
            if exc.status == 422 and "metadata.uid" in exc.message:
                return  # another pod now has the name (the uid precondition held); the next list shows it
            raise
        self.patches += 1
        self._sent[meta["uid"]] = _Sent(wanted, at)
        if changed:
            logger.info(
                "pod %s/%s: %s=%s (%s) %s",
                meta["namespace"],
                meta["name"],
                CONDITION_TYPE,
                wanted.status,
                wanted.reason,
                wanted.message,
            )


def _condition_of(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for condition in (pod.get("status") or {}).get("conditions") or ():
        if isinstance(condition, Mapping) and condition.get("type") == CONDITION_TYPE:
            return condition
    return None


def gpu_facts(
    devices: Sequence[Any],
    outcomes: Mapping[str, GpuOutcome],
    readings: Mapping[str, GpuReading | GpuError],
) -> dict[str, GpuFacts]:
    """A copy of this tick's outcome and reading per GPU UUID."""
    return {
        d.identity.uuid: GpuFacts(
            index=d.identity.index,
            outcome=outcomes.get(d.identity.uuid, GpuOutcome()),
            reading=readings.get(d.identity.uuid),
        )
        for d in devices
    }


__all__ = [
    "CONDITION_TYPE",
    "GpuFacts",
    "PowerGate",
    "Verdict",
    "gpu_facts",
    "has_gate",
    "pod_gpus",
    "verdict",
]
