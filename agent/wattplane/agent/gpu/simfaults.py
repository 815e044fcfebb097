"""Faults for simulated GPUs, injected from outside the agent process through a small JSON file.

:meth:`SimulatedGpu.inject_fault` serves tests that hold the backend in their own process. Fault
tests on the control-plane tier run the agent as a real process, so they need a way in from outside:
the sim backend takes a *faults file* (``WATTPLANE_AGENT_SIM_FAULTS_FILE``) and re-reads it whenever it
changes (one ``stat`` per device call; a real NVML call costs more). The file maps a GPU, by index or
UUID, to the operations that misbehave::

    {
      "1": {"set_power_limit": "NoPermission"},
      "GPU-5f0c...": {"read": "GpuLost", "set_power_limit": "GpuLost"},
      "2": {"set_power_limit": {"delay_s": 3.0}}
    }

Operations are the simulator's: ``read``, ``set_power_limit``, ``clocks`` (lock and reset) and
``constraints``. A value is an error reason (:attr:`GpuError.reason`: ``NoPermission``,
``NotSupported``, ``GpuLost``, ``DriverError``, ...), or an object with an optional ``error`` and an
optional ``delay_s``: the call blocks that long first, as a hung driver call blocks its caller (so a
test can kill the agent in the middle of applying a plan). An empty or missing file means no faults;
a file that does not parse is reported once in the log and ignored, never fatal.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from wattplane.agent.gpu.errors import SPECIFIC_ERRORS, GpuError

logger = logging.getLogger(__name__)

#: Error reasons a faults file may name, and the error each raises.
FAULT_ERRORS: Mapping[str, type[GpuError]] = {cls.reason: cls for cls in SPECIFIC_ERRORS}
#: Operations of a simulated GPU that a fault can target.
OPERATIONS = frozenset({"read", "set_power_limit", "clocks", "constraints", "profiles", "smoothing"})


@dataclass(frozen=True)
class InjectedFault:
    """What one operation does wrong: block for ``delay_s``, then raise ``error`` (either may be absent)."""

    error: type[GpuError] | None = None
    delay_s: float = 0.0

    def raise_error(self, operation: str) -> None:
        """Raise the fault's error, if it has one."""
        if self.error is not None:
            raise self.error(f"injected fault: {operation} fails with {self.error.reason}")


def parse_faults(raw: object) -> dict[str, dict[str, InjectedFault]]:
    """GPU key (index or UUID, as text) → operation → fault; raises ``ValueError`` on anything else."""
    if not isinstance(raw, dict):
        raise ValueError("the faults file must hold a JSON object keyed by GPU index or UUID")
    out: dict[str, dict[str, InjectedFault]] = {}
    for gpu, operations in raw.items():
        if not isinstance(operations, dict):
            raise ValueError(f"faults of GPU {gpu!r} must be an object of operation → fault")
        faults: dict[str, InjectedFault] = {}
        for operation, value in operations.items():
            if operation not in OPERATIONS:
                raise ValueError(f"unknown operation {operation!r} (known: {', '.join(sorted(OPERATIONS))})")
            faults[operation] = _fault(value)
        out[str(gpu)] = faults
    return out


def _fault(value: object) -> InjectedFault:
    if isinstance(value, str):
        value = {"error": value}
    if not isinstance(value, dict):
        raise ValueError(f"a fault is an error reason or an object with error/delay_s, not {value!r}")
    reason = value.get("error")
    error = None
    if reason is not None:
        error = FAULT_ERRORS.get(str(reason))
        if error is None:
            raise ValueError(f"unknown error reason {reason!r} (known: {', '.join(sorted(FAULT_ERRORS))})")
    delay = value.get("delay_s", 0.0)
    if not isinstance(delay, int | float) or not 0 <= delay <= 600:
        raise ValueError(f"delay_s must be a number of seconds in [0, 600], not {delay!r}")
    return InjectedFault(error=error, delay_s=float(delay))


class FaultsFile:
    """The faults file, re-read when its modification time or size changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._faults: dict[str, dict[str, InjectedFault]] = {}

    def faults_of(self, index: int, uuid: str) -> Mapping[str, InjectedFault]:
        """The faults now in force for the GPU with this index and UUID (UUID entries win)."""
        self._refresh()
        return {**self._faults.get(str(index), {}), **self._faults.get(uuid, {})}

    def _refresh(self) -> None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._faults = None, {}
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            text = self.path.read_text()
            faults = parse_faults(json.loads(text)) if text.strip() else {}
        except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
            logger.warning("faults file %s ignored: %s", self.path, exc)
            faults = {}
        if faults != self._faults:
            logger.warning("faults file %s: %s", self.path, _describe(faults))
        self._faults = faults


def _describe(faults: Mapping[str, Mapping[str, InjectedFault]]) -> str:
    if not faults:
        return "no faults"
    parts = []
    for gpu, operations in sorted(faults.items()):
        for operation, fault in sorted(operations.items()):
            what = fault.error.reason if fault.error else "no error"
            delay = f" after {fault.delay_s:g} s" if fault.delay_s else ""
            parts.append(f"GPU {gpu} {operation}: {what}{delay}")
    return "; ".join(parts)
