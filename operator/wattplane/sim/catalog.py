"""What the simulated fleet can run: the agent's GPU models and workload curves, seen as training curves.

The models and curves are the agent's own (:mod:`wattplane.agent.gpu.simmodels`): the Zeus power traces
packaged with the agent for A40, V100 and P100, the extrapolated H100/B200 training curves, and any
``--gpu-profile`` file (Zeus CSV format) that adds a model or replaces a family's curves. The simulator
and the agent's simulated backend therefore agree on what a capped GPU does.

The fleet simulator drives **training curves** only: a training job follows its curve flat out, and an
inference service follows the curve of the training workload it names at a duty cycle set by its demand
(a transformer's curve, ``squad/bert_base_uncased``, by default). The ML.ENERGY inference tables, which
need a batch-size operating point, are used by the agent's simulated backend, not here.

A workload is named by family (``imagenet/resnet50``: the Zeus authors' default batch size and optimizer)
or exactly (``imagenet/resnet50@256:adadelta``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from wattplane.agent.gpu import simmodels
from wattplane.agent.gpu.simmodels import SimGpuModel
from wattplane.agent.gpu.workloads import LimitCurve, TrainingWorkload

GpuModel = SimGpuModel
"""A board's constraints and idle draw (the agent's model description)."""


@dataclass(frozen=True)
class Workload:
    """One training curve on one GPU model."""

    name: str
    family: str
    gpu_model: str
    curve: LimitCurve
    source: str

    @property
    def uncapped_seconds_per_epoch(self) -> float:
        """Seconds per epoch when the limit does not bind."""
        return self.curve.uncapped_seconds_per_unit


@dataclass(frozen=True)
class Catalog:
    """GPU models and their training curves, over the agent's catalogue."""

    inner: simmodels.Catalog

    @classmethod
    def builtin(cls) -> Catalog:
        """Everything packaged with the agent."""
        return cls(simmodels.builtin_catalog())

    def with_profiles(self, entries: Iterable[str | Path]) -> Catalog:
        """Add ``[MODEL=]FILE`` Zeus-format profiles (see :meth:`simmodels.Catalog.with_profiles`)."""
        return Catalog(self.inner.with_profiles(entries))

    @property
    def models(self) -> Mapping[str, SimGpuModel]:
        """Every GPU model, by name."""
        return self.inner.models

    def model(self, name: str) -> SimGpuModel:
        """A GPU model by name; ``KeyError`` names the known ones."""
        return self.inner.model(name)

    def families(self, model: str) -> tuple[str, ...]:
        """Training families (``dataset/network``) that ``model`` runs, sorted."""
        found = self.inner.workloads.get(model)
        if found is None:
            return ()
        return tuple(
            sorted(
                alias
                for alias, target in found.aliases.items()
                if "@" not in alias and isinstance(found.workloads.get(target), TrainingWorkload)
            )
        )

    def workload(self, model: str, name: str) -> Workload:
        """The training curve ``name`` (family or exact) follows on ``model``; ``KeyError`` if none."""
        self.model(model)
        found = self.inner.workloads.get(model)
        if found is None:
            raise KeyError(f"GPU model {model!r} has no workloads")
        workload = found.resolve(name)
        if not isinstance(workload, TrainingWorkload):
            raise KeyError(f"{name!r} on {model} is an inference table; the fleet simulator runs training curves")
        return Workload(
            name=str(workload.key),
            family=workload.key.family,
            gpu_model=model,
            curve=workload.curve,
            source=workload.source,
        )
