"""Jobs the simulated fleet runs, and the simple CSV job format.

A **training** job has a fixed amount of work (epochs of its workload's curve): capping it makes it
take longer. Its size is given in epochs or as its *uncapped* duration, converted to epochs on the GPU
model it lands on. An **inference** service holds its GPUs for its lifetime and must serve a demand
(a fraction of one GPU's uncapped throughput, piecewise constant over time); a cap that leaves less
capacity than the demand builds a backlog, which is served as soon as capacity allows.

Simple CSV (``--jobs FILE``)::

    submit_time,gpus,workload,duration_or_epochs,priority,kind[,load]
    0,1,imagenet/resnet50,3h,normal,training
    600,4,squad/bert_base_uncased,12,high,training
    0,1,squad/bert_base_uncased,,high,inference,0.6

``submit_time`` is seconds after the simulation start; ``duration_or_epochs`` is epochs when a bare
number, an uncapped duration with a unit (``90s``, ``45m``, ``3h``), or empty for an inference service
that lives for the whole run; ``workload`` may be empty (picked from the fleet's curves by the seed);
``load`` is an inference service's demand (default 0.6). An inference row whose workload is
``llm/llama3.1-8b`` is an LLM service (:mod:`wattplane.sim.llm`): on H100s each GPU is a replica serving
``load`` times the requests one uncapped replica serves within the serving SLO, with the Azure trace's
request mix.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from wattplane.sim.llm import LlmDemand, constant_llm_demand, is_llm_workload

Kind = Literal["training", "inference"]
Priority = Literal["low", "normal", "high"]

SIMPLE_COLUMNS = ("submit_time", "gpus", "workload", "duration_or_epochs", "priority", "kind")
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(s|m|h|d)\s*$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
#: Demand of an inference row without a ``load`` column.
DEFAULT_INFERENCE_LOAD = 0.6


@dataclass(frozen=True)
class Demand:
    """Piecewise-constant demand, ``values[i]`` from ``i * step_s``, repeating after the last step."""

    step_s: float
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.step_s <= 0 or not self.values:
            raise ValueError("a demand needs a positive step and at least one value")
        if not all(0.0 <= v <= 1.0 for v in self.values):
            raise ValueError("demand values are fractions of a GPU's throughput, in [0, 1]")

    @classmethod
    def constant(cls, load: float) -> Demand:
        """The same demand forever."""
        return cls(step_s=math.inf, values=(load,))

    def at(self, t: float) -> float:
        """Demand in force at ``t`` (seconds since the service started)."""
        if math.isinf(self.step_s):
            return self.values[0]
        return self.values[int(t // self.step_s) % len(self.values)]

    def next_change(self, t: float) -> float:
        """The first step boundary after ``t`` (``inf`` for a constant demand)."""
        if math.isinf(self.step_s) or len(self.values) == 1:
            return math.inf
        return (math.floor(t / self.step_s) + 1) * self.step_s

    @property
    def mean(self) -> float:
        """Average over one period."""
        return math.fsum(self.values) / len(self.values)


@dataclass(frozen=True)
class JobSpec:
    """One job as submitted."""

    id: str
    submit_s: float
    gpus: int
    workload: str = ""
    epochs: float | None = None
    duration_s: float | None = None
    priority: Priority = "normal"
    kind: Kind = "training"
    demand: Demand | None = None
    #: Requests per replica for an LLM service (:mod:`wattplane.sim.llm`); used on GPUs the serving model
    #: covers, ``demand`` elsewhere.
    llm: LlmDemand | None = None

    def __post_init__(self) -> None:
        if self.gpus < 1:
            raise ValueError(f"job {self.id}: needs at least one GPU")
        if self.kind == "training" and self.epochs is None and self.duration_s is None:
            raise ValueError(f"training job {self.id}: give epochs or an uncapped duration")
        if self.kind == "inference" and self.demand is None:
            raise ValueError(f"inference job {self.id}: needs a demand")
        if self.llm is not None and self.kind != "inference":
            raise ValueError(f"job {self.id}: only an inference service serves LLM requests")


def parse_size(text: str) -> tuple[float | None, float | None]:
    """``duration_or_epochs`` → (epochs, duration_s); both ``None`` when empty."""
    text = text.strip()
    if not text:
        return None, None
    match = _DURATION.match(text)
    if match is not None:
        return None, float(match.group(1)) * _UNIT_S[match.group(2)]
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"size must be positive, got {text!r}")
    return value, None


def read_simple_csv(path: Path) -> list[JobSpec]:
    """Jobs from the simple CSV format (see the module docstring).

    Raises:
        ValueError: A missing column or an unreadable row, with file and line.
    """
    jobs: list[JobSpec] = []
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in SIMPLE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path.name}:1: missing column(s) {', '.join(missing)}")
        for row in reader:
            where = f"{path.name}:{reader.line_num}"
            try:
                jobs.append(_simple_row(row, len(jobs), path.stem))
            except (ValueError, KeyError) as exc:
                raise ValueError(f"{where}: {exc}") from None
    return jobs


def _simple_row(row: dict[str, str], n: int, stem: str) -> JobSpec:
    kind = (row["kind"] or "training").strip()
    priority = (row["priority"] or "normal").strip()
    if kind not in ("training", "inference"):
        raise ValueError(f"kind must be training or inference, got {kind!r}")
    if priority not in ("low", "normal", "high"):
        raise ValueError(f"priority must be low, normal or high, got {priority!r}")
    epochs, duration = parse_size(row["duration_or_epochs"] or "")
    demand = None
    llm = None
    workload = (row["workload"] or "").strip()
    if kind == "inference":
        load = float(row.get("load") or DEFAULT_INFERENCE_LOAD)
        demand = Demand.constant(load)
        if is_llm_workload(workload):
            llm = constant_llm_demand(load)
        if epochs is not None:
            raise ValueError("an inference service's size is a duration (e.g. 6h) or empty")
    return JobSpec(
        id=f"{stem}-{n:05d}",
        submit_s=float(row["submit_time"]),
        gpus=int(row["gpus"]),
        workload=workload,
        epochs=epochs,
        duration_s=duration,
        priority=priority,  # type: ignore[arg-type]
        kind=kind,  # type: ignore[arg-type]
        demand=demand,
        llm=llm,
    )


def synthetic_training(
    *,
    seed: int,
    duration_s: float,
    fleet_gpus: int,
    workloads: Sequence[str],
    utilisation: float = 0.7,
    median_hours: float = 2.0,
    multi_gpu_share: float = 0.25,
    high_priority_share: float = 0.1,
) -> list[JobSpec]:
    """Poisson arrivals of training jobs sized to keep about ``utilisation`` of the fleet busy.

    Uncapped durations are log-normal (median ``median_hours``, clipped to 10 min - 12 h); a quarter of
    the jobs use 2, 4 or 8 GPUs. Jobs already running at the start (as in any busy cluster) are
    submitted at time 0 with a fresh duration. Deterministic for a seed.
    """
    rng = random.Random(seed)
    mean_gpus = (1 - multi_gpu_share) + multi_gpu_share * (2 + 4 + 8) / 3
    mean_hours = median_hours * math.exp(0.8**2 / 2)
    rate = utilisation * fleet_gpus / (mean_gpus * mean_hours * 3600.0)  # jobs per second
    jobs: list[JobSpec] = []
    t = 0.0
    warm = int(utilisation * fleet_gpus / mean_gpus)
    while True:
        if len(jobs) >= warm:
            t += rng.expovariate(rate)
        if t >= duration_s:
            break
        gpus = rng.choice((2, 4, 8)) if rng.random() < multi_gpu_share else 1
        hours = min(12.0, max(1 / 6, rng.lognormvariate(math.log(median_hours), 0.8)))
        jobs.append(
            JobSpec(
                id=f"train-{len(jobs):05d}",
                submit_s=round(t, 3),
                gpus=gpus,
                workload=rng.choice(list(workloads)),
                duration_s=round(hours * 3600.0, 1),
                priority="high" if rng.random() < high_priority_share else "normal",
            )
        )
    return jobs


def inference_services(
    *,
    count: int,
    gpus: int,
    demand: Demand,
    priority: Priority = "high",
    workload: str = "",
    prefix: str = "serve",
    llm: LlmDemand | None = None,
) -> list[JobSpec]:
    """``count`` always-on services, each on ``gpus`` GPUs; the n-th is shifted by n steps of the demand.

    With ``llm`` (per-replica LLM loads on the demand's steps) the services are LLM services, shifted alike.
    """
    out = []
    for n in range(count):
        shift = n % len(demand.values)
        values = demand.values[shift:] + demand.values[:shift]
        out.append(
            JobSpec(
                id=f"{prefix}-{n:03d}",
                submit_s=0.0,
                gpus=gpus,
                workload=workload,
                priority=priority,
                kind="inference",
                demand=Demand(demand.step_s, values),
                llm=llm.shifted(n) if llm is not None else None,
            )
        )
    return out


def training_beside_services(
    *,
    seed: int,
    duration_s: float,
    fleet_gpus: int,
    services: int,
    workloads: Sequence[str],
    demand: Demand,
    service_workload: str = "",
) -> list[JobSpec]:
    """Training at 0.9 load on the GPUs ``services`` always-on one-GPU services leave, half ``low``, half ``normal``.

    The mix the budget benchmarks cut: every watt a cut takes must come out of training, as the
    priorities say (services are ``high``).
    """
    training = synthetic_training(
        seed=seed,
        duration_s=duration_s,
        fleet_gpus=fleet_gpus - services,
        workloads=workloads,
        utilisation=0.9,
        median_hours=1.0,
        high_priority_share=0.0,
    )
    mixed = [dataclasses.replace(j, priority="low" if i % 2 else "normal") for i, j in enumerate(training)]
    return mixed + inference_services(count=services, gpus=1, demand=demand, workload=service_workload)
