"""The agent's control loop: watch the plan, apply it every tick, report status.

Three concurrent activities, one writer per GPU:

* a **watch** on this node's GpuNode picks up new plans the moment the operator writes them;
* the **tick** (default 1 s, down to 100 ms) samples the GPUs, enforces the node budget, reconciles
  them with the plan (idempotently, so an external reset is repaired and an unchanged plan costs no
  writes) and restores GPUs whose plan expired. The budget needs no round trip to the operator: a
  breach measured at the start of a tick is answered with lower limits before that tick ends;
* **status** is written every ``status_interval_s``, or at once when something material changed
  (plan generation, GPU states, pod attribution, conditions).

After each reconcile, two optional publishers run beside the loop the same way (at most one write of
each in flight, never waited for): the GPUs' power-limit ranges as labels on the Node
(:mod:`wattplane.agent.caplabels`) and the ``wattplane.io/power-verified`` condition of pods that asked
for it by readiness gate (:mod:`wattplane.agent.gate`).

A tick that raises is logged, counted and reported, and the loop goes on: power control must not
die of one bad sample. Nothing here waits on the API server except status writes and the watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from wattplane.agent import caplabels
from wattplane.agent.budget import BudgetParams
from wattplane.agent.engine import NodeEngine, PodAssignment, plan_expired
from wattplane.agent.gate import PowerGate, gpu_facts
from wattplane.agent.gpu.simulated import SimulatedGpu
from wattplane.agent.kube import NodeObjects, NotFound
from wattplane.agent.podmap import SimulatedPodMapper, gpu_requests_of
from wattplane.agent.settings import AgentSettings
from wattplane.agent.stats import AgentSnapshot, LoopStats
from wattplane.agent.status import PodEnergyLedger, build_status
from wattplane.api.conditions import Condition
from wattplane.api.v1alpha1.gpunode import GpuNodeSpec, GpuNodeStatus

logger = logging.getLogger(__name__)

AssignmentSource = Callable[[], Awaitable[PodAssignment]]

#: A pod that stopped holding GPUs keeps its final energy total in status this long, seconds.
POD_ENERGY_RETENTION_S = 900.0
#: The same pod-attribution failure is logged at most this often, seconds (status always says it).
ATTRIBUTION_LOG_EVERY_S = 60.0


def budget_params(settings: AgentSettings) -> BudgetParams:
    """The node budget loop's tuning, from the agent settings."""
    return BudgetParams(
        hysteresis_ratio=settings.budget_hysteresis_ratio,
        restore_after_ticks=settings.budget_restore_after_ticks,
        restore_step_ratio=settings.budget_restore_step_ratio,
    )


