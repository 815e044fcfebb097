"""Power models of simulated GPU boards: constraints, idle power, and how a cap bites.

All numbers about a model live here, so calibrating the simulator against measured traces changes
one module. Constraints follow the boards' published limits (A40: 100-300 W, V100 SXM2: 100-300 W
with the Zeus sweeps run at up to 250 W, H100 SXM: 200-700 W).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SimGpuModel:
    """Static description of one GPU model and its simple power behaviour."""

    name: str
    min_watts: float
    max_watts: float
    default_watts: float
    idle_watts: float
    min_sm_clock_mhz: int
    max_sm_clock_mhz: int

    def demand_watts(self, load: float) -> float:
        """Uncapped draw when running work at ``load`` (fraction of full demand)."""
        return self.idle_watts + load * (self.default_watts - self.idle_watts)

    def power_watts(self, *, load: float, limit_watts: float, locked_clocks_mhz: tuple[int, int] | None) -> float:
        """Draw under a power limit and an optional clock lock (power scales ~linearly with clock)."""
        demand = self.demand_watts(load)
        if locked_clocks_mhz is not None:
            scale = locked_clocks_mhz[1] / self.max_sm_clock_mhz
            demand = self.idle_watts + (demand - self.idle_watts) * scale
        return min(demand, limit_watts)

    def sm_clock_mhz(self, *, load: float, limit_watts: float, locked_clocks_mhz: tuple[int, int] | None) -> int:
        """Clock the board settles at: max when unconstrained, lowered in proportion to the cap."""
        if load <= 0:
            return self.min_sm_clock_mhz
        top = self.max_sm_clock_mhz if locked_clocks_mhz is None else locked_clocks_mhz[1]
        demand = self.demand_watts(load)
        if limit_watts >= demand:
            return top
        dynamic = max(1e-9, demand - self.idle_watts)
        ratio = max(0.0, (limit_watts - self.idle_watts) / dynamic)
        return max(self.min_sm_clock_mhz, int(self.min_sm_clock_mhz + ratio * (top - self.min_sm_clock_mhz)))

    def temperature_celsius(self, power_watts: float) -> float:
        """A plausible steady-state temperature for the draw."""
        return round(30.0 + 50.0 * power_watts / self.max_watts, 1)

    def throttle_reasons(self, *, load: float, limit_watts: float) -> int:
        """NVML clock-event bits: 0x1 idle, 0x4 software power cap."""
        if load <= 0:
            return 0x1
        return 0x4 if self.demand_watts(load) > limit_watts else 0


MODELS: dict[str, SimGpuModel] = {
    m.name: m
    for m in (
        SimGpuModel("A40", 100.0, 300.0, 300.0, 30.0, 210, 1740),
        SimGpuModel("V100", 100.0, 300.0, 300.0, 40.0, 135, 1530),
        SimGpuModel("H100", 200.0, 700.0, 700.0, 70.0, 345, 1980),
    )
}


def model_by_name(name: str) -> SimGpuModel:
    """Look a model up by name; raises ``KeyError`` listing the known ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown simulated GPU model {name!r}; known: {', '.join(sorted(MODELS))}") from None
