"""The node's budget in force while its share ramps: how far it may have moved since the last tick.

The operator writes a node's final share of a budget window and a rate (``GpuNodeSpec``'s
``nodeBudgetRampWattsPerSecond``); the agent moves the budget its loop enforces towards the share at
that rate, so the node's power follows a line instead of a step (:mod:`wattplane.planner.schedule`
says why the ramp lives here). Pure: a function of the last state, the spec, the time and the
node's draw.

* **Down.** A ramp towards a lower target starts from what the node draws now (or the target, if
  it already draws less), not from the budget last in force, which may lie far above the draw: the
  cut then begins at once, and the line still never falls faster than the rate.
* **Up.** Towards a higher target, or back out of a window with no target left, the line climbs from
  where it stands; without a target it is released once it clears what the GPUs could draw at their
  ceilings (nothing is held any more).
* **No rate** (or no clock): the target holds at once, as before ramps existed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RampState:
    """The budget in force and what it was heading for, at a time.

    Attributes:
        watts: The budget the node's loop enforces; ``None``: none.
        target: The share it was moving towards (``None``: climbing out of a window).
        at: When, seconds on the caller's clock.
    """

    watts: float | None
    target: float | None
    at: float


def budget_in_force(
    state: RampState | None,
    target: float | None,
    rate_watts_per_second: float | None,
    now: float | None,
    node_power_watts: float,
    ceiling_watts: float,
) -> RampState:
    """The budget to enforce at ``now`` on the way to ``target`` (see the module docstring).

    ``ceiling_watts`` is what the node's GPUs could draw at their ceilings: a climb without a target
    ends there.
    """
    if rate_watts_per_second is None or now is None or rate_watts_per_second <= 0:
        return RampState(target, target, now or 0.0)
    previous = state.watts if state is not None else None
    elapsed = max(now - state.at, 0.0) if state is not None else 0.0
    step = rate_watts_per_second * elapsed
    if target is None:
        if previous is None:
            return RampState(None, None, now)
        climbed = previous + step
        return RampState(None if climbed >= ceiling_watts else climbed, None, now)
    if previous is None or (state is not None and state.target != target and target < previous):
        # A new ramp down starts from the node's draw: the line touches the power at once.
        start = max(node_power_watts, target) if previous is None else min(previous, max(node_power_watts, target))
        return RampState(start, target, now)
    if previous > target:
        return RampState(max(target, previous - step), target, now)
    return RampState(min(target, previous + step), target, now)


def ramping(state: RampState | None) -> bool:
    """Whether the budget in force is still moving (a caller must tick again to follow it)."""
    return state is not None and state.watts != state.target
