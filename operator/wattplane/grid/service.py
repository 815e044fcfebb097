"""The operator's demand-response service: one VEN per policy with ``budget.demandResponse``.

The operator creates one :class:`GridService` at startup and calls :meth:`GridService.sync` with the
policies it knows (every planning round is fine: nothing happens unless a policy's demand-response
section changed). The planner reads :meth:`windows` (merged with ``budget.schedule``) and
:meth:`prices`. A VEN keeps running while only its opt-in rule, level fractions or default ramp change
(they apply to later events); a new VTN URL, VEN name, poll interval or Secret reference restarts it,
and its saved events come back with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from wattplane.api.v1alpha1.energypolicy import BudgetWindow, DemandResponseSpec, EnergyPolicySpec
from wattplane.grid.events import PriceInterval
from wattplane.grid.store import Backend, EventStore
from wattplane.grid.ven import MeasuredPower, Ven, VenCredentials

logger = logging.getLogger(__name__)

#: Reads a Secret's ``data`` (base64 values) by namespace and name; raises ``LookupError`` with a reason.
SecretReader = Callable[[str, str], Awaitable[Mapping[str, str]]]
#: Builds a VEN (tests pass one with short intervals).
VenFactory = Callable[..., Ven]


@dataclass
class _Running:
    ven: Ven
    identity: tuple[object, ...]


class GridService:
    """Starts, updates and stops the VENs; answers the planner's questions about windows and prices."""

    def __init__(
        self,
        *,
        backend: Backend,
        read_secret: SecretReader,
        default_namespace: str,
        measured_watts: Callable[[str], float | None] | None = None,
        on_change: Callable[[], None] | None = None,
        ven_factory: VenFactory = Ven,
        secret_retry_s: float = 30.0,
    ) -> None:
        self._backend = backend
        self._read_secret = read_secret
        self._namespace = default_namespace
        self._measured = measured_watts
        self._on_change = on_change
        self._factory = ven_factory
        self._secret_retry_s = secret_retry_s
        self._vens: dict[str, _Running] = {}
        self._failed: dict[str, tuple[tuple[object, ...], float]] = {}
        self.errors: dict[str, str] = {}
        self._lock = asyncio.Lock()

    def windows(self, policy_name: str) -> tuple[BudgetWindow, ...]:
        """Budget windows of the events the policy's VEN opted into (empty without a VEN)."""
        running = self._vens.get(policy_name)
        return running.ven.windows() if running is not None else ()

    def prices(self, policy_name: str) -> tuple[PriceInterval, ...]:
        """Price intervals the policy's VTN sent (empty without a VEN)."""
        running = self._vens.get(policy_name)
        return running.ven.prices() if running is not None else ()

    def problem(self, policy_name: str) -> str | None:
        """What keeps a policy's VEN from working now (an unreadable Secret, no registration), if anything."""
        error = self.errors.get(policy_name)
        if error:
            return f"demand response not started: {error}"
        running = self._vens.get(policy_name)
        if running is not None and running.ven.last_error:
            return f"VEN {running.ven.spec.openadr.ven_name}: {running.ven.last_error}"
        return None

    def all_windows(self) -> dict[str, tuple[BudgetWindow, ...]]:
        """Windows by policy name, for the planner's context (policies without windows left out)."""
        return {name: w for name, r in self._vens.items() if (w := r.ven.windows())}

    def ven(self, policy_name: str) -> Ven | None:
        """The running VEN of a policy, if any."""
        running = self._vens.get(policy_name)
        return running.ven if running is not None else None

    async def sync(self, specs: Mapping[str, EnergyPolicySpec]) -> None:
        """Bring the VENs in line with the policies (name → spec) the operator holds now."""
        async with self._lock:
            wanted = {
                name: spec
                for name, spec in specs.items()
                if spec.budget is not None and spec.budget.demand_response is not None
            }
            for name in [n for n in self._vens if n not in wanted]:
                await self._stop(name)
            for name in [n for n in self._failed if n not in wanted]:
                del self._failed[name]
                self.errors.pop(name, None)
            for name, spec in wanted.items():
                await self._ensure(name, spec)

    async def close(self) -> None:
        """Stop every VEN (their saved events stay)."""
        async with self._lock:
            for name in list(self._vens):
                await self._stop(name)

    async def _stop(self, name: str) -> None:
        running = self._vens.pop(name)
        await running.ven.stop()
        logger.info("policy %s: demand-response VEN stopped", name)
        if self._on_change is not None:
            self._on_change()

    async def _ensure(self, name: str, spec: EnergyPolicySpec) -> None:
        assert spec.budget is not None and spec.budget.demand_response is not None
        dr = spec.budget.demand_response
        identity = _identity(dr)
        running = self._vens.get(name)
        if running is not None and running.identity == identity:
            running.ven.spec = dr  # opt-in rule, level fractions, ramp: for the next events
            running.ven.standing_watts = spec.budget.watts
            return
        if running is not None:
            await self._stop(name)
        failed = self._failed.get(name)
        if failed is not None and failed[0] == identity and time.monotonic() < failed[1]:
            return
        try:
            credentials = await self._credentials(dr)
        except (LookupError, ValueError) as exc:
            self.errors[name] = str(exc)
            self._failed[name] = (identity, time.monotonic() + self._secret_retry_s)
            logger.error("policy %s: demand response not started: %s", name, exc)
            return
        self._failed.pop(name, None)
        self.errors.pop(name, None)
        ven = self._factory(
            name,
            dr,
            store=EventStore(self._backend, name),
            credentials=credentials,
            standing_watts=spec.budget.watts,
            measured_watts=self._measure(name),
            on_change=self._on_change,
        )
        await ven.start()
        self._vens[name] = _Running(ven, identity)
        logger.info("policy %s: demand-response VEN %s started for %s", name, dr.openadr.ven_name, dr.openadr.vtn_url)

    def _measure(self, name: str) -> MeasuredPower:
        measured = self._measured
        return (lambda: measured(name)) if measured is not None else (lambda: None)

    async def _credentials(self, dr: DemandResponseSpec) -> VenCredentials:
        ref = dr.openadr.credentials_secret_ref
        if ref is None:
            return VenCredentials()
        namespace = ref.namespace or self._namespace
        try:
            data = await self._read_secret(namespace, ref.name)
        except LookupError as exc:
            raise LookupError(f"Secret {namespace}/{ref.name}: {exc}") from None
        try:
            return VenCredentials.from_secret_data(data)
        except ValueError as exc:
            raise ValueError(f"Secret {namespace}/{ref.name}: {exc}") from None


def _identity(dr: DemandResponseSpec) -> tuple[object, ...]:
    """What a running VEN cannot change without registering again."""
    ref = dr.openadr.credentials_secret_ref
    return (
        dr.openadr.vtn_url,
        dr.openadr.ven_name,
        dr.openadr.poll_interval_seconds,
        (ref.namespace, ref.name) if ref is not None else None,
    )
