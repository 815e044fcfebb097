"""Status conditions in the shape Kubernetes tooling expects (``metav1.Condition``).

A condition's ``lastTransitionTime`` moves only when its status flips, so `kubectl describe` shows
how long something has been true, and re-writing an unchanged condition is a no-op for diffing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field
from wattplane.api.base import ApiModel

ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    """One observation about an object, keyed by ``type``."""

    type: str = Field(min_length=1, max_length=316)
    """Condition type, e.g. ``Ready``."""
    status: ConditionStatus
    """``True``, ``False`` or ``Unknown``."""
    reason: str = Field(default="", max_length=1024)
    """CamelCase machine-readable reason for the last transition."""
    message: str = Field(default="", max_length=32768)
    """Human-readable detail."""
    last_transition_time: datetime | None = None
    """When ``status`` last changed."""
    observed_generation: int | None = None
    """The object's ``metadata.generation`` this condition was computed from."""


def set_condition(
    conditions: list[Condition],
    new: Condition,
    *,
    now: datetime,
) -> list[Condition]:
    """Return ``conditions`` with ``new`` merged in by type.

    The transition time is carried over from the existing condition when the status did not change,
    and set to ``now`` when it did (or when the condition is new).
    """
    out: list[Condition] = []
    found = False
    for cond in conditions:
        if cond.type != new.type:
            out.append(cond)
            continue
        found = True
        when = cond.last_transition_time if cond.status == new.status else now
        out.append(new.model_copy(update={"last_transition_time": when or now}))
    if not found:
        out.append(new.model_copy(update={"last_transition_time": now}))
    return out


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    """Return the condition of the given type, if present."""
    return next((c for c in conditions if c.type == type_), None)
