"""Which job a pod belongs to.

Zeus profiles and Perseus straggler control work per *job*: all the pods of a distributed training
run share one power limit sweep and one pace. A pod names its job with ``wattplane.io/job``; without
the annotation the controller that owns it (a batch ``Job``, a ``JobSet``, a Kubeflow ``PyTorchJob``,
...) is the job, and a pod with neither is a job of its own. Job ids are namespaced (``ns/name``)
because two teams may well both call their run ``train``.
"""

from __future__ import annotations

from typing import Final

from wattplane.api.annotations import PodIntent
from wattplane.planner.snapshot import PodView

#: Owner kinds that stand for one training/batch run; pods of other controllers (a Deployment's
#: ReplicaSet, a StatefulSet) are independent replicas and each forms its own job.
JOB_OWNER_KINDS: Final = frozenset({"Job", "JobSet", "PyTorchJob", "TFJob", "MPIJob", "XGBoostJob", "RayJob"})


def job_id(pod: PodView, intent: PodIntent) -> str:
    """``namespace/job`` for ``pod``: the annotation, else a batch owner, else the pod itself."""
    if intent.job:
        return f"{pod.namespace}/{intent.job}"
    if pod.owner:
        kind, _, name = pod.owner.partition("/")
        if kind in JOB_OWNER_KINDS and name:
            return f"{pod.namespace}/{name}"
    return f"{pod.namespace}/{pod.name}"
