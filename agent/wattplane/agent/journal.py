"""The prior-state journal: what each GPU was set to before the agent first changed it.

Restoring "the default" is not the same as restoring what the operator had: a site may run its GPUs
at a hand-set limit, and wattplane must put that back when it lets go. So before the first write to
a GPU the agent records the GPU's limit and clock lock here, in a node-local file (a hostPath in the
chart) that survives agent restarts. An entry is dropped once the GPU is restored.

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

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PriorState:
    """A GPU's settings before wattplane touched it."""

    power_limit_watts: float
    locked_clocks_mhz: tuple[int, int] | None = None


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
        """Record ``prior`` unless the GPU already has an entry (the first state is the one to keep)."""
        if uuid in self._entries:
            return
        self._entries[uuid] = prior
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
                self._entries[uuid] = PriorState(
                    power_limit_watts=watts,
                    locked_clocks_mhz=(int(clocks[0]), int(clocks[1])) if clocks else None,
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
        payload = {"version": 1, "gpus": {u: asdict(p) for u, p in sorted(self._entries.items())}}
        tmp = self._path.with_name(self._path.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=1))
        os.replace(tmp, self._path)
