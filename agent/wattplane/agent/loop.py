"""The agent's control loop: watch the plan, apply it every tick, report status.

Three concurrent activities, one writer per GPU:

* a **watch** on this node's GpuNode picks up new plans the moment the operator writes them;
* the **tick** (default 1 s) samples the GPUs, reconciles them with the plan (idempotently, so an
  external reset is repaired and an unchanged plan costs no writes) and restores GPUs whose plan
  expired;
* **status** is written every ``status_interval_s``, or at once when something material changed
  (plan generation, GPU states, pod attribution).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import watch
from pydantic import ValidationError
from wattplane.agent.engine import NodeEngine, PodAssignment, plan_expired
from wattplane.agent.gpu.simulated import SimulatedGpu
from wattplane.agent.kube import NodeObjects
from wattplane.agent.podmap import SimulatedPodMapper, gpu_requests_of
from wattplane.agent.settings import AgentSettings
from wattplane.agent.status import PodEnergyLedger, build_status
from wattplane.api.conditions import Condition
from wattplane.api.v1alpha1.gpunode import CRD, GpuNodeSpec, GpuNodeStatus

logger = logging.getLogger(__name__)

AssignmentSource = Callable[[], Awaitable[PodAssignment]]


class AgentLoop:
    """Runs one node: plan in, device writes out, status back."""

    def __init__(
        self,
        settings: AgentSettings,
        engine: NodeEngine,
        objects: NodeObjects,
        *,
        assignment_source: AssignmentSource | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.objects = objects
        self.spec = GpuNodeSpec()
        self.status: GpuNodeStatus | None = None
        self.ready = False
        self.spec_problem: str | None = None
        self._wake = asyncio.Event()
        self._ledger = PodEnergyLedger()
        self._mapper = SimulatedPodMapper([d.identity.uuid for d in engine.devices])
        self._assignment: PodAssignment = {}
        self._assignment_source = assignment_source or self._simulated_assignment
        self._conditions: list[Condition] = []
        self._last_written_at = 0.0
        self._last_fingerprint: object = None
        self._last_pod_sync = -1e9
        self._constraints = {d.identity.uuid: d.constraints() for d in engine.devices}

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; then restore (if configured) and write a final status."""
        existing = await self.objects.ensure_gpunode()
        self._adopt(existing)
        seed = GpuNodeStatus.model_validate(existing.get("status") or {})
        self._ledger = PodEnergyLedger(seed.pod_energy)
        self._conditions = list(seed.conditions)
        watcher = asyncio.create_task(self._watch_spec(), name="watch-gpunode")
        try:
            while not stop.is_set():
                await self.tick()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wait_any(stop), timeout=self.settings.tick_s)
                self._wake.clear()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if self.settings.restore_on_exit:
                failures = self.engine.restore_all()
                logger.info("restored GPUs on exit (%d failure(s))", len(failures))
                with contextlib.suppress(Exception):
                    await self._write_status(force=True)

    async def _wait_any(self, stop: asyncio.Event) -> None:
        waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(self._wake.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waiters:
                task.cancel()

    async def tick(self) -> None:
        """One control step: refresh pods if due, reconcile, report if due."""
        loop_time = asyncio.get_running_loop().time()
        if loop_time - self._last_pod_sync >= self.settings.pod_sync_interval_s:
            try:
                self._assignment = await self._assignment_source()
                self._last_pod_sync = loop_time
            except Exception as exc:  # attribution trouble must not stop power control
                logger.warning("pod attribution failed: %s", exc)
        self._drive_simulated_load()
        now = datetime.now(UTC)
        expired = plan_expired(self.spec.issued_at, self.spec.ttl_seconds, now)
        self.engine.reconcile(self.spec.gpus, expired=expired)
        await self._write_status()

    async def _write_status(self, *, force: bool = False) -> None:
        now = datetime.now(UTC)
        problems = [p for p in (self.engine.journal.problem, self.spec_problem) if p]
        if plan_expired(self.spec.issued_at, self.spec.ttl_seconds, now):
            problems.append("plan expired (operator silent beyond ttlSeconds): prior GPU settings restored")
        readings = self.engine.read_all()
        status = build_status(
            backend=self.engine.backend.info.name,
            devices=self.engine.devices,
            readings=readings,
            constraints=self._constraints,
            outcomes=self.engine.outcomes,
            assignment=self._assignment,
            ledger=self._ledger,
            plan_generation=self.spec.plan_generation,
            previous_conditions=self._conditions,
            problems=problems,
            now=now,
        )
        self.status = status
        fingerprint = _fingerprint(status)
        loop_time = asyncio.get_running_loop().time()
        due = loop_time - self._last_written_at >= self.settings.status_interval_s
        if not (force or due or fingerprint != self._last_fingerprint):
            return
        try:
            await self.objects.patch_status(status.to_wire())
        except Exception as exc:  # the API server being away must not stop power control
            logger.warning("could not write GpuNode status: %s", exc)
            return
        self._conditions = status.conditions
        self._last_written_at = loop_time
        self._last_fingerprint = fingerprint
        self.ready = True

    async def _watch_spec(self) -> None:
        backoff = 1.0
        while True:
            try:
                stream = watch.Watch().stream(
                    self.objects._custom.list_cluster_custom_object,
                    CRD.group,
                    CRD.version,
                    CRD.plural,
                    field_selector=f"metadata.name={self.settings.node_name}",
                    timeout_seconds=300,
                )
                async with stream as events:
                    async for event in events:
                        if event["type"] in ("ADDED", "MODIFIED"):
                            self._adopt(event["object"])
                            self._wake.set()
                backoff = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("GpuNode watch interrupted (%s); retrying in %.0f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    def _adopt(self, obj: dict[str, Any]) -> None:
        try:
            spec = GpuNodeSpec.model_validate(obj.get("spec") or {})
        except ValidationError as exc:
            self.spec_problem = f"GpuNode spec rejected, keeping the previous plan: {exc.error_count()} error(s)"
            logger.error("%s: %s", self.spec_problem, exc)
            return
        self.spec_problem = None
        if spec != self.spec:
            logger.info("plan generation %d with %d target(s)", spec.plan_generation, len(spec.gpus))
        self.spec = spec

    async def _simulated_assignment(self) -> PodAssignment:
        pods = await self.objects.list_pods()
        requests = [r for pod in pods for r in gpu_requests_of(pod)]
        return self._mapper.assign(requests)

    def _drive_simulated_load(self) -> None:
        """Simulated GPUs run work exactly while a pod holds them."""
        for device in self.engine.devices:
            if isinstance(device, SimulatedGpu):
                busy = bool(self._assignment.get(device.identity.uuid))
                device.set_load(self.settings.sim_load if busy else 0.0)


def _fingerprint(status: GpuNodeStatus) -> Sequence[object]:
    """The parts of a status whose change deserves an immediate write (not power or energy)."""
    return (
        status.observed_plan_generation,
        tuple(
            (g.uuid, g.state, g.target_watts, g.power_limit_watts, tuple(p.name for p in g.pods)) for g in status.gpus
        ),
        tuple((c.type, c.status, c.reason) for c in status.conditions),
    )
