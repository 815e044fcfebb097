"""The GPUs' power-limit ranges, published as labels on the agent's own Node.

Per GPU model on the node, three labels under the ``power.wattplane.io/`` prefix, integer watts::

    power.wattplane.io/nvidia-a40.min-watts: "100"
    power.wattplane.io/nvidia-a40.max-watts: "300"
    power.wattplane.io/nvidia-a40.default-watts: "300"

**Why the Node and not the GpuNode.** The readers are schedulers and capacity planners. A pod's
``nodeAffinity`` reads Node labels only, and because the values are integers its ``Gt``/``Lt``
operators can ask for "a GPU that can be capped down to 150 W"; ``kubectl get nodes -L`` and every
inventory tool that lists nodes see them without knowing wattplane's CRDs. Labels on the GpuNode would
help none of them (the same ranges are already in its status, ``status.gpus[].constraints``), and they
would not even save RBAC: a GpuNode's labels can be changed only through the main resource (a write
to ``gpunodes/status`` keeps nothing but ``status``, so the labels in it are dropped), and ``patch`` on
``gpunodes`` is the operator's plan. Either way the agent gets a new ``patch`` verb, and either way an
admission policy must narrow it; on the Node the chart's ValidatingAdmissionPolicy lets an agent change
only ``power.wattplane.io/*`` labels, only on the node its token is bound to, and nothing else of it.

**Rules.** Model names become label-key syntax: lower case, every run of other characters a ``-``,
at most 49 characters so that the longest key name (``<model>.default-watts``) stays within 63 (a
longer name is cut and a hash of the full name appended, so two long names never share a key).
Several GPUs of one model publish the range every one of them accepts (highest minimum, lowest
maximum) and the lowest default; the minimum is rounded up and the maximum down, so a published
range is always settable. Labels of models no longer present are removed; labels outside the prefix
are never touched. The agent compares with the Node's labels when it starts, when its GPUs' ranges
change, and every :data:`RECHECK_S` seconds (someone may have removed them), and writes only a
difference. Labels stay when the agent stops: a restart must not make them flap under the scheduler.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping

from wattplane.agent.gpu.base import PowerConstraints
from wattplane.agent.kube import ApiError

logger = logging.getLogger(__name__)

#: Every label the agent writes has this prefix, and it writes no other.
LABEL_PREFIX = "power.wattplane.io/"
#: The three figures per model, in key order.
FIELDS = ("min-watts", "max-watts", "default-watts")
#: A label key's name part (after the prefix) is at most 63 characters.
_NAME_MAX = 63
_MODEL_MAX = _NAME_MAX - len(".default-watts")
#: Seconds between checks that the Node still carries the labels (they are written only on a difference).
RECHECK_S = 300.0
#: Seconds before a failed write is tried again (the API server may be away).
RETRY_S = 30.0


def model_slug(model: str) -> str:
    """A GPU model name in label-key syntax: ``"NVIDIA A100-SXM4-80GB"`` → ``"nvidia-a100-sxm4-80gb"``."""
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-") or "gpu"
    if len(slug) <= _MODEL_MAX:
        return slug
    digest = hashlib.sha256(model.encode()).hexdigest()[:8]
    return f"{slug[: _MODEL_MAX - len(digest) - 1].rstrip('-')}-{digest}"


def cap_labels(gpus: Iterable[tuple[str, PowerConstraints]]) -> dict[str, str]:
    """The labels for ``(model, constraints)`` of every GPU on the node."""
    by_model: dict[str, list[PowerConstraints]] = {}
    for model, limits in gpus:
        by_model.setdefault(model_slug(model), []).append(limits)
    labels: dict[str, str] = {}
    for slug, ranges in sorted(by_model.items()):
        low = math.ceil(max(r.min_watts for r in ranges) - 1e-6)
        high = math.floor(min(r.max_watts for r in ranges) + 1e-6)
        default = round(min(r.default_watts for r in ranges))
        for field, watts in zip(FIELDS, (low, high, default), strict=True):
            labels[f"{LABEL_PREFIX}{slug}.{field}"] = str(watts)
    return labels


def label_changes(current: Mapping[str, str], desired: Mapping[str, str]) -> dict[str, str | None]:
    """A merge patch's labels: set what differs, remove (``None``) our labels that are not desired."""
    changes: dict[str, str | None] = {k: v for k, v in desired.items() if current.get(k) != v}
    changes.update({k: None for k in current if k.startswith(LABEL_PREFIX) and k not in desired})
    return changes


class CapLabelPublisher:
    """Keeps this node's ``power.wattplane.io/*`` labels equal to its GPUs' ranges."""

    def __init__(
        self,
        get_labels: Callable[[], Awaitable[Mapping[str, str]]],
        patch_labels: Callable[[Mapping[str, str | None]], Awaitable[None]],
        *,
        recheck_s: float = RECHECK_S,
        retry_s: float = RETRY_S,
    ) -> None:
        self._get_labels = get_labels
        self._patch_labels = patch_labels
        self._recheck_s = recheck_s
        self._retry_s = retry_s
        #: What the Node was last seen or made to carry under the prefix (``None``: not yet).
        self.published: dict[str, str] | None = None
        self._next_check = -math.inf
        self._retry_at = -math.inf
        self._failing = False

    def due(self, desired: Mapping[str, str], now: float) -> bool:
        """Whether :meth:`sync` has anything to do: the ranges changed, or a check is due.

        Not while resting after a failure: a missing permission must not cost a request every tick.
        """
        if now < self._retry_at:
            return False
        return desired != self.published or now >= self._next_check

    async def sync(self, desired: Mapping[str, str], now: float) -> None:
        """Read the Node's labels and write the difference (never raises: labels must not stop the loop)."""
        try:
            current = await self._get_labels()
            changes = label_changes(current, desired)
            if changes:
                await self._patch_labels(changes)
                logger.info(
                    "node labels: %s",
                    ", ".join(f"{k}={v}" if v is not None else f"{k} removed" for k, v in sorted(changes.items())),
                )
        except Exception as exc:
            self._retry_at = now + self._retry_s
            forbidden = isinstance(exc, ApiError) and exc.status == 403
            if not self._failing:
                logger.warning(
                    "cannot publish the GPUs' power-limit ranges as node labels (%s)%s; retrying every %.0f s",
                    exc,
                    ": the agent's RBAC lacks patch on its Node (chart too old, or admissionPolicy.enabled=false)"
                    if forbidden
                    else "",
                    self._retry_s,
                )
            self._failing = True
            return
        if self._failing:
            logger.info("node labels published again")
        self._failing = False
        self.published = dict(desired)
        self._next_check = now + self._recheck_s