class AgentLoop:
    """Runs one node: plan in, device writes out, status back."""

    def __init__(
        self,
        settings: AgentSettings,
        engine: NodeEngine,
        objects: NodeObjects,
        *,
        assignment_source: AssignmentSource | None = None,
        clock: Callable[[], float] = time.monotonic,
        cap_labels: caplabels.CapLabelPublisher | None = None,
        power_gate: PowerGate | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.objects = objects
        self.spec = GpuNodeSpec()
        self.status: GpuNodeStatus | None = None
        self.ready = False
        self.spec_problem: str | None = None
        self.stats = LoopStats()
        self._clock = clock
        self._wake = asyncio.Event()
        self._status_task: asyncio.Task[None] | None = None
        self._assignment_task: asyncio.Task[None] | None = None
        self._ledger = PodEnergyLedger()
        self._mapper = SimulatedPodMapper([d.identity.uuid for d in engine.devices])
        self._assignment: PodAssignment = {}
        self._assignment_source = assignment_source or self._simulated_assignment
        self._conditions: list[Condition] = []
        self._last_written_at = -1e9
        self._last_fingerprint: object = None
        self._last_pod_sync = -1e9
        self._synced_once = False
        self._last_tick_done: float | None = None
        self._attribution_problem: str | None = None
        self._attribution_failures = 0
        self._attribution_logged: tuple[str, float] | None = None
        self._tick_problem: str | None = None
        self.cap_labels = cap_labels
        self.power_gate = power_gate
        self._side_tasks: dict[str, asyncio.Task[None]] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; then restore (if configured) and write a final status."""
        existing = await self._fetch_gpunode(stop)
        if existing is None:
            return
        self._adopt(existing)
        seed = GpuNodeStatus.model_validate(existing.get("status") or {})
        self._ledger = PodEnergyLedger(seed.pod_energy, now=self._clock())
        self._conditions = list(seed.conditions)
        watcher = asyncio.create_task(self._watch_spec(), name="watch-gpunode")
        try:
            while not stop.is_set():
                await self.safe_tick(background_status=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wait_any(stop), timeout=self.settings.tick_s)
                self._wake.clear()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            for task in (self._status_task, self._assignment_task, *self._side_tasks.values()):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if self.settings.restore_on_exit:
                failures = self.engine.restore_all()
                logger.info("restored GPUs on exit (%d failure(s))", len(failures))
                with contextlib.suppress(Exception):
                    await self._write_status(force=True)

    async def _fetch_gpunode(self, stop: asyncio.Event) -> dict[str, Any] | None:
        """This node's GpuNode, retried with backoff while the API server is away (``None``: stopped)."""
        backoff = 1.0
        while not stop.is_set():
            try:
                return await self.objects.ensure_gpunode()
            except Exception as exc:
                logger.warning(
                    "cannot read or create GpuNode %s (%s); retrying in %.0f s", self.settings.node_name, exc, backoff
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=backoff)
                backoff = min(backoff * 2, 30.0)
        return None

    async def _wait_any(self, stop: asyncio.Event) -> None:
        waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(self._wake.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waiters:
                task.cancel()

    async def safe_tick(self, *, background_status: bool = False) -> None:
        """:meth:`tick`, except that an exception is logged, counted and reported, never raised."""
        started = time.perf_counter()
        try:
            await self.tick(background_status=background_status)
            self._tick_problem = None
        except Exception as exc:
            self.stats.tick_errors += 1
            self._tick_problem = f"control tick failed: {exc.__class__.__name__}: {exc}"[:500]
            logger.exception("control tick failed; the loop goes on")
            with contextlib.suppress(Exception):  # report it if status can still be built
                await self._write_status(force=True)
        finally:
            self.stats.ticks += 1
            self.stats.tick_latency.observe(time.perf_counter() - started)
            self._last_tick_done = self._clock()

    async def tick(self, *, background_status: bool = False) -> None:
        """One control step: refresh pods if due, enforce the budget, reconcile, report if due.

        The running loop reports in the background (``background_status``) so that a hung API server
        never holds up device control; a direct call waits for its status write.
        """
        loop_time = self._clock()
        if loop_time - self._last_pod_sync >= self.settings.pod_sync_interval_s:
            # Until the first sync has worked, wait for it: a status written with no pods would tell the
            # operator this node's GPUs are free, and it would take their targets away (and back).
            if background_status and self._synced_once:
                self._refresh_assignment(loop_time)
            else:
                await self._sync_assignment(loop_time)
        self._drive_simulated_load()
        now = datetime.now(UTC)
        expired = plan_expired(self.spec.issued_at, self.spec.ttl_seconds, now)
        self.engine.reconcile(
            self.spec.gpus,
            expired=expired,
            node_budget_watts=self.spec.node_budget_watts,
            budget_priorities={p.uuid: p.priority for p in self.spec.budget_priorities or ()},
            budget_ramp_watts_per_second=self.spec.node_budget_ramp_watts_per_second,
            now=loop_time,
        )
        publications = self._publications(loop_time, expired=expired)
        if background_status:
            for name, job in publications:
                if name not in self._side_tasks or self._side_tasks[name].done():
                    self._side_tasks[name] = asyncio.create_task(job(), name=name)
            self._report()
        else:
            await self._write_status()  # the status first: readiness and the operator wait on it
            for _, job in publications:
                await job()

    def _publications(
        self, loop_time: float, *, expired: bool
    ) -> list[tuple[str, Callable[[], Coroutine[None, None, None]]]]:
        """This tick's node-label and readiness-gate writes, as jobs (their inputs copied now)."""
        jobs: list[tuple[str, Callable[[], Coroutine[None, None, None]]]] = []
        devices = self.engine.devices
        labels = self.cap_labels
        known = self.engine.constraints
        # Only a full picture is published: a GPU that has never answered would drop its model's labels.
        if labels is not None and all(d.identity.uuid in known for d in devices):
            desired = caplabels.cap_labels((d.identity.model, known[d.identity.uuid]) for d in devices)
            if labels.due(desired, loop_time):
                jobs.append(("cap-labels", lambda: labels.sync(desired, loop_time)))
        gate = self.power_gate
        if gate is not None:
            facts = gpu_facts(devices, self.engine.outcomes, self.engine.readings)
            assignment = dict(self._assignment)
            jobs.append(("power-gate", lambda: gate.sync(facts, assignment, expired=expired)))
        return jobs

    async def _sync_assignment(self, loop_time: float) -> None:
        try:
            self._assignment = await self._assignment_source()
        except Exception as exc:  # attribution trouble must not stop power control
            self._attribution_failed(exc, loop_time)
            return
        self._last_pod_sync = loop_time
        self._synced_once = True
        if self._attribution_problem is not None:
            logger.info("pod attribution works again after %d failed attempt(s)", self._attribution_failures)
        self._attribution_problem, self._attribution_failures, self._attribution_logged = None, 0, None

    def _attribution_failed(self, exc: Exception, loop_time: float) -> None:
        """Record why pods cannot be attributed (status reports it); log it once, then at most once a minute.

        Attempts repeat every tick until one works, so logging each would flood the log with the same line.
        """
        reason = str(getattr(exc, "reason", "") or exc.__class__.__name__)
        self._attribution_problem = f"pod attribution failed ({reason}): {exc}"[:500]
        self._attribution_failures += 1
        last = self._attribution_logged
        if last is not None and last[0] == self._attribution_problem and loop_time - last[1] < ATTRIBUTION_LOG_EVERY_S:
            return
        if last is None:
            logger.warning(
                "%s; power control goes on, GPUs are reported without pods until it works"
                " (condition PodsAttributed=False; the same failure is logged again at most every %.0f s)",
                self._attribution_problem,
                ATTRIBUTION_LOG_EVERY_S,
            )
        else:
            logger.warning("%s (%d attempts failed so far)", self._attribution_problem, self._attribution_failures)
        self._attribution_logged = (self._attribution_problem, loop_time)

    def _refresh_assignment(self, loop_time: float) -> None:
        """Refresh the pod ↔ GPU mapping beside the control loop (the API or kubelet may hang)."""
        if self._assignment_task is None or self._assignment_task.done():
            self._assignment_task = asyncio.create_task(self._sync_assignment(loop_time), name="pod-sync")

    def _report(self) -> None:
        """Write status beside the control loop: a hung API server must never hold up device control.

        At most one write is in flight; a tick that finds one still running skips its turn (the next
        write carries everything newer anyway).
        """
        if self._status_task is not None and not self._status_task.done():
            return
        self._status_task = asyncio.create_task(self._write_status_logged(), name="status-write")

    async def _write_status_logged(self) -> None:
        try:
            await self._write_status()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("GpuNode status write failed (%s); the next tick retries", exc)

    def snapshot(self) -> AgentSnapshot:
        """What the last tick left behind, for the metrics collector."""
        return AgentSnapshot(
            status=self.status,
            spec=self.spec,
            apply=self.engine.stats,
            loop=self.stats,
            budget=self.engine.budget,
            gpu_uuids=tuple(d.identity.uuid for d in self.engine.devices),
        )

    def health(self) -> tuple[bool, str]:
        """Liveness: the tick loop is turning (a stuck driver call or a dead loop fails it)."""
        if self._last_tick_done is None:
            return True, "starting: no tick yet"
        age = self._clock() - self._last_tick_done
        allowed = max(10.0, 10 * self.settings.tick_s)
        if age > allowed:
            return False, f"no control tick for {age:.1f} s (allowed {allowed:.0f} s)"
        return True, f"last control tick {age:.1f} s ago"

    def readiness(self) -> tuple[bool, str]:
        """Readiness: status was written, the last tick worked, and the loop is turning."""
        if not self.ready:
            return False, "no status written yet"
        if self._tick_problem:
            return False, self._tick_problem
        return self.health()

    async def _write_status(self, *, force: bool = False) -> None:
        now = datetime.now(UTC)
        problems = [p for p in (self.engine.journal.problem, self.spec_problem, self._tick_problem) if p]
        if plan_expired(self.spec.issued_at, self.spec.ttl_seconds, now):
            problems.append("plan expired (operator silent beyond ttlSeconds): prior GPU settings restored")
        if not self.engine.readings:
            self.engine.read_all()
        loop_time = self._clock()
        self._ledger.forget_unseen(loop_time, POD_ENERGY_RETENTION_S)
        status = build_status(
            backend=self.engine.backend.info.name,
            devices=self.engine.devices,
            readings=self.engine.readings,
            constraints=self.engine.constraints,
            outcomes=self.engine.outcomes,
            assignment=self._assignment,
            ledger=self._ledger,
            plan_generation=self.spec.plan_generation,
            previous_conditions=self._conditions,
            problems=problems,
            attribution_problem=self._attribution_problem,
            attributes_pods=True,
            now=now,
            last_good=self.engine.last_good,
            budget=self.engine.budget,
            dry_run=self.engine.dry_run,
            ledger_time=loop_time,
        )
        self.status = status
        fingerprint = _fingerprint(status, budgeted=self.spec.node_budget_watts is not None)
        due = loop_time - self._last_written_at >= self.settings.status_interval_s
        if not (force or due or fingerprint != self._last_fingerprint):
            return
        try:
            await self.objects.patch_status(status.to_wire())
        except NotFound:
            # The GpuNode is gone (Node replaced, or deleted by hand): create it again, with an empty
            # plan, instead of reporting into the void until a restart. The next tick writes status.
            logger.warning("GpuNode %s was deleted; creating it again", self.settings.node_name)
            with contextlib.suppress(Exception):
                self._adopt(await self.objects.ensure_gpunode())
            return
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
                async for event in self.objects.watch_gpunode():
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
        """Take the plan from a GpuNode object; a spec that does not validate keeps the previous plan."""
        try:
            spec = GpuNodeSpec.model_validate(obj.get("spec") or {})
        except ValidationError as exc:
            self.spec_problem = f"GpuNode spec rejected, keeping the previous plan: {exc.error_count()} error(s)"
            logger.error("%s: %s", self.spec_problem, exc)
            return
        self.spec_problem = None
        if spec != self.spec:
            logger.info(
                "plan generation %d with %d target(s), node budget %s W",
                spec.plan_generation,
                len(spec.gpus),
                spec.node_budget_watts,
            )
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


def _fingerprint(status: GpuNodeStatus, *, budgeted: bool = False) -> Sequence[object]:
    """The parts of a status whose change deserves an immediate write (not power or energy).

    On a node under a budget, not the budget loop's own moves either: which GPUs it holds and how far
    (their limits, the ``NodeBudget`` reason of an applied GPU, ``BudgetMet``'s reason while the budget
    is met) change every few ticks while power moves, and nobody acts on single moves (the operator
    re-shares at most once per planning interval), so they go out with the next periodic write. Errors,
    new plans and a breach (``BudgetMet`` turning False) are still written at once.
    """
    return (
        status.observed_plan_generation,
        tuple(
            (
                g.uuid,
                g.state,
                "" if budgeted and g.state in ("Applied", "DryRun") else g.reason,  # NodeBudget comes and goes
                g.target_watts,
                None if budgeted else g.power_limit_watts,
                g.stale,
                tuple(p.name for p in g.pods),
            )
            for g in status.gpus
        ),
        tuple(
            (c.type, c.status, "" if budgeted and c.type == "BudgetMet" and c.status == "True" else c.reason)
            for c in status.conditions
        ),
    )
