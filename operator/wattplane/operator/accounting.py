"""Energy and carbon attributed to each policy, accumulated across planning rounds.

Agents report each GPU's monotonic energy counter in GpuNode status; between two rounds the
increase on a GPU is charged to the policy whose target the GPU carried, and its carbon to that
policy's signal (joules → kWh × gCO2eq/kWh). A counter that went backwards (driver reload, a fresh
simulated node) restarts the baseline instead of producing negative energy. Totals start from the
values in the policy's status, so an operator restart loses nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from wattplane.planner.plan import Plan
from wattplane.planner.snapshot import FleetSnapshot, GpuView

_JOULES_PER_KWH = 3.6e6


@dataclass
class Totals:
    """Running totals of one policy."""

    energy_joules: float = 0.0
    carbon_grams: float = 0.0


class PolicyAccounting:
    """Per-policy energy and carbon, fed once per planning round."""

    def __init__(self) -> None:
        self._last_energy: dict[str, float] = {}
        self.totals: dict[str, Totals] = {}
        #: Each node's GPUs as last charged: a node whose GpuNode did not change has nothing to charge.
        self._charged: dict[str, tuple[object, ...]] = {}

    def seed(self, policy: str, energy_joules: float, carbon_grams: float) -> None:
        """Start ``policy`` from its persisted totals (ignored once the policy is being counted)."""
        self.totals.setdefault(policy, Totals(max(0.0, energy_joules), max(0.0, carbon_grams)))

    def update(self, plan: Plan, snapshot: FleetSnapshot, intensity: Mapping[str, float | None]) -> None:
        """Charge each GPU's energy increase since the last round to the policy targeting it.

        Only nodes whose GPUs were reported anew are looked at (an unchanged report adds nothing).
        """
        by_node = snapshot.gpus_by_node
        for node in [n for n in self._charged if n not in by_node]:
            del self._charged[node]
        for node, gpus in by_node.items():
            if self._charged.get(node) is gpus:
                continue
            self._charged[node] = gpus
            policy_of = {t.uuid: t.policy for t in plan.nodes.get(node, ()) if not t.dry_run}
            self._charge(gpus, policy_of, intensity)

    def _charge(
        self, gpus: Iterable[GpuView], policy_of: Mapping[str, str], intensity: Mapping[str, float | None]
    ) -> None:
        for gpu in gpus:
            energy = gpu.energy_joules
            if energy is None:
                continue
            previous = self._last_energy.get(gpu.uuid)
            self._last_energy[gpu.uuid] = energy
            policy = policy_of.get(gpu.uuid)
            if previous is None or energy < previous or policy is None:
                continue
            totals = self.totals.setdefault(policy, Totals())
            delta = energy - previous
            totals.energy_joules += delta
            grams_per_kwh = intensity.get(policy)
            if grams_per_kwh is not None:
                totals.carbon_grams += delta / _JOULES_PER_KWH * grams_per_kwh

    def forget(self, live_policies: set[str]) -> None:
        """Drop totals of deleted policies."""
        for name in set(self.totals) - live_policies:
            del self.totals[name]
