"""Garbage-collector thresholds for a process that holds a whole fleet in memory.

CPython's cyclic collector runs its youngest generation every 700 net allocations and a full pass
every hundred of those. A planning round allocates a target, a decision and a share per GPU, most of
which live on into the next round: on a 10,000-GPU fleet that is some 190 collections a round, a
quarter of the round's CPU, and on 100,000 GPUs over a third (measured with ``gc.callbacks``, see
docs/results.md). The operator's state is almost free of reference cycles (frozen dataclasses and
tuples; reference counting frees them), so collecting far less often costs little memory: a young
generation of 100,000 objects and rarer older passes cut the collector's share to a few percent.
"""

from __future__ import annotations

import gc
from typing import Final

#: Young-generation threshold (allocations), and how many younger passes trigger each older one.
THRESHOLDS: Final = (100_000, 50, 100)


def tune_gc() -> None:
    """Collect cycles less often: the planner's working set is large, long-lived and acyclic."""
    gc.set_threshold(*THRESHOLDS)
