"""The prior-state journal: what each GPU was set to before the agent first changed it.

Restoring "the default" is not the same as restoring what the operator had: a site may run its GPUs
at a hand-set limit, and wattplane must put that back when it lets go. So before the first write to
a GPU the agent records the GPU's limit and clock lock here (and, before the first write of each, its
requested workload power profiles and its power-smoothing settings), in a node-local file (a hostPath in the
chart) that survives agent restarts. An entry is dropped once the GPU is restored.

Schema: ``{"version": 1, "gpus": {uuid: {power_limit_watts, locked_clocks_mhz, workload_profiles?,
power_smoothing?}}}``. The two knob fields are additive and written only once a knob was changed, so
files from before them load unchanged (their GPUs have no journaled profile or smoothing, which
wattplane then never wrote) and an older agent reading a newer file ignores them.

A corrupt file is moved aside (``<name>.corrupt-<timestamp>``) and reported, never fatal: the agent
then knows nothing about prior states and restores device defaults instead.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from wattplane.agent.gpu.base import PowerSmoothingState

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PriorState:
    """A GPU's settings before wattplane touched it."""

    power_limit_watts: float
    locked_clocks_mhz: tuple[int, int] | None = None
    #: Requested workload power profiles before wattplane's first profile write (``None``: never written).
    workload_profiles: tuple[str, ...] | None = None
    #: Power smoothing before wattplane's first smoothing write (``None``: never written).
    power_smoothing: PowerSmoothingState | None = None


class Journal:
    """A small JSON file of ``uuid → PriorState``, written atomically on every change."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._entries: dict[str, PriorState] = {}
        #: Set when the file could not be read; reported in GpuNode status.
        self.problem: str | None = None
        self._load()

    def get(self, uuid: str) -> PriorState | None:
        """The journaled prior state of a GPU, if the agent changed it."""
        return self._entries.get(uuid)

    def uuids(self) -> set[str]:
        """GPUs with a journaled prior state."""
        return set(self._entries)

    def remember(self, uuid: str, prior: PriorState) -> None:
        """Record ``prior`` unless the GPU already has an entry (the first state is the one to keep).

        The optional knobs are journaled each before its own first write: an existing entry gains the
        profile or smoothing field it still lacks, and keeps every field it already has.
        """
        known = self._entries.get(uuid)
        if known is None:
            self._entries[uuid] = prior
        else:
            merged = PriorState(
                power_limit_watts=known.power_limit_watts,
                locked_clocks_mhz=known.locked_clocks_mhz,
                workload_profiles=(
                    known.workload_profiles if known.workload_profiles is not None else prior.workload_profiles
                ),
                power_smoothing=known.power_smoothing if known.power_smoothing is not None else prior.power_smoothing,
            )
            if merged == known:
                return
            self._entries[uuid] = merged
        self._save()

    def forget(self, uuid: str) -> None:
        """Drop the entry of a GPU that was restored."""
        if self._entries.pop(uuid, None) is not None:
            self._save()

    def _load(self) -> None:
        if self._path is None or not self._path.exists():
            return
        try:
            raw = json.loads(self._path.read_text())
            for uuid, values in raw["gpus"].items():
                clocks = values.get("locked_clocks_mhz")
                watts = float(values["power_limit_watts"])
                if not math.isfinite(watts):
                    raise ValueError(f"power limit {watts} of {uuid} is not a finite number")
                profiles = values.get("workload_profiles")
                smoothing = values.get("power_smoothing")
                self._entries[uuid] = PriorState(
                    power_limit_watts=watts,
                    locked_clocks_mhz=(int(clocks[0]), int(clocks[1])) if clocks else None,
                    workload_profiles=None if profiles is None else tuple(str(p) for p in profiles),
                    power_smoothing=None if smoothing is None else _smoothing_of(smoothing),
                )
        # AttributeError: valid JSON of the wrong shape (a list where a mapping belongs, null, ...).
        except (ValueError, KeyError, TypeError, IndexError, AttributeError, OSError) as exc:
            aside = self._path.with_name(f"{self._path.name}.corrupt-{int(time.time())}")
            os.replace(self._path, aside)
            self._entries.clear()
            self.problem = f"journal {self._path} unreadable ({exc.__class__.__name__}); moved to {aside.name}"
            logger.error("%s; prior states are lost, device defaults will be restored", self.problem)

    def _save(self) -> None:
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"version": 1, "gpus": {u: _entry(p) for u, p in sorted(self._entries.items())}}
        tmp = self._path.with_name(self._path.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=1))
        os.replace(tmp, self._path)


def _entry(prior: PriorState) -> dict[str, object]:
    """One GPU's journal entry; knobs never written are left out, so older agents read it unchanged."""
    entry = asdict(prior)
    for knob in ("workload_profiles", "power_smoothing"):
        if entry[knob] is None:
            del entry[knob]
    return entry


def _smoothing_of(raw: dict[str, object]) -> PowerSmoothingState:
    """A journaled smoothing state; a wrong shape raises (and the file is moved aside as corrupt)."""

    def number(key: str) -> float | None:
        value = raw.get(key)
        if value is None:
            return None
        result = float(value)  # type: ignore[arg-type]
        if not math.isfinite(result):
            raise ValueError(f"{key} {result} is not a finite number")
        return result

    return PowerSmoothingState(
        enabled=bool(raw["enabled"]),
        preset_profile=int(raw.get("preset_profile", 0)),  # type: ignore[call-overload]
        ramp_up_watts_per_second=number("ramp_up_watts_per_second"),
        ramp_down_watts_per_second=number("ramp_down_watts_per_second"),
        floor_percent=number("floor_percent"),
    )
