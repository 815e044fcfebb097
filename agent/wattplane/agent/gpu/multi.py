"""Choosing the real GPU backend, and several backends as one for nodes with NVIDIA and AMD GPUs.

The engine, the status report and the metrics see one :class:`~wattplane.agent.gpu.base.GpuBackend`
and key everything on GPU UUIDs, which NVML and AMD SMI never share. What does clash across backends
is the index: each library counts from 0. :class:`MultiBackend` therefore renumbers the devices of
later backends after those of earlier ones (NVIDIA first, then AMD), and only the index changes.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

from wattplane.agent.gpu.base import GpuBackend, GpuBackendInfo, GpuDevice, GpuIdentity, GpuReading, PowerConstraints
from wattplane.agent.gpu.errors import GpuDriverError, GpuError

__all__ = ["MultiBackend", "RealBackendKind", "open_real_backend"]

logger = logging.getLogger(__name__)

RealBackendKind = Literal["nvml", "amd", "auto"]


class _Renumbered:
    """A device of one backend with the index it has on the node (implements ``GpuDevice``).

    Everything but the identity's index is the wrapped device's; other attributes (``energy_source``,
    ``mig_device_uuids`` ...) pass through.
    """

    def __init__(self, device: GpuDevice, index: int) -> None:
        self._device = device
        self._identity = dataclasses.replace(device.identity, index=index)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._device, name)

    def __repr__(self) -> str:
        return f"{self._device!r}@{self._identity.index}"

    @property
    def identity(self) -> GpuIdentity:
        return self._identity

    def constraints(self) -> PowerConstraints:
        return self._device.constraints()

    def read(self) -> GpuReading:
        return self._device.read()

    def locked_clock_range_mhz(self) -> tuple[int, int] | None:
        return self._device.locked_clock_range_mhz()

    def set_power_limit_watts(self, watts: float) -> None:
        self._device.set_power_limit_watts(watts)

    def set_locked_clocks_mhz(self, min_mhz: int, max_mhz: int) -> None:
        self._device.set_locked_clocks_mhz(min_mhz, max_mhz)

    def reset_locked_clocks(self) -> None:
        self._device.reset_locked_clocks()


class MultiBackend:
    """Several backends' GPUs as one node (implements :class:`~wattplane.agent.gpu.base.GpuBackend`).

    Args:
        backends: Opened backends, in the order their devices are numbered. Closed by :meth:`close`.

    Raises:
        ValueError: No backend, or two devices with the same UUID.
    """

    def __init__(self, backends: Sequence[GpuBackend]) -> None:
        if not backends:
            raise ValueError("MultiBackend needs at least one backend")
        self._backends = tuple(backends)
        devices: list[GpuDevice] = []
        for backend in self._backends:
            for device in backend.devices():
                devices.append(_Renumbered(device, len(devices)))
        uuids = [d.identity.uuid for d in devices]
        if len(set(uuids)) != len(uuids):
            raise ValueError(f"two backends report the same GPU UUID: {uuids}")
        self._devices = tuple(devices)

    @property
    def backends(self) -> tuple[GpuBackend, ...]:
        """The combined backends, in numbering order."""
        return self._backends

    @property
    def info(self) -> GpuBackendInfo:
        """Names joined with ``+`` (``nvml+amdsmi``); details prefixed with each backend's name."""
        infos = [b.info for b in self._backends]
        details = {f"{i.name}/{k}": v for i in infos for k, v in i.details.items()}
        return GpuBackendInfo(
            name="+".join(i.name for i in infos),
            driver_version=" ".join(f"{i.name}:{i.driver_version}" for i in infos if i.driver_version),
            details=details,
        )

    def devices(self) -> Sequence[GpuDevice]:
        """Every backend's devices, renumbered 0..n-1 in backend order."""
        return self._devices

    def mig_parent_uuids(self) -> dict[str, str]:
        """MIG device → board UUIDs from the backends that have MIG (NVML)."""
        parents: dict[str, str] = {}
        for backend in self._backends:
            method: Callable[[], dict[str, str]] | None = getattr(backend, "mig_parent_uuids", None)
            if method is not None:
                parents.update(method())
        return parents

    def device_id_aliases(self) -> dict[str, str]:
        """Other names of boards (an AMD board's PCI address) → UUID, from the backends that have them."""
        aliases: dict[str, str] = {}
        for backend in self._backends:
            method: Callable[[], dict[str, str]] | None = getattr(backend, "device_id_aliases", None)
            if method is not None:
                aliases.update(method())
        return aliases

    def close(self) -> None:
        """Close every backend, even when one fails; the first failure is raised afterwards."""
        failure: BaseException | None = None
        for backend in self._backends:
            try:
                backend.close()
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure


def _open_nvml() -> GpuBackend:
    from wattplane.agent.gpu.nvml import NvmlBackend

    return NvmlBackend()


def _open_amd() -> GpuBackend:
    from wattplane.agent.gpu.amd import AmdSmiBackend

    return AmdSmiBackend()


#: How each real backend is opened, in the order ``auto`` tries them (and numbers their GPUs).
OPENERS: dict[str, Callable[[], GpuBackend]] = {"nvml": _open_nvml, "amd": _open_amd}


def open_real_backend(kind: RealBackendKind, openers: dict[str, Callable[[], GpuBackend]] | None = None) -> GpuBackend:
    """Open the backend ``kind`` names; for ``auto``, every one that finds GPUs, combined if several.

    ``auto`` tries NVML and AMD SMI; a library that is missing, fails to initialise or sees no GPU is
    passed over (logged). One that finds GPUs is used alone; two are combined in a
    :class:`MultiBackend`.

    Args:
        kind: ``nvml``, ``amd`` or ``auto``.
        openers: Backend constructors by name (tests pass fakes); defaults to :data:`OPENERS`.

    Raises:
        GpuError: ``nvml`` or ``amd`` cannot open; for ``auto``, :class:`GpuDriverError` when no
            backend finds a GPU, naming each one's reason.
    """
    openers = OPENERS if openers is None else openers
    if kind != "auto":
        return openers[kind]()
    found: list[GpuBackend] = []
    reasons: list[str] = []
    for name, opener in openers.items():
        try:
            backend = opener()
        except GpuError as exc:
            reasons.append(f"{name}: {exc}")
            logger.info("backend auto: %s not usable (%s)", name, exc)
            continue
        if not backend.devices():
            reasons.append(f"{name}: no GPUs")
            logger.info("backend auto: %s sees no GPUs", name)
            backend.close()
            continue
        logger.info("backend auto: %s sees %d GPU(s)", name, len(backend.devices()))
        found.append(backend)
    if not found:
        raise GpuDriverError("no GPU backend found a GPU (" + "; ".join(reasons) + ")")
    return found[0] if len(found) == 1 else MultiBackend(found)
