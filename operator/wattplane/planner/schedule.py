"""Which power target a budget holds at a given time: its standing watts and its timed windows.

A budget section may carry a standing budget and windows (planned curtailments, demand-response
events from a grid operator). At any time the target is the lowest of the standing budget and the
windows active then; without either there is no budget in force.

**Ramps live on the nodes.** A window's ``rampWattsPerSecond`` bounds how fast the node set's budget
moves, down at the start and back up at the end. The operator plans rounds seconds apart and a ramp
may last 30 s, so stepping the fleet's target from here would move it in jumps of one planning
interval; instead each covered node's agent is told the final share and a rate, its part of the
fleet's rate (in proportion to its GPUs' default limits, so the rates add up to the window's), and
moves its own budget in force at that rate from what the node draws (:mod:`wattplane.agent.ramp`).
The fleet's budget line then descends no faster than the window allows whatever the planning
interval, and with no more API writes than a step would take. After the window ends the rate stays
written until the way back up has had time to finish, so the agents climb rather than jump.

Pure: the same spec, windows, time and reference give the same target.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from wattplane.api.v1alpha1.energypolicy import BudgetSpec, BudgetWindow

#: After a window's ramp back up should have finished, the rate is kept written this much longer
#: (agents measure, cut and restore in ticks; a little slack lets the last ones finish climbing).
RAMP_RELEASE_SLACK = timedelta(seconds=60)


@dataclass(frozen=True)
class BudgetTarget:
    """The target a budget holds now, and what sets it.

    Attributes:
        watts: The target the node shares are sized to; ``None``: no budget in force now.
        standing_watts: The policy's standing budget, if any.
        window: Name of the window that sets the target (``None``: the standing budget does).
        ramp_watts_per_second: The node set's ramp in force (down into or back up out of a window);
            ``None``: targets change in one step.
        next_change_at: The next time a window starts or ends or a ramp lapses: the planner must run
            a round then even if nothing else happens.
    """

    watts: float | None
    standing_watts: float | None = None
    window: str | None = None
    ramp_watts_per_second: float | None = None
    next_change_at: datetime | None = None


def window_watts(window: BudgetWindow, standing_watts: float | None, reference_watts: float) -> float:
    """A window's target in watts: its ``watts``, or its fraction of the standing budget (else of the reference)."""
    if window.watts is not None:
        return window.watts
    assert window.fraction is not None
    base = standing_watts if standing_watts is not None else reference_watts
    return window.fraction * base


def budget_target(
    spec: BudgetSpec,
    now: datetime,
    reference_watts: float,
    extra_windows: Sequence[BudgetWindow] = (),
) -> BudgetTarget:
    """The target ``spec`` holds at ``now``.

    ``reference_watts`` is the covered GPUs' summed default limits: what a fractional window without
    a standing budget is a fraction of, and how far the way back up of a window without one reaches.
    ``extra_windows`` are windows from outside the spec (demand-response events).
    """
    windows = [*(spec.schedule or ()), *extra_windows]
    standing = spec.watts
    watts, name, ramp = standing, None, None
    changes: list[datetime] = []
    release: tuple[datetime, float] | None = None  # (end, ramp) of the latest ended window still ramping back
    for window in windows:
        target = window_watts(window, standing, reference_watts)
        if window.start <= now < window.end:
            if watts is None or target < watts:
                watts, name, ramp = target, window.name, window.ramp_watts_per_second
            changes.append(window.end)
        elif now < window.start:
            changes.append(window.start)
        elif window.ramp_watts_per_second is not None:
            back_to = standing if standing is not None else reference_watts
            climb = max(back_to - target, 0.0) / window.ramp_watts_per_second
            lapses = window.end + timedelta(seconds=climb) + RAMP_RELEASE_SLACK
            if now < lapses:
                changes.append(lapses)
                if release is None or window.end > release[0]:
                    release = (window.end, window.ramp_watts_per_second)
    if name is None and release is not None:
        ramp = release[1]  # climbing back out of a window that ended
    return BudgetTarget(
        watts=watts,
        standing_watts=standing,
        window=name,
        ramp_watts_per_second=ramp,
        next_change_at=min(changes) if changes else None,
    )


def node_ramps(ramp_watts_per_second: float | None, reference_by_node: Mapping[str, float]) -> dict[str, float]:
    """Each node's part of the node set's ramp, in proportion to its GPUs' default limits.

    The parts add up to the whole, so while every node ramps the set moves at the window's rate,
    and never faster once some have arrived.
    """
    if ramp_watts_per_second is None:
        return {}
    total = math.fsum(reference_by_node.values())
    if total <= 0:
        return {}
    return {node: ramp_watts_per_second * watts / total for node, watts in reference_by_node.items() if watts > 0}
