"""Translate raw Kubernetes objects (dicts from watch events) into the planner's views.

Validation happens here, at the edge: a policy the models reject becomes a :class:`PolicyView` with
an error message instead of an exception, so one bad object never stops planning for the others.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from wattplane.api.v1alpha1.energypolicy import EnergyPolicySpec
from wattplane.api.v1alpha1.gpunode import GpuNodeSpec, GpuNodeStatus
from wattplane.planner.snapshot import GpuView, PodKey, PodView, PolicyView


@dataclass(frozen=True)
class PolicyParse:
    """A policy as read from the API: its view, or why it could not be used."""

    name: str
    generation: int
    view: PolicyView | None
    error: str | None
    status: Mapping[str, Any]
    #: ``metadata.uid``: events on the policy carry it, so ``kubectl describe`` finds them.
    uid: str = ""


def _controller(meta: Mapping[str, Any]) -> str | None:
    """``Kind/name`` of the pod's controlling owner (Job, JobSet, PyTorchJob, ReplicaSet, ...)."""
    for ref in meta.get("ownerReferences") or ():
        if ref.get("controller") and ref.get("kind") and ref.get("name"):
            return f"{ref['kind']}/{ref['name']}"
    return None


def pod_view(body: Mapping[str, Any]) -> PodView:
    """The planner's view of a pod object."""
    meta = body.get("metadata", {})
    return PodView(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        node=(body.get("spec") or {}).get("nodeName"),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        phase=(body.get("status") or {}).get("phase", "Pending"),
        owner=_controller(meta),
        ip=(body.get("status") or {}).get("podIP") or None,
    )


def policy_parse(body: Mapping[str, Any]) -> PolicyParse:
    """Validate an EnergyPolicy; invalid ones carry a readable error instead of a view."""
    meta = body.get("metadata", {})
    name = meta.get("name", "")
    generation = int(meta.get("generation") or 0)
    status = body.get("status") or {}
    uid = str(meta.get("uid") or "")
    try:
        spec = EnergyPolicySpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'spec'}: {err['msg']}" for err in exc.errors()[:5]
        )
        return PolicyParse(name, generation, None, f"invalid spec: {problems}", status, uid)
    view = PolicyView(name=name, spec=spec, generation=generation, deleting=bool(meta.get("deletionTimestamp")))
    return PolicyParse(name, generation, view, None, status, uid)


def gpunode_parts(body: Mapping[str, Any]) -> tuple[GpuNodeSpec, tuple[GpuView, ...]]:
    """The current plan of a GpuNode and the GPUs its agent reports."""
    name = body.get("metadata", {}).get("name", "")
    try:
        spec = GpuNodeSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        spec = GpuNodeSpec()  # a hand-edited spec is simply replaced by the next plan
    try:
        status = GpuNodeStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return spec, ()
    gpus = tuple(
        GpuView(
            node=name,
            uuid=g.uuid,
            index=g.index,
            model=g.model,
            min_watts=g.constraints.min_watts,
            max_watts=g.constraints.max_watts,
            default_watts=g.constraints.default_watts,
            power_watts=g.power_watts,
            energy_joules=g.energy_joules,
            limit_watts=g.power_limit_watts,
            pods=tuple((p.namespace, p.name) for p in g.pods),
            mig_enabled=g.mig_enabled,
            budget_limited=g.budget_limit_watts is not None,
        )
        for g in status.gpus
    )
    return spec, gpus


def pod_energy_of(body: Mapping[str, Any]) -> dict[PodKey, dict[str, float]]:
    """GPU joules the node's agent attributes to each pod, by pod uid (containers summed).

    Read leniently from ``status.podEnergy``: an entry without a finite, non-negative number is
    skipped (the token ledger then reports the pod as without energy rather than use a wrong value).
    """
    entries = (body.get("status") or {}).get("podEnergy") or []
    out: dict[PodKey, dict[str, float]] = {}
    if not isinstance(entries, list):
        return out
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        namespace, name, joules = entry.get("namespace"), entry.get("name"), entry.get("energyJoules")
        if not isinstance(namespace, str) or not isinstance(name, str) or isinstance(joules, bool):
            continue
        if not isinstance(joules, int | float) or not math.isfinite(joules) or joules < 0:
            continue
        by_uid = out.setdefault((namespace, name), {})
        uid = str(entry.get("uid") or "")
        by_uid[uid] = by_uid.get(uid, 0.0) + float(joules)
    return out
