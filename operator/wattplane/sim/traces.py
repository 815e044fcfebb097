"""Public job traces turned into simulator jobs: the Alibaba GPU pod list and the Azure LLM trace.

**Alibaba cluster-trace-gpu-v2023** (``openb_pod_list_*.csv``; Weng et al., USENIX ATC'23): an
inventory of pods on a 6,212-GPU production cluster. It is a job *mix*, not a concurrency record (at
no time do more than ~70 of its GPU pods overlap), so it is replayed the way scheduling studies replay
it: GPU pods created after ``offset_s`` are taken in creation order, each with its scheduled lifetime
(``deletion_time - scheduled_time``, capped at ``max_lifetime_s``) as its uncapped duration, until they
offer ``utilisation`` of the fleet's GPU-seconds over the run; their creation times are stretched
linearly onto the run so that the arrival order and burstiness are the trace's. Latency-sensitive pods
(``qos LS``) become high-priority inference services at a demand of their GPU share
(``gpu_milli / 1000``), best-effort pods low-priority training, the rest normal training. Pods that never
got scheduled, or use no GPU, are skipped; a GPU-sharing pod is given one whole GPU.

**Azure LLM inference trace 2023** (``AzureLLMInferenceTrace_conv.csv``; Patel et al., ISCA'24,
CC-BY-4.0): request arrivals with generated tokens over about an hour. Generated tokens per
``step_s`` bin, divided by the busiest bin and scaled to ``peak_load``, become the demand profile of
always-on inference services (looped over the run; each service phase-shifted by one bin). The same
services carry the trace's per-minute request rates and prompt/output lengths
(:func:`wattplane.sim.llm.azure_llm_demand`, busiest minute at 0.8 of one replica's SLO capacity): on
H100s they run as LLM services on the serving model, elsewhere on the demand profile.
"""

from __future__ import annotations

import csv
import math
from datetime import datetime
from pathlib import Path
from typing import Literal

from wattplane.sim.jobs import Demand, JobSpec, Priority, inference_services, read_simple_csv
from wattplane.sim.llm import azure_llm_demand

#: GPUs of the cluster the Alibaba v2023 trace comes from (openb_node_list_gpu_node.csv).
ALIBABA_CLUSTER_GPUS = 6212
#: Default window start: day 120 of the trace, inside the busy last month.
ALIBABA_DEFAULT_OFFSET_S = 120 * 86400.0

JobsFormat = Literal["simple", "alibaba", "azure"]


def detect_jobs_format(path: Path) -> JobsFormat:
    """Recognise a jobs file by its header.

    Raises:
        ValueError: Not one of the three formats.
    """
    with open(path, encoding="utf-8-sig", newline="") as fh:
        header = [h.strip() for h in next(csv.reader(fh), [])]
    if {"num_gpu", "gpu_milli", "qos", "creation_time", "deletion_time"} <= set(header):
        return "alibaba"
    if header[:3] == ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]:
        return "azure"
    if header[:2] == ["submit_time", "gpus"]:
        return "simple"
    raise ValueError(f"{path.name}: not a simple job CSV, Alibaba pod list or Azure LLM trace (header {header[:4]})")


def read_alibaba(
    path: Path,
    *,
    duration_s: float,
    fleet_gpus: int,
    offset_s: float = ALIBABA_DEFAULT_OFFSET_S,
    utilisation: float = 0.7,
    max_lifetime_s: float = 86400.0,
) -> list[JobSpec]:
    """Jobs from an Alibaba v2023 pod list (see the module docstring)."""
    pods: list[tuple[float, dict[str, str], float]] = []
    with open(path, encoding="utf-8-sig", newline="") as fh:
        for row in csv.DictReader(fh):
            if int(row["num_gpu"]) < 1 or not row["scheduled_time"].strip():
                continue
            created = float(row["creation_time"])
            lifetime = float(row["deletion_time"]) - float(row["scheduled_time"])
            if created >= offset_s and lifetime > 0:
                pods.append((created, row, min(lifetime, max_lifetime_s)))
    pods.sort(key=lambda p: (p[0], p[1]["name"]))
    wanted = utilisation * fleet_gpus * duration_s
    chosen: list[tuple[float, dict[str, str], float]] = []
    offered = 0.0
    for pod in pods:
        if offered >= wanted:
            break
        chosen.append(pod)
        offered += int(pod[1]["num_gpu"]) * min(pod[2], duration_s)
    if not chosen:
        raise ValueError(f"{path.name}: no GPU pods created after {offset_s:.0f} s")
    span = max(1.0, chosen[-1][0] - chosen[0][0])
    scale = duration_s / span if len(chosen) > 1 else 0.0
    return [_alibaba_job(row, round((created - chosen[0][0]) * scale, 3), life) for created, row, life in chosen]


def _alibaba_job(row: dict[str, str], submit: float, lifetime: float) -> JobSpec:
    gpus = int(row["num_gpu"])
    qos = row["qos"].strip()
    name = row["name"].strip()
    if qos == "LS":
        share = min(1.0, max(0.05, int(row["gpu_milli"] or 1000) / 1000.0))
        return JobSpec(
            id=name,
            submit_s=submit,
            gpus=gpus,
            duration_s=lifetime,
            priority="high",
            kind="inference",
            demand=Demand.constant(share),
        )
    priority: Priority = "low" if qos == "BE" else "normal"
    return JobSpec(id=name, submit_s=submit, gpus=gpus, duration_s=lifetime, priority=priority)


def azure_demand(path: Path, *, step_s: float = 60.0, peak_load: float = 0.9) -> Demand:
    """The demand profile of the Azure trace: generated tokens per bin over the busiest bin × ``peak_load``."""
    tokens: dict[int, float] = {}
    first: datetime | None = None
    with open(path, encoding="utf-8-sig", newline="") as fh:
        for row in csv.DictReader(fh):
            stamp = datetime.fromisoformat(row["TIMESTAMP"].strip()[:26])
            first = first or stamp
            b = int((stamp - first).total_seconds() // step_s)
            tokens[b] = tokens.get(b, 0.0) + float(row["GeneratedTokens"])
    if not tokens:
        raise ValueError(f"{path.name}: no requests")
    bins = [tokens.get(i, 0.0) for i in range(max(tokens) + 1)]
    if len(bins) > 1 and bins[-1] < 0.5 * (math.fsum(bins) / len(bins)):
        bins = bins[:-1]  # the last bin is usually cut off by the end of the recording
    top = max(bins)
    return Demand(step_s=step_s, values=tuple(round(peak_load * b / top, 6) for b in bins))


def read_jobs(
    path: Path,
    *,
    duration_s: float,
    fleet_gpus: int,
    inference_gpus: int | None = None,
    alibaba_offset_s: float = ALIBABA_DEFAULT_OFFSET_S,
    utilisation: float = 0.7,
) -> list[JobSpec]:
    """Jobs from any of the three formats; an Azure trace becomes ``inference_gpus`` one-GPU (LLM) services."""
    fmt = detect_jobs_format(path)
    if fmt == "simple":
        return read_simple_csv(path)
    if fmt == "alibaba":
        return read_alibaba(
            path, duration_s=duration_s, fleet_gpus=fleet_gpus, offset_s=alibaba_offset_s, utilisation=utilisation
        )
    count = inference_gpus if inference_gpus is not None else max(1, fleet_gpus // 8)
    return inference_services(
        count=count, gpus=1, demand=azure_demand(path), prefix="azure", llm=azure_llm_demand(path)
    )
